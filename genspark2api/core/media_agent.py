"""Images and videos on today's `ask_proxy` agents (genspark-protocol.md §12.7), one attempt per cookie.

No September source uses `/api/copilot/ask` for media any more (§12.0); the `ai_chat` protocol
generation therefore asks the image agent (`type: image_generation_agent`, §12.7.1) and, by the
same pattern, the video agent (`type: video_generation_agent`, §12.7.6 [I: no source verified it]).
The older flow of generation.py stays for `GENSPARK_CHAT_PROTOCOL=copilot`.

An attempt:

1. Fetch a fresh reCAPTCHA token for this cookie (§12.6.1: single use, ~2 min; without one the
   image agent answers a fake 5-hour limit, E14b) and POST the body of §12.7.1.
2. Read the answer stream (`AgentMediaReader`, pure): `image_generation_agent.results` items with
   URLs (done), with a `task_id` and no URL (accepted, still generating), or an empty list with a
   limit or credit text (refused, §12.7.2).
3. Refused → the failure moves the request to another cookie. Accepted → `TasksAccepted` goes out
   first: it commits the request to this cookie, because a task accepted upstream must never be
   submitted again elsewhere (that spends credits twice). Pending tasks are then polled on the same
   cookie through `ig_tasks_status` / `vg_tasks_status` (§12.7.3) until each has a verdict, within
   the run's deadline (IMAGE_TIMEOUT / VIDEO_TIMEOUT).

Effective values are the upstream's (§12.7.5: unknown models and sizes are silently coerced); the
served model of each item is logged when it differs from the one asked for.
"""

from __future__ import annotations

import base64
import logging
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from ..pool.cookies import Lease
from ..runtime import Runtime
from ..upstream.classify import TRUNCATED, Failure, FailureKind
from ..upstream.events import MediaReady, ProjectStarted, TasksAccepted, UpstreamFailure
from ..upstream.protocols import LIMIT_FIELD, limit_text
from ..upstream.signals import classify_answer, session_limit
from ..upstream.sse import UpstreamEvent
from .generation import GenerationJob, MediaKind, ProgressCallback, TaskBoard

log = logging.getLogger("genspark2api.media_agent")

ASK_PATH = "/api/agent/ask_proxy"
POLL_RETRY_SECONDS = 3.0       # between polls when a poll stream ends without a verdict (TT polls every 5 s)
POLL_FAILURES_MAX = 5          # consecutive poll errors before the request gives up (no resubmission)


@dataclass(frozen=True, slots=True)
class _AgentSpec:
    ask_type: str
    results_field: str
    poll_path: str
    url_keys: tuple[str, ...]       # per-task URL lists, preferred first (§12.7.2: no watermark first)
    referer: str


_SPECS = {
    MediaKind.IMAGE: _AgentSpec("image_generation_agent", "image_generation_agent.results", "/api/ig_tasks_status",
                                ("image_urls_nowatermark", "image_urls"), "/ai_image"),          # §12.7.1 (PYI)
    MediaKind.VIDEO: _AgentSpec("video_generation_agent", "video_generation_agent.results", "/api/vg_tasks_status",
                                ("video_urls", "video_url"), "/ai_video"),                        # §12.7.6 [I]
}


# ------------------------------------------------------------------------------ body (pure)


def model_params(job: GenerationJob) -> dict[str, Any]:
    """`model_params` as the UI sends it (§12.7.1 TT-3/TT-4 capture), then the request's options."""
    options = dict(job.options)
    if job.kind is MediaKind.IMAGE:
        hd = bool(options.pop("hd", False))
        quality = options.pop("quality", None)
        params: dict[str, Any] = {
            "type": "image", "model": job.model, "aspect_ratio": options.pop("aspect_ratio", None) or "auto",
            # §12.7.1: auto_prompt false with an explicit size "generates directly", prompt not rewritten.
            "auto_prompt": bool(options.pop("auto_prompt", False)), "style": options.pop("style", "auto"),
            "image_size": options.pop("image_size", None) or ("4k" if hd else "2k"),
            # §12.5: quality "auto" is upstream zero cost; OpenAI's "hd" asks for the size instead.
            "quality": quality if quality in ("auto", "low", "medium", "high") else "auto",
            "background_mode": True, "camera_control": None, "generation_count": job.count,
        }
        if job.model == "gpt-image-2.5":
            params["tier"] = "flare"     # §12.7.1: sent only with gpt-image-2.5
    else:
        duration = options.pop("duration", 0)
        params = {
            "type": "video", "model": job.model, "aspect_ratio": options.pop("aspect_ratio", None) or "auto",
            # §12.7.6 (VID): duration is a string there; "auto" lets the model choose.
            "duration": str(duration) if duration else "auto", "video_size": "auto", "generation_count": 1,
        }
        auto_prompt = options.pop("reflection_enabled", None)
        if auto_prompt is not None:
            params["auto_prompt"] = bool(auto_prompt)
    params.update(options)
    return params


