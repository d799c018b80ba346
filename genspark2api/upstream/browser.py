"""`UPSTREAM_TRANSPORT=browser`: upstream calls with a browser's TLS/HTTP2 fingerprint (curl_cffi).

genspark-protocol.md §12.6.2: from datacenter IPs Cloudflare challenges a non-browser client even
on the home page, while `curl_cffi` with `impersonate="chrome"` passes (SB/FY/KE, Sept 2026).
Python's own ClientHello is easy to tell from Chrome's (python-stack.md §4).

This is an `httpx.AsyncBaseTransport`, so everything above it (SSE decoding, classification,
redirects, recording, cancellation) is the same as with httpx. curl_cffi's async session is
asyncio-only (python-stack.md §4), so each exchange runs libcurl's blocking `perform()` on a trio
worker thread (`trio.lowlevel.start_thread_soon`, trio's thread cache) and hands the response over a
bounded queue (`_Handoff`): headers first, then body chunks as they arrive. A full queue blocks
libcurl (back-pressure); once trio has given up, the write callback fails, which aborts the transfer.

Closing the response (the client went away, a cancel scope ended) must close the upstream
connection *now*, even while the upstream is silent and libcurl sits in `poll()`, where no callback
runs. So the header callback keeps a duplicate of the connection's socket and `close()` shuts it
down: libcurl's read wakes with EOF and the thread ends. The duplicate keeps the socket alive, so a
shutdown can never hit a reused descriptor; one libcurl handle per exchange, so no other request
shares that connection.

Each exchange uses a fresh handle (a new connection per request, like the simulator's tests expect
of httpx with keep-alive off); the User-Agent and the other default headers are the impersonated
browser's, which keeps them consistent with the fingerprint (python-stack.md §4, last advice).
"""

from __future__ import annotations

import math
import queue
import socket
import threading
from collections.abc import AsyncIterator
from typing import Any

import httpx
import trio

from ..settings import SettingsError

try:  # the optional extra: pip install 'genspark2api[browser]'
    from curl_cffi import Curl, CurlError, CurlInfo, CurlOpt
    from curl_cffi.const import CurlECode, CurlHttpVersion
    from curl_cffi.curl import CURL_WRITEFUNC_ERROR
    from curl_cffi.requests.impersonate import (
        REAL_TARGET_MAP,
        resolve_latest_browser_type,
    )
    from curl_cffi.requests.utils import NATIVE_TARGET_NAMES
except ImportError:  # pragma: no cover - exercised only where the extra is missing
    Curl = None  # type: ignore[assignment,misc]

CHANNEL_CHUNKS = 16
_INFO_TEXT, _INFO_HEADER_OUT = 0, 2      # curl_infotype values of the debug callback
_NO_SOCKET = 2**32 - 1                  # CURL_SOCKET_BAD as an unsigned ACTIVESOCKET
# Headers libcurl sets itself, or that impersonation owns (the UA must match the fingerprint).
_SKIP_HEADERS = frozenset({"host", "connection", "content-length", "transfer-encoding", "accept-encoding",
                           "user-agent", "keep-alive", "proxy-connection"})
# libcurl decodes the body itself (impersonation sets Accept-Encoding), so these would mislead httpx.
_DROP_RESPONSE_HEADERS = frozenset({"content-encoding", "content-length", "transfer-encoding"})
# What Chrome sends with a same-origin fetch() (the Genspark page calling its API, §12.6.2).
_FETCH_HEADERS = {"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors", "Sec-Fetch-Dest": "empty"}
_NAVIGATION_ONLY = ("Upgrade-Insecure-Requests", "Sec-Fetch-User", "Cache-Control")


def impersonation_targets() -> list[str]:
    """What `UPSTREAM_IMPERSONATE` accepts: the aliases (`chrome` = the newest Chrome this curl_cffi
    knows) and the exact versions built into libcurl-impersonate (never a downloaded fingerprint)."""
    if Curl is None:
        return []
    return sorted({alias for alias in REAL_TARGET_MAP if resolve_latest_browser_type(alias) in NATIVE_TARGET_NAMES}
                  | set(NATIVE_TARGET_NAMES))


