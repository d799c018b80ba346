"""The one upstream client: every call to Genspark goes through `GensparkClient`.

One method per upstream call; one seam (`transport`) where a test or a browser-fingerprint client
plugs in (STYLE.md, httpx's transport idea). Status codes, content types and bodies are kept for
the failure classifier: an error page never gets lost on the way (genspark-protocol.md §4.3).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit
from urllib.request import getproxies_environment, proxy_bypass_environment

import httpx
import msgspec
import trio

from ..redact import mask_proxy
from ..settings import Settings
from . import drift
from .classify import Failure, FailureKind, classify_exception, classify_http
from .connpool import ReservingTransport
from .events import UpstreamFailure
from .sse import (
    DataLine,
    LineDecoder,
    LineTooLong,
    OtherLine,
    UpstreamEvent,
    decode_event,
    decode_json,
)

log = logging.getLogger("genspark2api.upstream")

ERROR_BODY_CAP = 256 * 1024
OTHER_TEXT_CAP = 64 * 1024
# classify_http's fall-backs: a status/body shape it has no rule for (a drift notice, drift.py).
UNRECOGNISED_CODES = frozenset({"upstream_bad_request", "upstream_unavailable"})
# After the last chat event the upstream sends at most a few more (§12.4.1: `project_field`
# status FINISHED is the last) and ends the body at once. httpcore keeps a connection only when
# its body was read to the end, so we read that rest, for this long and this much at most;
# otherwise every answer costs a new TCP and TLS handshake. Past either bound the connection is
# dropped, as it would have been without the drain.
DRAIN_SECONDS = 0.05
DRAIN_BYTES = 64 * 1024


class UpstreamStream:
    """An open upstream SSE body: decoded events, with non-data text kept for classification.

    `next_events()` is the chat path's read: the events one chunk of the body completed, with no
    generator in between. `events()` and `objects()` are iterators over the same body; the ones
    handed out are closed when the stream is (`open_stream`), so one left early is never
    finalized by trio's garbage hook (a task each).
    """

    def __init__(self, response: httpx.Response, chunks: AsyncIterator[bytes], first: bytes) -> None:
        self.response = response
        self._chunks = chunks
        self._first = first
        self._decoder = LineDecoder()
        self._ended = False
        self._iterators: list[AsyncGenerator[Any, None]] = []
        self.other_text = bytearray()

    @property
    def content_type(self) -> str:
        return self.response.headers.get("content-type", "")

    async def _next_lines(self) -> list[DataLine | OtherLine] | None:
        """The lines the next chunk of the body completed ([] if none), None after the end."""
        if self._ended:
            return None
        try:
            if self._first:
                data, self._first = self._first, b""
                return self._decoder.feed(data)
            try:
                chunk = await self._chunks.__anext__()
            except StopAsyncIteration:
                self._ended = True
                return self._decoder.finish()
            return self._decoder.feed(chunk)
        except LineTooLong as exc:
            raise UpstreamFailure(Failure(FailureKind.NETWORK, "upstream_protocol_error", str(exc))) from None
        except httpx.HTTPError as exc:
            raise UpstreamFailure(classify_exception(exc)) from None

    async def next_events(self) -> list[UpstreamEvent] | None:
        """The chat events of the next chunk (loosely typed; see sse.UpstreamEvent), None at the end."""
        lines = await self._next_lines()
        if lines is None:
            return None
        events, payloads = [], []
        for line in lines:
            event = self._event(line)
            if event is not None:
                events.append(event)
                payloads.append(line.payload)  # type: ignore[union-attr]  (a DataLine: it decoded)
        if payloads:
            drift.current_payload.set(tuple(payloads))  # for the sample of a drift notice
        return events

    def events(self) -> AsyncIterator[UpstreamEvent]:
        """The chat events of the body, one by one."""
        return self._kept(self._events())

    def objects(self) -> AsyncIterator[Any]:
        """Every `data:` line as plain JSON (task-status streams carry fields chat has not)."""
        return self._kept(self._objects())

    def _kept(self, iterator: AsyncGenerator[Any, None]) -> AsyncGenerator[Any, None]:
        self._iterators.append(iterator)
        return iterator

    async def aclose(self) -> None:
        """Close the iterators handed out (a consumer that stopped early left one suspended)."""
        for iterator in self._iterators:
            await iterator.aclose()
        self._iterators.clear()

    async def _events(self) -> AsyncGenerator[UpstreamEvent, None]:
        while (events := await self.next_events()) is not None:
            for event in events:
                yield event

    async def _objects(self) -> AsyncGenerator[Any, None]:
        while (lines := await self._next_lines()) is not None:
            for line in lines:
                if isinstance(line, DataLine):
                    value = decode_json(line.payload)
                    if value is not None:
                        yield value
                        continue
                    line = OtherLine(line.payload)
                self._keep_other(line.text)

    def _event(self, line: DataLine | OtherLine) -> UpstreamEvent | None:
        if isinstance(line, DataLine):
            event = decode_event(line.payload)
            if event is not None:
                return event
            self._keep_other(line.payload)
        else:
            self._keep_other(line.text)
        return None

    def _keep_other(self, text: bytes) -> None:
        if len(self.other_text) < OTHER_TEXT_CAP:
            self.other_text += text[: OTHER_TEXT_CAP - len(self.other_text)] + b"\n"

    def failure_from_other_text(self) -> Failure | None:
        """An in-band error page or plain-text signal seen inside a 200 body (§4.3)."""
        if not self.other_text:
            return None
        return classify_http(self.response.status_code, self.content_type, bytes(self.other_text))


def upstream_transport(
    settings: Settings, given: httpx.AsyncBaseTransport | None, limits: httpx.Limits, proxy: str | None
) -> httpx.AsyncBaseTransport:
    """The transport under the client: one per egress route, with its own connection pool.

    `proxy` is `PROXY_URL` or a cookie's own proxy (None = direct). `UPSTREAM_TRANSPORT=browser`
    carries it inside (libcurl speaks http and socks5 proxies itself); a direct route keeps its
    connections in connpool.ReservingTransport (httpcore's pool hands one idle connection to
    several requests at once under load), a proxied one in httpx's own transport.
    `UPSTREAM_RECORD_DIR` wraps whichever it is, so the recording sees the wire bytes of all. The transport is built here, not by httpx.AsyncClient, because the chat stream talks
    to it directly (`GensparkClient.open_stream`).
    """
    inner = given
    if inner is None and settings.upstream_transport == "browser":
        from .browser import BrowserTransport  # curl_cffi only when asked for

        inner = BrowserTransport(impersonate=settings.upstream_impersonate, proxy=proxy)
    if inner is None:
        inner = ReservingTransport(limits) if proxy is None else httpx.AsyncHTTPTransport(proxy=proxy, limits=limits)
    if settings.upstream_record_dir:
        from .recording import RecordingTransport

        inner = RecordingTransport(inner, settings.upstream_record_dir)
    return inner


def environment_proxy(url: str) -> str | None:
    """The proxy the standard environment variables name for `url` (HTTPS_PROXY, HTTP_PROXY,
    ALL_PROXY, NO_PROXY), as httpx itself would have used them before the transports were
    built here; None when they name none."""
    host = urlsplit(url).hostname or ""
    if proxy_bypass_environment(host):
        return None
    proxies = getproxies_environment()
    return proxies.get(urlsplit(url).scheme) or proxies.get("all") or None


@dataclass(frozen=True)
class _Route:
    """One egress route: the httpx client for ordinary calls and, under it, the transport the
    chat stream uses directly, with the client's default headers and timeouts."""

    http: httpx.AsyncClient
    transport: httpx.AsyncBaseTransport
    headers: tuple[tuple[str, str], ...]
    timeout: dict[str, float | None]


