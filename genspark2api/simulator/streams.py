"""Pure builders of the upstream event sequences ("scripts"), one per kind of answer.

A script is an iterable of steps: an event dict to send, or a ``Pause`` that the HTTP shell
(playback.py) turns into a sleep. Keeping time out of here makes every stream shape a plain unit
test; the shell alone knows the configured delays and the clock for extra heartbeats.

Field names chosen where the protocol doc has only inferences are documented on each builder.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from . import events as ev
from .answers import DETAIL_ANSWER_MODELS, WHOLE_ANSWER_MODELS, Answer
from .state import MediaKind, MediaTask, TaskOutcome


class PauseKind(enum.Enum):
    DELTA = "delta"  # before an answer delta: Simulator.answer_delay, with heartbeats if long
    POLL = "poll"  # between task-status progress rounds: Simulator.task_poll_interval
    FOREVER = "forever"  # go silent until the client leaves


@dataclass(frozen=True)
class Pause:
    kind: PauseKind
    message_id: str | None = None  # whose `_updatetime` heartbeat to send during a long pause
    seconds: float | None = None  # an exact sleep, overriding ``kind`` (ask_proxy keepalive slices)


Step = ev.Event | Pause

ANSWER_FIELD = "session_state.answer"  # G1 (§3.3)
CONTENT_FIELD = "content"  # G2 (§2.9, §12.4)
WORDS_PER_DELTA = 2
_TAG_CUTS = ("<tool_", "</tool_", "<function", "</function", "<invo", "<para", "``")  # mid-word, as a tokenizer would


def split_deltas(text: str) -> list[str]:
    """Cut ``text`` into word-ish deltas that concatenate back to it.

    Every ``<tool_call>`` / ``</tool_call>`` tag is cut after ``<tool_`` so a client's tool-call
    parser has to cope with a tag spread over two deltas.
    """
    cuts = {m.start() for m in re.finditer(r"\S+\s*", text)}
    cuts = {cut for i, cut in enumerate(sorted(cuts)) if i % WORDS_PER_DELTA == 0}
    for prefix in _TAG_CUTS:
        cuts |= {m.start() + len(prefix) for m in re.finditer(re.escape(prefix), text)}
    bounds = sorted(cuts | {0, len(text)})
    return [text[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]


def deltas(message_id: str, field_name: str, text: str) -> list[Step]:
    steps: list[Step] = []
    for piece in split_deltas(text):
        steps += [Pause(PauseKind.DELTA, message_id), ev.message_field_delta(message_id, field_name, piece)]
    return steps


def _with_heartbeat_midway(steps: list[Step], message_id: str, now: datetime) -> list[Step]:
    """Insert one ``_updatetime`` heartbeat in the middle of the answer (§3.1 rule 6, §3.4.1)."""
    middle = (len(steps) // 2) & ~1  # an even index: between a (Pause, delta) pair, not inside one
    return steps[:middle] + [ev.heartbeat(message_id, now)] + steps[middle:]


def project_title(text: str) -> str:
    return (text.strip()[:40] or "New chat").replace("\n", " ")


@dataclass(frozen=True)
class ChatIds:
    project_id: str
    message_id: str


def g1_chat_script(
    ids: ChatIds,
    answer: Answer,
    *,
    reported_models: list[str],
    new_project: bool,
    now: datetime,
) -> list[Step]:
    """A ``COPILOT_MOA_CHAT`` answer (§3.4.1–§3.4.3).

    Order: project_start, project_field ``name`` (new projects), ``session_state.models`` (the
    models actually used, which is how a degraded answer shows), Mixture-of-Agents drafts, the
    answerthink triple, search status, the answer, ``answer_is_finished``, the generated title
    and ``message_result``.

    Mixture-of-Agents drafts [I, §10.6]: one ``message_field_delta`` stream per model on
    ``session_state.layer_0_answer_<i>`` (i = the model's index in ``extra_data.models``), before
    the aggregated answer; every name starts with ``session_state.layer_`` as PR #41 expects.

    Variants: ``o1``/``o3-mini-high`` send the answer whole as a ``session_state.answer``
    ``message_field`` (§3.3); ``o1`` with search sends no answer deltas at all and puts
    ``{"detailAnswer": …, "markmap": …, "search_results": […]}`` in ``message_result.content``
    (§3.4.3; keys other than ``detailAnswer`` are [I]). Other search answers are followed by a
    ``streaming_markmap`` and a ``streaming_detail_answer[0]`` delta that a client must not show.
    """
    pid, mid = ids.project_id, ids.message_id
    model = reported_models[0] if len(reported_models) == 1 else ""
    detail_style = _detail_style(answer, reported_models)
    steps: list[Step] = [ev.project_start(pid)]
    if new_project:
        steps.append(ev.project_field(pid, "name", project_title(answer.question)))
    steps.append(ev.message_field(mid, "session_state.models", reported_models))
    for index, (_, draft) in enumerate(answer.drafts):
        steps += deltas(mid, f"session_state.layer_0_answer_{index}", draft)
    if answer.thinking:
        steps.append(ev.message_field(mid, "session_state.answerthink_is_started", True))
        for piece in answer.thinking:
            steps += [Pause(PauseKind.DELTA, mid), ev.message_field_delta(mid, "session_state.answerthink", piece)]
        steps.append(ev.message_field(mid, "session_state.answerthink_is_finished", True))
    if answer.search_results:
        steps.append(ev.message_field(mid, "session_state.thinking", "Searching the web\u2026"))
        steps.append(ev.message_field(mid, "session_state.search_status_top_bar_data", _top_bar(answer)))
    if detail_style:
        steps.append(ev.heartbeat(mid, now))
    elif model in WHOLE_ANSWER_MODELS:
        steps += [ev.message_field(mid, ANSWER_FIELD, answer.text), ev.heartbeat(mid, now)]
    else:
        steps += _with_heartbeat_midway(deltas(mid, ANSWER_FIELD, answer.text), mid, now)
    if answer.search_results and not detail_style:
        steps.append(ev.message_field_delta(mid, "session_state.streaming_markmap", _markmap(answer)))
        steps.append(ev.message_field_delta(mid, "session_state.streaming_detail_answer[0]", "Detail: " + answer.text))
    steps.append(ev.message_field(mid, "session_state.answer_is_finished", True))
    if new_project:
        steps.append(ev.project_field(pid, "name", "Simulated: " + project_title(answer.question)[:30]))
    content = _detail_answer_json(answer) if detail_style else answer.text
    layers = 1 if answer.drafts else 0
    state = ev.answer_session_state(reported_models, answer.text, layers=layers)
    steps.append(ev.message_result(mid, content, session_state=state))
    return steps


def _detail_style(answer: Answer, reported_models: list[str]) -> bool:
    """``o1`` with search answers with a detailAnswer JSON document (§3.4.3)."""
    return bool(answer.search_results) and len(reported_models) == 1 and reported_models[0] in DETAIL_ANSWER_MODELS


def _top_bar(answer: Answer) -> dict[str, Any]:
    """``search_status_top_bar_data``: ``search_results[{title, link, snippet}]`` is [C], ``status`` [I]."""
    return {"status": "finished", "search_results": [result.as_json() for result in answer.search_results]}


def _markmap(answer: Answer) -> str:
    return f"# {project_title(answer.question)}\n## Simulated sources\n"


def _detail_answer_json(answer: Answer) -> str:
    return json.dumps(
        {
            "detailAnswer": answer.text,
            "markmap": _markmap(answer),
            "search_results": [result.as_json() for result in answer.search_results],
        }
    )


def generation_script(
    ids: ChatIds, kind: MediaKind, tasks: list[MediaTask], *, prompt: str, now: datetime
) -> list[Step]:
    """``COPILOT_MOA_IMAGE`` / ``COPILOT_MOA_VIDEO`` (§3.4.4, §3.4.5).

    ``content`` holds ``{"generated_images"|"generated_videos": [{"task_id", "model", "status":
    "PENDING"}]}`` as a JSON *string*; the inner keys besides ``task_id`` are [I].
    """
    content = generation_content(kind, tasks)
    return [
        ev.project_start(ids.project_id),
        ev.project_field(ids.project_id, "name", project_title(prompt)),
        ev.heartbeat(ids.message_id, now),
        ev.message_result(ids.message_id, content, session_state=None),
    ]


def generation_content(kind: MediaKind, tasks: list[MediaTask]) -> str:
    key = "generated_images" if kind == "image" else "generated_videos"
    return json.dumps({key: [{"task_id": t.id, "model": t.model, "status": "PENDING"} for t in tasks]})


# --- abnormal streams (§3.4.6, §4.4) ---------------------------------------------------------


def free_limit_script(project_id: str, reset_at_unix: int | None = None) -> list[Step]:
    return [ev.project_start(project_id), ev.quota_exceeded_result(reset_at_unix)]


def session_limit_script(project_id: str, reset_at_unix: int) -> list[Step]:
    return [ev.project_start(project_id), ev.session_limit_result(reset_at_unix)]


def overloaded_script(message_id: str, now: datetime) -> list[Step]:
    """May 2025 form: a heartbeat and the E6 result, no project_start (issue #35)."""
    return [ev.heartbeat(message_id, now), ev.overloaded_result()]


def retired_script() -> list[Step]:
    return [ev.retired_result()]


def stall_script(project_id: str) -> list[Step]:
    return [ev.project_start(project_id), Pause(PauseKind.FOREVER)]


def empty_answer_script(ids: ChatIds, models: list[str]) -> list[Step]:
    state = ev.answer_session_state(models, "")
    return [ev.project_start(ids.project_id), ev.message_result(ids.message_id, "", session_state=state)]


def g2_error_script(ids: ChatIds) -> list[Step]:
    """§4.1 E12: the error arrives as an event after the stream started, then the server closes."""
    message = "Rate limit exceeded, you are sending requests too quickly"
    return [ev.project_start(ids.project_id), ev.message_start(ids.message_id), ev.g2_error(message)]


def cut_stream(steps: Iterable[Step], keep_deltas: int = 2) -> list[Step]:
    """The stream as sent up to ``keep_deltas`` answer deltas, never reaching ``message_result``."""
    kept: list[Step] = []
    seen = 0
    for step in steps:
        if isinstance(step, dict) and step["type"] == "message_result":
            break
        kept.append(step)
        if isinstance(step, dict) and step.get("field_name") in (ANSWER_FIELD, CONTENT_FIELD):
            seen += step["type"] == "message_field_delta"
            if seen == keep_deltas:
                break
    return kept


# --- task status polling (§2.3, §2.4, §3.4.4) ------------------------------------------------

PROGRESS_ROUNDS = 3  # progress lines per task before a task that will finish does finish


def file_url(base_url: str, task: MediaTask) -> str:
    """A copilot task's file; an ask_proxy agent task has its own ``/api/files/s/`` link (§12.7.4)."""
    if task.urls:
        return task.urls[0]
    return f"{base_url}/sim-files/{task.id}.{'png' if task.kind == 'image' else 'mp4'}"


def final_status_entry(task: MediaTask | None, kind: MediaKind, base_url: str) -> dict[str, Any]:
    """One task's entry in ``final_status``; failures and unknown ids get empty URL lists [I, §10.7]."""
    urls_key = "image_urls" if kind == "image" else "video_urls"
    if task is None or task.kind != kind:
        return {"status": "NOT_FOUND", urls_key: []}
    if task.outcome is not TaskOutcome.SUCCESS:
        return {"status": "FAILURE", urls_key: []}
    url = file_url(base_url, task)
    if kind == "image":
        return {"status": "SUCCESS", "image_urls": [url], "image_urls_nowatermark": [url]}
    return {"status": "SUCCESS", "video_urls": [url]}


def poll_script(
    task_ids: list[str], tasks: Mapping[str, MediaTask], kind: MediaKind, base_url: str
) -> Iterator[Step]:
    """The ``ig_tasks_status`` / ``vg_tasks_status`` stream: progress rounds, then the final line.

    Known tasks report ``PROCESSING`` with rising ``progress`` for ``PROGRESS_ROUNDS`` rounds; a
    ``NEVER`` task keeps doing so forever (progress stalls at 95), so the stream never completes.
    Unknown ids are reported once as ``NOT_FOUND`` in ``final_status``.
    """
    known = [tasks[t] for t in dict.fromkeys(task_ids) if t in tasks and tasks[t].kind == kind]
    round_number = 0
    while True:
        round_number += 1
        running = [t for t in known if t.outcome is TaskOutcome.NEVER or round_number <= PROGRESS_ROUNDS]
        if not running:
            break
        for task in running:
            progress = min(95, round_number * 100 // (PROGRESS_ROUNDS + 1))
            yield ev.tasks_status_update(task.id, progress)
        yield Pause(PauseKind.POLL)
    yield ev.tasks_status_complete({t: final_status_entry(tasks.get(t), kind, base_url) for t in task_ids})


def legacy_status(task: MediaTask | None, task_id: str, base_url: str) -> dict[str, Any]:
    """``GET /api/spark/image_generation_task_status`` (§3.4.4 legacy): PENDING on the first call."""
    data: dict[str, Any] = {"task_id": task_id, "image_urls": [], "image_urls_nowatermark": []}
    if task is None or task.kind != "image":
        data["status"] = "NOT_FOUND"
    elif task.legacy_polls <= 1 or task.outcome is TaskOutcome.NEVER:
        data["status"] = "PENDING"
    elif task.outcome is TaskOutcome.FAILURE:
        data["status"] = "FAILURE"
    else:
        url = file_url(base_url, task)
        data.update(status="SUCCESS", image_urls=[url], image_urls_nowatermark=[url])
    return {"status": 0, "message": "success", "data": data}
