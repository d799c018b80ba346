"""Images and videos, upstream side: one attempt per cookie, run through the one failover loop.

An attempt (genspark-protocol.md §2.2–§2.4) is three upstream calls on one cookie:

1. `POST /api/copilot/ask` with a `COPILOT_MOA_IMAGE` / `COPILOT_MOA_VIDEO` body (`generation_body`);
   its `message_result` carries a JSON *string* naming the task ids (§3.4.4, §3.4.5). The result
   is classified first: "Server overloaded" (a failed reCAPTCHA, §4.1 E6) moves the request to
   another cookie instead of ending as the old project's "No valid task IDs received".
2. `POST /api/ig_tasks_status` / `vg_tasks_status`, an SSE stream of `TASKS_STATUS_UPDATE`
   progress lines and one `TASKS_STATUS_COMPLETE` with `final_status` (`TaskBoard`, pure).
3. The outcome: the URLs of the tasks that succeeded and the reasons of those that did not.

What a poll outcome means (decisions):

* some URLs: the answer, with the failed tasks listed next to it (partial success);
* no URL, and every task reported a failure status: the generation failed upstream. That is not
  the cookie's fault, so the attempt "succeeds" (the cookie is credited) with no URLs, and the
  client gets 502 `generation_failed` (we cannot tell a refused prompt from a model failure);
* no URL otherwise (the poll stream ended early, unknown tasks, success without URLs): another
  cookie is tried (the old project re-polled with the same cookie, §2.3).

`GenerationRun` runs the attempts in the app nursery exactly as chat does (a channel and a cancel
scope, chat.ChatService.start) and collects the single result under the overall deadline
`IMAGE_TIMEOUT` / `VIDEO_TIMEOUT` (504 `generation_timeout` when it passes; cancelling the scope
closes the upstream poll connection).
"""

from __future__ import annotations

import base64
import enum
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import msgspec
import trio

from ..errors import ApiError, upstream_error
from ..pool.cookies import Lease
from ..pool.failover import Completed, Failed, RunItem, Won
from ..runtime import Runtime
from ..upstream import drift
from ..upstream.classify import TRUNCATED, Failure, FailureKind, classify_result
from ..upstream.events import MediaReady, ProjectStarted, TasksAccepted, UpstreamFailure
from ..upstream.sse import UpstreamEvent, decode_json
from .media import extension_for
from .media_prep import upload_file

log = logging.getLogger("genspark2api.generation")

ASK_PATH = "/api/copilot/ask"
ProgressCallback = Callable[[int], None]
# Upstream accepted the tasks: (task ids, the cookie that owns them, the project), so a video job
# can be saved and, after a restart, polled again on that cookie instead of being submitted twice.
AcceptedCallback = Callable[[tuple[str, ...], Lease | None, str | None], None]


class MediaKind(enum.StrEnum):
    IMAGE = "image"
    VIDEO = "video"


@dataclass(frozen=True, slots=True)
class _KindSpec:
    ask_type: str
    poll_path: str
    result_key: str                 # key of the task list inside message_result.content
    url_keys: tuple[str, ...]       # per-task URL lists in final_status, preferred first
    timeout_setting: str


_SPECS = {
    # §2.3: the legacy poll preferred image_urls_nowatermark; the SSE poll may carry it too [I].
    MediaKind.IMAGE: _KindSpec("COPILOT_MOA_IMAGE", "/api/ig_tasks_status", "generated_images",
                               ("image_urls_nowatermark", "image_urls"), "IMAGE_TIMEOUT"),
    MediaKind.VIDEO: _KindSpec("COPILOT_MOA_VIDEO", "/api/vg_tasks_status", "generated_videos",
                               ("video_urls_nowatermark", "video_urls"), "VIDEO_TIMEOUT"),
}


@dataclass(frozen=True, slots=True)
class Reference:
    """A user image guiding the generation, already fetched and checked (images.load_references)."""

    mime: str
    data: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class GenerationJob:
    """One validated image or video request, independent of the endpoint that received it."""

    kind: MediaKind
    model: str                                  # catalog id (aliases already resolved)
    prompt: str
    options: dict[str, Any] = field(default_factory=dict)  # model_configs[0] keys beyond `model`
    references: tuple[Reference, ...] = ()
    count: int = 1                              # images wanted (OpenAI `n`)


