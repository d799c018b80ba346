"""The simulated upstream's own model catalogue (genspark-protocol.md §12.8). Pure.

Deliberately *not* the service's catalogue: the simulator plays Genspark, which knows its ids
whatever the service believes, so a stale id in the service shows up as a silent substitution
here, exactly as it would upstream (§12.8.6).
"""

from __future__ import annotations

# §12.8.1: every ai_chat id of AX-A2 / AX-A (including the "hidden but accepted" ones) and SB.
KNOWN_CHAT_MODELS = frozenset(
    {
        # Anthropic
        "claude-opus-5-5", "claude-opus-5", "claude-opus-4-8", "claude-opus-4-7", "claude-opus-4-6",
        "claude-opus-4-5", "claude-sonnet-5-5", "claude-sonnet-5", "claude-sonnet-4-6", "claude-sonnet-4-5",
        "claude-sonnet-4", "claude-4-5-haiku",
        # OpenAI
        "gpt-5.5-pro", "gpt-5.4-pro", "gpt-5.2-pro", "gpt-6.1-sol", "gpt-6-sol", "gpt-6-luna", "gpt-5.6-sol",
        "gpt-5.6-terra", "gpt-5.6-luna", "gpt-5.5", "gpt-5.4", "gpt-5.4-mini", "gpt-5.4-nano", "gpt-5.2",
        "gpt-5.1-high", "gpt-5.1-medium", "gpt-5.1-low", "gpt-5-pro", "gpt-5", "gpt-5.1", "gpt-5.6", "gpt-6",
        # Google
        "gemini-3.1-pro-preview", "gemini-3.8-flash", "gemini-3.7-flash", "gemini-3.6-flash", "gemini-3.5-flash",
        "gemini-3-flash-preview", "gemini-2.5-flash", "gemini-3.1-flash-lite-preview", "gemini-2.5-pro",
        # xAI
        "grok-4.7", "grok-4.6", "grok-4.5",
        # DeepSeek (§12.8.6: both spellings are real, per id)
        "deep-seek-v4.1-flash", "deepseek-v4-pro", "deepseek-v4-pro-0813", "deepseek-v4-flash",
        "deep-seek-v4-flash-vision-exp", "deep-seek-v4-flash",
        # Others
        "kimi-k3", "minimax-m3", "glm-5p3", "glm-5.3", "GLM-5.3", "glm-5p3-flash-baseten", "nemotron-3-ultra",
        "mimo-v2.6-pro", "mimo-v2.6-flash", "muse-spark-1.3", "minimax-m2.7", "glm-5.2", "solar-pro-4",
    }
)

# §12.8.3: ids whose `_llm_model` is a dated or variant id (AX-H, AX-M [O]).
SERVED_AS = {
    "claude-opus-4-8": "claude-opus-4-8-extended-cache",
    "claude-opus-4-7": "claude-opus-4-7-extended-cache",
    "gpt-5.5": "gpt-5.5-2026-04-23",
    "gpt-5.5-pro": "gpt-5.5-pro-2026-04-23",
}

# §12.8.3 / §12.8.6: what answers an id the web does not know, with HTTP 200 and no error.
FALLBACK_CHAT_MODEL = "claude-sonnet-4-5-20250929"

# The `degraded` cookie on ai_chat: a cheap model that is plainly not the one asked for [I].
DEGRADED_CHAT_MODEL = "gpt-5.4-nano"

# §12.8.4 / §12.7.5: image_generation_agent ids; an unknown one silently becomes gpt-image-2.
IMAGE_MODELS = frozenset(
    {"gpt-image-2", "gpt-image-2.5", "nano-banana-2", "nano-banana-pro", "flux-2-pro", "nano-banana-2-flash-lite"}
)
FALLBACK_IMAGE_MODEL = "gpt-image-2"
# §12.7.1 / §12.8.4: sizes in increasing order; anything above 4k (e.g. 8k) becomes 4k (§12.7.5).
IMAGE_SIZES = ("auto", "0.5k", "1k", "2k", "3k", "4k")
MAX_IMAGE_SIZE = "4k"
DEFAULT_VIDEO_MODEL = "kling/v3"  # §12.8.4: the tool_cli catalogue's first video id [I for the web]


def served_chat_model(requested: str) -> str:
    """The `_llm_model` Genspark reports for ``requested`` (§12.8.3)."""
    if requested not in KNOWN_CHAT_MODELS:
        return FALLBACK_CHAT_MODEL
    return SERVED_AS.get(requested, requested)


def coerce_image_model(requested: str | None) -> str:
    """§12.7.5: "gpt-image-99 became gpt-image-2" — no error, a silent fallback."""
    return requested if requested in IMAGE_MODELS else FALLBACK_IMAGE_MODEL


def coerce_image_size(requested: str | None) -> str:
    """§12.7.5: "8k became 4k". A size we cannot read (or none) is ``auto`` [I]."""
    size = (requested or "auto").lower()
    if size in IMAGE_SIZES:
        return size
    if size.endswith("k"):
        try:
            return MAX_IMAGE_SIZE if float(size[:-1]) > 4 else "auto"
        except ValueError:
            pass
    return "auto"


# §12.7.3 alt: `generation_options` / `image_ratios` of the task detail; 1k-based pixel sizes [I].
_SIDE = {"auto": 1024, "0.5k": 512, "1k": 1024, "2k": 2048, "3k": 3072, "4k": 4096}


def image_pixels(size: str, aspect_ratio: str | None) -> tuple[int, int]:
    """Width and height for ``size`` and ``aspect_ratio`` (``3:4``…; ``auto`` is square) [I]."""
    side = _SIDE.get(size, 1024)
    try:
        w, h = (int(part) for part in (aspect_ratio or "").split(":"))
    except ValueError:
        return side, side
    if w <= 0 or h <= 0:
        return side, side
    return (side, side * h // w) if w >= h else (side * w // h, side)
