"""A deadline on every write to a client (issue #10: a client that stops reading is never let go).

hypercorn's trio server writes each chunk of an answer with `send_all` inside a shielded cancel
scope and no deadline (hypercorn/trio/tcp_server.py, `TCPServer.protocol_send`): a client that
keeps its connection open but stops reading blocks that write forever once the socket buffers are
full. The answer's task then waits on it, and with it the upstream stream and the cookie's
in-flight slot (COOKIE_MAX_IN_FLIGHT), which a handful of such clients would exhaust.

The shield stays (hypercorn relies on a write completing once begun), but inside it a deadline of
`CLIENT_SEND_TIMEOUT` seconds bounds the write: a shielded scope keeps out cancellation from the
scopes around it, not the deadline of one inside it. On expiry the connection is closed and
hypercorn is told so (`Closed`), exactly as when the client resets it: the app sees a disconnect,
the answer body's `aclose()` cancels the upstream work.

This replaces one method of a third-party class, so it is installed once, explicitly, by the CLI;
the deadline is read from the hypercorn `Config` the server was started with.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import trio
from hypercorn.events import Closed, RawData
from hypercorn.trio import tcp_server

log = logging.getLogger("genspark2api.connection")

CONFIG_ATTRIBUTE = "genspark2api_send_timeout"


async def protocol_send(self: Any, event: Any) -> None:
    """`TCPServer.protocol_send` with a deadline on writes (see the module docstring)."""
    if not isinstance(event, RawData):
        await _ORIGINAL(self, event)
        return
    timeout = getattr(self.config, CONFIG_ATTRIBUTE, None) or math.inf
    async with self.send_lock:
        try:
            with trio.CancelScope(shield=True):
                with trio.move_on_after(timeout) as deadline:
                    await self.stream.send_all(event.data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            await self.protocol.handle(Closed())
            return
        if deadline.cancelled_caught:
            log.warning("a client stopped reading its answer for %.0f s: closing the connection", timeout)
            with trio.CancelScope(shield=True):
                await self.stream.aclose()
            await self.protocol.handle(Closed())


_ORIGINAL = tcp_server.TCPServer.protocol_send


def install() -> None:
    """Put the deadline into hypercorn's trio server (idempotent)."""
    tcp_server.TCPServer.protocol_send = protocol_send  # type: ignore[method-assign]