# ------------------------------------------------------------------------------ body (pure)


def model_config(job: GenerationJob) -> dict[str, Any]:
    """`extra_data.model_configs[0]`: the web UI's defaults (§2.2, §2.4), then the request's options.

    `generation_count` is the web UI's image count [I]; upstream may still make more or fewer
    tasks, so callers take at most `count` URLs.
    """
    if job.kind is MediaKind.IMAGE:
        config: dict[str, Any] = {
            "aspect_ratio": "auto",
            "fashion_profile_id": None,
            "generation_count": job.count,
            "hd": False,
            "model": job.model,
            "reflection_enabled": False,
            "style": "auto",
            "use_personalized_models": False,
        }
    else:
        config = {"aspect_ratio": "", "duration": 0, "model": job.model, "reflection_enabled": False}
    config.update(job.options)
    return config


def generation_body(job: GenerationJob, content: str | list[dict[str, Any]], token: str | None) -> dict[str, Any]:
    """The `/api/copilot/ask` body of §2.2 (images) or §2.4 (videos)."""
    spec = _SPECS[job.kind]
    extra: dict[str, Any] = {"imageModelMap": {}, "model_configs": [model_config(job)]}
    if job.kind is MediaKind.IMAGE:
        extra.update(llm_model="gpt-4o", writingContent=None)  # §2.2; the video body has neither
    body: dict[str, Any] = {
        "action_params": {},
        "current_query_string": f"type={spec.ask_type}",
        "extra_data": extra,
        "messages": [{"role": "user", "content": content}],
        "type": spec.ask_type,
        "user_s_input": job.prompt,
    }
    if token is not None:
        body["g_recaptcha_token"] = token
    return body


async def message_content(job: GenerationJob, client: Any, lease: Lease) -> str | list[dict[str, Any]]:
    """The prompt, or reference parts then the prompt. Uploads belong to the attempt's cookie.

    Images: uploaded and sent as `private_file` parts named `image.<ext>`, as the newest client
    does (mc5024, 2026, §2.2). Videos: inline `image_url` data URIs, the only form recorded for
    image-to-video (§2.4).
    """
    if not job.references:
        return job.prompt
    parts: list[dict[str, Any]] = []
    for ref in job.references:
        if job.kind is MediaKind.IMAGE:
            parts.append(await upload_file(client, lease, ref.data, ref.mime, f"image.{extension_for(ref.mime)}"))
        else:
            uri = f"data:{ref.mime};base64," + base64.b64encode(ref.data).decode("ascii")
            parts.append({"type": "image_url", "image_url": {"url": uri}})
    parts.append({"type": "text", "text": job.prompt})
    return parts


# ------------------------------------------------------------------------------ results (pure)


def task_ids(content: Any, result_key: str) -> list[str]:
    """The task ids in `message_result.content`, a JSON document encoded as a string (§2.2)."""
    doc = decode_json(content.encode()) if isinstance(content, str) else content
    items = doc.get(result_key) if isinstance(doc, dict) else None
    ids = [i.get("task_id") for i in items if isinstance(i, dict)] if isinstance(items, list) else []
    return list(dict.fromkeys(t for t in ids if isinstance(t, str) and t))


def _result_dict(event: UpstreamEvent) -> dict[str, Any]:
    return {k: v for k, v in msgspec.structs.asdict(event).items() if v is not None}


_FAILED_STATUSES = frozenset({"FAILURE", "FAILED", "ERROR", "CANCELLED", "CANCELED", "REJECTED"})


