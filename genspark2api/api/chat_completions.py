"""The chat completions door, answer side: a Conversation's answer as OpenAI's chat wire.

The request side is chat_door.py; the frames are chat_wire.py (openai-compat.md §2.1–§2.9).
"""

from __future__ import annotations

from quart import Response

from ..core.answer import Answer, Finished, Usage
from ..core.chat import ChatService
from ..core.compose import Piece
from ..errors import ApiError
from ..runtime import Runtime
from .chat_door import ChatParams
from .chat_wire import DONE, KEEPALIVE, ChunkEncoder, error_frame
from .openai_types import (
    AssistantMessage,
    ChatCompletion,
    Choice,
    CompletionTokensDetails,
    FunctionCallOut,
    ToolCallOut,
    encoder,
)
from .openai_types import Usage as WireUsage
from .sse_body import SSE_HEADERS, AnswerSSE


def wire_usage(usage: Usage) -> WireUsage:
    return WireUsage(usage.prompt_tokens, usage.completion_tokens, usage.total_tokens,
                     CompletionTokensDetails(usage.reasoning_tokens))


def completion_id(request_id: str) -> str:
    return "chatcmpl-" + request_id


class ChatWire:
    """`chat.completion.chunk` frames: the role chunk, pieces, one finish chunk, usage, `[DONE]`."""

    keepalive = KEEPALIVE

    def __init__(self, encoder_: ChunkEncoder, include_usage: bool) -> None:
        self.chunks = encoder_
        self.include_usage = include_usage

    def opening(self) -> bytes:
        return self.chunks.role()

    def pieces(self, pieces: list[Piece]) -> bytes:
        return self.chunks.pieces(pieces)

    def finished(self, end: Finished) -> bytes:
        tail = self.chunks.finish(end.finish_reason)
        if self.include_usage:
            tail += self.chunks.usage(wire_usage(end.usage))
        return tail + DONE

    def broken(self, error: ApiError) -> bytes:
        return error_frame(error) + DONE


def completion_body(answer: Answer, *, legacy_functions: bool, reasoning_field: bool) -> bytes:
    """The whole `chat.completion` object."""
    calls = answer.calls
    message = AssistantMessage("assistant", answer.content or (None if calls else ""))
    if answer.reasoning and reasoning_field:
        message.reasoning_content = answer.reasoning
    if calls and legacy_functions:
        message.function_call = FunctionCallOut(calls[0].name, calls[0].arguments)
    elif calls:
        message.tool_calls = [ToolCallOut(c.id, FunctionCallOut(c.name, c.arguments)) for c in calls]
    info = answer.info
    body = ChatCompletion(completion_id(info.id), info.created, info.model,
                          [Choice(0, message, answer.end.finish_reason)], wire_usage(answer.end.usage))
    return encoder.encode(body)


async def chat_completion_response(rt: Runtime, service: ChatService, params: ChatParams) -> Response:
    conversation = params.conversation
    prepared = await service.prepare(conversation)
    legacy = conversation.tools is not None and conversation.tools.legacy
    if not conversation.stream:
        answer = await service.complete_prepared(prepared)
        body = completion_body(answer, legacy_functions=legacy,
                               reasoning_field=rt.settings.reasoning_format != "think")
        headers = {**answer.info.headers, "X-Request-Id": completion_id(answer.info.id)}
        return Response(body, status=200, headers={"Content-Type": "application/json", **headers})
    stream = await service.stream_prepared(prepared)
    info = stream.info
    chunks = ChunkEncoder(completion_id(info.id), info.created, info.model, legacy_functions=legacy)
    body = AnswerSSE(stream, ChatWire(chunks, params.include_usage),
                     keepalive=rt.settings.keepalive_seconds, coalesce=rt.settings.stream_coalesce)
    headers = {**info.headers, "X-Request-Id": completion_id(info.id)}
    response = Response(body, status=200, headers={**SSE_HEADERS, **headers})
    response.timeout = None
    return response
