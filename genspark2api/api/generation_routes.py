"""The HTTP face of images and videos: routes on the `/v1` blueprint, and chat-routed generation.

`register_generation_routes(api, runtime)` adds (under ROUTE_PREFIX like every /v1 route):

    POST   /v1/images/generations       images.py
    POST   /v1/images/edits             images.py (multipart like OpenAI, or JSON)
    POST   /v1/videos/generations       videos.py, synchronous (the old project's endpoint)
    POST   /v1/videos                   videos.py, an OpenAI video job (JSON or multipart)
    GET    /v1/videos                   jobs, newest first
    GET    /v1/videos/<id>              one job
    GET    /v1/videos/<id>/content      the finished file, streamed from upstream
    DELETE /v1/videos/<id>              cancel (if running) and forget a job
    GET    /v1/media/<token>[.ext]      a generated file behind a link (MEDIA_URLS=proxy, media_links.py);
                                        no API key: the token is the authorisation

`generation_chat_completion(runtime, params)` answers `/v1/chat/completions` for image and video
models: the last user message's text is the prompt and its images are the references; the answer
is markdown (`![image 1](url)`, `[video 1](url)`, the URLs as MEDIA_URLS says). Streaming sends
the role chunk at once, `: keep-alive` comments while the tasks run, then the content, the finish
chunk, the usage chunk when asked and `[DONE]`; a failure after the role chunk is an error event
before `[DONE]`.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import trio
from quart import Blueprint, Response, request

from ..core.compose import Content
from ..core.generation import Generated, GenerationJob, GenerationRun, MediaKind
from ..core.media_links import MediaUrls, find_link, open_link, public_base
from ..errors import ApiError, bad_request, decode_json_body, whole_number
from ..runtime import Runtime
from ..upstream.catalog import ModelKind
from .bodies import parse_body, parse_form
from .chat_door import ChatParams
from .chat_wire import DONE, KEEPALIVE, ChunkEncoder, error_frame
from .images import ReferenceSource, images_answer, load_references, parse_image_request
from .openai_types import (
    AssistantMessage,
    ChatCompletion,
    Choice,
    Usage,
    encoder,
)
from .sse_body import SSE_HEADERS, SSEBody
from .videos import (
    VideoDeleted,
    VideoJobStore,
    job_list,
    open_content,
    parse_video_generation,
    parse_video_job,
    resume_job,
    start_job,
    video_generations_answer,
)

_NESTED_FIELD = re.compile(r"(\w+)\[(\w+)\]")   # multipart spelling of {"input_reference": {"image_url": …}}

log = logging.getLogger("genspark2api.generation_routes")


def _json(payload: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(payload, status=status, content_type="application/json", headers=headers)


async def read_fields(file_fields: tuple[str, ...]) -> tuple[dict[str, Any], list[ReferenceSource]]:
    """The request's fields: a JSON object, or a multipart/urlencoded form with its files.

    Form spellings: `image[]` repeated is a list, `input_reference[image_url]` a nested object.
    Files are kept only for `file_fields` (`mask` and the like are ignored).
    """
    if request.mimetype in ("multipart/form-data", "application/x-www-form-urlencoded"):
        form, files = await parse_form()
        doc: dict[str, Any] = {}
        for key in form.keys():
            values = form.getlist(key)
            nested = _NESTED_FIELD.fullmatch(key)
            if key.endswith("[]"):
                doc[key[:-2]] = values
            elif nested:
                inner = doc.setdefault(nested.group(1), {})
                if isinstance(inner, dict):
                    inner[nested.group(2)] = values[-1]
            else:
                doc[key] = values[-1]
        sources: list[ReferenceSource] = []
        for key in files.keys():
            name = key.removesuffix("[]")
            if name not in file_fields:
                continue
            uploads = files.getlist(key)
            for i, upload in enumerate(uploads):
                param = f"{name}[{i}]" if len(uploads) > 1 or key.endswith("[]") else name
                sources.append(ReferenceSource(param, data=upload.read(), filename=upload.filename))
        return doc, sources
    return await parse_body(_json_object), []


def _json_object(body: bytes) -> dict[str, Any]:
    if not body.strip():
        raise bad_request("The request body is empty; send a JSON object.", code="invalid_json")
    doc = decode_json_body(body)
    if not isinstance(doc, dict):
        raise bad_request("The request body must be a JSON object.", code="invalid_json")
    return doc


def request_media_urls(rt: Runtime) -> MediaUrls:
    """How this request's generated files are named to its client (MEDIA_URLS)."""
    if not rt.settings.proxied_media:
        return MediaUrls()
    return MediaUrls(rt.media_links, public_base(rt.settings, request.scheme, request.host, request.headers))


