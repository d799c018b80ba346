"""The model catalogue: every model id the service lists and how a requested name is routed.

All ids are upstream ids, from the newest lists in genspark-protocol.md §5.1 (the 2026-04 web
bundle for text, deanxv HEAD 2026-02-27 plus 2026 additions for images and videos). To add a
model, add its id here; nothing else needs to change.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

TEXT_MODELS: tuple[str, ...] = (
    # Current in the 2026 web bundle (§5.1, SharpWizard 2026-04-27)
    "gpt-5.5", "gpt-5.4", "gpt-5.4-pro", "gpt-5.4-mini", "gpt-5.4-nano", "gpt-5.2-pro", "o3-pro",
    "claude-opus-4-7", "claude-opus-4-6", "claude-sonnet-4-6", "claude-4-5-haiku",
    "gemini-3.1-pro-preview", "gemini-3-flash-preview", "gemini-2.5-pro",
    "grok-4.20-0309-reasoning", "grok-4.20-0309-non-reasoning",
    # Hidden in the web UI but still answering (§5.1)
    "gpt-5-pro", "gpt-5.2", "gpt-5.1-low", "gpt-5.1-medium", "gpt-5.1-high",
    "claude-sonnet-4-5", "claude-sonnet-4", "claude-opus-4-5", "claude-opus-4-1",
    "gemini-3-pro-preview", "gemini-2.5-flash", "grok-4-0709", "kimi-k2-instruct",
    "groq-kimi-k2-instruct", "deep-seek-r1", "deep-seek-v3", "o1", "o3",
)

IMAGE_MODELS: tuple[str, ...] = (
    "nano-banana-pro", "nano-banana-2", "fal-ai/nano-banana-2", "gpt-image-2",
    "fal-ai/gpt-image-1.5", "fal-ai/bytedance/seedream/v5/lite", "fal-ai/flux-2",
    "fal-ai/flux-2-pro", "fal-ai/z-image/turbo", "recraft-v3", "ideogram/V_3", "qwen-image",
    "qwen-multiple-angles", "fal-ai/recraft-clarity-upscale", "fal-bria-rmbg",
    "fal-ai/image-editing/text-removal", "dall-e-3",
)

VIDEO_MODELS: tuple[str, ...] = (
    "gemini/veo3.1", "gemini/veo3.1/reference-to-video", "gemini/veo3.1/first-last-frame-to-video",
    "sora-2", "sora-2-pro", "gemini/veo3", "kling/v3", "kling/v2.6/standard/motion-control",
    "kling/o3/image-to-video", "kling/o3/reference-to-video", "fal-ai/bytedance/seedance/v1.5/pro",
    "xai/grok-imagine-video", "minimax/hailuo-2.3/standard", "official/pixverse/v5",
    "fal-ai/bytedance/seedance/v1/pro/fast", "fal-ai/sync-lipsync/v2", "wan/v2.6", "vidu/q3",
    "runway/gen4_turbo", "fal-ai/bytedance-upscaler/upscale/video",
)

# §5.2: a name outside TEXT_MODELS runs Mixture-of-Agents over these three.
MIXTURE_MODELS: tuple[str, ...] = ("gpt-5.1-low", "claude-sonnet-4-6", "gemini-3.1-pro-preview")

# `created` must be stable across requests (openai-compat.md §2.7 item 24): a fixed date.
MODELS_CREATED = 1767225600  # 2026-01-01T00:00:00Z

_TEXT = frozenset(TEXT_MODELS)
_IMAGE = frozenset(IMAGE_MODELS)
_VIDEO = frozenset(VIDEO_MODELS)

SEARCH_SUFFIX = "-search"

# Upstream renames in image bodies (§5.4).
IMAGE_UPSTREAM_NAMES = {"dall-e-3": "dalle-3"}


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
    upstream: tuple[str, ...] # one id, or three for Mixture-of-Agents
    search: bool = False


def route_model(name: str) -> ModelRoute:
    """Route a client model name (genspark-protocol.md §5.2–5.4).

    `deepseek*` is rewritten to `deep-seek*` first; a `-search` suffix sets the web-search
    flag; an image or video id routes to generation; any other unknown name runs MoA, as the
    old project did (a typo therefore still gets an answer, from the mixture).
    """
    upstream = name.strip()
    if upstream.startswith("deepseek"):
        upstream = "deep-seek" + upstream[len("deepseek"):]
    if upstream in _IMAGE:
        return ModelRoute(name, ModelKind.IMAGE, (upstream,))
    if upstream in _VIDEO:
        return ModelRoute(name, ModelKind.VIDEO, (upstream,))
    search = False
    if upstream.endswith(SEARCH_SUFFIX) and upstream not in _TEXT:
        upstream, search = upstream[: -len(SEARCH_SUFFIX)], True
    if upstream in _TEXT:
        return ModelRoute(name, ModelKind.TEXT, (upstream,), search)
    return ModelRoute(name, ModelKind.MIXTURE, MIXTURE_MODELS, search)


def is_video_model(name: str) -> bool:
    return name in _VIDEO


def is_image_model(name: str) -> bool:
    return name in _IMAGE


def owned_by(model_id: str) -> str:
    """A plausible `owned_by` for model pickers, from the id's family."""
    lowered = model_id.lower()
    for prefix, owner in (
        ("gpt", "openai"), ("o1", "openai"), ("o3", "openai"), ("dall-e", "openai"),
        ("claude", "anthropic"), ("gemini", "google"), ("nano-banana", "google"),
        ("grok", "xai"), ("xai/", "xai"), ("deep-seek", "deepseek"), ("kimi", "moonshot"),
        ("groq-kimi", "moonshot"), ("sora", "openai"), ("qwen", "alibaba"),
    ):
        if lowered.startswith(prefix):
            return owner
    return "genspark"


def listed_models() -> list[tuple[str, str]]:
    """(id, kind) of every listed model: text, `-search` variants, images, videos."""
    out = [(m, ModelKind.TEXT.value) for m in TEXT_MODELS]
    out += [(m + SEARCH_SUFFIX, ModelKind.TEXT.value) for m in TEXT_MODELS]
    out += [(m, ModelKind.IMAGE.value) for m in IMAGE_MODELS]
    out += [(m, ModelKind.VIDEO.value) for m in VIDEO_MODELS]
    return out
