"""Pure builders of the ``/api/agent/ask_proxy`` streams of genspark-protocol.md §12.

Scripts are built without ``_event_index``; ``numbered`` adds it last, continuing the project's
count (§12.4.1), after ``with_keepalives`` has put the ``agent_notification`` keepalives of a
slow answer in place, so that they are numbered too and playback only sleeps.

Texts of the in-band signals (§12.5) are the exact strings the sources quote.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from . import events as ev
from .state import MediaTask, TaskOutcome
from .streams import ChatIds, Pause, PauseKind, Step, split_deltas

CONTENT = "content"
LIMIT_FIELD = "session_state.session_limit_message"  # §12.5 E14, §12.4.1
SEARCH_FIELD = "session_state.search_queries"  # §12.4.3 variant (b) [I: the name is ours]
REASONING_FIELD = "reasoning_content"  # §12.4.4: only with readable_reasoning [I]
IMAGE_RESULTS = "image_generation_agent.results"  # §12.7.2
VIDEO_RESULTS = "video_generation_agent.results"  # §12.7.6 [I]

LIMIT_URL = "https://www.genspark.ai/helpcenter/membership-plans#usage"
CHAT_LIMIT_TEXT = f"AI Chat [5-hour limit]({LIMIT_URL}) reached."  # §12.5 E13
IMAGE_LIMIT_TEXT = f"AI Image [5-hour limit]({LIMIT_URL}) reached."  # §12.5 E14
APPROACHING_LIMIT_TEXT = "Approaching 5-hour limit."  # §12.5 E14a
PLACEHOLDER_TEXT = "Sorry, I couldn't produce a response this turn."  # §12.5 E15
CREDITS_GONE_TEXT = "您的积分已用完"  # §12.5 E16
IMAGE_CREDITS_GONE_TEXT = "You've used all your credits for this Genspark account."  # §12.5 E16b
THROTTLE_TEXT = "You are sending messages too quickly. Rate limit reached, please slow down."  # §12.5 E17
DECLINED_TEXT = "The model declined to answer this request."  # §12.5 E23
# §12.3 AX-H Bug #1: "I don't have tools, this was simulated"-style identity refusal [I: wording].
REFUSAL_TEXT = "I can't continue this: I don't have tools, and the earlier conversation was simulated."


def with_reset(text: str, reset_at: int) -> str:
    """§12.5 E14: ``Resets {time:N}``, N in unix seconds."""
    return f"{text} Resets {{time:{reset_at}}}"


# --- numbering and keepalives ----------------------------------------------------------------


def numbered(steps: Iterable[Step], first: int) -> tuple[list[Step], int]:
    """§12.4.1: every event gets an increasing ``_event_index`` from ``first``; returns the next."""
    out: list[Step] = []
    index = first
    for step in steps:
        if isinstance(step, Pause):
            out.append(step)
        else:
            out.append(ev.with_event_index(step, index))
            index += 1
    return out, index


def with_keepalives(steps: Iterable[Step], answer_delay: float, interval: float) -> list[Step]:
    """Split each delta pause longer than ``interval`` into slices with an ``agent_notification``
    keepalive between them (§12.4.1: ai_chat has no G1 ``_updatetime`` heartbeat)."""
    out: list[Step] = []
    for step in steps:
        if not (isinstance(step, Pause) and step.kind is PauseKind.DELTA and step.seconds is None):
            out.append(step)
            continue
        remaining = answer_delay
        while 0 < interval < remaining:
            out += [Pause(PauseKind.DELTA, seconds=interval), ev.agent_notification()]
            remaining -= interval
        out.append(Pause(PauseKind.DELTA, seconds=remaining))
    return out


def _deltas(message_id: str, field_name: str, text: str) -> list[Step]:
    steps: list[Step] = []
    for piece in split_deltas(text):
        steps += [Pause(PauseKind.DELTA), ev.message_field_delta(message_id, field_name, piece)]
    return steps


def _finished(project_id: str) -> ev.Event:
    return ev.project_field(project_id, "status", "FINISHED")  # §12.4.1: the last event


# --- ai_chat ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChatReply:
    """What one ai_chat answer says and how Genspark labels it."""

    text: str  # message.content (and the `content` message_field)
    served: str  # session_state._llm_model (§12.8.3)
    usage: dict[str, int]  # session_state._llm_usage (§12.4.2 [I: keys])
    title: str | None = None  # project_field `name`, first turn only
    search_query: str | None = None  # §12.4.3: the question searched for
    thinking: tuple[str, ...] = ()  # readable reasoning, only with the readable_reasoning option


def search_preamble(query: str) -> str:
    """§12.4.3 (AX-A [O]): ``I'll search for …`` and a ``{"queries": [...]}`` line."""
    return f'I\'ll search for "{query}".\n{json.dumps({"queries": [query]})}\n'


