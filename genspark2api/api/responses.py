"""The Responses door's routes: `POST /v1/responses`, `GET`/`DELETE /v1/responses/{id}` and
`GET /v1/responses/{id}/input_items`.

The request side is responses_door.py, the wire responses_wire.py; this module runs a parsed
request through the chat service and keeps what `store` asks for in the runtime's response store
(pool/response_store.py): the response object as answered, this request's input items and the
thread before them, so `previous_response_id` can continue it. A continued response is the
stored items plus the new input, the same transcript a client resending its whole history
would send, which is what lets the thread binding send only the new turn upstream.
"""

from __future__ import annotations

import msgspec
from msgspec import Raw, Struct
from quart import Blueprint, Response, request

from ..core.answer import Finished
from ..core.chat import ChatService, current_request_key_name
from ..errors import ApiError, bad_request, whole_number
from ..runtime import Runtime
from .bodies import parse_body
from .responses_door import (
    Item,
    ResponsesParams,
    ResponsesRequest,
    normalise_item,
    parse_request,
    previous_not_found,
    validate,
)
from .responses_wire import (
    KEEPALIVE,
    DeletedResponse,
    ItemList,
    ReasoningEcho,
    ResponseEcho,
    ResponseEncoder,
    ResponseObject,
    answer_pieces,
    encoder,
)
from .sse_body import SSE_HEADERS, AnswerSSE

INPUT_ITEMS_LIMIT = (1, 100, 20)   # min, max, default of `limit` (OpenAI's)


class StoredResponse(Struct):
    """One stored response: the object as answered, its input, and the thread before it."""

    response: Raw
    input: list[Item]
    context: list[Item]
    owner: str | None = None   # the name of the client key that made it: only that key reads it


class _Output(Struct):
    output: list[Raw]


_stored = msgspec.json.Decoder(StoredResponse)
_output = msgspec.json.Decoder(_Output)


def response_id(request_id: str) -> str:
    return "resp_" + request_id


def not_found(response_id: str) -> ApiError:
    return ApiError(404, f"Response with id '{response_id}' not found.", param="response_id", code="response_not_found")


def echo_of(params: ResponsesParams) -> ResponseEcho:
    req: ResponsesRequest = params.request
    reasoning = req.reasoning
    return ResponseEcho(
        instructions=req.instructions,
        max_output_tokens=req.max_output_tokens,
        parallel_tool_calls=req.parallel_tool_calls is not False,
        previous_response_id=req.previous_response_id,
        reasoning=ReasoningEcho(reasoning.effort, reasoning.summary or reasoning.generate_summary)
        if reasoning is not None else ReasoningEcho(),
        store=params.store,
        temperature=req.temperature,
        text=Raw(encoder.encode(req.text)) if req.text is not None and req.text.format is not None
        else ResponseEcho().text,
        tool_choice=Raw(encoder.encode(req.tool_choice)) if req.tool_choice is not None else ResponseEcho().tool_choice,
        tools=list(params.tools),
        top_p=req.top_p,
        truncation=req.truncation or "disabled",
        user=req.user,
        metadata=req.metadata or {},
    )


def thread_of(record: StoredResponse) -> list[Item]:
    """The items a follow-up of `record` continues: its thread, its input and its output."""
    output = [normalise_item(raw, "previous_response_id") for raw in _output.decode(record.response).output]
    return [*record.context, *record.input, *(item for item in output if item is not None)]


class ResponsesStreamWire:
    """The encoder as an AnswerSSE wire; a finished response is stored on the way out."""

    keepalive = KEEPALIVE

    def __init__(self, encoder_: ResponseEncoder, runtime: Runtime, params: ResponsesParams) -> None:
        self.encoder = encoder_
        self.runtime = runtime
        self.params = params

    def opening(self) -> bytes:
        return self.encoder.opening()

    def pieces(self, pieces: list) -> bytes:
        return self.encoder.pieces(pieces)

    def finished(self, end: Finished) -> bytes:
        out = self.encoder.finished(end, completed_at=int(self.runtime.clock()))
        keep(self.runtime, self.params, self.encoder.final)
        return out

    def broken(self, error: ApiError) -> bytes:
        return self.encoder.broken(error)


def keep(runtime: Runtime, params: ResponsesParams, final: ResponseObject | None) -> None:
    """Store a completed or incomplete response unless the client said `store: false`."""
    if final is None or not params.store:
        return
    record = StoredResponse(Raw(encoder.encode(final)), list(params.input_items), list(params.context),
                            current_request_key_name())
    runtime.responses.put(final.id, encoder.encode(record), runtime.clock() + runtime.settings.responses_store_ttl)


