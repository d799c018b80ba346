"""The model catalogue: every model id the service lists and how a requested name is routed.

Ids are the web's own `ai_chat_model` / `model_params.model` ids as genspark-protocol.md §12.8 lists
them for September–October 2026 (§12.8.1 chat, §12.8.2 Mixture-of-Agents presets, §12.8.4 images
and videos). Ids no September source lists any more (§12.8.5) are gone; the few that clients still
send by habit stay as *aliases* that say what they map to. To add a model, add its id here, or set
`EXTRA_MODELS` without a release.

Rewriting is per id, never by prefix (§12.8.6): the web serves `deep-seek-v4.1-flash` and
`deepseek-v4-pro` side by side, so the old `deepseek`→`deep-seek` rule broke a valid id.

Why unknown names are refused (§12.8.6): Genspark does not refuse an id it does not know; it
silently answers with `claude-sonnet-4-5-20250929`. Passing a typo through would bill the user
for a model they did not ask for, so a name close to a known id is a 404 with "did you mean", and
any other unknown name is a 404 too unless the operator sets `UNKNOWN_MODEL_MOA=1` (the old
project's "any unknown name runs Mixture-of-Agents").
"""

from __future__ import annotations

import difflib
import enum
import re
from dataclasses import dataclass, field

TEXT_MODELS: tuple[str, ...] = (
    # §12.8.1, Anthropic
    "claude-opus-5-5", "claude-opus-5", "claude-opus-4-8", "claude-opus-4-7", "claude-opus-4-6",
    "claude-opus-4-5", "claude-sonnet-5-5", "claude-sonnet-5", "claude-sonnet-4-6", "claude-sonnet-4-5",
    "claude-sonnet-4", "claude-4-5-haiku",
    # §12.8.1, OpenAI
    "gpt-5.5-pro", "gpt-5.4-pro", "gpt-5.2-pro", "gpt-6.1-sol", "gpt-6-sol", "gpt-6-luna", "gpt-5.6-sol",
    "gpt-5.6-terra", "gpt-5.6-luna", "gpt-5.5", "gpt-5.4", "gpt-5.4-mini", "gpt-5.4-nano", "gpt-5.2",
    "gpt-5.1-high", "gpt-5.1-medium", "gpt-5.1-low", "gpt-5-pro", "gpt-5",
    # §12.8.1, Google
    "gemini-3.1-pro-preview", "gemini-3.8-flash", "gemini-3.7-flash", "gemini-3.6-flash", "gemini-3.5-flash",
    "gemini-3-flash-preview", "gemini-2.5-flash", "gemini-3.1-flash-lite-preview", "gemini-2.5-pro",
    # §12.8.1, xAI
    "grok-4.7", "grok-4.6", "grok-4.5",
    # §12.8.1, DeepSeek: both spellings are real web ids (§12.8.6)
    "deep-seek-v4.1-flash", "deepseek-v4-pro", "deepseek-v4-pro-0813", "deepseek-v4-flash",
    "deep-seek-v4-flash-vision-exp",
    # §12.8.1, others
    "kimi-k3", "minimax-m3", "glm-5p3", "glm-5p3-flash-baseten", "nemotron-3-ultra", "mimo-v2.6-pro",
    "mimo-v2.6-flash", "muse-spark-1.3", "minimax-m2.7", "glm-5.2", "solar-pro-4",
)

# Names clients send that are not web ids, and the web id that serves them. Each says why.
TEXT_ALIASES: dict[str, str] = {
    "claude-haiku-4-5": "claude-4-5-haiku",         # llm_proxy / Anthropic spelling (§12.8.6, SB)
    "glm-5.3": "glm-5p3",                           # "also glm-5.3" (§12.8.1)
    "deep-seek-v4-pro": "deepseek-v4-pro",          # llm_proxy / tool_cli spelling (§12.8.6)
    "deep-seek-v4-flash": "deepseek-v4-flash",      # SB's spelling (§12.8.6)
    "deepseek-v4.1-flash": "deep-seek-v4.1-flash",  # the other spelling of the same id (§12.8.6)
    "opus-5.5": "claude-opus-5-5",                  # dot forms are not ids: upstream would fall back (§12.8.3)
    "claude-opus-5.5": "claude-opus-5-5",
    "claude-sonnet-5.5": "claude-sonnet-5-5",
    # Retired ids (§12.8.5) that old clients still send, mapped to their nearest current id.
    "o3-pro": "gpt-5.5-pro", "o3": "gpt-5.1-high", "o1": "gpt-5.1-high",
    "deep-seek-r1": "deepseek-v4-pro", "deep-seek-v3": "deepseek-v4-flash",
    "claude-opus-4-1": "claude-opus-4-6",
    "gemini-3-pro-preview": "gemini-3.1-pro-preview",
    "grok-4-0709": "grok-4.5", "grok-4.20-0309-reasoning": "grok-4.7", "grok-4.20-0309-non-reasoning": "grok-4.7",
    "kimi-k2-instruct": "kimi-k3", "groq-kimi-k2-instruct": "kimi-k3",
}

