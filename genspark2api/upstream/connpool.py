"""The transport of a direct upstream route: HTTP/1.1 connections kept, each reserved when taken.

httpcore's pool (1.0.x, under httpx.AsyncHTTPTransport) assigns an idle connection to a request
and marks it busy only when that request's task next runs. Every request arriving meanwhile is
handed the same connection; all but one then meet `ConnectionNotAvailable` and queue again, a
scheduler round each. On a busy loop that window is long: in the benchmark's 50-client stream
run every request went round about four times and the unlucky ones many more (time from send to
response head p50 218 ms, p99 1.1 s, for a fake that answers at once; p99 time to first content
+1.4 s against +0.5 s before connections were kept at all). It also scans every connection for
every request. Here a connection leaves the idle list when a request takes it, so no two requests
ever share one, and taking is a list pop.

The connections themselves are httpcore's (`httpcore.AsyncHTTPConnection`: TLS, timeouts, h11),
and the wire is the same as httpx's transport would write. Routes through a proxy keep httpx's
own transport (client.upstream_transport).
"""

from __future__ import annotations

import math
import ssl
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import httpcore
import httpx
import trio


@contextmanager
def httpx_errors() -> Iterator[None]:
    """httpcore's exceptions as httpx's of the same name (what every caller catches)."""
    try:
        yield
    except httpcore.UnsupportedProtocol as exc:
        raise httpx.UnsupportedProtocol(str(exc)) from exc
    except (httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError, httpcore.ProxyError) as exc:
        for kind in type(exc).__mro__:
            mapped = getattr(httpx, kind.__name__, None)
            if isinstance(mapped, type) and issubclass(mapped, httpx.TransportError):
                raise mapped(str(exc)) from exc
        raise httpx.TransportError(str(exc)) from exc


class ReservingTransport(httpx.AsyncBaseTransport):
    """Keeps up to `limits.max_keepalive_connections` idle connections in all (listed per
    origin, the newest taken first, so the fewest expire), opens at most `limits.max_connections`
    at once (beyond, a request waits up to its pool timeout), and closes a connection whose body
    was not read to its end."""

    def __init__(self, limits: httpx.Limits, ssl_context: ssl.SSLContext | None = None) -> None:
        self._ssl = ssl_context if ssl_context is not None else httpx.create_ssl_context()
        self._keep = limits.max_keepalive_connections if limits.max_keepalive_connections is not None else math.inf
        self._expiry = limits.keepalive_expiry
        self._slots = trio.CapacityLimiter(limits.max_connections or math.inf)
        self._idle: dict[tuple[bytes, bytes, int], list[httpcore.AsyncHTTPConnection]] = {}   # by origin
        self._lent: set[httpcore.AsyncHTTPConnection] = set()   # carrying a request now
        self._closed = False

    def idle_count(self) -> int:
        return sum(len(idle) for idle in self._idle.values())

    def in_use(self) -> int:
        """Connections carrying a request (until its body is closed)."""
        return len(self._lent)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._closed:
            raise RuntimeError("the transport is closed")
        url = request.url
        if url.scheme not in ("http", "https"):   # httpcore would fail on it with a KeyError
            raise httpx.UnsupportedProtocol(f"cannot fetch {url.scheme or 'a URL without a scheme'}:// URLs")
        core = httpcore.Request(
            method=request.method,
            url=httpcore.URL(scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path),
            headers=request.headers.raw, content=request.stream, extensions=request.extensions,
        )
        slot = object()   # one borrower per request: released when its body is closed
        wait = (request.extensions.get("timeout") or {}).get("pool")
        with trio.move_on_after(math.inf if wait is None else wait) as waited:
            await self._slots.acquire_on_behalf_of(slot)
        if waited.cancelled_caught:
            raise httpx.PoolTimeout(f"no free upstream connection within {wait} s")
        connection: httpcore.AsyncHTTPConnection | None = None
        try:
            connection = await self._take(core.url.origin)
            self._lent.add(connection)
            with httpx_errors():
                response = await connection.handle_async_request(core)
        except BaseException:
            self._slots.release_on_behalf_of(slot)
            if connection is not None:
                # Closed even when it never became busy (cancelled on httpcore's lock): a taken
                # connection is nobody's once this request gives up. Closing twice is harmless.
                self._lent.discard(connection)
                await _close(connection)
            raise
        body = _Body(response.stream, connection, core.url.origin, self, slot)  # type: ignore[arg-type]
        return httpx.Response(response.status, headers=response.headers, stream=body, extensions=response.extensions)

    async def _take(self, origin: httpcore.Origin) -> httpcore.AsyncHTTPConnection:
        idle = self._idle.get(_key(origin), [])
        while idle:
            connection = idle.pop()
            if connection.is_idle() and not connection.has_expired():
                return connection
            await _close(connection)
        return httpcore.AsyncHTTPConnection(origin=origin, ssl_context=self._ssl, keepalive_expiry=self._expiry)

    async def _give_back(self, connection: httpcore.AsyncHTTPConnection, origin: httpcore.Origin, slot: object) -> None:
        self._slots.release_on_behalf_of(slot)
        self._lent.discard(connection)
        if self._closed or not connection.is_idle() or self.idle_count() >= self._keep:
            await _close(connection)
            return
        self._idle.setdefault(_key(origin), []).append(connection)
        # The oldest idle ones expire first, on every origin (a download host may be used once):
        # drop them now rather than at a next take that may never come.
        for key, idle in list(self._idle.items()):
            while idle and idle[0].has_expired():
                await _close(idle.pop(0))
            if not idle:
                del self._idle[key]

    async def aclose(self) -> None:
        self._closed = True
        for idle in list(self._idle.values()):
            while idle:
                await _close(idle.pop())


def _key(origin: httpcore.Origin) -> tuple[bytes, bytes, int]:
    return origin.scheme, origin.host, origin.port


async def _close(connection: httpcore.AsyncHTTPConnection) -> None:
    with trio.CancelScope(shield=True):
        try:
            await connection.aclose()
        except (httpcore.NetworkError, OSError):
            pass


class _Body(httpx.AsyncByteStream):
    """A response body: httpx's exceptions while read, its connection given back when closed."""

    def __init__(self, stream: AsyncIterator[bytes], connection: httpcore.AsyncHTTPConnection,
                 origin: httpcore.Origin, pool: ReservingTransport, slot: object) -> None:
        self._stream = stream
        self._connection = connection
        self._origin = origin
        self._pool = pool
        self._slot = slot
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with httpx_errors():
            async for part in self._stream:
                yield part

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            with httpx_errors():
                await self._stream.aclose()  # type: ignore[attr-defined]
        finally:
            with trio.CancelScope(shield=True):
                await self._pool._give_back(self._connection, self._origin, self._slot)