def register_generation_routes(api: Blueprint, runtime: Runtime) -> None:
    settings = runtime.settings
    store = VideoJobStore(settings.video_jobs_max, settings.video_jobs_ttl, store=runtime.store)
    resumable = store.restore(runtime.pool.detached_lease)   # jobs saved before a restart (DATA_DIR)

    @api.before_app_serving
    async def resume_video_jobs() -> None:
        # After app.startup has handed the app nursery to the runtime (registered before the blueprint).
        for job in resumable:
            resume_job(runtime, store, job)
        if resumable:
            log.info("resumed %d video job(s) saved before the restart", len(resumable))
        resumable.clear()

    @api.post("/images/generations")
    async def images_generations() -> Response:
        doc, _ = await read_fields(())
        req = parse_image_request(doc, settings.image_model)
        return _json(await images_answer(runtime, req, request_media_urls(runtime)))

    @api.post("/images/edits")
    async def images_edits() -> Response:
        doc, files = await read_fields(("image", "images"))
        req = parse_image_request(doc, settings.image_model, files)
        if not req.references:
            raise bad_request("An edit needs at least one 'image' (a file, URL or base64).", param="image",
                              code="missing_required_parameter")
        return _json(await images_answer(runtime, req, request_media_urls(runtime)))

    @api.post("/videos/generations")
    async def video_generations() -> Response:
        doc, _ = await read_fields(())
        req = parse_video_generation(doc)
        return _json(await video_generations_answer(runtime, req, request_media_urls(runtime)))

    @api.post("/videos")
    async def video_jobs_create() -> Response:
        doc, files = await read_fields(("input_reference",))
        req = parse_video_job(doc, files)
        references = await load_references(req.references, settings)
        if runtime.shutting_down:  # a job started now could only fail at the end of the grace
            raise runtime.ended_early()
        if runtime.nursery is None:
            raise ApiError(503, "The service is not serving yet.", type="server_error", code="not_ready")
        job = store.create(req)
        start_job(runtime, store, job, references)
        return _json(encoder.encode(job.view(store.ttl)))

    @api.get("/videos")
    async def video_jobs_list() -> Response:
        limit = whole_number(request.args.get("limit", "20"))
        if limit is None or not 1 <= limit <= 100:
            raise bad_request("'limit' must be a whole number from 1 to 100.", param="limit", code="invalid_value")
        order = request.args.get("order", "desc")
        if order not in ("asc", "desc"):
            raise bad_request("'order' must be 'asc' or 'desc'.", param="order", code="invalid_value")
        return _json(job_list(store, limit, request.args.get("after"), ascending=order == "asc"))

    @api.get("/videos/<video_id>")
    async def video_job_retrieve(video_id: str) -> Response:
        return _json(encoder.encode(store.get(video_id).view(store.ttl)))

    @api.get("/videos/<video_id>/content")
    async def video_job_content(video_id: str) -> Response:
        variant = request.args.get("variant", "video")
        if variant != "video":
            raise bad_request(f"Only variant=video is available, not {variant!r}.", param="variant", code="unsupported_value")
        body, headers = await open_content(runtime, store.get(video_id))
        response = Response(body, status=200, headers=headers)
        response.timeout = None
        return response

    @api.delete("/videos/<video_id>")
    async def video_job_delete(video_id: str) -> Response:
        job = store.remove(video_id)
        job.scope.cancel()
        return _json(encoder.encode(VideoDeleted(job.id)))

    @api.get("/media/<name>")
    async def media_file(name: str) -> Response:
        body, headers = await open_link(runtime, find_link(runtime.media_links, name))
        response = Response(body, status=200, headers=headers)
        response.timeout = None
        return response


