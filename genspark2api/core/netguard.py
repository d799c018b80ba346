"""Fetch a URL a stranger gave us without letting them reach our own network (SSRF guard).

Image and file URLs in chat messages are downloaded by this server (genspark-protocol.md §2.1:
the old project used a plain `http.Get`, so `http://169.254.169.254/` read the cloud metadata
service). The rules:

* only http and https;
* every address the host resolves to must be public, on every redirect hop;
* the address checked is the address connected to. `GuardedBackend` is the httpcore network
  backend: it resolves the name itself, vets every address and then connects to a vetted IP
  literal, so a DNS answer that changes between check and connect (DNS rebinding) cannot slip
  in. TLS still verifies and sends SNI for the URL's hostname (httpcore passes the origin host
  to `start_tls`, not the address);
* size and total time are capped; no cookies are kept between hops.

Address literals are parsed the way resolvers do (`inet_aton`: `2130706433`, `0x7f.1`,
`0177.0.0.1`, ...) because the string we check must mean the same address the connect uses.
"""

from __future__ import annotations

import email.message
import functools
import ipaddress
import re
import ssl
import unicodedata
import zlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy
from urllib.parse import unquote

import httpcore
import httpx
import trio
from httpcore._backends.base import SOCKET_OPTION
from httpcore._backends.trio import TrioBackend, TrioStream

from ..errors import whole_number

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]
# Opens the TCP connection to an already vetted IP literal. Tests replace it to reach a loopback
# server under a public-looking address; production code never passes one.
Connector = Callable[[str, int], Awaitable[trio.SocketStream]]

USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)
_REDIRECTS = {301, 302, 303, 307, 308}


class FetchRefused(Exception):
    """We will not fetch this URL (scheme, address). The message is client-facing."""


class FetchFailed(Exception):
    """We tried and it did not work (unreachable, timeout, status, size). Client-facing."""


# --- address literals ----------------------------------------------------------------------

_V4_PART = re.compile(r"0[xX][0-9a-fA-F]*|0[0-7]*|[1-9][0-9]*")
# WHATWG URL "ends in a number": such a host is an IPv4 literal or invalid, never a DNS name.
_ENDS_IN_NUMBER = re.compile(r"(?:^|\.)(?:0[xX][0-9a-fA-F]*|[0-9]+)\.?$")


def _parse_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """inet_aton(3) / WHATWG IPv4 parsing: 1 to 4 parts, each decimal, 0-octal or 0x-hex.

    The last part fills the remaining bytes (`127.1` is 127.0.0.1, `10.1.1` is 10.1.0.1).
    """
    parts = host[:-1].split(".") if host.endswith(".") else host.split(".")
    if not 1 <= len(parts) <= 4 or not all(_V4_PART.fullmatch(p) for p in parts):
        return None
    numbers = []
    for part in parts:
        if part[:2].lower() == "0x":
            numbers.append(int(part[2:] or "0", 16))
        elif len(part) > 1 and part[0] == "0":
            numbers.append(int(part, 8))
        else:
            numbers.append(int(part))
    *head, last = numbers
    if any(n > 255 for n in head) or last >= 256 ** (4 - len(head)):
        return None
    value = last
    for i, n in enumerate(head):
        value |= n << (8 * (3 - i))
    return ipaddress.IPv4Address(value)


def _parse_ipv6(host: str) -> ipaddress.IPv6Address | None:
    core = host.split("%", 1)[0]  # zone id: fe80::1%eth0, or %25eth0 as written in a URL
    try:
        return ipaddress.IPv6Address(core)
    except ValueError:
        pass
    # `::ffff:127.1`: an embedded IPv4 in a short form. inet_pton refuses it, but decoding it
    # costs nothing and removes one way for the check and a lenient resolver to disagree.
    head, sep, tail = core.rpartition(":")
    v4 = _parse_ipv4(tail) if sep and "." in tail else None
    if v4 is None:
        return None
    try:
        return ipaddress.IPv6Address(f"{head}:{v4}")
    except ValueError:
        return None


def parse_host_ip(host: str) -> IPAddress | None:
    """The address a URL host literal denotes, in any form a resolver accepts; None for names."""
    host = host.strip()
    if not host.isascii():
        # IDNA maps full-width digits and ideographic full stops to ASCII before resolving.
        host = unicodedata.normalize("NFKC", host).translate({0x3002: ".", 0xFF0E: ".", 0xFF61: "."})
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if ":" in host:
        return _parse_ipv6(unquote(host))
    return _parse_ipv4(host)


