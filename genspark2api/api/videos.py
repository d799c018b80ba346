"""Videos: the old project's synchronous endpoint and OpenAI's asynchronous video jobs.

* `POST /v1/videos/generations` (genspark-protocol.md §2.4, the old README): `{model,
  aspect_ratio, duration, prompt, auto_prompt, image, response_format}` in, `{created, data:
  [{url, revised_prompt}]}` out once the video is done (bounded by VIDEO_TIMEOUT).
* `POST /v1/videos`, `GET /v1/videos[/{id}[/content]]`, `DELETE /v1/videos/{id}`: OpenAI's job
  shape. A job runs in the app nursery (guarded, with the VIDEO_TIMEOUT deadline), so it
  finishes or times out whether or not its client comes back.

Jobs (`VideoJobStore`): at most VIDEO_JOBS_MAX, finished ones kept for VIDEO_JOBS_TTL seconds; when
full, the oldest finished job makes room, and when every job is still running a new one is refused
with 429. With DATA_DIR every job is saved (`SavedVideoJob`, pool/store.py) and outlives a restart:
a finished one can still be fetched, and one whose tasks upstream had accepted resumes polling them
on the cookie that owns them (`resume_job`; never submitted again, that would pay twice). A job
that had not reached that point fails as `job_interrupted` (we cannot tell whether its submission
got through). Shutting down never saves a resumable job as failed.

`seconds` and `size` echo the request, or "auto" when the client left the choice to the model (the
upstream then gets duration 0 / aspect ratio "").
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import trio
from msgspec import UNSET, Struct, UnsetType

from ..core.generation import (
    Generated,
    GenerationJob,
    GenerationRun,
    MediaKind,
    Reference,
    generate,
)
from ..core.media_agent import poll_tasks
from ..core.media_links import FileBody, MediaUrls, open_file
from ..errors import ApiError, bad_request, upstream_error
from ..pool.cookies import Lease
from ..pool.store import StateStore
from ..runtime import Runtime
from ..upstream.catalog import VIDEO_ALIASES, VIDEO_MODELS
from ..upstream.events import UpstreamFailure
from .images import (
    RESPONSE_FORMATS,
    ReferenceSource,
    choice_field,
    count_field,
    generated_answer,
    load_references,
    model_field,
    nearest_ratio,
    reference_sources,
    text_field,
)

log = logging.getLogger("genspark2api.videos")

DEFAULT_VIDEO_MODEL = "sora-2"
VIDEO_ASPECT_RATIOS = ("16:9", "9:16", "1:1", "4:3", "3:4")
MAX_SECONDS = 60
JOB_STATUSES = ("queued", "in_progress", "completed", "failed")


@dataclass(frozen=True, slots=True)
class VideoRequest:
    model: str
    prompt: str
    duration: int                    # 0: the model's default
    aspect_ratio: str                # "": the model's default
    auto_prompt: bool
    response_format: str
    references: tuple[ReferenceSource, ...]
    seconds: str = "auto"            # as the job API reports it
    size: str = "auto"

    def job(self, references: tuple[Reference, ...]) -> GenerationJob:
        options = {"aspect_ratio": self.aspect_ratio, "duration": self.duration, "reflection_enabled": self.auto_prompt}
        return GenerationJob(MediaKind.VIDEO, self.model, self.prompt, options, references)


# ------------------------------------------------------------------------------ parsing (pure)


def _model(doc: dict[str, Any]) -> str:
    return model_field(doc, DEFAULT_VIDEO_MODEL, VIDEO_MODELS, "a video", VIDEO_ALIASES)


def _flag(doc: dict[str, Any], key: str) -> bool:
    value = doc.get(key, False)
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
        return value.lower() in ("true", "1")
    if not isinstance(value, bool):
        raise bad_request(f"'{key}' must be true or false.", param=key, code="invalid_type")
    return value


def parse_video_generation(doc: Any) -> VideoRequest:
    """`POST /v1/videos/generations`, the old project's body (§2.4)."""
    if not isinstance(doc, dict):
        raise bad_request("The request body must be a JSON object.", code="invalid_json")
    model = _model(doc)
    prompt = text_field(doc, "prompt", required=True) or ""
    aspect = text_field(doc, "aspect_ratio") or ""
    if aspect and aspect not in VIDEO_ASPECT_RATIOS + ("auto",):
        raise bad_request(f"Invalid 'aspect_ratio' {aspect!r}; use one of: {', '.join(VIDEO_ASPECT_RATIOS)}.",
                          param="aspect_ratio", code="invalid_value")
    duration = count_field(doc, "duration", 0, MAX_SECONDS, 0)
    response_format = choice_field(doc, "response_format", RESPONSE_FORMATS) or "url"
    refs = tuple(reference_sources(doc, ("image",)))
    return VideoRequest(model, prompt, duration, "" if aspect == "auto" else aspect, _flag(doc, "auto_prompt"),
                        response_format, refs)


