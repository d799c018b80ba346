"""Two deadlines hypercorn's trio server does not have (issue #10): slow heads, stuck readers.

* **A client that stops reading.** hypercorn writes each chunk of an answer with `send_all` inside
  a shielded cancel scope and no deadline (hypercorn/trio/tcp_server.py,
  `TCPServer.protocol_send`): a client that keeps its connection open but stops reading blocks
  that write forever once the socket buffers are full, and with it the answer's upstream stream
  and the cookie's in-flight slot (COOKIE_MAX_IN_FLIGHT), which a handful of such clients would
  exhaust. The shield stays (hypercorn relies on a begun write completing), but inside it a
  deadline of `CLIENT_SEND_TIMEOUT` bounds the write: a shielded scope keeps out the cancellation
  of the scopes around it, not the deadline of one inside it. On expiry the connection is closed
  and hypercorn told so (`Closed`), as when the client resets it: the app sees a disconnect and
  the answer body's `aclose()` cancels the upstream work.
* **A request head sent slowly.** hypercorn's one idle timer (`KEEP_ALIVE_TIMEOUT`) runs from the
  end of an answer until the next request head is complete, so a client may take the whole
  keep-alive time (75 s, kept above a reverse proxy's idle timeout) to send one head, a byte at a
  time. Once the first byte of a head arrives, the timer is restarted with `HEAD_TIMEOUT`; the
  head completing stops it as before (h11 `Request` → `Updated(idle=False)`).

Both replace methods of a third-party class, so they are installed once, explicitly, by the CLI
and the test harness; the deadlines are read from the hypercorn `Config` the server started with.
"""

from __future__ import annotations

import logging
import math
from functools import partial
from typing import Any

import trio
from hypercorn.events import Closed, RawData, Updated
from hypercorn.trio import tcp_server

log = logging.getLogger("genspark2api.connection")

SEND_TIMEOUT = "genspark2api_send_timeout"
HEAD_TIMEOUT = "genspark2api_head_timeout"

_ORIGINAL_SEND = tcp_server.TCPServer.protocol_send
_ORIGINAL_READ = tcp_server.TCPServer._read_data


async def protocol_send(self: Any, event: Any) -> None:
    """`TCPServer.protocol_send` with a deadline on writes; notes when the connection is idle."""
    if isinstance(event, Updated):
        # Idle: between answers, waiting for a head. The head timer starts with its first byte.
        self.genspark2api_idle = event.idle
        self.genspark2api_head_started = False
    if not isinstance(event, RawData):
        await _ORIGINAL_SEND(self, event)
        return
    if not event.data:
        return   # h11's end of a sized body is b"": no write to make (a lock, a scope and a checkpoint saved)
    timeout = getattr(self.config, SEND_TIMEOUT, None) or math.inf
    async with self.send_lock:
        try:
            # One scope for both: a shielded scope keeps out the cancellation of the scopes
            # around it, not its own deadline (two nested scopes per write cost a tenth of the
            # CPU with a thousand open streams).
            with trio.CancelScope(shield=True, deadline=trio.current_time() + timeout) as deadline:
                await self.stream.send_all(event.data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            await self.protocol.handle(Closed())
            return
        if deadline.cancelled_caught:
            log.warning("a client stopped reading its answer for %.0f s: closing the connection", timeout)
            with trio.CancelScope(shield=True):
                await self.stream.aclose()
            await self.protocol.handle(Closed())


async def _read_data(self: Any) -> None:
    """`TCPServer._read_data`, with the first byte of each request head starting HEAD_TIMEOUT."""
    head_timeout = getattr(self.config, HEAD_TIMEOUT, None)
    if head_timeout:
        handle = self.protocol.handle

        async def observed(event: Any) -> None:
            # A whole head in the first bytes is parsed within this `handle` (the common case,
            # which therefore starts no timer task).
            if (isinstance(event, RawData) and event.data and getattr(self, "genspark2api_idle", True)
                    and not getattr(self, "genspark2api_head_started", False) and b"\r\n\r\n" not in event.data):
                self.genspark2api_head_started = True
                await self.idle_task.restart(self._task_group, partial(_head_too_slow, self, head_timeout))
            await handle(event)

        self.protocol.handle = observed
    await _ORIGINAL_READ(self)


async def _head_too_slow(self: Any, seconds: float) -> None:
    with trio.move_on_after(seconds):
        await self.context.terminated.wait()
    log.info("a request head took longer than %.0f s: closing the connection", seconds)
    with trio.CancelScope(shield=True):
        await self._initiate_server_close()


def install() -> None:
    """Put both deadlines into hypercorn's trio server (idempotent)."""
    tcp_server.TCPServer.protocol_send = protocol_send  # type: ignore[method-assign]
    tcp_server.TCPServer._read_data = _read_data  # type: ignore[method-assign]
