"""Request bodies the simulated upstream accepts, decoded semantically (genspark-protocol.md §1.4).

Clients send compact, alphabetically ordered Go-style JSON or anything else equivalent: only the
meaning counts. Unknown keys are ignored (messages carry ``is_prompt``, ``session_state``, ``id``,
``project_id``…), message ``content`` stays loose (string, parts list, or anything).
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec


class BadBody(ValueError):
    """The body is not what the endpoint needs; the text goes back as a 400 text/plain."""


class Message(msgspec.Struct):
    role: str | None = None
    content: Any = None
    tool_calls: Any = None  # only to refuse it on ask_proxy (§12.5 E20)


class ModelConfig(msgspec.Struct):
    model: str = ""
    generation_count: int | None = None  # not sent by deanxv; the web UI's image count [I]


class ExtraData(msgspec.Struct):
    models: list[str] = msgspec.field(default_factory=list)
    request_web_knowledge: bool = False
    model_configs: list[ModelConfig] = msgspec.field(default_factory=list)


class CopilotAsk(msgspec.Struct):
    """``POST /api/copilot/ask`` (§2.1, §2.2, §2.4)."""

    type: str
    messages: list[Message] = msgspec.field(default_factory=list)
    current_query_string: str = ""
    extra_data: ExtraData = msgspec.field(default_factory=ExtraData)
    g_recaptcha_token: str | None = None
    user_s_input: str | None = None


class ModelParams(msgspec.Struct):
    """``model_params`` of the image and video agents (§12.7.1, §12.7.6); the rest is ignored."""

    type: str | None = None
    model: str | None = None
    aspect_ratio: str | None = None
    image_size: str | None = None
    generation_count: int | None = None
    quality: str | None = None
    tier: str | None = None
    duration: str | int | None = None  # a string in VID's body (§12.7.6)


class AgentAsk(msgspec.Struct):
    """``POST /api/agent/ask_proxy`` (§12.2.3, §12.7.1): every body variant of §12.2.3 decodes;
    unknown keys (``pending``, ``sendStatus``, ``session_state``, ``writingContent``…) are ignored."""

    type: str
    ai_chat_model: str = ""
    ai_chat_enable_search: bool = False
    use_moa_proxy: bool = False
    moa_models: list[str] = msgspec.field(default_factory=list)
    models: list[str] | None = None  # §12.2.5: MUST be present for MoA
    project_id: str | None = None
    last_seen_event_index: int | None = None
    messages: list[Message] = msgspec.field(default_factory=list)
    g_recaptcha_token: str | None = None
    user_s_input: str | None = None
    model_params: ModelParams = msgspec.field(default_factory=ModelParams)


class TaskStatusQuery(msgspec.Struct):
    """``POST /api/ig_tasks_status`` and ``/api/vg_tasks_status`` (§2.3)."""

    task_ids: list[str]


T = TypeVar("T")


def decode(body: bytes, kind: type[T]) -> T:
    """Decode ``body`` as ``kind``; a literal ``null`` (the §2.8 captcha bug) is a BadBody too."""
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.DecodeError as error:
        raise BadBody(f"invalid JSON body: {error}") from None
    except msgspec.ValidationError as error:
        raise BadBody(f"invalid request: {error}") from None