def parse_video_job(doc: Any, files: Sequence[ReferenceSource] = ()) -> VideoRequest:
    """`POST /v1/videos` (OpenAI): prompt, model, seconds, size, input_reference; plus our extras."""
    if not isinstance(doc, dict):
        raise bad_request("The request body must be a JSON object or a multipart form.", code="invalid_json")
    model = _model(doc)
    prompt = text_field(doc, "prompt", required=True) or ""
    seconds = count_field(doc, "seconds", 1, MAX_SECONDS, 0)
    size = text_field(doc, "size") or "auto"
    aspect = "" if size == "auto" else nearest_ratio(size, VIDEO_ASPECT_RATIOS)
    explicit = choice_field(doc, "aspect_ratio", VIDEO_ASPECT_RATIOS)
    if explicit:
        aspect = explicit
    reference = doc.get("input_reference")
    if isinstance(reference, dict) and reference.get("file_id"):
        raise bad_request("'input_reference.file_id' is not supported: send the file or an image_url.",
                          param="input_reference", code="unsupported_value")
    refs = (*files, *reference_sources(doc, ("input_reference",)))
    return VideoRequest(model, prompt, seconds, aspect, _flag(doc, "auto_prompt"), "url", refs,
                        str(seconds) if seconds else "auto", size)


# ------------------------------------------------------------------------------ synchronous


async def video_generations_answer(rt: Runtime, req: VideoRequest, media: MediaUrls) -> bytes:
    references = await load_references(req.references, rt.settings)
    result = await generate(rt, req.job(references))
    return await generated_answer(rt, result, result.urls, req.prompt, req.response_format, media, MediaKind.VIDEO)


# ------------------------------------------------------------------------------ jobs


class JobError(Struct):
    code: str
    message: str
    type: str | None = None


class VideoObject(Struct, tag_field="object", tag="video"):
    """OpenAI's video job; `completed_at`/`expires_at` are null until it finishes, `error` only when failed."""

    id: str
    created_at: int
    status: str
    model: str
    progress: int
    prompt: str
    seconds: str
    size: str
    completed_at: int | None = None
    expires_at: int | None = None
    error: JobError | UnsetType = UNSET


class VideoList(Struct, tag_field="object", tag="list"):
    data: list[VideoObject]
    first_id: str | None
    last_id: str | None
    has_more: bool


class VideoDeleted(Struct, tag_field="object", tag="video.deleted"):
    id: str
    deleted: bool = True


@dataclass(slots=True)
class VideoJob:
    id: str
    request: VideoRequest
    created_at: float
    status: str = "queued"
    progress: int = 0
    error: ApiError | None = None
    completed_at: float | None = None
    result: Generated | None = None
    scope: trio.CancelScope = field(default_factory=trio.CancelScope, repr=False)
    # Once upstream accepted the tasks (GenerationRun's on_accepted): what a restart resumes.
    task_ids: tuple[str, ...] = ()
    cookie_key: str | None = None
    project_id: str | None = None

    @property
    def finished(self) -> bool:
        return self.status in ("completed", "failed")

    def set_progress(self, value: int) -> None:
        if not self.finished:
            self.status = "in_progress"
            self.progress = max(self.progress, min(99, value))

    def complete(self, result: Generated, now: float) -> None:
        self.status, self.progress, self.result, self.completed_at = "completed", 100, result, now

    def fail(self, error: ApiError, now: float) -> None:
        self.status, self.error, self.completed_at = "failed", error, now

    def view(self, ttl: float) -> VideoObject:
        r = self.request
        error = JobError(self.error.code or "error", self.error.message, self.error.type) if self.error else UNSET
        done = int(self.completed_at) if self.completed_at is not None else None
        expires = int(self.completed_at + ttl) if self.completed_at is not None else None
        return VideoObject(self.id, int(self.created_at), self.status, r.model, self.progress, r.prompt,
                           r.seconds, r.size, done, expires, error)