# Claude names as Anthropic's API and its clients (the `anthropic` SDKs, Claude Code 2.1) send them,
# and the Genspark web id that serves each (§12.8.1 lists Genspark's Claude ids). Families Genspark
# no longer serves go to the nearest current member of the same line: old Opus to `claude-opus-4-6`
# (as the alias for `claude-opus-4-1` above, and SB's for `claude-opus-4-5`), old Sonnet to
# `claude-sonnet-4`, every Haiku to `claude-4-5-haiku`, the only Haiku on the web. Dated snapshots
# and platform suffixes are handled by `claude_base_name`, so they need no entry here.
CLAUDE_ALIASES: dict[str, str] = {
    "claude-opus-4": "claude-opus-4-6", "claude-opus-4-0": "claude-opus-4-6",
    "claude-3-opus": "claude-opus-4-6",
    "claude-sonnet-4-0": "claude-sonnet-4",
    "claude-3-7-sonnet": "claude-sonnet-4", "claude-sonnet-3-7": "claude-sonnet-4",
    "claude-3-5-sonnet": "claude-sonnet-4",
    "claude-haiku-4": "claude-4-5-haiku", "claude-3-5-haiku": "claude-4-5-haiku",
    "claude-haiku-3-5": "claude-4-5-haiku", "claude-3-haiku": "claude-4-5-haiku",
    # Claude Code 2.1 offers "fable": Claude Fable 5 (= Claude Mythos 5), a tier above Opus that
    # Genspark does not list; its strongest Claude, `claude-opus-5-5`, is the nearest.
    "claude-fable-5": "claude-opus-5-5", "claude-mythos-5": "claude-opus-5-5",
}

# Suffixes Anthropic puts after a Claude model's name that do not change which model it is: the
# dated snapshot (`-20250929`), `-latest`, Bedrock/Vertex revisions (`-v1`, `-v2`, `@20250929`),
# Claude Code's context-window marker (`[1m]`) and fast-mode variant (`-fast`).
_CLAUDE_SUFFIX = re.compile(r"(\[1m\]|@\d{8}|-v\d+(:\d+)?|-\d{8}|-latest|-fast)$")


def claude_base_name(name: str) -> str | None:
    """`claude-sonnet-4-5-20250929` → `claude-sonnet-4-5`; None when `name` is no decorated Claude name.

    Narrow on purpose (the module docstring: rewriting is per id): only names starting `claude-`,
    only the suffixes above, and dots in the version (`claude-sonnet-4.6`) become dashes."""
    lowered = name.lower()
    if not lowered.startswith(("claude-", "anthropic.claude-")):
        return None
    base = lowered.removeprefix("anthropic.")
    while True:
        stripped = _CLAUDE_SUFFIX.sub("", base)
        if stripped == base:
            break
        base = stripped
    base = re.sub(r"(?<=\d)\.(?=\d)", "-", base)
    return base if base != name else None


IMAGE_MODELS: tuple[str, ...] = (
    # §12.8.4 image_generation_agent ids first, then the tool_cli catalogue
    "gpt-image-2", "gpt-image-2.5", "nano-banana-2", "nano-banana-pro", "nano-banana-2-flash-lite",
    "flux-2-pro", "fal-ai/flux-2-pro", "fal-ai/z-image/turbo", "fal-ai/bytedance/seedream/v5/lite",
    "fal-bria-rmbg", "fal-ai/recraft-clarity-upscale", "fal-ai/image-editing/text-removal",
)
IMAGE_ALIASES: dict[str, str] = {
    "dall-e-3": "gpt-image-2",   # OpenAI clients' default image model
    "gpt-image-1": "gpt-image-2",
    "gpt-image-1.5": "gpt-image-2",
}