@dataclass(slots=True)
class TaskBoard:
    """What the task-status stream has said so far, for one set of tasks. Pure: feed events."""

    task_ids: tuple[str, ...]
    url_keys: tuple[str, ...]
    progress: dict[str, int] = field(default_factory=dict)
    final: dict[str, Any] | None = None
    latest: dict[str, dict[str, Any]] = field(default_factory=dict)
    rounds: int = 0

    def feed(self, event: Any) -> bool:
        """Take one parsed event; True once the final status has arrived.

        Besides the G1 lines (§2.3) it reads §12.7.3's `{"tasks": {<id>: {...}}}` rounds, whose
        entries carry no progress number: each round moves the estimate on a little.
        """
        if not isinstance(event, dict):
            return False
        tasks = event.get("tasks")
        if isinstance(tasks, dict):
            self.rounds += 1
            for task, entry in tasks.items():
                if task in self.task_ids and isinstance(entry, dict):
                    self.latest[task] = entry
                    self.progress[task] = max(self.progress.get(task, 0), min(90, 10 * self.rounds))
        kind = event.get("type")
        if kind == "TASKS_STATUS_UPDATE":
            task, value = event.get("task_id"), event.get("progress")
            if task in self.task_ids and isinstance(value, int | float) and not isinstance(value, bool):
                self.progress[task] = max(0, min(99, int(value)))  # 100 only when complete
            return False
        if kind == "TASKS_STATUS_COMPLETE" or isinstance(event.get("final_status"), dict):
            # §12.7.3: TT-4 shows only `final_status`; §2.3's `type` may or may not come with it.
            final = event.get("final_status")
            self.final = final if isinstance(final, dict) else {}
            return True
        if not isinstance(tasks, dict):
            drift.unhandled_task_event(event)
        return False

    def entries(self) -> dict[str, dict[str, Any]]:
        """The newest entry per task: the final status where it came, else the last round's."""
        out = dict(self.latest)
        out.update({t: e for t, e in (self.final or {}).items() if isinstance(e, dict)})
        return out

    @property
    def overall_progress(self) -> int:
        if self.final is not None:
            return 100
        return sum(self.progress.get(t, 0) for t in self.task_ids) // max(1, len(self.task_ids))

    def outcome(self) -> tuple[list[str], list[str], list[str]]:
        """(one URL per successful task, reasons of failed tasks, reasons of tasks without a verdict)."""
        urls: list[str] = []
        failed: list[str] = []
        unknown: list[str] = []
        final = self.final or {}
        for task in self.task_ids:
            entry = final.get(task)
            if not isinstance(entry, dict):
                unknown.append(f"task {task}: no final status")
                continue
            status = str(entry.get("status") or "UNKNOWN").upper()
            found = next((u for key in self.url_keys for u in _strings(entry.get(key))), None)
            if status == "SUCCESS" and found:
                urls.append(found)  # §2.3: one file per task; deanxv took only the first URL
            elif status in _FAILED_STATUSES:
                reason = entry.get("error") or entry.get("message") or entry.get("reason")
                failed.append(f"task {task}: {status}" + (f" ({reason})" if isinstance(reason, str) and reason else ""))
            else:
                unknown.append(f"task {task}: {status}" + (" without a URL" if status == "SUCCESS" else ""))
        return urls, failed, unknown


def _strings(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str) and v] if isinstance(value, list) else []


# ------------------------------------------------------------------------------ one attempt


NO_TASKS = Failure(
    FailureKind.NETWORK,
    "upstream_no_tasks",
    "Genspark accepted the generation request but named no task (the old project's 'No valid task IDs "
    "received'; usually a failed reCAPTCHA check, genspark-protocol.md §2.2). Another cookie is tried.",
)