class SavedError(Struct):
    status: int
    message: str
    code: str | None = None
    type: str | None = None


class SavedVideoJob(Struct, forbid_unknown_fields=False):
    """A video job as the state database keeps it (`video_jobs.doc`); references are not kept:
    a job is never submitted again after a restart."""

    id: str
    created_at: float
    status: str
    progress: int
    model: str
    prompt: str
    duration: int
    aspect_ratio: str
    auto_prompt: bool
    response_format: str
    seconds: str
    size: str
    completed_at: float | None = None
    error: SavedError | None = None
    urls: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()
    task_ids: tuple[str, ...] = ()
    cookie_key: str | None = None
    project_id: str | None = None


def saved_job(job: VideoJob) -> SavedVideoJob:
    r, e, result = job.request, job.error, job.result
    error = SavedError(e.status, e.message, e.code, e.type) if e is not None else None
    cookie_key = result.lease.key if result is not None and result.lease is not None else job.cookie_key
    return SavedVideoJob(job.id, job.created_at, job.status, job.progress, r.model, r.prompt, r.duration,
                         r.aspect_ratio, r.auto_prompt, r.response_format, r.seconds, r.size, job.completed_at,
                         error, result.urls if result else (), result.failed if result else (), job.task_ids,
                         cookie_key, result.project_id if result else job.project_id)


def job_from_saved(saved: SavedVideoJob, lease: Lease | None) -> VideoJob:
    """The job again; `lease` is the pool's handle on its cookie (None once that cookie left)."""
    request = VideoRequest(saved.model, saved.prompt, saved.duration, saved.aspect_ratio, saved.auto_prompt,
                           saved.response_format, (), saved.seconds, saved.size)
    error = None
    if saved.error is not None:
        error = ApiError(saved.error.status, saved.error.message, type=saved.error.type or "server_error",
                         code=saved.error.code)
    result = Generated(saved.urls, saved.failed, saved.project_id, lease) if saved.status == "completed" else None
    return VideoJob(saved.id, request, saved.created_at, saved.status, saved.progress, error, saved.completed_at,
                    result, task_ids=saved.task_ids, cookie_key=saved.cookie_key, project_id=saved.project_id)