VIDEO_MODELS: tuple[str, ...] = (
    # §12.8.4 tool_cli catalogue (whether the web agents take the same ids is open, §12.8.4)
    "kling/v3", "gemini/veo3.1", "gemini/veo3.1/reference-to-video", "gemini/veo3.1/first-last-frame-to-video",
    "minimax/hailuo-2.3/standard", "wan/v2.7", "vidu/q3", "runway/gen4_turbo", "pixverse/v6",
    "fal-ai/bytedance/seedance-2.0", "sora-2", "sora-2-pro", "xai/grok-imagine-video",
    "xai/grok-imagine-video/video-extension", "alibaba/happy-horse", "alibaba/happy-horse/reference-to-video",
    "alibaba/happy-horse/video-edit", "fal-ai/bytedance-upscaler/upscale/video",
)
VIDEO_ALIASES: dict[str, str] = {
    "wan/v2.6": "wan/v2.7", "official/pixverse/v5": "pixverse/v6",   # §12.8.4 "changes against §5.1"
    "fal-ai/bytedance/seedance/v1.5/pro": "fal-ai/bytedance/seedance-2.0",
    "fal-ai/bytedance/seedance/v1/pro/fast": "fal-ai/bytedance/seedance-2.0",
}

# §12.8.2: the UI's two Mixture-of-Agents presets; the lead (first) goes in ai_chat_model (§12.2.5).
MIXTURE_PRESETS: dict[str, tuple[str, ...]] = {
    "moa-classic": ("gpt-5.1-low", "claude-sonnet-4-6", "gemini-3.1-pro-preview"),
    "moa-live": ("gpt-5.6-luna", "gpt-6.1-sol", "gemini-3.7-flash"),
}
MIXTURE_ALIASES: dict[str, str] = {"mixture-of-agents": "moa-classic", "moa": "moa-classic"}
MIXTURE_MODELS = MIXTURE_PRESETS["moa-classic"]   # what UNKNOWN_MODEL_MOA=1 runs

# `created` must be stable across requests (openai-compat.md §2.7 item 24): a fixed date.
MODELS_CREATED = 1767225600  # 2026-01-01T00:00:00Z

SEARCH_SUFFIX = "-search"
SIMILAR_CUTOFF = 0.8   # difflib ratio above which an unknown name is taken for a typo


class ModelKind(enum.StrEnum):
    TEXT = "text"
    MIXTURE = "mixture"
    IMAGE = "image"
    VIDEO = "video"


@dataclass(frozen=True, slots=True)
class ModelRoute:
    """How a requested model name runs upstream."""

    requested: str            # echoed back to the client as `model`
    kind: ModelKind
    upstream: tuple[str, ...] # one id, or the Mixture-of-Agents members, the lead first
    search: bool = False


class UnknownModel(LookupError):
    """A name the catalogue does not serve; `suggestion` is the closest known id, if any."""

    def __init__(self, name: str, suggestion: str | None) -> None:
        super().__init__(name)
        self.name = name
        self.suggestion = suggestion


