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


class AgentAsk(msgspec.Struct):
    """``POST /api/agent/ask_proxy`` with ``type: ai_chat`` (§2.9)."""

    type: str
    ai_chat_model: str = ""
    ai_chat_enable_search: bool = False
    project_id: str | None = None
    messages: list[Message] = msgspec.field(default_factory=list)
    g_recaptcha_token: str | None = None
    user_s_input: str | None = None


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