def reference_part(mime: str, data_url: str, size: int) -> dict[str, Any]:
    """An `image_url` part with every key of the UI's part schema (§12.7.5, TT-4 capture)."""
    return {
        "type": "image_url", "text": None,
        "image_url": {"url": data_url, "image_id": None, "public_url": None, "mime_type": mime, "detail": None,
                      "size_bytes": size},
        "private_file": None, "file": None, "input_audio": None,
        "hide_in_ui": False, "render_template": None, "render_data": None,
    }


def agent_body(job: GenerationJob, token: str | None) -> dict[str, Any]:
    """The §12.7.1 body. The image UI always starts a new project (`project_id: null`, §12.3)."""
    spec = _SPECS[job.kind]
    content: str | list[dict[str, Any]] = job.prompt
    if job.references:
        parts = [
            reference_part(r.mime, f"data:{r.mime};base64," + base64.b64encode(r.data).decode("ascii"), len(r.data))
            for r in job.references
        ]
        # §12.7.5: TT writes the text part as "N reference images attached, …".
        text = f"{len(parts)} reference image{'s' if len(parts) > 1 else ''} attached, generate with reference to them: {job.prompt}"
        content = [*parts, {"type": "text", "text": text}]
    message_id = str(uuid.uuid4())
    return {
        "model_params": model_params(job),
        "writingContent": None,
        "sas_ask_origin": "typed",
        "type": spec.ask_type,
        "project_id": None,
        "messages": [{"role": "user", "id": message_id, "content": content, "pending": True, "sendStatus": "sending",
                      "_deepDiveStateNegContent": job.prompt, "thinking": False}],
        "user_s_input": job.prompt,
        "client_message_id": message_id,
        "g_recaptcha_token": token or "",
        "is_private": True,
        "push_token": "",
        "last_seen_event_index": -1,
        "chat_session_id": str(uuid.uuid4()),   # TT: "random is fine"
    }


# ------------------------------------------------------------------------------ the answer (pure)


_FAILED_TEXT = re.compile(r"FAIL|REJECT|CENSOR|ERROR", re.IGNORECASE)   # §12.7.3 (TT's markers)


def item_verdict(entry: dict[str, Any], url_keys: tuple[str, ...]) -> tuple[str, str | None]:
    """("done", url) | ("failed", reason) | ("pending", None) for one result item or poll entry (§12.7.3)."""
    url = next((u for key in url_keys for u in _url_list(entry.get(key))), None)
    status = entry.get("status")
    reason = entry.get("failure_reason") or entry.get("error_code") or entry.get("message")
    negative = isinstance(status, int | float) and not isinstance(status, bool) and status < 0
    if negative or entry.get("failure_reason") or (isinstance(status, str) and _FAILED_TEXT.search(status)):
        return "failed", f"{status}" + (f" ({reason})" if isinstance(reason, str) and reason else "")
    if url is not None:
        return "done", url   # TT: "the image field is present" is success, whatever the status says
    return "pending", None


def _url_list(value: Any) -> list[str]:
    if isinstance(value, str) and value:
        return [value]
    return [v for v in value if isinstance(v, str) and v] if isinstance(value, list) else []


@dataclass(slots=True)
class AgentMediaReader:
    """What one agent answer stream said. Pure: feed events until `finished`."""

    results_field: str
    project_id: str | None = None
    items: list[dict[str, Any]] | None = None
    limit_text: str = ""
    answer: str = ""
    result_seen: bool = False
    finished: bool = False

    def feed(self, event: UpstreamEvent) -> None:
        if event.type == "project_start" and event.id:
            self.project_id = event.id
        elif event.field_name == self.results_field and isinstance(event.field_value, list):
            self.items = [i for i in event.field_value if isinstance(i, dict)]   # §12.7.2
        elif event.field_name == LIMIT_FIELD:
            self.limit_text = limit_text(event.field_value) or self.limit_text
        elif event.type == "message_result":
            self.result_seen = True
            message = event.message if isinstance(event.message, dict) else {}
            content = message.get("content") if isinstance(message.get("content"), str) else event.content
            self.answer = content if isinstance(content, str) else ""
        elif event.type == "project_field" and event.field_name == "status" and event.field_value == "FINISHED":
            self.finished = True   # §12.4.1: the last event
        elif event.type == "error":
            raise UpstreamFailure(Failure(FailureKind.NETWORK, "upstream_error_event",
                                          f"Genspark sent an error event: {str(event.error or event.message)[:200]}"))


@dataclass(slots=True)
class Accepted:
    """The tasks of an accepted request and what is known of each."""

    done: dict[str, str] = field(default_factory=dict)      # task id -> URL
    failed: dict[str, str] = field(default_factory=dict)    # task id -> reason
    pending: list[str] = field(default_factory=list)
    models: set[str] = field(default_factory=set)


def accepted_tasks(items: list[dict[str, Any]], url_keys: tuple[str, ...]) -> Accepted:
    out = Accepted()
    for n, item in enumerate(items):
        task = item.get("task_id") if isinstance(item.get("task_id"), str) and item.get("task_id") else f"#{n + 1}"
        if isinstance(item.get("model"), str):
            out.models.add(item["model"])
        verdict, value = item_verdict(item, url_keys)
        if verdict == "done" and value:
            out.done[task] = value
        elif verdict == "failed":
            out.failed[task] = value or "failed"
        elif not task.startswith("#"):
            out.pending.append(task)
    return out


