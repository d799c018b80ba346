"""The Anthropic Messages door: `POST /v1/messages` and `POST /v1/messages/count_tokens`.

messages_door.py parses, messages_wire.py encodes; this is the glue to the chat service and the
routes. Errors on these paths are rendered in Anthropic's shape by app.py (`is_anthropic_path`).
"""

from __future__ import annotations

import uuid

from quart import Blueprint, Response

from ..core.answer import Finished
from ..core.chat import ChatService
from ..core.compose import Piece
from ..errors import ApiError
from ..runtime import Runtime
from .bodies import parse_body
from .messages_door import MessagesParams, parse_messages_request
from .messages_wire import (
    PING,
    MessagesStreamEncoder,
    anthropic_status,
    encoder,
    error_body,
    error_frame,
    message_body,
    message_id,
)
from .sse_body import SSE_HEADERS, AnswerSSE

MESSAGES_PATH = "/v1/messages"   # and everything under it


def is_anthropic_path(path: str, prefix: str) -> bool:
    return path == prefix + MESSAGES_PATH or path.startswith(prefix + MESSAGES_PATH + "/")


def anthropic_error_response(error: ApiError) -> Response:
    status, _ = anthropic_status(error)
    request_id = "req_" + uuid.uuid4().hex[:24]
    response = Response(error_body(error, request_id), status=status, content_type="application/json")
    for key, value in error.headers.items():
        response.headers[key] = value
    response.headers["request-id"] = request_id
    return response


class MessagesWire:
    """A door's StreamWire (sse_body.py) over the Messages stream encoder."""

    keepalive = PING

    def __init__(self, encoder_: MessagesStreamEncoder) -> None:
        self.events = encoder_

    def opening(self) -> bytes:
        return self.events.start()

    def pieces(self, pieces: list[Piece]) -> bytes:
        return self.events.pieces(pieces)

    def finished(self, end: Finished) -> bytes:
        return self.events.finish(end)

    def broken(self, error: ApiError) -> bytes:
        return error_frame(error)


async def messages_response(rt: Runtime, service: ChatService, params: MessagesParams) -> Response:
    conversation = params.conversation
    prepared = await service.prepare(conversation)
    if not conversation.stream:
        answer = await service.complete_prepared(prepared)
        headers = {**answer.info.headers, "request-id": answer.info.id}
        return Response(message_body(answer, thinking=params.thinking), status=200,
                        headers={"Content-Type": "application/json", **headers})
    stream = await service.stream_prepared(prepared)
    info = stream.info
    events = MessagesStreamEncoder(message_id(info.id), info.model, prepared.prompt_tokens, thinking=params.thinking)
    body = AnswerSSE(stream, MessagesWire(events), keepalive=rt.settings.keepalive_seconds,
                     coalesce=rt.settings.stream_coalesce)
    response = Response(body, status=200, headers={**SSE_HEADERS, **info.headers, "request-id": info.id})
    response.timeout = None
    return response


def register_messages_routes(api: Blueprint, runtime: Runtime, chat: ChatService) -> None:
    @api.post("/messages")
    async def messages() -> Response:
        params = await parse_body(lambda body: parse_messages_request(body, runtime.catalog))
        return await messages_response(runtime, chat, params)

    @api.post("/messages/count_tokens")
    async def messages_count_tokens() -> Response:
        params = await parse_body(lambda body: parse_messages_request(body, runtime.catalog, counting=True))
        tokens = await chat.count_prompt(params.conversation)
        return Response(encoder.encode({"input_tokens": tokens}), status=200, content_type="application/json")
