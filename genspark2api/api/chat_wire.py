"""OpenAI `chat.completion.chunk` frames, byte for byte (openai-compat.md §2.1, §2.2, §2.9).

`data: <one JSON object>\n\n` frames with the space after the colon, the same id/created/model on
every chunk, `index` on every choice, a role chunk first, exactly one finish chunk, the usage chunk
(`choices: []`) only when asked, then `data: [DONE]`. Keep-alives are comment lines; no `event:`
or `id:` fields ever (the openai SDK mishandles both).
"""

from __future__ import annotations

from collections.abc import Iterable

from ..core.compose import Call, Content, Piece, Reasoning
from ..errors import ApiError
from .openai_types import (
    ChatCompletionChunk,
    ChunkChoice,
    Delta,
    FunctionCallOut,
    ToolCallDelta,
    Usage,
    encoder,
    error_json,
)

DONE = b"data: [DONE]\n\n"
KEEPALIVE = b": keep-alive\n\n"


def frame(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"


class ChunkEncoder:
    __slots__ = ("created", "id", "legacy_functions", "model")

    def __init__(self, completion_id: str, created: int, model: str, *, legacy_functions: bool = False) -> None:
        self.id = completion_id
        self.created = created
        self.model = model
        self.legacy_functions = legacy_functions

    def _chunk(self, delta: Delta, finish_reason: str | None = None) -> bytes:
        chunk = ChatCompletionChunk(self.id, self.created, self.model, [ChunkChoice(0, delta, finish_reason)])
        return frame(encoder.encode(chunk))

    def role(self) -> bytes:
        return self._chunk(Delta(role="assistant", content=""))

    def pieces(self, pieces: Iterable[Piece]) -> bytes:
        out = bytearray()
        for piece in pieces:
            if isinstance(piece, Content):
                out += self._chunk(Delta(content=piece.text))
            elif isinstance(piece, Reasoning):
                out += self._chunk(Delta(reasoning_content=piece.text))
            elif isinstance(piece, Call) and self.legacy_functions:
                out += self._chunk(Delta(function_call=FunctionCallOut(piece.call.name, "")))
                out += self._chunk(Delta(function_call=FunctionCallOut(arguments=piece.call.arguments)))
            elif isinstance(piece, Call):
                # openai-compat.md §2.3 item 13: id, type and name first, then argument fragments;
                # `index` on every tool-call delta.
                head = ToolCallDelta(piece.index, piece.call.id, "function", FunctionCallOut(piece.call.name, ""))
                out += self._chunk(Delta(tool_calls=[head]))
                args = ToolCallDelta(piece.index, function=FunctionCallOut(arguments=piece.call.arguments))
                out += self._chunk(Delta(tool_calls=[args]))
        return bytes(out)

    def finish(self, reason: str) -> bytes:
        return self._chunk(Delta(), reason)

    def usage(self, usage: Usage) -> bytes:
        return frame(encoder.encode(ChatCompletionChunk(self.id, self.created, self.model, [], usage)))


def error_frame(error: ApiError) -> bytes:
    """An error after the first byte: one `data: {"error": ...}` event; `[DONE]` follows."""
    return frame(error_json(error))