ProxyOf = Callable[[str], "str | None"]
DIRECT = "direct"  # a cookie's proxy setting meaning "no proxy, not even PROXY_URL"


def _no_proxy_of_its_own(cookie: str) -> str | None:
    return None


class GensparkClient:
    """Talks to `GENSPARK_BASE_URL` (and the reCAPTCHA service) on behalf of one cookie at a time.

    Per-cookie proxies: `proxy_of(cookie)` (the pool's `proxy_for`, set by the runtime) names the
    cookie's own proxy, None for `PROXY_URL`, or `direct`. Each distinct proxy gets its own httpx
    client, so its own connection pool, made on first use and closed by `aclose`; a connection is
    therefore never shared between two egress routes. A transport handed in (tests, replay)
    carries every call: there is no proxy to choose then.
    """

    def __init__(self, settings: Settings, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.base_url = settings.base_url
        self.recaptcha_url = settings.recaptcha_proxy_url
        self.timezone = settings.timezone
        self._settings = settings
        self._given = transport
        self._default_proxy = settings.proxy_url or environment_proxy(settings.base_url)
        self.proxy_of: ProxyOf = _no_proxy_of_its_own
        self.transport_name = "custom" if transport is not None else settings.upstream_transport
        self._default = self._build(self._default_proxy)
        self._by_proxy: dict[str, _Route] = {}
        self._closed = False
        # The reCAPTCHA service is called without the egress proxy (§1.1) and with a short deadline.
        self._side = httpx.AsyncClient(timeout=httpx.Timeout(20.0), transport=transport, follow_redirects=True)

    def _build(self, proxy: str | None) -> _Route:
        settings = self._settings
        timeout = httpx.Timeout(settings.connect_timeout, read=settings.idle_timeout, write=60.0, pool=30.0)
        # Every open SSE stream holds a pool slot (python-stack.md §4): size for many streams.
        limits = httpx.Limits(max_connections=1000, max_keepalive_connections=100)
        transport = upstream_transport(settings, self._given, limits, proxy)
        http = httpx.AsyncClient(
            timeout=timeout,
            limits=limits,
            transport=transport,
            follow_redirects=False,
            # §12.5 E22: without a User-Agent ask_proxy answers 400 'bad request cf'.
            headers={"User-Agent": settings.user_agent},
        )
        defaults = tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in http.headers.raw)
        return _Route(http, transport, defaults, timeout.as_dict())

    def _route_for(self, cookie: str | None) -> _Route:
        """The egress route that is this cookie's (the default one without a cookie)."""
        if not cookie or self._given is not None or self._closed:
            return self._default
        wanted = self.proxy_of(cookie)
        if wanted is None:
            return self._default
        proxy = None if wanted == DIRECT else wanted
        if proxy == self._default_proxy:
            return self._default
        route = self._by_proxy.get(wanted)
        if route is None:
            route = self._by_proxy[wanted] = self._build(proxy)
            log.info("upstream client for proxy %s opened", mask_proxy(wanted))
        return route

    def _http_for(self, cookie: str | None) -> httpx.AsyncClient:
        """The client whose egress route is this cookie's (the default one without a cookie)."""
        return self._route_for(cookie).http

    @property
    def proxies_open(self) -> list[str]:
        """The per-cookie proxies with a client of their own (masked), for the status views."""
        return [mask_proxy(p) for p in self._by_proxy]

    async def aclose(self) -> None:
        self._closed = True
        routes = [self._default, *self._by_proxy.values()]
        self._by_proxy.clear()
        for route in routes:
            await route.http.aclose()   # closes its transport too
        await self._side.aclose()

    def same_origin(self, url: str) -> bool:
        """Whether `url` is on the configured upstream (scheme, host and port), the only place the
        cookie may go; a string prefix would also match `https://www.genspark.ai.evil.example`."""
        mine, theirs = urlsplit(self.base_url), urlsplit(url)
        return (mine.scheme, mine.hostname, mine.port) == (theirs.scheme.lower(), theirs.hostname, theirs.port)

    def absolute(self, url: str) -> str:
        """A result URL as upstream gave it, made absolute: §12.7.4 URLs may come back relative."""
        return self.url(url) if url.startswith("/") and not url.startswith("//") else url

    def url(self, path: str) -> str:
        return urljoin(self.base_url + "/", path.lstrip("/"))

    def _headers(self, cookie: str, accept: str, referer: str = "/") -> dict[str, str]:
        # §12.2.1: without Origin/Referer/X-Timezone "Cloudflare returns 403" (AX-A); request-id and
        # traceparent are what the UI sends (random values pass, TT-1), paired as SB and TT-4 pair them.
        trace, span = secrets.token_hex(16), secrets.token_hex(8)
        return {
            "Cookie": cookie,
            "Accept": accept,
            "Content-Type": "application/json",
            "Origin": self.base_url,
            "Referer": self.url(referer),
            "X-Timezone": self.timezone,
            "request-id": f"|{trace}.{span}",
            "traceparent": f"00-{trace}-{span}-01",
        }

    @asynccontextmanager
    async def open_stream(
        self, path: str, *, cookie: str, json: Any, referer: str = "/", accept: str = "text/event-stream"
    ) -> AsyncIterator[UpstreamStream]:
        """POST and hold the response open. Error bodies raise `UpstreamFailure` right away.

        The request goes to the route's transport directly, past httpx.AsyncClient: the client's
        URL and header merging, cookie jar (Genspark's Set-Cookie is not ours to keep: the cookie
        is the pool's) and redirect and auth loops cost about as much CPU as the rest of an
        answer's upstream side, and this call needs none of them. The wire is the same: the
        client's default headers, then ours; its timeouts.
        """
        route = self._route_for(cookie)
        ours = self._headers(cookie, accept, referer)
        named = {name.lower() for name in ours}
        headers = [(k, v) for k, v in route.headers if k.lower() not in named] + list(ours.items())
        request = httpx.Request("POST", self.url(path), content=msgspec.json.encode(json), headers=headers,
                                extensions={"timeout": route.timeout})
        try:
            response = await route.transport.handle_async_request(request)
        except httpx.HTTPError as exc:
            raise UpstreamFailure(classify_exception(exc)) from None
        response.request = request
        try:
            first = b""
            ctype = response.headers.get("content-type", "")
            chunks = _body(response)
            if response.status_code < 300:
                try:
                    async for chunk in chunks:
                        if chunk:
                            first = chunk
                            break
                except httpx.HTTPError as exc:
                    raise UpstreamFailure(classify_exception(exc)) from None
            # §1.2: upstream answers SSE whatever the Accept header says, so sniff the body too.
            looks_sse = "event-stream" in ctype or first.lstrip().startswith(b"data:")
            if response.status_code >= 300 or not looks_sse:
                body = first + await _read_capped(chunks, ERROR_BODY_CAP - len(first))
                failure = classify_http(response.status_code, ctype, body)
                if failure is None or failure.code in UNRECOGNISED_CODES:
                    media = ctype.split(";")[0].strip() or "no content type"
                    drift.notice("http_status", f"{path} HTTP {response.status_code} {media}", body[:2048])
                if failure is None:
                    failure = Failure(
                        FailureKind.NETWORK,
                        "upstream_protocol_error",
                        f"Genspark answered HTTP {response.status_code} {ctype or 'without content type'} "
                        f"that is not an event stream: {body[:160]!r}",
                    )
                raise UpstreamFailure(failure)
            stream = UpstreamStream(response, chunks, first)
            try:
                yield stream
            finally:
                await stream.aclose()
            # Only after a normal end: on cancellation or failure the connection is dropped.
            await _drain(chunks)
        finally:
            await response.aclose()

    async def get_json(self, path: str, *, cookie: str, params: dict[str, str] | None = None) -> Any:
        """A small JSON GET (upload URL, project delete); failures are classified."""
        try:
            response = await self._http_for(cookie).get(
                self.url(path), params=params, headers=self._headers(cookie, "application/json"))
        except httpx.HTTPError as exc:
            raise UpstreamFailure(classify_exception(exc)) from None
        body = response.content[:ERROR_BODY_CAP]
        failure = classify_http(response.status_code, response.headers.get("content-type", ""), body)
        if failure is not None:
            raise UpstreamFailure(failure)
        try:
            return response.json()
        except ValueError:
            raise UpstreamFailure(
                Failure(FailureKind.NETWORK, "upstream_protocol_error", f"{path} answered non-JSON: {body[:160]!r}")
            ) from None

    async def put_blob(self, url: str, data: bytes, *, cookie: str | None = None) -> None:
        """§2.5 step 2: PUT the raw bytes to the signed blob URL, without the cookie.

        `cookie` only chooses the egress route (the upload belongs to that account's request); it
        is not sent."""
        headers = {
            "Accept": "*/*",
            "x-ms-blob-type": "BlockBlob",
            "Content-Type": "application/octet-stream",
            "Origin": self.base_url,
            "Sec-Fetch-Dest": "empty",
            "Sec-Fetch-Mode": "cors",
            "Sec-Fetch-Site": "cross-site",
        }
        try:
            response = await self._http_for(cookie).put(url, content=data, headers=headers)
        except httpx.HTTPError as exc:
            raise UpstreamFailure(classify_exception(exc)) from None
        if response.status_code >= 300:
            raise UpstreamFailure(
                Failure(FailureKind.NETWORK, "upstream_upload_failed", f"blob upload answered HTTP {response.status_code}")
            )

    async def download(self, url: str, *, cookie: str | None, max_bytes: int) -> tuple[bytes, str | None]:
        """Fetch a generated file (images, videos) with the cookie and the proxy, size-capped."""
        headers = {"Accept": "*/*"}
        if cookie and self.same_origin(url):
            headers["Cookie"] = cookie
        try:
            async with self._http_for(cookie).stream("GET", url, headers=headers, follow_redirects=True) as response:
                if response.status_code >= 300:
                    raise UpstreamFailure(
                        Failure(FailureKind.NETWORK, "upstream_download_failed", f"download of {url} answered HTTP {response.status_code}")
                    )
                data = await _read_capped(response.aiter_bytes(), max_bytes + 1)
                if len(data) > max_bytes:
                    raise UpstreamFailure(
                        Failure(FailureKind.REQUEST, "upstream_file_too_large", f"generated file exceeds {max_bytes} bytes")
                    )
                return data, response.headers.get("content-type")
        except httpx.HTTPError as exc:
            raise UpstreamFailure(classify_exception(exc)) from None

    @asynccontextmanager
    async def open_download(self, url: str, *, cookie: str | None) -> AsyncIterator[httpx.Response]:
        """Stream a generated file to a client (video content)."""
        headers = {"Accept": "*/*"}
        if cookie and self.same_origin(url):
            headers["Cookie"] = cookie
        try:
            async with self._http_for(cookie).stream("GET", url, headers=headers, follow_redirects=True) as response:
                yield response
        except httpx.HTTPError as exc:
            raise UpstreamFailure(classify_exception(exc)) from None

    async def recaptcha_token(self, cookie: str) -> str | None:
        """§2.8: `GET {RECAPTCHA_PROXY_URL}/genspark` with the cookie; None when not configured.

        A failure is an `UpstreamFailure` (never the old project's literal `null` request body).
        """
        if not self.recaptcha_url:
            return None
        try:
            response = await self._side.get(
                self.recaptcha_url + "/genspark", headers={"Cookie": cookie, "Content-Type": "application/json"}
            )
            doc = response.json() if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError) as exc:
            raise UpstreamFailure(
                Failure(FailureKind.NETWORK, "recaptcha_unavailable", f"RECAPTCHA_PROXY_URL did not answer: {type(exc).__name__}")
            ) from None
        if isinstance(doc, dict) and doc.get("code") == 200 and isinstance(doc.get("token"), str) and doc["token"]:
            return doc["token"]
        message = doc.get("message") if isinstance(doc, dict) else f"HTTP {response.status_code}"
        raise UpstreamFailure(
            Failure(FailureKind.NETWORK, "recaptcha_failed", f"RECAPTCHA_PROXY_URL gave no token: {message}")
        )