async def load(runtime: Runtime, id: str) -> StoredResponse | None:
    """The stored response `id`, if the current client key made it (others get a 404, not a 403:
    an id of another key's response says nothing)."""
    value = await runtime.responses.get(id)
    record = _stored.decode(value) if value is not None else None
    if record is None or record.owner != current_request_key_name():
        return None
    return record


async def create_response(runtime: Runtime, chat: ChatService, params: ResponsesParams) -> Response:
    conversation = params.conversation
    prepared = await chat.prepare(conversation)
    echo = echo_of(params)
    if not conversation.stream:
        answer = await chat.complete_prepared(prepared)
        info = answer.info
        encoder_ = ResponseEncoder(response_id(info.id), info.created, info.model, echo)
        encoder_.pieces(answer_pieces(answer.content, answer.reasoning, answer.calls))
        encoder_.finished(answer.end, completed_at=int(runtime.clock()))
        keep(runtime, params, encoder_.final)
        headers = {**info.headers, "X-Request-Id": encoder_.id}
        return Response(encoder.encode(encoder_.final), status=200,
                        headers={"Content-Type": "application/json", **headers})
    stream = await chat.stream_prepared(prepared)
    info = stream.info
    encoder_ = ResponseEncoder(response_id(info.id), info.created, info.model, echo)
    body = AnswerSSE(stream, ResponsesStreamWire(encoder_, runtime, params),
                     keepalive=runtime.settings.keepalive_seconds, coalesce=runtime.settings.stream_coalesce)
    response = Response(body, status=200, headers={**SSE_HEADERS, **info.headers, "X-Request-Id": encoder_.id})
    response.timeout = None
    return response


def _json(payload: bytes, status: int = 200) -> Response:
    return Response(payload, status=status, content_type="application/json")


def list_items(items: list[Item], *, limit: str | None, order: str | None, after: str | None) -> bytes:
    """`input_items`' list object: OpenAI's cursor paging (newest first unless order=asc)."""
    lo, hi, default = INPUT_ITEMS_LIMIT
    count = default
    if limit is not None:
        parsed = whole_number(limit)
        if parsed is None or not lo <= parsed <= hi:
            raise bad_request(f"'limit' must be a whole number from {lo} to {hi}.", param="limit", code="invalid_value")
        count = parsed
    if order not in (None, "asc", "desc"):
        raise bad_request("'order' must be asc or desc.", param="order", code="invalid_value")
    ordered = list(items) if order == "asc" else list(reversed(items))
    start = 0
    if after:
        ids = [getattr(item, "id", None) for item in ordered]
        if after not in ids:
            raise bad_request(f"'after' names {after!r}, which is not an item of this response.",
                              param="after", code="invalid_value")
        start = ids.index(after) + 1
    page = ordered[start:start + count]
    data = [Raw(encoder.encode(item)) for item in page]
    first = getattr(page[0], "id", None) if page else None
    last = getattr(page[-1], "id", None) if page else None
    return encoder.encode(ItemList(data, first, last, start + count < len(ordered)))


def register_responses_routes(api: Blueprint, runtime: Runtime, chat: ChatService) -> None:
    @api.post("/responses")
    async def responses_create() -> Response:
        req = await parse_body(parse_request)
        context: list[Item] = []
        if req.previous_response_id:
            record = await load(runtime, req.previous_response_id)
            if record is None:
                raise previous_not_found(req.previous_response_id)
            context = thread_of(record)
        params = validate(req, runtime.catalog, context=context)
        return await create_response(runtime, chat, params)

    @api.get("/responses/<response_id>")
    async def responses_retrieve(response_id: str) -> Response:
        record = await load(runtime, response_id)
        if record is None:
            raise not_found(response_id)
        if request.args.get("stream") in ("true", "1"):
            raise bad_request("Streaming a stored response again is not supported; retrieve it without 'stream'.",
                              param="stream", code="unsupported_value")
        return _json(bytes(record.response))

    @api.delete("/responses/<response_id>")
    async def responses_delete(response_id: str) -> Response:
        if await load(runtime, response_id) is None:
            raise not_found(response_id)
        runtime.responses.delete(response_id)
        return _json(encoder.encode(DeletedResponse(response_id)))

    @api.get("/responses/<response_id>/input_items")
    async def responses_input_items(response_id: str) -> Response:
        record = await load(runtime, response_id)
        if record is None:
            raise not_found(response_id)
        args = request.args
        return _json(list_items(record.input, limit=args.get("limit"), order=args.get("order"), after=args.get("after")))

