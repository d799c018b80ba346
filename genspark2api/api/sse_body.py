"""Streaming bodies: an async iterator of SSE bytes that Quart drives, whatever the wire.

`AnswerSSE` drives a chat service `AnswerStream` through a door's `StreamWire` (the chunk frames of
chat completions, the named events of Responses and Anthropic Messages): the door says how a step
looks on its wire; keep-alives, coalescing and closing are written once, here.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from typing import Protocol, TypeVar

import trio

from ..core.answer import Broken, Finished, Step
from ..core.chat import AnswerStream
from ..core.compose import Piece
from ..errors import ApiError

T = TypeVar("T")

SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}


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
    _last_write: float = -math.inf   # trio time of the last frames _gather returned

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
        send: those already queued, and, on a fast stream, those that arrive within
        `coalesce_window`. Returns (frames, whether the stream is over).

        `receive_nowait` takes the next queued item (trio.WouldBlock when there is none);
        `render` turns one item into (frames, over). The window is a plain sleep, so the last
        frames of an answer may wait up to one window too.

        The window is waited only when this item came sooner than one window after the last
        write (and never for the first content frame): a stream whose items come farther apart
        (a slow model, a thousand paced streams) gets each written the moment it is there, and
        costs no timer per frame, while a fast one still shares its writes.
        """
        now = trio.current_time()
        if self._content_sent and self.coalesce_window > 0 and now - self._last_write < self.coalesce_window:
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
        self._last_write = trio.current_time()
        return out, done

    def _cancel(self) -> None:
        raise NotImplementedError

    def _frames(self) -> AsyncIterator[bytes]:
        raise NotImplementedError


class StreamWire(Protocol):
    """How one front door writes an answer stream (pure: steps in, bytes out)."""

    keepalive: bytes

    def opening(self) -> bytes: ...
    def pieces(self, pieces: list[Piece]) -> bytes: ...
    def finished(self, end: Finished) -> bytes: ...
    def broken(self, error: ApiError) -> bytes: ...


class AnswerSSE(SSEBody):
    """An answer stream on a door's wire, with keep-alives in silent gaps and coalesced sends."""

    def __init__(self, stream: AnswerStream, wire: StreamWire, *, keepalive: float, coalesce: float) -> None:
        self.stream = stream
        self.wire = wire
        self.keepalive = keepalive
        self.coalesce_window = coalesce

    def _cancel(self) -> None:
        self.stream.close()

    def _render(self, step: Step) -> tuple[bytes, bool]:
        out = self.wire.pieces(step.pieces) if step.pieces else b""
        if isinstance(step.end, Finished):
            return out + self.wire.finished(step.end), True
        if isinstance(step.end, Broken):
            return out + self.wire.broken(step.end.error), True
        return out, False

    async def _frames(self) -> AsyncIterator[bytes]:
        try:
            yield self.wire.opening()
            done = False
            while not done:
                step = await self.stream.next(self.keepalive)
                if step is None:
                    yield self.wire.keepalive
                    continue
                out, done = self._render(step)
                if not done:
                    # Fewer, fuller sends: what is queued, then what arrives within the window.
                    out, done = await self._gather(out, self.stream.next_nowait, self._render)
                if out:
                    yield out
        finally:
            self.stream.close()