def chat_script(ids: ChatIds, reply: ChatReply, *, search_variant: str = "content") -> list[Step]:
    """The normal ai_chat stream of §12.4.2, in its order.

    With search, the preamble comes first: as ``content`` deltas (variant a) or as deltas of
    ``session_state.search_queries`` (variant b). The ``content`` message_field and
    ``message.content`` hold the answer alone, without the preamble (§12.4.3 leaves it open;
    we pick "without" so variant (a) shows a client that trusts the deltas over the final text).
    """
    pid, mid = ids.project_id, ids.message_id
    steps: list[Step] = [ev.project_start(pid), ev.agent_notification(), ev.message_start(mid)]
    if reply.search_query is not None:
        field = CONTENT if search_variant == "content" else SEARCH_FIELD
        steps += _deltas(mid, field, search_preamble(reply.search_query))
    for piece in reply.thinking:
        steps += [Pause(PauseKind.DELTA), ev.message_field_delta(mid, REASONING_FIELD, piece)]
    steps += _deltas(mid, CONTENT, reply.text)
    steps.append(ev.message_field(mid, CONTENT, reply.text))
    state = {"_llm_model": reply.served, "_llm_usage": reply.usage, "_finish_reason": "stop"}
    steps.append(ev.g2_message_result(mid, reply.text, session_state=state))
    if reply.title is not None:
        steps.append(ev.project_field(pid, "name", reply.title))
    steps.append(_finished(pid))
    return steps


def signal_script(
    ids: ChatIds, text: str, *, limit_field: bool = False, session_state: dict[str, Any] | None = None
) -> list[Step]:
    """An in-band signal answer (§12.5 example): HTTP 200, a message id, the text as one
    ``content`` delta and ``message.content``; with ``limit_field`` also as
    ``session_state.session_limit_message``."""
    pid, mid = ids.project_id, ids.message_id
    steps: list[Step] = [ev.project_start(pid), ev.message_start(mid)]
    if limit_field:
        steps.append(ev.message_field(mid, LIMIT_FIELD, text))
    steps.append(ev.message_field_delta(mid, CONTENT, text))
    steps.append(ev.g2_message_result(mid, text, session_state=session_state or {}))
    steps.append(_finished(pid))
    return steps


def cut_before_finished(steps: Iterable[Step]) -> list[Step]:
    """§12.11 item 4: the stream ends right after ``message_result`` (no name, no FINISHED)."""
    kept: list[Step] = []
    for step in steps:
        kept.append(step)
        if isinstance(step, dict) and step["type"] == "message_result":
            break
    return kept


# --- image and video agents (§12.7) -------------------------------------------------------------


def image_item(task: MediaTask, *, inline: bool) -> dict[str, Any]:
    """One ``image_generation_agent.results`` item (§12.7.2) with the coerced model and size."""
    item: dict[str, Any] = {"task_id": task.id, "status": "PICKED", "model": task.model,
                            "image_size": task.image_size, "prompt": task.prompt,
                            "image_urls": [], "image_urls_nowatermark": []}
    if inline and task.outcome is TaskOutcome.SUCCESS:
        item.update(status="SUCCESS", image_urls=list(task.urls), image_urls_nowatermark=list(task.urls_nowatermark))
    elif inline and task.outcome is TaskOutcome.FAILURE:
        item.update(status=-1, failure_reason=FAILURE_REASON)
    return item


