"""The Anthropic Messages wire, byte for byte: the whole `message`, the named stream events, errors.

Shapes and key order follow the `anthropic` SDK's types (anthropic/types/message.py,
raw_message_*_event.py, raw_content_block_*_event.py) and what Anthropic sends: every frame is
`event: <type>\\ndata: <JSON whose "type" is the same>\\n\\n`. A stream is `message_start`, `ping`,
then per content block `content_block_start`, its deltas and `content_block_stop`, then
`message_delta` (stop reason and usage) and `message_stop`. A thinking block gets its
`signature_delta` just before it stops, as Anthropic sends it. A failure after the first byte is
one `event: error` frame and the end of the stream. Pure: no I/O, no clock.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any, Literal

import msgspec
from msgspec import Struct

from ..core.answer import Answer, Finished, FinishReason, Usage
from ..core.compose import Call, Content, Piece, Reasoning
from ..core.toolcalls import ToolCall
from ..errors import ApiError

encoder = msgspec.json.Encoder()

StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"]

# ------------------------------------------------------------------------------ structs


class TextOut(Struct, tag_field="type", tag="text"):
    text: str


class ThinkingOut(Struct, tag_field="type", tag="thinking"):
    thinking: str
    signature: str


class ToolUseOut(Struct, tag_field="type", tag="tool_use"):
    id: str
    name: str
    input: Any


BlockOut = TextOut | ThinkingOut | ToolUseOut


class UsageOut(Struct):
    input_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int
    output_tokens: int


class MessageOut(Struct, tag_field="type", tag="message"):
    id: str
    role: Literal["assistant"]
    model: str
    content: list[BlockOut]
    stop_reason: StopReason | None
    stop_sequence: str | None
    usage: UsageOut


class MessageStart(Struct, tag_field="type", tag="message_start"):
    message: MessageOut


class ContentBlockStart(Struct, tag_field="type", tag="content_block_start"):
    index: int
    content_block: BlockOut


class TextDeltaOut(Struct, tag_field="type", tag="text_delta"):
    text: str


class ThinkingDeltaOut(Struct, tag_field="type", tag="thinking_delta"):
    thinking: str


class SignatureDeltaOut(Struct, tag_field="type", tag="signature_delta"):
    signature: str


class InputJsonDeltaOut(Struct, tag_field="type", tag="input_json_delta"):
    partial_json: str


class ContentBlockDelta(Struct, tag_field="type", tag="content_block_delta"):
    index: int
    delta: TextDeltaOut | ThinkingDeltaOut | SignatureDeltaOut | InputJsonDeltaOut


class ContentBlockStop(Struct, tag_field="type", tag="content_block_stop"):
    index: int


class StopDelta(Struct):
    stop_reason: StopReason
    stop_sequence: str | None


class DeltaUsage(Struct):
    input_tokens: int
    output_tokens: int


class MessageDelta(Struct, tag_field="type", tag="message_delta"):
    delta: StopDelta
    usage: DeltaUsage


class MessageStop(Struct, tag_field="type", tag="message_stop"):
    pass


class ErrorObject(Struct):
    type: str
    message: str


class ErrorEvent(Struct, tag_field="type", tag="error"):
    error: ErrorObject


class ErrorBody(Struct, tag_field="type", tag="error"):
    error: ErrorObject
    request_id: str


PING = b'event: ping\ndata: {"type":"ping"}\n\n'

# ------------------------------------------------------------------------------ pieces


def message_id(request_id: str) -> str:
    return "msg_" + request_id


def tool_use_id(call_id: str) -> str:
    """Our call ids look like OpenAI's (`call_…`); Anthropic's clients expect `toolu_…`."""
    return "toolu_" + call_id.removeprefix("call_")


def tool_input(call: ToolCall) -> Any:
    """The arguments as the object Anthropic's `input` is (the composer checked they are JSON)."""
    try:
        value = msgspec.json.decode(call.arguments) if call.arguments.strip() else {}
    except msgspec.DecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def thinking_signature(thinking: str) -> str:
    """An opaque `signature` for a thinking block. Clients must echo it back untouched and we
    ignore it when they do (messages_door.py): it only has to be a stable, non-empty string."""
    return base64.b64encode(hashlib.sha256(thinking.encode()).digest()).decode()


def stop_reason(end: Finished) -> StopReason:
    reason: FinishReason = end.finish_reason
    if reason in ("tool_calls", "function_call"):
        return "tool_use"
    if reason == "length":
        return "max_tokens"
    return "stop_sequence" if end.stop_sequence is not None else "end_turn"


def usage_out(usage: Usage) -> UsageOut:
    return UsageOut(usage.prompt_tokens, 0, 0, usage.completion_tokens)