@dataclass(frozen=True)
class Catalog:
    """The catalogue as configured: the built-in ids plus `EXTRA_MODELS`, the operator's
    `MODEL_ALIASES`, and the unknown-name rule."""

    extra_text: tuple[str, ...] = ()
    unknown_model_moa: bool = False
    extra_aliases: tuple[tuple[str, str], ...] = ()   # MODEL_ALIASES: (name, Genspark id)
    _text: frozenset[str] = field(init=False, repr=False)
    _aliases: dict[str, str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_text", frozenset(TEXT_MODELS) | frozenset(self.extra_text))
        aliases = {**TEXT_ALIASES, **CLAUDE_ALIASES}
        for name, target in self.extra_aliases:
            # An alias of an alias is followed once, so `MODEL_ALIASES=fast=claude-haiku-4-5` works.
            resolved = target if target in self._text else aliases.get(target)
            if resolved is None:
                raise ValueError(f"MODEL_ALIASES maps {name!r} to {target!r}, which is not a Genspark chat "
                                 "model id of this service (see GET /v1/models, or add it with EXTRA_MODELS)")
            aliases[name] = resolved
        object.__setattr__(self, "_aliases", aliases)

    @property
    def text_models(self) -> tuple[str, ...]:
        return TEXT_MODELS + tuple(m for m in self.extra_text if m not in TEXT_MODELS)

    def route(self, name: str) -> ModelRoute:
        """Route a client model name; raises UnknownModel (see the module docstring)."""
        wanted = name.strip()
        for table, kind in ((IMAGE_MODELS, ModelKind.IMAGE), (VIDEO_MODELS, ModelKind.VIDEO)):
            if wanted in table:
                return ModelRoute(name, kind, (wanted,))
        if wanted in IMAGE_ALIASES:
            return ModelRoute(name, ModelKind.IMAGE, (IMAGE_ALIASES[wanted],))
        if wanted in VIDEO_ALIASES:
            return ModelRoute(name, ModelKind.VIDEO, (VIDEO_ALIASES[wanted],))
        base, search = wanted, False
        if wanted.endswith(SEARCH_SUFFIX) and self._text_id(wanted) is None and wanted not in MIXTURE_PRESETS:
            base, search = wanted[: -len(SEARCH_SUFFIX)], True
        mixture = MIXTURE_PRESETS.get(MIXTURE_ALIASES.get(base, base))
        if mixture is not None:
            return ModelRoute(name, ModelKind.MIXTURE, mixture, search)
        if "," in base:
            # An explicit ensemble "a,b,c" (the lead first), each member a known id (§12.2.5).
            members = tuple(self._text_id(p.strip()) or "" for p in base.split(","))
            if all(members) and len(members) >= 2:
                return ModelRoute(name, ModelKind.MIXTURE, tuple(dict.fromkeys(members)), search)
        text_id = self._text_id(base)
        if text_id is not None:
            return ModelRoute(name, ModelKind.TEXT, (text_id,), search)
        suggestion = self.suggest(base)
        if self.unknown_model_moa and suggestion is None:
            return ModelRoute(name, ModelKind.MIXTURE, MIXTURE_MODELS, search)
        raise UnknownModel(name, suggestion)

    def _text_id(self, name: str) -> str | None:
        if name in self._text:
            return name
        if name in self._aliases:
            return self._aliases[name]
        base = claude_base_name(name)
        if base is None:
            return None
        return base if base in self._text else self._aliases.get(base)

    def suggest(self, name: str) -> str | None:
        """The known id a mistyped name most likely meant, or None."""
        candidates = [m for m, _ in self.listed()]
        close = difflib.get_close_matches(name.lower(), candidates, n=1, cutoff=SIMILAR_CUTOFF)
        return close[0] if close else None

    def listed(self) -> list[tuple[str, str]]:
        """(id, kind) of every listed model: text, `-search` variants, MoA presets, images, videos."""
        text = self.text_models
        out = [(m, ModelKind.TEXT.value) for m in text]
        out += [(m + SEARCH_SUFFIX, ModelKind.TEXT.value) for m in text]
        out += [(m, ModelKind.MIXTURE.value) for m in MIXTURE_PRESETS]
        out += [(m, ModelKind.IMAGE.value) for m in IMAGE_MODELS]
        out += [(m, ModelKind.VIDEO.value) for m in VIDEO_MODELS]
        return out

    def aliases(self) -> dict[str, str]:
        """Every alias and what it maps to (documented in the README and shown on /v1/models/{id})."""
        return {**self._aliases, **IMAGE_ALIASES, **VIDEO_ALIASES, **MIXTURE_ALIASES}


DEFAULT_CATALOG = Catalog()


def route_model(name: str, catalog: Catalog = DEFAULT_CATALOG) -> ModelRoute:
    return catalog.route(name)


def served_matches(requested: str, served: str) -> bool:
    """§12.8.3 (AX-P's rule): honoured when the served id is the requested one or a dated/variant
    form of it (`claude-opus-4-8` → `claude-opus-4-8-extended-cache`, `gpt-5.5` → `gpt-5.5-2026-04-23`)."""
    return served == requested or served.startswith(requested + "-")


def owned_by(model_id: str) -> str:
    """A plausible `owned_by` for model pickers, from the id's family."""
    lowered = model_id.lower()
    for prefix, owner in (
        ("gpt", "openai"), ("o1", "openai"), ("o3", "openai"), ("dall-e", "openai"), ("sora", "openai"),
        ("claude", "anthropic"), ("gemini", "google"), ("nano-banana", "google"),
        ("grok", "xai"), ("xai/", "xai"), ("deep-seek", "deepseek"), ("deepseek", "deepseek"),
        ("kimi", "moonshot"), ("qwen", "alibaba"), ("alibaba/", "alibaba"), ("minimax", "minimax"),
        ("glm", "zhipu"), ("moa-", "genspark"),
    ):
        if lowered.startswith(prefix):
            return owner
    return "genspark"