class VideoJobStore:
    """Jobs, newest last. Pure bookkeeping (the clock is passed in, nothing awaits); `store` (the
    state database, or one that keeps nothing) gets every change through `changed`."""

    def __init__(self, max_jobs: int, ttl: float, clock: Callable[[], float] = time.time,
                 store: StateStore | None = None) -> None:
        self.max_jobs = max_jobs
        self.ttl = ttl
        self.clock = clock
        self.store = store if store is not None else StateStore()
        self._jobs: dict[str, VideoJob] = {}

    def changed(self, job: VideoJob) -> None:
        """Save the job's current state (coalesced by the store: cheap on every progress tick)."""
        if self.store.persistent and job.id in self._jobs:
            self.store.replace("video_jobs", {"id": job.id, "created_at": job.created_at,
                                              "doc": msgspec.json.encode(saved_job(job))})

    def _forget(self, job_id: str) -> None:
        del self._jobs[job_id]
        self.store.delete("video_jobs", job_id)

    def _purge(self) -> None:
        now = self.clock()
        for job in [j for j in self._jobs.values() if j.finished and j.completed_at is not None]:
            if now - job.completed_at >= self.ttl:  # type: ignore[operator]
                self._forget(job.id)

    def create(self, request: VideoRequest) -> VideoJob:
        """A new queued job; the oldest finished job makes room, else 429 when full."""
        self._purge()
        if len(self._jobs) >= self.max_jobs:
            oldest = next((j for j in self._jobs.values() if j.finished), None)
            if oldest is None:
                raise ApiError(
                    429,
                    f"All {self.max_jobs} video job slots (VIDEO_JOBS_MAX) hold running jobs; wait for one to "
                    "finish or delete one, then retry.",
                    type="rate_limit_error", code="video_jobs_full", headers={"Retry-After": "30"},
                )
            self._forget(oldest.id)
        job = VideoJob("video_" + secrets.token_hex(16), request, self.clock())
        self._jobs[job.id] = job
        self.changed(job)
        return job

    def restore(self, lease_of: Callable[[str | None], Lease | None]) -> list[VideoJob]:
        """Take back the saved jobs at start; returns the unfinished ones that can resume polling.

        An unfinished job without accepted tasks fails as `job_interrupted`; a damaged row is dropped.
        """
        resumable = []
        for row in sorted(self.store.rows("video_jobs"), key=lambda r: r["created_at"]):
            try:
                saved = msgspec.json.decode(row["doc"], type=SavedVideoJob)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                log.warning("video job %s: its saved state is unreadable (%s); dropped", row["id"], exc)
                self.store.delete("video_jobs", row["id"])
                continue
            job = job_from_saved(saved, lease_of(saved.cookie_key))
            self._jobs[job.id] = job
            if job.finished:
                continue
            if job.task_ids and job.cookie_key:
                resumable.append(job)
            else:
                job.fail(ApiError(502, "The service restarted before Genspark accepted this job; it was not "
                                  "submitted again (it may or may not have been charged). Create it again.",
                                  type="server_error", code="job_interrupted"), self.clock())
                self.changed(job)
        self._purge()
        while len(self._jobs) > self.max_jobs:
            self._forget(next(iter(self._jobs)))
        return [j for j in resumable if j.id in self._jobs]

    def get(self, job_id: str) -> VideoJob:
        self._purge()
        job = self._jobs.get(job_id)
        if job is None:
            raise ApiError(404, f"No video job with id '{job_id}' (jobs are kept VIDEO_JOBS_TTL seconds after "
                           "they finish).", param="video_id", code="video_not_found")
        return job

    def newest_first(self) -> list[VideoJob]:
        self._purge()
        return list(reversed(self._jobs.values()))

    def remove(self, job_id: str) -> VideoJob:
        job = self.get(job_id)
        self._forget(job_id)
        return job


def start_job(rt: Runtime, store: VideoJobStore, job: VideoJob, references: tuple[Reference, ...]) -> None:
    """Run `job` in the app nursery; its state always ends `completed` or `failed`.

    `references` are loaded by the caller, so a bad input_reference is a 400, not a failed job.
    """

    def progress(value: int) -> None:
        job.set_progress(value)
        store.changed(job)

    def accepted(task_ids: tuple[str, ...], lease: Lease | None, project_id: str | None) -> None:
        job.task_ids, job.cookie_key, job.project_id = task_ids, lease.key if lease else None, project_id
        job.status = "in_progress"
        store.changed(job)

    async def run() -> None:
        generation: GenerationRun | None = None
        try:
            with job.scope:
                generation = GenerationRun(rt, job.request.job(references), on_progress=progress, on_accepted=accepted)
                job.status = "in_progress"
                job.complete(await generation.outcome(), store.clock())
                log.info("video job %s completed", job.id)
        except ApiError as exc:
            log.warning("video job %s failed: %s", job.id, exc.message)
            job.fail(exc, store.clock())
        finally:
            if generation is not None:
                generation.close()
            _settle(rt, store, job)

    # The generation has its own VIDEO_TIMEOUT deadline; this one only guards against our bugs.
    rt.background(f"video job {job.id}", run, timeout=rt.settings.video_timeout + 120)