# ------------------------------------------------------------------------------ one attempt


NOTHING_MADE = Failure(
    FailureKind.NETWORK,
    "upstream_no_tasks",
    "The Genspark agent answered without starting any task and without a limit signal (genspark-protocol.md "
    "§12.7.2: 'the agent answered in text, or upstream changed'); another cookie is tried.",
)


async def agent_attempt(rt: Runtime, job: GenerationJob, on_progress: ProgressCallback | None,
                        lease: Lease, emit: Callable[[Any], Any]) -> None:
    spec = _SPECS[job.kind]
    client = rt.client
    token = await client.recaptcha_token(lease.cookie)
    reader = AgentMediaReader(spec.results_field)
    async with client.open_stream(ASK_PATH, cookie=lease.cookie, json=agent_body(job, token),
                                  referer=spec.referer, accept="*/*") as stream:
        async for event in stream.events():
            reader.feed(event)
            if event.type == "project_start" and event.id:
                await emit(ProjectStarted(event.id))
            if reader.finished:
                break
        if not reader.result_seen and reader.items is None:
            raise UpstreamFailure(stream.failure_from_other_text() or TRUNCATED)
    now = time.time()
    image = job.kind is MediaKind.IMAGE
    accepted = accepted_tasks(reader.items or [], spec.url_keys)
    if not (accepted.done or accepted.pending or accepted.failed):
        # Refused (§12.7.2 outcome 3). A limit notice beside an accepted task does not count:
        # "a response with a task_id is not a wall" (TT-4), and resubmitting would pay twice.
        if reader.limit_text:
            raise UpstreamFailure(session_limit(reader.limit_text, now=now, image=image, token_sent=token is not None))
        signal = classify_answer(reader.answer, now=now, image=image, token_sent=token is not None)
        raise UpstreamFailure(signal or NOTHING_MADE)
    served = accepted.models - {job.model}
    if served:
        log.warning("%s agent on %s coerced %s to %s (§12.7.5)", job.kind, lease.masked, job.model, ", ".join(sorted(served)))
    ids = [*accepted.done, *accepted.failed, *accepted.pending]
    log.info("%s agent on %s: %d task(s) accepted in project %s", job.kind, lease.masked, len(ids), reader.project_id)
    await emit(TasksAccepted(tuple(ids)))   # from here on, never re-submitted on another cookie
    if accepted.pending:
        await _poll(rt, spec, lease, accepted, on_progress)
    urls = tuple(accepted.done[t] for t in ids if t in accepted.done)
    failed = tuple(f"task {t}: {accepted.failed[t]}" for t in ids if t in accepted.failed)
    await emit(MediaReady(tuple(client.absolute(u) for u in urls), failed, reader.project_id))


async def poll_tasks(rt: Runtime, kind: MediaKind, lease: Lease, task_ids: tuple[str, ...],
                     on_progress: ProgressCallback | None = None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Poll tasks accepted earlier (a video job resumed after a restart) on the cookie that owns
    them until each has a verdict; (URLs of the done ones, reasons of the failed ones). Nothing is
    submitted again: the tasks already cost their credits."""
    spec = _SPECS[kind]
    accepted = Accepted(pending=list(dict.fromkeys(task_ids)))
    await _poll(rt, spec, lease, accepted, on_progress)
    urls = tuple(rt.client.absolute(accepted.done[t]) for t in task_ids if t in accepted.done)
    failed = tuple(f"task {t}: {accepted.failed[t]}" for t in task_ids if t in accepted.failed)
    return urls, failed


async def _poll(rt: Runtime, spec: _AgentSpec, lease: Lease, accepted: Accepted, on_progress: ProgressCallback | None) -> None:
    """Poll the pending tasks on the owning cookie until each has a verdict (§12.7.3)."""
    board = TaskBoard(tuple(accepted.pending), spec.url_keys)
    errors = 0
    while accepted.pending:
        try:
            async with rt.client.open_stream(spec.poll_path, cookie=lease.cookie,
                                             json={"task_ids": list(accepted.pending)}, accept="*/*") as stream:
                async for item in stream.objects():
                    board.feed(item)
                    for entry_id, entry in board.entries().items():
                        verdict, value = item_verdict(entry, spec.url_keys)
                        if entry_id in accepted.pending and verdict != "pending":
                            accepted.pending.remove(entry_id)
                            (accepted.done if verdict == "done" else accepted.failed)[entry_id] = value or verdict
                    if on_progress is not None:
                        on_progress(board.overall_progress)
                    if not accepted.pending:
                        break
            errors = 0
        except UpstreamFailure as exc:
            errors += 1
            log.warning("polling %s on %s failed (%d): %s", spec.poll_path, lease.masked, errors, exc.failure.detail)
            if errors >= POLL_FAILURES_MAX:
                raise
        if accepted.pending:
            await trio.sleep(POLL_RETRY_SECONDS)