# --- forbidden ranges ----------------------------------------------------------------------

# Our own table rather than `ipaddress.is_global` alone: its answers changed between Python
# patch releases (3.11.10 / 3.12.4 / 3.13) and it calls multicast global.
_FORBIDDEN_V4 = [ipaddress.IPv4Network(n) for n in (
    "0.0.0.0/8",        # "this network", unspecified
    "10.0.0.0/8",       # RFC 1918
    "100.64.0.0/10",    # CGNAT shared space (RFC 6598)
    "127.0.0.0/8",      # loopback
    "169.254.0.0/16",   # link-local, cloud metadata services
    "172.16.0.0/12",    # RFC 1918
    "192.0.0.0/24",     # IETF protocol assignments
    "192.0.2.0/24",     # TEST-NET-1
    "192.88.99.0/24",   # 6to4 relay anycast (deprecated)
    "192.168.0.0/16",   # RFC 1918
    "198.18.0.0/15",    # benchmarking
    "198.51.100.0/24",  # TEST-NET-2
    "203.0.113.0/24",   # TEST-NET-3
    "224.0.0.0/4",      # multicast
    "240.0.0.0/4",      # reserved, broadcast
)]
_FORBIDDEN_V6 = [ipaddress.IPv6Network(n) for n in (
    "::/8",             # unspecified, loopback, IPv4-compatible (deprecated), reserved
    "64:ff9b:1::/48",   # local-use NAT64
    "100::/64",         # discard-only
    "2001::/23",        # IETF protocol assignments: Teredo, benchmarking, ORCHID
    "2001:db8::/32",    # documentation
    "3fff::/20",        # documentation (RFC 9637)
    "5f00::/16",        # SRv6 SIDs
    "fc00::/7",         # unique local
    "fe80::/10",        # link-local
    "fec0::/10",        # site-local (deprecated)
    "ff00::/8",         # multicast
)]
_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_COMPATIBLE = ipaddress.IPv6Network("::/96")


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address carries and that the network may route to."""
    found = []
    if ip in _MAPPED or ip in _NAT64 or (ip in _COMPATIBLE and int(ip) > 1):
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.extend(ip.teredo)  # (server, client)
    return found


def is_forbidden(ip: IPAddress) -> bool:
    """True for every address that is not plainly on the public internet."""
    if isinstance(ip, ipaddress.IPv4Address):
        return any(ip in net for net in _FORBIDDEN_V4)
    if ip.scope_id:
        ip = ipaddress.IPv6Address(int(ip))
    # ::ffff:a.b.c.d is how dual-stack sockets show plain IPv4, and NAT64 is how IPv6-only
    # networks reach IPv4: judge the IPv4. (NAT64 sits inside ::/8, forbidden below.)
    if ip in _MAPPED or ip in _NAT64:
        return is_forbidden(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    if any(ip in net for net in _FORBIDDEN_V6):
        return True
    return any(is_forbidden(v4) for v4 in embedded_ipv4(ip))


def _refuse_literal_host(host: str, allow_private: bool) -> None:
    """Checks that need no DNS: forbidden literals, malformed literals, localhost names."""
    ip = parse_host_ip(host)
    if ip is not None:
        if is_forbidden(ip) and not allow_private:
            raise FetchRefused(f"address {ip} is private or reserved")
        return
    name = host.lower().rstrip(".")
    if (name == "localhost" or name.endswith(".localhost")) and not allow_private:  # RFC 6761
        raise FetchRefused(f"host {host} is local")
    if ":" in host or _ENDS_IN_NUMBER.search(name):
        raise FetchRefused(f"host {host} is not a valid address")


# --- the guarded connection ----------------------------------------------------------------


async def resolve_with_getaddrinfo(host: str, port: int) -> list[str]:
    infos = await trio.socket.getaddrinfo(host, port, type=trio.socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def _open_tcp(ip: str, port: int) -> trio.SocketStream:
    return await trio.open_tcp_stream(ip, port)


class GuardedBackend(TrioBackend):
    """httpcore backend that connects only to addresses it has resolved and vetted itself."""

    def __init__(self, *, allow_private: bool, resolver: Resolver, connector: Connector) -> None:
        self._allow_private = allow_private
        self._resolver = resolver
        self._connector = connector

    async def vetted_addresses(self, host: str, port: int) -> list[IPAddress]:
        literal = parse_host_ip(host)
        if literal is not None:
            addresses = [literal]
        else:
            try:
                answers = await self._resolver(host, port)
            except OSError as exc:
                raise FetchFailed(f"cannot resolve {host}: {exc.strerror or exc}") from None
            parsed = [parse_host_ip(a) for a in answers]
            if not parsed or None in parsed:
                raise FetchFailed(f"cannot resolve {host}")
            addresses = [a for a in parsed if a is not None]
        if not self._allow_private:
            # ANY, not all: a name mixing public and private answers is an attack or a broken
            # zone; refusing says so, where dialling only the public half would hide it.
            for ip in addresses:
                if is_forbidden(ip):
                    raise FetchRefused(f"address {ip} of {host} is private or reserved")
        return addresses

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await self.vetted_addresses(host, port)
        failure: OSError | None = None
        with trio.move_on_after(float("inf") if timeout is None else timeout) as scope:
            for ip in addresses:
                try:
                    stream = await self._connector(str(ip), port)
                except OSError as exc:
                    failure = exc
                    continue
                for option in socket_options or ():
                    stream.setsockopt(*option)
                return TrioStream(stream)
        if scope.cancelled_caught:
            raise httpcore.ConnectTimeout(f"connecting to {host} timed out")
        raise httpcore.ConnectError(f"cannot connect to {host}: {failure}")


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    # Loading the CA bundle takes ~10 ms; a context is safe to share between connections.
    return httpx.create_ssl_context()


def _guarded_transport(backend: GuardedBackend) -> httpx.AsyncHTTPTransport:
    transport = httpx.AsyncHTTPTransport(retries=0, verify=_ssl_context())
    # httpx 0.28 has no parameter for the network backend, so swap the pool it built for one
    # using ours (small: one fetch and its redirects). Fail loudly if httpx changes underneath.
    if not isinstance(transport._pool, httpcore.AsyncConnectionPool):  # pragma: no cover
        raise RuntimeError("httpx.AsyncHTTPTransport no longer keeps its pool in _pool")
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=_ssl_context(), max_connections=4, network_backend=backend
    )
    return transport


# --- the fetch -----------------------------------------------------------------------------


@dataclass
class Fetched:
    data: bytes
    content_type: str | None
    final_url: str
    filename: str | None  # from Content-Disposition, else the last path segment; not sanitised


async def fetch_user_url(
    url: str,
    *,
    max_bytes: int,
    timeout: float,
    allow_private: bool,
    proxy: str | None = None,
    max_redirects: int = 5,
    resolver: Resolver | None = None,
    connector: Connector | None = None,
) -> Fetched:
    """GET a user-supplied URL under the rules in the module docstring.

    Raises FetchRefused before any I/O for a bad scheme or a forbidden literal address, and
    during the fetch for a name resolving to a forbidden address; FetchFailed for everything
    else. Cancellation propagates; the timeout covers resolution, redirects and the body.

    `connector` is a test seam: it receives the vetted IP and the port, so a loopback server can
    stand in for a public address (tests/test_netguard.py). Unused with a proxy.
    """
    first = _checked_url(url, allow_private)
    if proxy is not None:
        # The proxy resolves and connects, so the connect-time check cannot run here; literal
        # hosts are still refused. The proxy itself may well be on a private address.
        transport = httpx.AsyncHTTPTransport(proxy=proxy, retries=0, verify=_ssl_context())
    else:
        transport = _guarded_transport(GuardedBackend(
            allow_private=allow_private,
            resolver=resolver or resolve_with_getaddrinfo,
            connector=connector or _open_tcp,
        ))
    client = httpx.AsyncClient(
        transport=transport,
        trust_env=False,  # no .netrc credentials, no environment proxies
        follow_redirects=False,
        cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),  # accepts none
        timeout=httpx.Timeout(timeout),
        headers={"User-Agent": USER_AGENT, "Accept": "*/*", "Accept-Encoding": "identity"},
    )
    try:
        with trio.fail_after(timeout):
            async with client:
                return await _follow(client, first, max_bytes, max_redirects, allow_private)
    except (trio.TooSlowError, httpx.TimeoutException):
        raise FetchFailed(f"timed out after {timeout:g} s") from None
    except httpx.HTTPError as exc:
        raise FetchFailed(f"could not fetch the URL: {_describe(exc)}") from None
    except httpx.InvalidURL as exc:
        # Not an HTTPError: httpx raises it while building `next_request` for a malformed
        # Location (e.g. `http:\\host\path`), even with follow_redirects=False.
        raise FetchFailed(f"the server redirected to an invalid URL ({exc})") from None


def _describe(exc: BaseException) -> str:
    """The first non-empty message down the cause chain: httpcore wraps TLS failures in a
    ConnectError around an empty BrokenResourceError, the certificate error is further down."""
    seen: BaseException | None = exc
    while seen is not None:
        if str(seen):
            return str(seen)
        seen = seen.__cause__ or seen.__context__
    return type(exc).__name__


async def _follow(
    client: httpx.AsyncClient, current: httpx.URL, max_bytes: int, max_redirects: int, allow_private: bool
) -> Fetched:
    for _hop in range(max_redirects + 1):
        async with client.stream("GET", current) as response:
            if response.status_code in _REDIRECTS:
                location = response.headers.get("location")
                if not location:
                    raise FetchFailed(f"HTTP {response.status_code} without a Location")
                try:
                    current = _checked_url(str(response.url.join(location)), allow_private)
                except httpx.InvalidURL:
                    raise FetchRefused("redirected to an invalid URL") from None
                continue
            if not 200 <= response.status_code < 300:
                raise FetchFailed(f"HTTP {response.status_code}")
            data = await _read_capped(response, max_bytes)
            return Fetched(
                data=data,
                content_type=response.headers.get("content-type"),
                final_url=str(response.url),
                filename=_filename(response),
            )
    raise FetchFailed(f"more than {max_redirects} redirects")


def _checked_url(url: str, allow_private: bool) -> httpx.URL:
    """Scheme and literal-host checks, for the first URL and again for each redirect.

    Without a proxy the backend repeats the address check at connect time; doing it here too
    refuses literals before any I/O and with a clearer message.
    """
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise FetchRefused(f"invalid URL: {exc}") from None
    if parsed.scheme not in ("http", "https"):
        raise FetchRefused(f"scheme {parsed.scheme or '(none)'} not allowed")
    if not parsed.host:
        raise FetchRefused("URL has no host")
    _refuse_literal_host(parsed.host, allow_private)
    return parsed


def _too_large(max_bytes: int) -> FetchFailed:
    return FetchFailed(f"exceeds MAX_FETCH_BYTES ({max_bytes} bytes)")


async def _read_capped(response: httpx.Response, max_bytes: int) -> bytes:
    declared = whole_number(response.headers.get("content-length", ""))
    if declared is not None and declared > max_bytes:
        raise _too_large(max_bytes)
    decoder = _Decoder(response.headers.get("content-encoding", ""), max_bytes)
    chunks: list[bytes] = []
    async for raw in response.aiter_raw():
        chunks.append(decoder.feed(raw))
    chunks.append(decoder.flush())
    return b"".join(chunks)


class _Decoder:
    """Undo Content-Encoding while counting decoded bytes, so a gzip bomb stops at the cap.

    We ask for `identity`; some servers compress anyway. httpx's own decoders inflate each
    network read without a bound (~1000x for deflate), hence this.
    """

    def __init__(self, encoding: str, max_bytes: int) -> None:
        encoding = encoding.strip().lower()
        self._max = max_bytes
        self._total = 0
        if encoding in ("", "identity"):
            self._zlib = None
        elif encoding in ("gzip", "x-gzip"):
            self._zlib = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._zlib = zlib.decompressobj(zlib.MAX_WBITS)
        else:
            raise FetchFailed(f"unsupported Content-Encoding {encoding[:40]}")

    def _count(self, data: bytes) -> bytes:
        self._total += len(data)
        if self._total > self._max:
            raise _too_large(self._max)
        return data

    def feed(self, raw: bytes) -> bytes:
        if self._zlib is None:
            return self._count(raw)
        out = []
        try:
            while raw:
                # max_length is what is left plus one byte: enough to know the cap is passed.
                out.append(self._count(self._zlib.decompress(raw, self._max - self._total + 1)))
                raw = self._zlib.unconsumed_tail
        except zlib.error:
            raise FetchFailed("the response body is not valid compressed data") from None
        return b"".join(out)

    def flush(self) -> bytes:
        return b"" if self._zlib is None else self._count(self._zlib.flush())


def _filename(response: httpx.Response) -> str | None:
    disposition = response.headers.get("content-disposition")
    if disposition:
        message = email.message.Message()
        message["content-disposition"] = disposition
        name = message.get_filename()  # handles RFC 2231 filename*=UTF-8''...
        if name:
            return name
    segment = unquote(response.url.path.rsplit("/", 1)[-1])
    return segment or None
