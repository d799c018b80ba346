"""Upstream SSE events as Genspark's Python backend writes them (genspark-protocol.md §1.5, §3.1, §3.2).

Events are plain dicts on purpose: the wire format is Python ``json.dumps`` with its default
separators (``", "`` and ``": "``) and ``ensure_ascii=True``, with the identifying key (``id`` or
``message_id``) first and ``"type"`` last. Some consumers match raw line prefixes such as
``{"id":`` (§3.1 rule 3), so insertion order *is* the protocol here; msgspec's compact output
would be the wrong bytes.

Every constructor is pure: ids and clocks are passed in.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

Event = dict[str, Any]

# §3.4.6 / §4.1 E5: the free-usage line, Jan 2025 form (no tool_calls keys). Detectors match it
# byte-for-byte including the "data: " prefix, so its key order is fixed.
QUOTA_EXCEEDED_TEXT = "You've reached your free usage limit today"
# §3.4.6 / §4.1 E6: the overloaded answer, which in practice means "reCAPTCHA check failed" (#35).
OVERLOADED_TEXT = "Server overloaded, please try again later."
# §0.2 / §4.1 E10: BigBat looks for both "this feature has been retired" and "ai chat".
RETIRED_TEXT = "This feature has been retired. Please use AI Chat instead."


def encode_sse(event: Event) -> bytes:
    """One ``data: <json>\\n\\n`` frame; no ``event:``/``id:`` lines exist upstream (§1.5)."""
    return b"data: " + json.dumps(event).encode("ascii") + b"\n\n"


def updatetime_value(now: datetime) -> str:
    """The heartbeat timestamp: naive ISO with microseconds, e.g. ``2025-05-05T14:33:48.992304`` (§3.1 rule 6)."""
    return now.replace(tzinfo=None).isoformat(timespec="microseconds")


def project_start(project_id: str) -> Event:
    return {"id": project_id, "type": "project_start"}


def project_field(project_id: str, name: str, value: Any) -> Event:
    return {"id": project_id, "field_name": name, "field_value": value, "type": "project_field"}


def message_start(message_id: str) -> Event:
    """G2 only (§2.9); the shape beyond ``message_id``/``type`` is unknown [I]."""
    return {"message_id": message_id, "type": "message_start"}


def message_field(message_id: str, name: str, value: Any) -> Event:
    return {"message_id": message_id, "field_name": name, "field_value": value, "type": "message_field"}


def message_field_delta(message_id: str, name: str, delta: str) -> Event:
    return {"message_id": message_id, "field_name": name, "delta": delta, "type": "message_field_delta"}


def heartbeat(message_id: str, now: datetime) -> Event:
    return message_field(message_id, "_updatetime", updatetime_value(now))


def message_result(
    message_id: str,
    content: str,
    *,
    session_state: dict[str, Any] | None,
    action: dict[str, Any] | None = None,
    is_prompt: bool = False,
    with_tool_keys: bool = True,
) -> Event:
    """The final G1 message (§3.2). ``with_tool_keys`` adds the three null keys seen since May 2025 (#35)."""
    event: Event = {
        "id": message_id,
        "role": "assistant",
        "content": content,
        "action": action,
        "recommend_actions": None,
        "is_prompt": is_prompt,
        "render_template": None,
        "session_state": session_state,
        "message_type": None,
    }
    if with_tool_keys:
        event.update(tool_calls=None, tool_call_id=None, thinking_blocks=None)
    event["type"] = "message_result"
    return event


def answer_session_state(models: list[str], answer: str, *, layers: int = 0) -> dict[str, Any]:
    """``message_result.session_state`` of a finished answer (§3.3, last paragraph) [I]."""
    return {"models": models, "layers": layers, "answer": answer, "answer_is_finished": True}


def _limit_action(action_type: str) -> dict[str, Any]:
    return {
        "type": action_type,
        "query_string": None,
        "update_flow_data": None,
        "label": None,
        "user_s_input": None,
        "action_params": None,
    }


def _limit_result(text: str, action_type: str, session_state: dict[str, Any], *, with_tool_keys: bool) -> Event:
    return message_result(
        "",
        text,
        session_state=session_state,
        action=_limit_action(action_type),
        is_prompt=True,
        with_tool_keys=with_tool_keys,
    )


def quota_exceeded_result(reset_at_unix: int | None = None) -> Event:
    """The exact E5 line of §3.4.6 (old form: no tool keys).

    With ``reset_at_unix`` the content text goes on with a ``{time:<unix seconds>}`` marker, the
    way mc5024 finds E9's reset time (§4.1 E9); that E5 can carry one too is [I].
    """
    text = QUOTA_EXCEEDED_TEXT
    if reset_at_unix is not None:
        text += f". It resets at {{time:{reset_at_unix}}}."
    state = {"consume_usage_quota_exceeded": True}
    return _limit_result(text, "ACTION_QUOTA_EXCEEDED", state, with_tool_keys=False)


def session_limit_result(reset_at_unix: int) -> Event:
    """E9 (mc5024, 2026): markers are [C], the wording and placement of ``{time:…}`` are [I]."""
    text = f"You have reached the session limit of your plan. The limit resets at {{time:{reset_at_unix}}}."
    state = {"session_limit_exceeded": True}
    return _limit_result(text, "ACTION_SESSION_LIMIT", state, with_tool_keys=True)


def overloaded_result() -> Event:
    """The May 2025 E6 form (§3.4.6): ``id`` empty, tool keys present."""
    return message_result("", OVERLOADED_TEXT, session_state=None)


def retired_result() -> Event:
    """E10: what the retired copilot chat answers [I: status 200 and this wording are our choice]."""
    return message_result("", RETIRED_TEXT, session_state=None)


def agent_notification() -> Event:
    """§12.4.2: the ai_chat keepalive; the keys besides ``type`` are [I] (§12.12 q1)."""
    return {"notification_type": "keepalive", "type": "agent_notification"}


def g2_message_result(message_id: str, content: str, *, session_state: dict[str, Any] | None = None) -> Event:
    """The ask_proxy final event (§12.4.2): ``type`` first, a nested ``message``.

    ``session_state`` carries ``_llm_model``, ``_llm_usage``, ``_finish_reason`` on an answer
    (§12.4.2 [I for the placement of ``_finish_reason``]) and is ``{}`` on a limit answer (§12.5
    example). None leaves it out, as in the image agent's result (§12.7.2).
    """
    message: dict[str, Any] = {"id": message_id, "role": "assistant", "content": content}
    if session_state is not None:
        message["session_state"] = session_state
    return {"type": "message_result", "message": message}


def with_event_index(event: Event, index: int) -> Event:
    """``event`` with ``_event_index`` (§12.4.1) where §12.4.2 shows it: just before a final
    ``type``, else last (``message_result`` has ``type`` first)."""
    keys = list(event)
    if keys and keys[-1] == "type":
        return {**{k: event[k] for k in keys[:-1]}, "_event_index": index, "type": event["type"]}
    return {**event, "_event_index": index}


def g2_error(message: str) -> Event:
    """The G2 ``error`` event (§2.9, §4.1 E12). Only the type name is known; the shape is [I]."""
    return {"message": message, "type": "error"}


def tasks_status_update(task_id: str, progress: int) -> Event:
    """A progress line of the task-status stream (§3.4.4: [I], only the final line is [C])."""
    return {"type": "TASKS_STATUS_UPDATE", "task_id": task_id, "status": "PROCESSING", "progress": progress}


def tasks_status_complete(final_status: dict[str, dict[str, Any]]) -> Event:
    """The one line deanxv acts on (§2.3): ``type`` first here, as quoted in the protocol doc."""
    return {"type": "TASKS_STATUS_COMPLETE", "final_status": final_status}
