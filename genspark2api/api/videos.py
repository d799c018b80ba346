"""Videos: the old project's synchronous endpoint and OpenAI's asynchronous video jobs.

* `POST /v1/videos/generations` (genspark-protocol.md §2.4, the old README): `{model,
  aspect_ratio, duration, prompt, auto_prompt, image, response_format}` in, `{created, data:
  [{url, revised_prompt}]}` out once the video is done (bounded by VIDEO_TIMEOUT).
* `POST /v1/videos`, `GET /v1/videos[/{id}[/content]]`, `DELETE /v1/videos/{id}`: OpenAI's job
  shape. A job runs in the app nursery (guarded, with the VIDEO_TIMEOUT deadline), so it
  finishes or times out whether or not its client comes back.

Jobs live in this process only (`VideoJobStore`): at most VIDEO_JOBS_MAX, finished ones kept for
VIDEO_JOBS_TTL seconds; when full, the oldest finished job makes room, and when every job is still
running a new one is refused with 429. `seconds` and `size` echo the request, or "auto" when the
client left the choice to the model (the upstream then gets duration 0 / aspect ratio "").
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
from ..core.media_links import FileBody, MediaUrls, open_file
from ..errors import ApiError, bad_request
from ..runtime import Runtime
from ..upstream.catalog import VIDEO_ALIASES, VIDEO_MODELS
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


class VideoJobStore:
    """In-process jobs, newest last. Pure bookkeeping: the clock is passed in, nothing awaits."""

    def __init__(self, max_jobs: int, ttl: float, clock: Callable[[], float] = time.time) -> None:
        self.max_jobs = max_jobs
        self.ttl = ttl
        self.clock = clock
        self._jobs: dict[str, VideoJob] = {}

    def _purge(self) -> None:
        now = self.clock()
        for job in [j for j in self._jobs.values() if j.finished and j.completed_at is not None]:
            if now - job.completed_at >= self.ttl:  # type: ignore[operator]
                del self._jobs[job.id]

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
            del self._jobs[oldest.id]
        job = VideoJob("video_" + secrets.token_hex(16), request, self.clock())
        self._jobs[job.id] = job
        return job

    def get(self, job_id: str) -> VideoJob:
        self._purge()
        job = self._jobs.get(job_id)
        if job is None:
            raise ApiError(404, f"No video job with id '{job_id}' (jobs are kept VIDEO_JOBS_TTL seconds after "
                           "they finish, in this process only).", param="video_id", code="video_not_found")
        return job

    def newest_first(self) -> list[VideoJob]:
        self._purge()
        return list(reversed(self._jobs.values()))

    def remove(self, job_id: str) -> VideoJob:
        job = self.get(job_id)
        del self._jobs[job_id]
        return job


def start_job(rt: Runtime, store: VideoJobStore, job: VideoJob, references: tuple[Reference, ...]) -> None:
    """Run `job` in the app nursery; its state always ends `completed` or `failed`.

    `references` are loaded by the caller, so a bad input_reference is a 400, not a failed job.
    """

    async def run() -> None:
        generation: GenerationRun | None = None
        try:
            with job.scope:
                generation = GenerationRun(rt, job.request.job(references), on_progress=job.set_progress)
                job.status = "in_progress"
                job.complete(await generation.outcome(), store.clock())
                log.info("video job %s completed", job.id)
        except ApiError as exc:
            log.warning("video job %s failed: %s", job.id, exc.message)
            job.fail(exc, store.clock())
        finally:
            if generation is not None:
                generation.close()
            if not job.finished and rt.shutting_down:
                job.fail(rt.ended_early(), store.clock())
            elif not job.finished:  # cancelled (deleted) or crashed
                job.fail(ApiError(500, "The job was cancelled before it finished.", type="server_error",
                                  code="job_cancelled"), store.clock())

    # The generation has its own VIDEO_TIMEOUT deadline; this one only guards against our bugs.
    rt.background(f"video job {job.id}", run, timeout=rt.settings.video_timeout + 120)


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