def check_available(target: str) -> None:
    """Stop the start with a clear line when the extra is missing or the target is unknown."""
    if Curl is None:
        raise SettingsError(
            "UPSTREAM_TRANSPORT=browser needs curl_cffi: pip install 'genspark2api[browser]' (or curl_cffi)"
        )
    if target not in impersonation_targets():
        shown = ", ".join(sorted(a for a in REAL_TARGET_MAP if "_" not in a))
        raise SettingsError(f"UPSTREAM_IMPERSONATE={target!r} is not a curl_cffi target; use one of: {shown}, "
                            "or an exact version such as chrome146")


def _curl_exception(error: CurlError, got_head: bool) -> httpx.TransportError:
    """libcurl's error as the httpx exception classify_exception already understands."""
    code = getattr(error, "code", None)
    text = str(error)
    lowered = text.lower()
    if code in (CurlECode.COULDNT_RESOLVE_PROXY, CurlECode.PROXY) or (
        not got_head and ("proxy" in lowered or "connect tunnel" in lowered)
    ):
        return httpx.ProxyError(text)
    if code == CurlECode.OPERATION_TIMEDOUT:
        if not got_head and "connect" in lowered:
            return httpx.ConnectTimeout(text)
        return httpx.ReadTimeout(text)
    if code in (CurlECode.COULDNT_RESOLVE_HOST, CurlECode.COULDNT_CONNECT, CurlECode.SSL_CONNECT_ERROR):
        return httpx.ConnectError(text)
    if not got_head:
        return httpx.ConnectError(text) if code != CurlECode.GOT_NOTHING else httpx.RemoteProtocolError(text)
    return httpx.RemoteProtocolError(text)


class _Handoff:
    """Worker thread → trio, bounded. The thread blocks while it is full (back-pressure) but never
    waits for the event loop itself: a put wakes the trio side with `run_sync_soon`, which is much
    cheaper per chunk than a `from_thread.run` round trip with twenty streams contending."""

    def __init__(self, token: trio.lowlevel.TrioToken, size: int) -> None:
        self._queue: queue.Queue[tuple[Any, ...]] = queue.Queue(size)
        self._token = token
        self._ready = trio.Event()
        self.closed = threading.Event()   # the trio side gave up: stop producing

    def put(self, message: tuple[Any, ...]) -> bool:
        """(worker thread) False once the trio side is gone."""
        while not self.closed.is_set():
            try:
                self._queue.put(message, timeout=0.2)
            except queue.Full:
                continue
            try:
                self._token.run_sync_soon(self._wake)
            except trio.RunFinishedError:
                self.closed.set()
                return False
            return True
        return False

    def _wake(self) -> None:
        self._ready.set()

    async def get(self) -> tuple[Any, ...]:
        """(trio) The next message. No wake-up can be lost: the queue is checked before every wait,
        and `_wake` only runs at a checkpoint, i.e. inside the wait."""
        while True:
            try:
                return self._queue.get_nowait()
            except queue.Empty:
                pass
            await self._ready.wait()
            self._ready = trio.Event()

    def close(self) -> None:
        self.closed.set()


