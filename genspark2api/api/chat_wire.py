"""OpenAI `chat.completion.chunk` frames, byte for byte (openai-compat.md §2.1, §2.2, §2.9).

`data: <one JSON object>\n\n` frames with the space after the colon, the same id/created/model on
every chunk, `index` on every choice, a role chunk first, exactly one finish chunk, the usage chunk
(`choices: []`) only when asked, then `data: [DONE]`. Keep-alives are comment lines; no `event:`
or `id:` fields ever (the openai SDK mishandles both).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from typing import TypeVar

import trio

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
)

T = TypeVar("T")

DONE = b"data: [DONE]\n\n"
KEEPALIVE = b": keep-alive\n\n"


def frame(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"


class ChunkEncoder:
    __slots__ = ("id", "created", "model", "legacy_functions")

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
    return frame(error.to_json())


class SSEBody:
    """An SSE response body: an async iterator Quart drives, plus `aclose()` it calls in every case.

    Quart calls `aclose()` even when the client left before the first chunk, which is why bodies
    are classes and not bare async generators (whose `finally` would never run then). Subclasses
    give `_frames()` and `_cancel()` (stop the upstream work behind the body), and may batch
    their frames with `_gather`.
    """

    _gen: AsyncIterator[bytes] | None = None
    # STREAM_COALESCE_SECONDS: each send through hypercorn, h11 and trio costs about as much as
    # encoding several frames, so after the first content frame what arrives within this window
    # goes out in one send. The first content frame itself never waits: time to first content
    # is what a client notices.
    coalesce_window: float = 0.0
    _content_sent: bool = False

    def __aiter__(self) -> SSEBody:
        return self

    async def __anext__(self) -> bytes:
        if self._gen is None:
            self._gen = self._frames()
        return await self._gen.__anext__()

    async def aclose(self) -> None:
        self._cancel()
        if self._gen is not None:
            await self._gen.aclose()

    async def _gather(
        self,
        out: bytes,
        receive_nowait: Callable[[], T],
        render: Callable[[T], tuple[bytes, bool]],
    ) -> tuple[bytes, bool]:
        """`out` (frames not yet sent) plus the frames of the items that follow it into the same
        send: those already queued, and after the first content frame those that arrive within
        `coalesce_window`. Returns (frames, whether the stream is over).

        `receive_nowait` takes the next queued item (trio.WouldBlock when there is none);
        `render` turns one item into (frames, over). The window is a plain sleep, so the last
        frames of an answer may wait up to one window too.
        """
        if self._content_sent and self.coalesce_window > 0:
            # Sleep through the window rather than wake for every item: the producer runs on
            # undisturbed, and what it queued meanwhile is taken in one go.
            await trio.sleep(self.coalesce_window)
        done = False
        while not done:
            try:
                item = receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                break  # the caller's next receive sees the end again
            more, done = render(item)
            out += more
        self._content_sent = self._content_sent or bool(out)
        return out, done

    def _cancel(self) -> None:
        raise NotImplementedError

    def _frames(self) -> AsyncIterator[bytes]:
        raise NotImplementedError