# ------------------------------------------------------------------------------ chat-routed


def render_markdown(kind: MediaKind, result: Generated, urls: tuple[str, ...]) -> str:
    """`urls`: the result's files as the client gets them (MediaUrls.publish)."""
    if kind is MediaKind.IMAGE:
        lines = [f"![image {i}]({url})" for i, url in enumerate(urls, 1)]
    else:
        lines = [f"[video {i}]({url})" for i, url in enumerate(urls, 1)]
    if result.failed:
        total = len(result.urls) + len(result.failed)
        lines.append(f"({len(result.failed)} of {total} {kind.value}s could not be generated.)")
    return "\n\n".join(lines)


async def generation_chat_completion(rt: Runtime, params: ChatParams) -> Response:
    """`/v1/chat/completions` for an image or video model (chat_request.is_generation)."""
    kind = MediaKind.IMAGE if params.route.kind is ModelKind.IMAGE else MediaKind.VIDEO
    turns = params.conversation.turns
    index = next((i for i in range(len(turns) - 1, -1, -1) if turns[i].role == "user"), None)
    if index is None:
        raise bad_request(f"An {kind.value} model needs a user message with the prompt.", param="messages", code="invalid_value")
    turn = turns[index]
    prompt = turn.text.strip()
    if not prompt:
        raise bad_request(f"The last user message must hold the {kind.value} prompt as text.",
                          param=f"messages[{index}].content", code="invalid_value")
    sources = [ReferenceSource(ref.param, url=ref.url) for ref in turn.media if ref.kind == "image"]
    references = await load_references(sources, rt.settings)
    run = GenerationRun(rt, GenerationJob(kind, params.route.upstream[0], prompt, {}, references))
    answer = ChatAnswer(rt, params, kind, prompt, run, request_media_urls(rt))
    if not params.stream:
        try:
            result = await run.outcome()
        finally:
            run.close()
        return _json(answer.whole(result), headers={"X-Request-Id": answer.id})
    response = Response(answer, status=200, headers={**SSE_HEADERS, "X-Request-Id": answer.id})
    response.timeout = None
    return response


class ChatAnswer(SSEBody):
    """The chat answer of one generation; as an async iterator, its SSE body.

    Quart calls `aclose()` in every case, also when the client left before the first chunk
    (the reason this is a class, as chat.StreamBody): that cancels the generation.
    """

    def __init__(self, rt: Runtime, params: ChatParams, kind: MediaKind, prompt: str, run: GenerationRun,
                 media: MediaUrls) -> None:
        self.rt = rt
        self.params = params
        self.kind = kind
        self.run = run
        self.media = media
        self.id = "chatcmpl-" + uuid.uuid4().hex
        self.created = int(time.time())
        self.prompt_tokens = rt.counter.count(prompt)

    def usage(self, content: str) -> Usage:
        completion = self.rt.counter.count(content)
        return Usage(self.prompt_tokens, completion, self.prompt_tokens + completion)

    def content(self, result: Generated) -> str:
        return render_markdown(self.kind, result, self.media.publish(result.urls, result.lease, self.kind))

    def whole(self, result: Generated) -> bytes:
        content = self.content(result)
        message = AssistantMessage(role="assistant", content=content)
        body = ChatCompletion(self.id, self.created, self.params.route.requested, [Choice(0, message, "stop")],
                              self.usage(content))
        return encoder.encode(body)

    def _cancel(self) -> None:
        self.run.close()

    async def _frames(self) -> AsyncIterator[bytes]:
        chunks = ChunkEncoder(self.id, self.created, self.params.route.requested)
        keepalive = self.rt.settings.keepalive_seconds
        try:
            yield chunks.role()
            result: Generated | None = None
            while result is None:
                try:
                    with trio.move_on_after(keepalive if keepalive > 0 else float("inf")):
                        result = await self.run.outcome()
                except ApiError as exc:
                    yield error_frame(exc) + DONE
                    return
                if result is None:
                    yield KEEPALIVE
            content = self.content(result)
            tail = chunks.pieces([Content(content)]) + chunks.finish("stop")
            if self.params.include_usage:
                tail += chunks.usage(self.usage(content))
            yield tail + DONE
        finally:
            self.run.close()
