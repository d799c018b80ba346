"""The ASGI layer between hypercorn and Quart: how a connection ends after an answer.

Two hypercorn/quart-trio behaviours meet here (python-stack.md §2.2 explains the cancellation):

* quart-trio cancels the request's nursery as soon as the response is sent, and hypercorn
  closes the connection (when it must) from inside that same send. The close then dies on its
  first checkpoint: the socket stays open. That is why `Connection: close` was ignored, why an
  HTTP/1.0 stream (whose body ends only with the connection) never ended, and why a connection
  whose request body was not read stayed open but stuck, so the next request on it got no answer.
  The final send of every answer therefore runs shielded (bounded), so hypercorn's close or
  recycling of the connection completes.
* An answer sent before the request body was read (the auth guard's 401/403/429, a 404, a 413):
  the rest of the body is read and dropped (at most `drain_seconds`), so the connection can be
  reused; when it does not arrive in time, the answer says `Connection: close` and the connection
  is closed. Draining first also means the client has sent everything before it reads the
  answer, so a 413 is not lost to a reset from a socket closed under unread data.

WebSocket upgrades are refused here with a JSON 400 (there is no WebSocket API), before Quart,
which would answer with a 500 and a traceback.

Large request bodies (`large_body_bytes` or more, or of unknown length) are let through to Quart
only while they hold one of `large_body_slots`, from their first byte until the answer starts: Quart
reads every body into memory as it arrives, so holding back its `receive()` is what leaves the
waiting bodies in the kernel's buffers (TCP back pressure) instead of in memory (issue #10 item 10:
50 bodies of 10 MiB at once took 3 GB).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import trio

from ..errors import ApiError
from .openai_types import error_json

log = logging.getLogger("genspark2api.connection")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

FINAL_SEND_LIMIT = 30.0   # the shielded last send: hypercorn's own socket writes are shielded anyway

WEBSOCKET_REFUSAL = ApiError(
    400, "WebSocket is not supported by this service; use HTTP requests (streams are server-sent events).",
    code="websocket_not_supported",
)


def declares_body(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether the request has a body still to come (RFC 9112 §6.3: Content-Length or chunked)."""
    for name, value in headers:
        name = name.lower()
        if name == b"transfer-encoding":
            return True
        if name == b"content-length":
            return value.strip() not in (b"0", b"")
    return False


def is_large(headers: list[tuple[bytes, bytes]], threshold: int) -> bool:
    """A body of `threshold` bytes or more, or chunked (of unknown length)."""
    for name, value in headers:
        name = name.lower()
        if name == b"transfer-encoding":
            return True
        if name == b"content-length":
            digits = value.strip()
            return not digits.isdigit() or int(digits) >= threshold
    return False


class _Exchange:
    """One HTTP request/response pair as it passes through `ConnectionGuard`."""

    def __init__(self, scope: Scope, receive: Receive, send: Send, drain_seconds: float,
                 stopping: trio.Event | None, slots: trio.CapacityLimiter | None, large_body_bytes: int) -> None:
        self._receive = receive
        self._send = send
        self.drain_seconds = drain_seconds
        self.stopping = stopping
        self.slots = slots if slots is not None and is_large(scope.get("headers", []), large_body_bytes) else None
        self.holding = False
        self.body_done = trio.Event()
        self.early = False          # the answer started before the body was read
        if not declares_body(scope.get("headers", [])):
            self.body_done.set()

    async def receive(self) -> Message:
        if self.slots is not None and not self.holding and not self.early and not self.body_done.is_set():
            await self.slots.acquire_on_behalf_of(self)  # meanwhile the body stays unread
            self.holding = True
        message = await self._receive()
        kind = message.get("type")
        if kind == "http.request":
            if not message.get("more_body", False):
                self.body_done.set()
            if self.early:
                message = {**message, "body": b""}  # dropped: the answer is already out
        elif kind == "http.disconnect":
            self.body_done.set()
        return message

    def let_go(self) -> None:
        if self.holding:
            self.holding = False
            self.slots.release_on_behalf_of(self)  # type: ignore[union-attr]

    async def send(self, message: Message) -> None:
        kind = message.get("type")
        if kind == "http.response.start":
            self.let_go()
        if kind == "http.response.start" and not self.body_done.is_set():
            self.early = True
            with trio.move_on_after(self.drain_seconds) as drain:
                if self.stopping is not None:
                    async with trio.open_nursery() as nursery:   # SIGTERM: no draining, just close
                        nursery.start_soon(_cancel_on, self.stopping, drain)
                        await self.body_done.wait()
                        nursery.cancel_scope.cancel()
                else:
                    await self.body_done.wait()   # Quart keeps receiving (and we keep dropping) meanwhile
            if not self.body_done.is_set():
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
        if kind == "http.response.body" and not message.get("more_body", False):
            # One scope: a shielded scope keeps its own deadline (two nested cost twice as much).
            with trio.CancelScope(shield=True, deadline=trio.current_time() + FINAL_SEND_LIMIT):
                await self._send(message)
            return
        await self._send(message)


async def _cancel_on(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


class ConnectionGuard:
    """ASGI middleware: `app.asgi_app = ConnectionGuard(app.asgi_app, drain_seconds=...)`.

    `stopping` (the runtime's shutdown event) ends any drain at once, so a client that never
    sends its body cannot hold the graceful shutdown.
    """

    def __init__(self, app: ASGIApp, *, drain_seconds: float, stopping: trio.Event | None = None,
                 large_body_slots: trio.CapacityLimiter | None = None, large_body_bytes: int = 1024 * 1024) -> None:
        self.app = app
        self.drain_seconds = drain_seconds
        self.stopping = stopping
        self.large_body_slots = large_body_slots
        self.large_body_bytes = large_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await refuse_websocket(send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        exchange = _Exchange(scope, receive, send, self.drain_seconds, self.stopping, self.large_body_slots,
                             self.large_body_bytes)
        try:
            await self.app(scope, exchange.receive, exchange.send)
        finally:
            exchange.let_go()


async def refuse_websocket(send: Send) -> None:
    """A plain HTTP 400 instead of the handshake (ASGI `websocket.http.response`, which hypercorn offers)."""
    body = error_json(WEBSOCKET_REFUSAL)
    with trio.CancelScope(shield=True, deadline=trio.current_time() + FINAL_SEND_LIMIT):
        await send({"type": "websocket.http.response.start", "status": WEBSOCKET_REFUSAL.status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "websocket.http.response.body", "body": body, "more_body": False})