def message_body(answer: Answer, *, thinking: bool) -> bytes:
    """The whole `message` object of a non-stream answer."""
    blocks: list[BlockOut] = []
    if thinking and answer.reasoning:
        blocks.append(ThinkingOut(answer.reasoning, thinking_signature(answer.reasoning)))
    if answer.content or not (answer.calls or blocks):
        blocks.append(TextOut(answer.content))
    blocks += [ToolUseOut(tool_use_id(c.id), c.name, tool_input(c)) for c in answer.calls]
    end = answer.end
    message = MessageOut(message_id(answer.info.id), "assistant", answer.info.model, blocks,
                         stop_reason(end), end.stop_sequence, usage_out(end.usage))
    return encoder.encode(message)


# ------------------------------------------------------------------------------ errors

# ApiError status → Anthropic's error type. 529 is Anthropic's "overloaded": its SDKs and Claude
# Code retry it with backoff, which is what a busy cookie pool wants.
ERROR_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
    404: "not_found_error", 405: "invalid_request_error", 408: "timeout_error",
    413: "request_too_large", 429: "rate_limit_error", 504: "timeout_error", 529: "overloaded_error",
}
# Codes of ours that mean "no account can take it now", whatever status they carry on chat.
OVERLOADED_CODES = frozenset({"accounts_busy", "upstream_overloaded", "not_ready", "service_shutting_down"})


def anthropic_status(error: ApiError) -> tuple[int, str]:
    """(HTTP status, Anthropic error type) for an ApiError."""
    if error.code in OVERLOADED_CODES:
        return 529, "overloaded_error"
    if error.status in ERROR_TYPES:
        return error.status, ERROR_TYPES[error.status]
    if error.status >= 500:
        return error.status, "api_error"
    return error.status, "invalid_request_error"


def error_body(error: ApiError, request_id: str) -> bytes:
    """`{"type":"error","error":{"type","message"},"request_id"}` (Anthropic's error shape)."""
    return encoder.encode(ErrorBody(ErrorObject(anthropic_status(error)[1], error.message), request_id))


def error_frame(error: ApiError) -> bytes:
    return event(ErrorEvent(ErrorObject(anthropic_status(error)[1], error.message)))


# ------------------------------------------------------------------------------ stream


def event(payload: Struct) -> bytes:
    # The tag is the event's `type`; every payload struct here carries one.
    name = type(payload).__struct_config__.tag
    return b"event: " + str(name).encode() + b"\ndata: " + encoder.encode(payload) + b"\n\n"


class MessagesStreamEncoder:
    """The named events of one streamed message; `pieces` opens, fills and closes content blocks.

    Pieces arrive as the composer makes them: text and reasoning in small deltas, each tool call
    whole (compose.py), so a tool_use block is started, given its input as one `input_json_delta`
    and stopped at once. A piece of another kind than the open block closes it first."""

    def __init__(self, message_id_: str, model: str, input_tokens: int, *, thinking: bool) -> None:
        self.id = message_id_
        self.model = model
        self.input_tokens = input_tokens
        self.thinking = thinking
        self._index = -1
        self._open: Literal["text", "thinking"] | None = None
        self._thought: list[str] = []

    def start(self) -> bytes:
        message = MessageOut(self.id, "assistant", self.model, [], None, None,
                             UsageOut(self.input_tokens, 0, 0, 0))
        return event(MessageStart(message)) + PING

    def pieces(self, pieces: list[Piece]) -> bytes:
        out = b""
        for piece in pieces:
            if isinstance(piece, Content):
                if piece.text:
                    out += self._into("text") + event(ContentBlockDelta(self._index, TextDeltaOut(piece.text)))
            elif isinstance(piece, Reasoning):
                if piece.text and self.thinking:
                    self._thought.append(piece.text)
                    out += self._into("thinking") + event(
                        ContentBlockDelta(self._index, ThinkingDeltaOut(piece.text)))
            elif isinstance(piece, Call):
                out += self._close()
                self._index += 1
                call = piece.call
                out += event(ContentBlockStart(self._index, ToolUseOut(tool_use_id(call.id), call.name, {})))
                out += event(ContentBlockDelta(self._index, InputJsonDeltaOut(
                    encoder.encode(tool_input(call)).decode())))
                out += event(ContentBlockStop(self._index))
        return out

    def finish(self, end: Finished) -> bytes:
        out = self._close()
        usage = DeltaUsage(end.usage.prompt_tokens, end.usage.completion_tokens)
        out += event(MessageDelta(StopDelta(stop_reason(end), end.stop_sequence), usage))
        return out + event(MessageStop())

    def _into(self, kind: Literal["text", "thinking"]) -> bytes:
        if self._open == kind:
            return b""
        out = self._close()
        self._index += 1
        self._open = kind
        block: BlockOut = TextOut("") if kind == "text" else ThinkingOut("", "")
        return out + event(ContentBlockStart(self._index, block))

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        out = b""
        if self._open == "thinking":
            out += event(ContentBlockDelta(self._index, SignatureDeltaOut(thinking_signature("".join(self._thought)))))
            self._thought = []
        self._open = None
        return out + event(ContentBlockStop(self._index))