def video_item(task: MediaTask, *, inline: bool) -> dict[str, Any]:
    """One ``video_generation_agent.results`` item (§12.7.6, VID's keys [I])."""
    item: dict[str, Any] = {"task_id": task.id, "status": "PICKED", "model": task.model,
                            "video_url": "", "video_urls": [], "duration": task.duration}
    if inline and task.outcome is TaskOutcome.SUCCESS:
        item.update(status="SUCCESS", video_url=task.urls[0], video_urls=list(task.urls))
    elif inline and task.outcome is TaskOutcome.FAILURE:
        item.update(status=-1, failure_reason=FAILURE_REASON)
    return item


FAILURE_REASON = "simulated failure: the prompt asked for it"


def media_script(ids: ChatIds, results_field: str, items: list[dict[str, Any]], content: str) -> list[Step]:
    """The §12.7.2 stream: project_start, message_start, the results, message_result, FINISHED."""
    pid, mid = ids.project_id, ids.message_id
    return [
        ev.project_start(pid),
        ev.message_start(mid),
        ev.project_field(pid, results_field, items),
        ev.g2_message_result(mid, content),
        _finished(pid),
    ]


def media_refusal_script(ids: ChatIds, results_field: str, text: str, *, limit_field: bool) -> list[Step]:
    """§12.7.2 outcome 3: an empty results list plus the limit message (E14/E14a/E14b) or,
    without ``limit_field``, a credit text in the answer (E16b)."""
    pid, mid = ids.project_id, ids.message_id
    steps: list[Step] = [ev.project_start(pid), ev.message_start(mid)]
    if limit_field:
        steps.append(ev.message_field(mid, LIMIT_FIELD, text))
    steps += [ev.project_field(pid, results_field, []), ev.g2_message_result(mid, text, session_state={}), _finished(pid)]
    return steps


# --- ig_tasks_status for agent tasks (§12.7.3) ---------------------------------------------------

POLL_ROUNDS = 3  # PICKED rounds before a task that will finish does finish
NOT_FOUND = {"status": -2, "message": "task not found"}  # §12.7.3 (TT-4 [O])


def agent_final_entry(task: MediaTask | None) -> dict[str, Any]:
    if task is None:
        return dict(NOT_FOUND)
    if task.outcome is TaskOutcome.SUCCESS:
        return {"status": "SUCCESS", "image_urls": list(task.urls), "image_urls_nowatermark": list(task.urls_nowatermark)}
    return {"status": -1, "failure_reason": FAILURE_REASON, "image_urls": [], "image_urls_nowatermark": []}


def agent_poll_script(task_ids: list[str], tasks: Mapping[str, MediaTask]) -> Iterator[Step]:
    """``{"tasks": {...}}`` rounds (PICKED; an unknown id once as -2), then the final line with
    ``type`` (§12.7.3: TT-4 shows only ``final_status``, §2.3's ``type`` is kept [C 2025])."""
    ids = list(dict.fromkeys(task_ids))
    known = [tasks[t] for t in ids if t in tasks]
    unknown = {t: dict(NOT_FOUND) for t in ids if t not in tasks}
    round_number = 0
    while True:
        round_number += 1
        running = [t for t in known if t.outcome is TaskOutcome.NEVER or round_number <= POLL_ROUNDS]
        line: dict[str, Any] = {t.id: {"status": "PICKED"} for t in running}
        if round_number == 1:
            line.update(unknown)
        if not line:
            break
        yield {"tasks": line}
        if not running:
            break
        yield Pause(PauseKind.POLL)
    yield ev.tasks_status_complete({t: agent_final_entry(tasks.get(t)) for t in ids})


def task_detail(task: MediaTask | None, *, done: bool) -> dict[str, Any]:
    """``GET /api/spark/image_generation_task_detail`` (§12.7.3 alt, PYI's "real response format")."""
    if task is None or task.kind != "image" or task.generation != "agent":
        return dict(NOT_FOUND)
    width, height = task.pixels
    data: dict[str, Any] = {"id": task.id, "status": "PICKED", "image_urls": [], "image_urls_nowatermark": [],
                            "image_ratios": [f"{width}/{height}"], "generation_options": {"width": width, "height": height}}
    if done and task.outcome is TaskOutcome.SUCCESS:
        data.update(status="SUCCESS", image_urls=list(task.urls), image_urls_nowatermark=list(task.urls_nowatermark))
    elif done and task.outcome is TaskOutcome.FAILURE:
        data.update(status=-1, failure_reason=FAILURE_REASON)
    return {"status": 0, "data": data}