def resume_job(rt: Runtime, store: VideoJobStore, job: VideoJob) -> None:
    """Poll the accepted tasks of a job saved before a restart, on the cookie that owns them,
    within what is left of its VIDEO_TIMEOUT (counted from its creation)."""
    remaining = job.created_at + rt.settings.video_timeout - store.clock()

    def progress(value: int) -> None:
        job.set_progress(value)
        store.changed(job)

    async def run() -> None:
        rt.track(job.scope)   # SIGTERM ends it like an answer in flight; it resumes again next start
        try:
            with job.scope:
                lease = rt.pool.detached_lease(job.cookie_key)
                if lease is None:
                    raise upstream_error(502, "The cookie that owns this job's tasks is no longer configured; "
                                         "the video cannot be fetched.", "job_cookie_removed")
                if remaining <= 0:
                    raise upstream_error(504, f"The video generation did not finish within VIDEO_TIMEOUT="
                                         f"{rt.settings.video_timeout:g} s.", "generation_timeout")
                log.info("video job %s: resuming the poll of %d task(s) on %s", job.id, len(job.task_ids), lease.masked)
                with trio.move_on_after(remaining) as deadline:
                    urls, failed = await poll_tasks(rt, MediaKind.VIDEO, lease, job.task_ids, progress)
                if deadline.cancelled_caught:
                    raise upstream_error(504, f"The video generation did not finish within VIDEO_TIMEOUT="
                                         f"{rt.settings.video_timeout:g} s.", "generation_timeout")
                if not urls:
                    raise upstream_error(502, f"Genspark could not generate the video: every task failed "
                                         f"({'; '.join(failed)}).", "generation_failed")
                job.complete(Generated(urls, failed, job.project_id, lease), store.clock())
                log.info("video job %s completed after a restart", job.id)
        except ApiError as exc:
            log.warning("video job %s failed: %s", job.id, exc.message)
            job.fail(exc, store.clock())
        except UpstreamFailure as exc:
            log.warning("video job %s failed: %s", job.id, exc.failure.detail)
            job.fail(upstream_error(502, f"Polling the video's tasks failed: {exc.failure.detail}", exc.failure.code),
                     store.clock())
        finally:
            rt.untrack(job.scope)
            _settle(rt, store, job)

    rt.background(f"video job {job.id} (resumed)", run, timeout=max(remaining, 0) + 120)


def _settle(rt: Runtime, store: VideoJobStore, job: VideoJob) -> None:
    """A job's run ended: it is finished, in memory and in the store, except that a shutdown
    never saves a job that the next start can resume (accepted tasks) as failed."""
    resumable = bool(job.task_ids) and rt.shutting_down and job.status != "completed"
    if not job.finished and rt.shutting_down:
        job.fail(rt.ended_early(), store.clock())
    elif not job.finished:  # cancelled (deleted) or crashed
        job.fail(ApiError(500, "The job was cancelled before it finished.", type="server_error",
                          code="job_cancelled"), store.clock())
    if not resumable:
        store.changed(job)


def job_list(store: VideoJobStore, limit: int, after: str | None, *, ascending: bool = False) -> bytes:
    """`GET /v1/videos`: OpenAI's cursor page (`after` = the last id of the previous page)."""
    jobs = store.newest_first()
    if ascending:
        jobs.reverse()
    if after:
        ids = [j.id for j in jobs]
        jobs = jobs[ids.index(after) + 1:] if after in ids else []
    page = jobs[:limit]
    views = [j.view(store.ttl) for j in page]
    return msgspec.json.encode(VideoList(views, views[0].id if views else None, views[-1].id if views else None,
                                         len(jobs) > len(page)))


# ------------------------------------------------------------------------------ content


async def open_content(rt: Runtime, job: VideoJob) -> tuple[FileBody, dict[str, str]]:
    """Open the finished job's file upstream (GensparkClient.open_download, with its cookie)."""
    if job.status != "completed" or job.result is None:
        detail = f" It failed: {job.error.message}" if job.error else ""
        raise ApiError(409, f"Video job '{job.id}' is {job.status}; its content is available once it is completed.{detail}",
                       param="video_id", code="video_not_ready")
    result = job.result
    cookie = result.lease.cookie if result.lease is not None else None
    return await open_file(rt.client, result.urls[0], cookie, what="video file", default_type="video/mp4")
