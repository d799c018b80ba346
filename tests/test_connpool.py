"""The direct route's connection pool (upstream/connpool.py) against a loopback HTTP/1.1 server
that counts its connections: reserved on take, reused, capped, dropped when unfinished."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpcore
import httpx
import pytest
import trio

from genspark2api.upstream.connpool import ReservingTransport

BODY = b"data: {}\n\n" * 20


class Server:
    """Keep-alive HTTP/1.1: `/slow` sends half its body, waits for `release`, sends the rest."""

    def __init__(self) -> None:
        self.connections = 0
        self.requests = 0
        self.busy = 0
        self.most_busy = 0
        self.release = trio.Event()
        self.port = 0

    async def handle(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        buffer = b""
        try:
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                self.requests += 1
                self.busy += 1
                self.most_busy = max(self.most_busy, self.busy)
                try:
                    await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                                          b"content-length: %d\r\n\r\n" % len(BODY))
                    if b" /slow " in head:
                        await stream.send_all(BODY[:10])
                        await self.release.wait()
                        await stream.send_all(BODY[10:])
                    else:
                        await trio.sleep(0.01)   # long enough for the requests of a burst to overlap
                        await stream.send_all(BODY)
                finally:
                    self.busy -= 1
        except trio.BrokenResourceError:
            return

    async def serve(self, nursery: trio.Nursery) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        nursery.start_soon(trio.serve_listeners, self.handle, listeners)


@asynccontextmanager
async def serving(limits: httpx.Limits, transport: httpx.AsyncBaseTransport | None = None,
                  ) -> AsyncIterator[tuple[Server, httpx.AsyncBaseTransport, trio.Nursery]]:
    """A counting server and a transport to it (ReservingTransport unless one is given), both
    closed at the end; every step inside is bounded."""
    server = Server()
    transport = transport or ReservingTransport(limits)
    async with trio.open_nursery() as nursery:
        await server.serve(nursery)
        with trio.fail_after(20):
            yield server, transport, nursery
        await transport.aclose()
        nursery.cancel_scope.cancel()


async def fetch(transport: httpx.AsyncBaseTransport, port: int, path: str = "/", *, read: bool = True,
                pool: float | None = 5.0) -> bytes:
    request = httpx.Request("POST", f"http://127.0.0.1:{port}{path}", content=b"{}",
                            extensions={"timeout": {"connect": 5.0, "read": 5.0, "write": 5.0, "pool": pool}})
    response = await transport.handle_async_request(request)
    data = b""
    try:
        if read:
            async for part in response.stream:  # type: ignore[union-attr]
                data += part
    finally:
        await response.aclose()
    return data


@pytest.mark.parametrize("kind", ["ours", "httpcore's"])
async def test_a_burst_gets_one_connection_per_request_and_the_next_burst_reuses_them(
        kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    refused = 0   # a request handed a connection another request had already taken
    real = httpcore.AsyncHTTPConnection.handle_async_request

    async def counted(self: httpcore.AsyncHTTPConnection, request: httpcore.Request) -> httpcore.Response:
        nonlocal refused
        try:
            return await real(self, request)
        except httpcore.ConnectionNotAvailable:
            refused += 1
            raise

    monkeypatch.setattr(httpcore.AsyncHTTPConnection, "handle_async_request", counted)
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=50)
    transport = ReservingTransport(limits) if kind == "ours" else httpx.AsyncHTTPTransport(limits=limits)
    async with serving(limits, transport) as (server, transport, _):
        for _ in range(3):
            async with trio.open_nursery() as burst:
                for _ in range(30):
                    burst.start_soon(fetch, transport, server.port)
    assert server.requests == 90
    if kind == "ours":
        # Each burst ran its 30 requests side by side, each on its own connection; the later
        # bursts found them all idle, and no request was ever handed a taken one.
        assert (server.most_busy, server.connections, refused) == (30, 30, 0)
    else:
        # Why connpool exists: httpcore's pool gave the later bursts' requests one idle connection
        # between many of them; all but one went round again, a scheduler round each.
        assert refused > 30, refused


async def test_an_unfinished_body_costs_its_connection_and_a_finished_one_keeps_it() -> None:
    async with serving(httpx.Limits(max_connections=10, max_keepalive_connections=10)) as (server, transport, _):
        assert await fetch(transport, server.port) == BODY
        assert await fetch(transport, server.port) == BODY
        assert server.connections == 1 and transport.idle_count() == 1
        await fetch(transport, server.port, read=False)   # closed before its end: not reusable
        assert transport.idle_count() == 0
        assert await fetch(transport, server.port) == BODY
        assert server.connections == 2


async def test_at_the_cap_a_request_waits_for_a_slot_and_then_times_out_as_httpx_says() -> None:
    async with serving(httpx.Limits(max_connections=1, max_keepalive_connections=1)) as (server, transport, nursery):
        holder = trio.Event()

        async def hold() -> None:
            request = httpx.Request("POST", f"http://127.0.0.1:{server.port}/slow", content=b"{}")
            response = await transport.handle_async_request(request)
            holder.set()
            async for _ in response.stream:  # type: ignore[union-attr]
                pass
            await response.aclose()

        nursery.start_soon(hold)
        await holder.wait()
        with pytest.raises(httpx.PoolTimeout):
            await fetch(transport, server.port, pool=0.2)
        # The slot comes free when the body ends: a waiting request then goes through.
        async with trio.open_nursery() as inner:
            inner.start_soon(fetch, transport, server.port)
            await trio.sleep(0.1)
            server.release.set()
        assert server.connections == 1   # the held connection, reused by the waiter


async def test_a_cancelled_request_frees_its_slot_and_its_connection_is_not_reused() -> None:
    async with serving(httpx.Limits(max_connections=1, max_keepalive_connections=1)) as (server, transport, _):
        with trio.move_on_after(0.2):
            await fetch(transport, server.port, "/slow")   # never finishes: release is not set
        assert transport.idle_count() == 0
        server.release.set()
        assert await fetch(transport, server.port) == BODY   # the cap's one slot is free again
        assert server.connections == 2


async def test_an_expired_idle_connection_is_closed_not_reused() -> None:
    expiring = httpx.Limits(max_connections=5, max_keepalive_connections=5, keepalive_expiry=0.05)
    async with serving(expiring) as (server, transport, _):
        await fetch(transport, server.port)
        await trio.sleep(0.2)
        await fetch(transport, server.port)
        assert server.connections == 2


async def test_network_errors_are_httpx_errors() -> None:
    with trio.socket.socket() as unused:
        await unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]   # bound, not listening: connecting is refused
        transport = ReservingTransport(httpx.Limits(max_connections=2))
        with trio.fail_after(10), pytest.raises(httpx.ConnectError):
            await fetch(transport, port)
        await transport.aclose()


async def test_a_url_that_is_not_http_is_refused_as_httpx_says() -> None:
    # A download link from upstream could name any scheme; callers catch httpx's errors only.
    transport = ReservingTransport(httpx.Limits(max_connections=2))
    for url in ("ftp://127.0.0.1/x", "//127.0.0.1/x"):
        with pytest.raises(httpx.UnsupportedProtocol):
            await transport.handle_async_request(httpx.Request("GET", url))
    assert transport.in_use() == 0
    await transport.aclose()