def _body(response: httpx.Response) -> AsyncIterator[bytes]:
    """The one iterator over a streamed body (httpx refuses a second `aiter_*` call).

    A body without a content encoding (what Genspark's event streams come as) is read from the
    transport's stream itself: `aiter_bytes` adds a decoder, a re-chunker and two generator
    layers per chunk to hand back the same bytes. Encoded bodies are decoded by httpx.
    """
    if response.headers.get("content-encoding", "identity").strip().lower() in ("", "identity"):
        stream = response.stream
        if isinstance(stream, httpx.AsyncByteStream):
            return stream.__aiter__()
    return response.aiter_bytes()


async def _drain(chunks: AsyncIterator[bytes]) -> None:
    """Read the rest of a finished body (bounded) so the connection can serve the next request."""
    left = DRAIN_BYTES
    with trio.move_on_after(DRAIN_SECONDS):
        try:
            async for chunk in chunks:
                left -= len(chunk)
                if left < 0:
                    return
        except httpx.HTTPError:
            pass  # the answer is complete; a broken tail only costs the connection


async def _read_capped(chunks: AsyncIterator[bytes], limit: int) -> bytes:
    data = bytearray()
    if limit <= 0:
        return b""
    try:
        async for chunk in chunks:
            data += chunk
            if len(data) >= limit:
                break
    except httpx.HTTPError:
        pass  # what we have is what we classify
    return bytes(data[:limit])