async def media_attempt(rt: Runtime, job: GenerationJob, on_progress: ProgressCallback | None,
                        lease: Lease, emit: Callable[[Any], Any]) -> None:
    """One try on one cookie: submit, read the task ids, poll, emit `MediaReady` once."""
    spec = _SPECS[job.kind]
    client = rt.client
    token = await client.recaptcha_token(lease.cookie)
    content = await message_content(job, client, lease)
    body = generation_body(job, content, token)
    project_id: str | None = None
    result: UpstreamEvent | None = None
    async with client.open_stream(ASK_PATH, cookie=lease.cookie, json=body, accept="*/*") as stream:
        async for event in stream.events():
            if event.type == "project_start" and event.id:
                project_id = event.id
                await emit(ProjectStarted(event.id))
            elif event.type == "message_result":
                result = event
                break  # §3.1: the last event; don't wait for the close
        if result is None:
            raise UpstreamFailure(stream.failure_from_other_text() or TRUNCATED)
    failure = classify_result(_result_dict(result))
    if failure is not None:
        raise UpstreamFailure(failure)
    ids = task_ids(result.content, spec.result_key)
    if not ids:
        raise UpstreamFailure(NO_TASKS)
    log.info("%s generation on %s: %d task(s) in project %s", job.kind, lease.masked, len(ids), project_id)

    board = TaskBoard(tuple(ids), spec.url_keys)
    async with client.open_stream(spec.poll_path, cookie=lease.cookie, json={"task_ids": ids}, accept="*/*") as stream:
        async for item in stream.objects():
            done = board.feed(item)
            if on_progress is not None:
                on_progress(board.overall_progress)
            if done:
                break
    urls, failed, unknown = board.outcome()
    if failed or unknown:
        log.warning("%s generation on %s: %d of %d task(s) gave nothing: %s",
                    job.kind, lease.masked, len(failed) + len(unknown), len(ids), "; ".join(failed + unknown))
    if not urls and (unknown or not failed):
        raise UpstreamFailure(Failure(
            FailureKind.NETWORK,
            "upstream_no_media",
            f"Task polling gave no {job.kind} URL ({'; '.join(unknown) or 'the stream ended early'}); "
            "another cookie is tried.",
        ))
    await emit(MediaReady(tuple(urls), tuple(failed + unknown), project_id))


# ------------------------------------------------------------------------------ running


@dataclass(frozen=True, slots=True)
class Generated:
    """The winning attempt's result; `lease` carries the cookie for downloads."""

    urls: tuple[str, ...]
    failed: tuple[str, ...]
    project_id: str | None
    lease: Lease | None