class _Exchange:
    """One request on its own libcurl handle and worker thread. Messages to trio: ("head", status,
    headers, version), ("data", bytes)…, then ("end", None) or ("error", httpx exception)."""

    def __init__(self, curl: Any, handoff: _Handoff) -> None:
        self.curl = curl
        self.handoff = handoff
        self.quit = handoff.closed
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None   # a duplicate of the connection, for close()
        self._status = 0
        self._version = b"HTTP/1.1"
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_sent = False

    # -------------------------------------------------------------- worker thread

    def _post(self, message: tuple[Any, ...]) -> bool:
        """Hand one message to trio, blocking while the channel is full; False once trio gave up."""
        return self.handoff.put(message)

    def on_debug(self, kind: int, text: bytes) -> None:
        # libcurl's debug callback runs on this thread as soon as it has connected and sends the
        # request; the earliest safe moment to take the socket (nothing else runs while the
        # response head is awaited, and a silent upstream must still be closable then).
        if self._sock is None and kind in (_INFO_TEXT, _INFO_HEADER_OUT):
            self._keep_socket()

    def on_header(self, line: bytes) -> int:
        if self.quit.is_set():
            return CURL_WRITEFUNC_ERROR  # aborts the transfer (curl_cffi ignores a short count)
        if self._sock is None:
            self._keep_socket()
        text = line.rstrip(b"\r\n")
        if text.startswith(b"HTTP/"):
            # A new response begins (after a 1xx or a proxy's CONNECT answer): start over.
            version, _, rest = text.partition(b" ")
            self._version = b"HTTP/2" if version.startswith(b"HTTP/2") else version
            self._status = int(rest.split(b" ", 1)[0] or b"0")
            self._headers = []
        elif text and b":" in text:
            name, _, value = text.partition(b":")
            self._headers.append((name.strip(), value.strip()))
        return len(line)

    def on_body(self, chunk: bytes) -> int:
        if not self._head_sent and not self._send_head():
            return CURL_WRITEFUNC_ERROR
        return len(chunk) if self._post(("data", chunk)) else CURL_WRITEFUNC_ERROR

    def _send_head(self) -> bool:
        self._head_sent = True
        headers = [(k, v) for k, v in self._headers if k.decode("latin-1").lower() not in _DROP_RESPONSE_HEADERS]
        return self._post(("head", self._status, headers, self._version))

    def _keep_socket(self) -> None:
        try:
            fd = self.curl.getinfo(CurlInfo.ACTIVESOCKET)
            if isinstance(fd, int) and 0 <= fd < _NO_SOCKET:
                with self._lock:
                    self._sock = socket.socket(fileno=socket.dup(fd))
                if self.quit.is_set():
                    self.abort()  # trio gave up while we were connecting
        except (OSError, CurlError):
            self._sock = None

    def run(self) -> None:
        """The worker thread: perform, then report how it ended. Never raises."""
        try:
            self.curl.perform()
        except CurlError as exc:
            if not self.quit.is_set():
                self._post(("error", _curl_exception(exc, self._head_sent)))
        except BaseException as exc:  # a callback error surfaces here; report, never kill the thread cache
            if not self.quit.is_set():
                self._post(("error", httpx.RemoteProtocolError(f"curl_cffi failed: {type(exc).__name__}: {exc}")))
        else:
            if not self._head_sent:
                self._status = self._status or int(self.curl.getinfo(CurlInfo.RESPONSE_CODE) or 0)
                self._send_head()
            self._post(("end", None))
        finally:
            self._release()

    def _release(self) -> None:
        with self._lock:
            sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
        try:
            self.curl.close()
        except Exception:  # noqa: BLE001 - closing a finished handle must not matter
            pass

    # -------------------------------------------------------------- trio side

    def abort(self) -> None:
        """Stop the transfer and close the connection, at once and without waiting for the thread."""
        self.quit.set()
        with self._lock:
            if self._sock is not None:
                try:
                    self._sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass  # already closed by the peer


async def _next(exchange: _Exchange, gap: float, what: str) -> tuple[Any, ...]:
    """The next message from the worker, or httpx.ReadTimeout (and the transfer stopped) after `gap`."""
    try:
        with trio.fail_after(gap):
            return await exchange.handoff.get()
    except trio.TooSlowError:
        exchange.abort()
        raise httpx.ReadTimeout(f"no {what} from upstream for {gap:g} s") from None


class _CurlBody(httpx.AsyncByteStream):
    def __init__(self, exchange: _Exchange, gap: float) -> None:
        self._exchange = exchange
        self._gap = gap

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            kind, *rest = await _next(self._exchange, self._gap, "data")
            if kind == "data":
                yield rest[0]
            elif kind == "error":
                raise rest[0]
            else:
                return

    async def aclose(self) -> None:
        self._exchange.abort()