class GenerationRun:
    """Attempts running in the app nursery (like chat.ChatService.start); `outcome()` collects.

    `outcome()` may be wrapped in a short `move_on_after` and called again (keep-alives while a
    stream waits): what it read so far stays on the run. `close()` cancels the attempts, which
    closes their upstream connections; every path out of `outcome()` calls it.
    """

    def __init__(self, rt: Runtime, job: GenerationJob, *, on_progress: ProgressCallback | None = None,
                 on_accepted: AcceptedCallback | None = None) -> None:
        if rt.nursery is None:
            raise ApiError(503, "The service is not serving yet.", type="server_error", code="not_ready")
        self.rt = rt
        self.job = job
        spec = _SPECS[job.kind]
        self.timeout = rt.settings.image_timeout if job.kind is MediaKind.IMAGE else rt.settings.video_timeout
        self._timeout_name = spec.timeout_setting
        self.deadline = trio.current_time() + self.timeout
        self._send, self._recv = trio.open_memory_channel(math.inf)
        self._scope = trio.CancelScope()
        self._lease: Lease | None = None
        self._project: str | None = None
        self._media: MediaReady | None = None
        self._result: Generated | None = None
        self._on_accepted = on_accepted
        # §12.7: the ai_chat generation asks the ask_proxy agents; copilot keeps the §2.2 flow.
        attempt_fn = media_attempt if rt.settings.chat_protocol == "copilot" else _agent_attempt()
        attempt = partial(attempt_fn, rt, job, on_progress)
        rt.nursery.start_soon(self._produce, attempt)

    async def _produce(self, attempt: Any) -> None:
        # Tracked like chat answers, so SIGTERM ends it with a clear error, not a cut reply.
        self.rt.track(self._scope)
        try:
            with self._scope:
                # The service's one failover loop (its waiters share the pool's freed slots), unhedged.
                await self.rt.runner.run(attempt, self._send, hedge=False, capped=False)
        finally:
            self.rt.untrack(self._scope)

    def close(self) -> None:
        self._scope.cancel()
        self._recv.close()

    async def outcome(self) -> Generated:
        """The URLs (at least one), or an ApiError: the runner's, 502 all failed, 504 deadline.

        A cancellation from outside (a keep-alive tick, the client leaving) leaves the run going;
        whoever owns the run calls `close()` when it gives up on it.
        """
        with trio.move_on_at(self.deadline):
            while self._result is None:
                try:
                    item = await self._recv.receive()
                    self._observe(item)
                except trio.EndOfChannel:
                    self.close()
                    if self.rt.shutting_down:
                        raise self.rt.ended_early() from None
                    raise upstream_error(502, f"The {self.job.kind} generation ended without a result.",
                                         "upstream_truncated") from None
                except ApiError:
                    self.close()
                    raise
        self.close()
        result = self._result
        if result is None:
            raise upstream_error(
                504,
                f"The {self.job.kind} generation did not finish within {self._timeout_name}={self.timeout:g} s; "
                "the upstream tasks were abandoned. Raise the setting or try again.",
                "generation_timeout",
            )
        self._delete_project(result)
        if not result.urls:
            raise upstream_error(
                502,
                f"Genspark could not generate the {self.job.kind}: every task failed ({'; '.join(result.failed)}). "
                "This is not an account problem; change the prompt or try again.",
                "generation_failed",
            )
        return result

    def _observe(self, item: RunItem) -> None:
        if isinstance(item, Won):
            self._lease = item.lease
        elif isinstance(item, ProjectStarted):
            self._project = item.project_id
        elif isinstance(item, TasksAccepted):
            if self._on_accepted is not None:
                self._on_accepted(item.task_ids, self._lease, self._project)
        elif isinstance(item, MediaReady):
            self._media = item
        elif isinstance(item, Failed):
            raise item.error
        elif isinstance(item, Completed):
            media = self._media or MediaReady(())
            self._result = Generated(media.urls, media.failed, media.project_id or self._project, self._lease)

    def _delete_project(self, result: Generated) -> None:
        """§2.6, §5.9: with AUTO_DEL_CHAT=1 image and video projects are always deleted."""
        if self.rt.settings.auto_del_chat and result.project_id and result.lease is not None:
            delete_project(self.rt, result.lease, result.project_id)


def _agent_attempt() -> Any:
    from .media_agent import (
        agent_attempt,  # media_agent builds on this module's TaskBoard
    )

    return agent_attempt


def delete_project(rt: Runtime, lease: Lease, project_id: str) -> None:
    """Delete an upstream project in the background; never blocks or fails the answer."""

    async def delete() -> None:
        await rt.client.get_json("/api/project/delete", cookie=lease.cookie, params={"project_id": project_id})

    rt.background(f"delete project {project_id}", delete, timeout=30.0)


async def generate(rt: Runtime, job: GenerationJob, *, on_progress: ProgressCallback | None = None) -> Generated:
    """Run a generation to its end in the caller's time (the synchronous endpoints)."""
    run = GenerationRun(rt, job, on_progress=on_progress)
    try:
        return await run.outcome()
    finally:
        run.close()


async def download_all(rt: Runtime, result: Generated, urls: tuple[str, ...] | list[str]) -> list[bytes]:
    """Fetch generated files with the winning cookie and the proxy, each capped at MAX_FETCH_BYTES.

    URLs from the configured upstream are trusted (no SSRF guard); a failure is a 502.
    """
    cookie = result.lease.cookie if result.lease is not None else None
    out: list[bytes] = [b""] * len(urls)
    errors: list[Failure] = []

    async def one(index: int, url: str) -> None:
        try:
            out[index], _ = await rt.client.download(url, cookie=cookie, max_bytes=rt.settings.max_fetch_bytes)
        except UpstreamFailure as exc:
            errors.append(exc.failure)

    async with trio.open_nursery() as nursery:
        for index, url in enumerate(urls):
            nursery.start_soon(one, index, url)
    if errors:
        raise upstream_error(502, f"A generated file could not be downloaded: {errors[0].detail}", errors[0].code)
    return out