class BrowserTransport(httpx.AsyncBaseTransport):
    """httpx on the outside, libcurl with a browser fingerprint inside (see the module docstring)."""

    def __init__(self, *, impersonate: str = "chrome", proxy: str | None = None, verify: bool = True) -> None:
        check_available(impersonate)
        self.impersonate = impersonate
        if proxy and proxy.lower().startswith("socks5://"):
            # httpx sends the hostname to a socks5:// proxy as to socks5h:// (python-stack.md §4);
            # libcurl would resolve it locally. Same PROXY_URL, same behaviour on both transports.
            proxy = "socks5h://" + proxy[len("socks5://"):]
        self.proxy = proxy or None
        self.verify = verify

    def _handle(self, request: httpx.Request, body: bytes) -> Any:
        curl = Curl()
        curl.setopt(CurlOpt.URL, str(request.url).encode())
        method = request.method.upper()
        if method == "GET":
            curl.setopt(CurlOpt.HTTPGET, 1)
        elif method == "HEAD":
            curl.setopt(CurlOpt.NOBODY, 1)
        elif method == "POST":
            curl.setopt(CurlOpt.POST, 1)
        else:
            curl.setopt(CurlOpt.CUSTOMREQUEST, method.encode())
        if body or method in ("POST", "PUT", "PATCH"):
            curl.setopt(CurlOpt.POSTFIELDS, body)
            curl.setopt(CurlOpt.POSTFIELDSIZE, len(body))
        given = {k.lower() for k in request.headers}
        headers = [f"{k}: {v}".encode("latin-1", "replace") for k, v in request.headers.items()
                   if k.lower() not in _SKIP_HEADERS]
        if "origin" in given:
            # An API call from the page is a `fetch()`, not a navigation: the fingerprint's defaults
            # (sec-fetch-mode: navigate, upgrade-insecure-requests) would contradict Origin/Referer.
            headers += [f"{k}: {v}".encode() for k, v in _FETCH_HEADERS.items() if k.lower() not in given]
            headers += [f"{k}:".encode() for k in _NAVIGATION_ONLY if k.lower() not in given]
        # An empty "Expect:" keeps libcurl from waiting a second for "100 Continue" on large bodies.
        curl.setopt(CurlOpt.HTTPHEADER, headers + [b"Expect:"])
        # After HTTPHEADER: the fingerprint's default headers fill in what the request did not set.
        if curl.impersonate(resolve_latest_browser_type(self.impersonate), default_headers=True) != 0:
            raise httpx.UnsupportedProtocol(f"curl_cffi cannot impersonate {self.impersonate!r}")
        curl.setopt(CurlOpt.HTTP_VERSION, CurlHttpVersion.V2TLS)  # a browser never tries h2c upgrades
        # Chrome's Accept-Encoding, and libcurl decodes what it asked for (the header alone would not).
        curl.setopt(CurlOpt.ACCEPT_ENCODING, b"gzip, deflate, br, zstd")
        timeout = request.extensions.get("timeout") or {}
        connect = timeout.get("connect")
        if connect:
            curl.setopt(CurlOpt.CONNECTTIMEOUT_MS, max(1, int(connect * 1000)))
        # The read timeout (the longest gap between bytes) is kept on the trio side (_CurlBody):
        # libcurl's LOW_SPEED_* averages over a window of seconds, and would also fire while a slow
        # reader holds the channel full.
        curl.setopt(CurlOpt.FOLLOWLOCATION, 0)  # httpx follows redirects where the client asks for it
        curl.setopt(CurlOpt.NOSIGNAL, 1)        # no SIGALRM for timeouts in a worker thread
        if self.proxy:
            curl.setopt(CurlOpt.PROXY, self.proxy.encode())
            curl.setopt(CurlOpt.SUPPRESS_CONNECT_HEADERS, 1)
        else:
            curl.setopt(CurlOpt.PROXY, b"")  # and never a proxy from the environment
        if not self.verify:
            curl.setopt(CurlOpt.SSL_VERIFYPEER, 0)
            curl.setopt(CurlOpt.SSL_VERIFYHOST, 0)
        return curl

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        curl = self._handle(request, body)
        exchange = _Exchange(curl, _Handoff(trio.lowlevel.current_trio_token(), CHANNEL_CHUNKS))
        curl.setopt(CurlOpt.HEADERFUNCTION, exchange.on_header)
        curl.setopt(CurlOpt.VERBOSE, 1)  # only to get the debug callback (on_debug); nothing is printed
        curl.setopt(CurlOpt.DEBUGFUNCTION, exchange.on_debug)
        curl.setopt(CurlOpt.WRITEFUNCTION, exchange.on_body)
        trio.lowlevel.start_thread_soon(exchange.run, lambda _outcome: None, name="genspark2api browser transport")
        timeout = request.extensions.get("timeout") or {}
        gap = timeout.get("read") or math.inf
        try:
            # httpx's read timeout covers the wait for the head too; connecting has its own.
            kind, *rest = await _next(exchange, gap + (timeout.get("connect") or 0), "response")
        except BaseException:
            exchange.abort()  # cancelled while waiting for the headers: stop connecting too
            raise
        if kind == "error":
            exchange.abort()
            raise rest[0]
        if kind != "head":  # pragma: no cover - the thread always sends the head first
            exchange.abort()
            raise httpx.RemoteProtocolError("curl_cffi gave no response head")
        status, headers, version = rest
        return httpx.Response(
            status,
            headers=headers,
            stream=_CurlBody(exchange, gap),
            extensions={"http_version": version},
            request=request,
        )
