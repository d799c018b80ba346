"""netguard.py: address literals, forbidden ranges and the guarded fetch, on loopback only.

The seam: a test server on 127.0.0.1 must sometimes pose as a public host so that the checks
on *later* hops can be exercised. The fake resolver answers `public.test` with 93.184.216.34
(public, so the check passes), and the `connector` hook, which receives the vetted IP, dials
127.0.0.1 instead whenever it is handed that address. Nothing else is ever dialled.
"""

from __future__ import annotations

import gzip
import ipaddress
import pathlib
import shutil
import ssl
import struct
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from urllib.parse import parse_qs, urlsplit

import pytest
import trio
from conftest import read_request_head
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genspark2api.core import netguard
from genspark2api.core.netguard import (
    FetchFailed,
    FetchRefused,
    GuardedBackend,
    fetch_user_url,
    is_forbidden,
    parse_host_ip,
    resolve_with_getaddrinfo,
)

PUBLIC_IP = "93.184.216.34"
MAX = 1000
PNG = b"\x89PNG\r\n\x1a\n" + bytes(40)


# --- parse_host_ip / is_forbidden ----------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("0x7f.0.0.1", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0X7F.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("10.1.1", "10.1.0.1"),
        ("0xa.0250.0x1.1", "10.168.1.1"),
        ("169.254.43518", "169.254.169.254"),
        ("127.0.0.1.", "127.0.0.1"),
        ("0", "0.0.0.0"),
        ("[::1]", "::1"),
        ("[::ffff:127.0.0.1]", "::ffff:7f00:1"),
        ("::ffff:7f00:1", "::ffff:7f00:1"),
        ("[::127.0.0.1]", "::7f00:1"),
        ("[64:ff9b::10.0.0.1]", "64:ff9b::a00:1"),
        ("[2002:c0a8:101::1]", "2002:c0a8:101::1"),
        ("fe80::1%eth0", "fe80::1"),
        ("[fe80::1%25eth0]", "fe80::1"),
        ("[::ffff:127.1]", "::ffff:7f00:1"),
        ("１２７.０.０.１", "127.0.0.1"),
        ("example.com", None),
        ("localhost", None),
        ("1.2.3.4.5", None),
        ("256.1.1.1", None),
        ("4294967296", None),
        ("08.0.0.1", None),
        ("0x1g.0.0.1", None),
        ("", None),
        ("[::1", None),
    ],
)
def test_parse_host_ip(host: str, expected: str | None) -> None:
    parsed = parse_host_ip(host)
    assert (None if parsed is None else str(parsed)) == expected


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1", "10.0.0.1", "172.16.5.4", "172.31.255.255", "192.168.1.1", "169.254.169.254",
        "0.0.0.0", "100.64.0.1", "100.127.255.254", "198.18.0.1", "198.19.255.1", "192.0.2.1",
        "198.51.100.7", "203.0.113.9", "224.0.0.1", "239.255.255.250", "240.0.0.1",
        "255.255.255.255", "192.0.0.8",
        "::1", "::", "fc00::1", "fd12:3456::1", "fe80::1", "febf::1", "fec0::1", "ff02::1",
        "ff0e::1", "2001:db8::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::127.0.0.1",
        "64:ff9b::127.0.0.1", "64:ff9b::192.168.0.1", "64:ff9b:1::1", "2002:7f00:1::1",
        "2002:a9fe:a9fe::1", "2001:0:4136:e378:8000:63bf:3fff:fdd2", "3fff::1", "100::1",
    ],
)
def test_forbidden(address: str) -> None:
    assert is_forbidden(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "address",
    ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700::1111", "2001:4860:4860::8888",
     "::ffff:8.8.8.8", "64:ff9b::8.8.8.8", "2002:808:808::1", "100.63.255.255", "172.32.0.1"],
)
def test_public_allowed(address: str) -> None:
    assert not is_forbidden(ipaddress.ip_address(address))


# --- every literal form of a forbidden address is refused (property) -----------------------

FORBIDDEN_V4 = ["127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16",
                "0.0.0.0/8", "100.64.0.0/10"]
FORBIDDEN_V6 = ["::1/128", "fc00::/7", "fe80::/10"]


@st.composite
def _address(draw: st.DrawFn, networks: list[str]) -> int:
    network = ipaddress.ip_network(draw(st.sampled_from(networks)))
    return int(network.network_address) + draw(st.integers(0, network.num_addresses - 1))


@st.composite
def _v4_part(draw: st.DrawFn, value: int) -> str:
    style = draw(st.sampled_from(["dec", "oct", "hex"]))
    if style == "dec":
        return str(value)
    if style == "oct":
        return "0" * draw(st.integers(1, 3)) + (f"{value:o}" if value else "")
    digits = f"{value:x}" if value else draw(st.sampled_from(["", "0"]))
    digits = "".join(c.upper() if draw(st.booleans()) else c for c in digits)
    return draw(st.sampled_from(["0x", "0X"])) + "0" * draw(st.integers(0, 2)) + digits


@st.composite
def _v4_form(draw: st.DrawFn, n: int) -> str:
    """inet_aton forms: 1 to 4 parts, each decimal, octal or hex, the last filling the rest."""
    count = draw(st.integers(1, 4))
    octets = list(n.to_bytes(4, "big"))
    head = octets[: count - 1]
    last = int.from_bytes(bytes(octets[count - 1:]), "big")
    parts = [draw(_v4_part(v)) for v in head] + [draw(_v4_part(last))]
    return ".".join(parts) + draw(st.sampled_from(["", "."]))


def _hex_pair(n: int) -> str:
    return f"{n >> 16:x}:{n & 0xFFFF:x}"


@st.composite
def forbidden_host_forms(draw: st.DrawFn) -> str:
    if draw(st.booleans()):
        n = draw(_address(FORBIDDEN_V4))
        dotted = str(ipaddress.IPv4Address(n))
        form = draw(st.sampled_from(["inet_aton", "mapped", "mapped-hex", "mapped-long", "nat64",
                                     "nat64-hex", "compatible"]))
        if form == "inet_aton":
            return draw(_v4_form(n))
        inner = {
            "mapped": f"::ffff:{dotted}",
            "mapped-hex": f"::ffff:{_hex_pair(n)}",
            "mapped-long": f"0:0:0:0:0:ffff:{dotted}",
            "nat64": f"64:ff9b::{dotted}",
            "nat64-hex": f"64:ff9b::{_hex_pair(n)}",
            "compatible": f"::{dotted}",
        }[form]
    else:
        address = ipaddress.IPv6Address(draw(_address(FORBIDDEN_V6)))
        inner = draw(st.sampled_from([address.compressed, address.exploded]))
        if address.is_link_local and draw(st.booleans()):
            inner += "%25eth0"
    return "[" + (inner.upper() if draw(st.booleans()) else inner) + "]"


async def _must_not_resolve(host: str, port: int) -> list[str]:
    raise AssertionError(f"resolver called for {host}")


async def _must_not_connect(ip: str, port: int) -> trio.SocketStream:
    raise AssertionError(f"connect attempted to {ip}")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(forbidden_host_forms())
def test_every_literal_form_of_a_forbidden_address_is_refused(form: str) -> None:
    parsed = parse_host_ip(form)
    assert parsed is not None, form
    assert is_forbidden(parsed), (form, parsed)

    async def fetch() -> None:
        with pytest.raises(FetchRefused):
            await fetch_user_url(
                f"http://{form}/x", max_bytes=MAX, timeout=5, allow_private=False,
                resolver=_must_not_resolve, connector=_must_not_connect,
            )

    trio.run(fetch)


# --- a loopback HTTP server ----------------------------------------------------------------


@dataclass
class Server:
    port: int = 0
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def url(self, host: str, path: str) -> str:
        return f"http://{host}:{self.port}{path}"


def _response(status: str, headers: list[tuple[str, str]], body: bytes = b"") -> bytes:
    head = [f"HTTP/1.1 {status}", "Connection: close", *(f"{k}: {v}" for k, v in headers)]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def _handle(server: Server, stream: trio.SocketStream) -> None:
    head = await read_request_head(stream)
    if head is None:
        return
    lines = head.decode("latin-1").split("\r\n")
    target = lines[0].split(" ")[1]
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    server.requests.append((target, headers))
    path, query = urlsplit(target).path, parse_qs(urlsplit(target).query)
    length = lambda body: ("Content-Length", str(len(body)))  # noqa: E731
    try:
        if path == "/ok.png":
            await stream.send_all(_response("200 OK", [
                ("Content-Type", "image/png"), length(PNG),
                ("Content-Disposition", "attachment; filename*=UTF-8''b%C3%BCro.png"),
                ("Set-Cookie", "session=secret; Path=/"),
            ], PNG))
        elif path == "/files/report%20v2.pdf":
            await stream.send_all(_response("200 OK", [length(b"%PDF-1.4\n")], b"%PDF-1.4\n"))
        elif path == "/redirect":
            await stream.send_all(_response("302 Found", [("Location", query["to"][0]), length(b"")]))
        elif path == "/loop":
            await stream.send_all(_response("302 Found", [("Location", "/loop"), length(b"")]))
        elif path == "/set-cookie":
            await stream.send_all(_response("302 Found", [
                ("Set-Cookie", "session=secret; Path=/"), ("Location", "/echo-cookie"), length(b"")]))
        elif path == "/echo-cookie":
            body = headers.get("cookie", "").encode()
            await stream.send_all(_response("200 OK", [length(body)], body))
        elif path == "/echo-headers":
            body = repr(sorted(headers.items())).encode()
            await stream.send_all(_response("200 OK", [length(body)], body))
        elif path == "/big-cl":
            await stream.send_all(_response("200 OK", [("Content-Length", str(MAX * 50))], bytes(MAX * 50)))
        elif path == "/big-chunked":
            await stream.send_all(_response("200 OK", [("Transfer-Encoding", "chunked")]))
            for _ in range(50):
                await stream.send_all(b"64\r\n" + bytes(100) + b"\r\n")
            await stream.send_all(b"0\r\n\r\n")
        elif path == "/exact":
            await stream.send_all(_response("200 OK", [("Transfer-Encoding", "chunked")]))
            await stream.send_all(f"{MAX:x}\r\n".encode() + bytes(MAX) + b"\r\n0\r\n\r\n")
        elif path in ("/gzip-bomb", "/gzip-ok"):
            body = gzip.compress(bytes(MAX * 1000) if path == "/gzip-bomb" else b"hello, gzip")
            await stream.send_all(_response("200 OK", [("Content-Encoding", "gzip"), length(body)], body))
        elif path == "/slow":
            await stream.send_all(_response("200 OK", [("Content-Length", "100")], b"x"))
            await trio.sleep_forever()
        else:
            await stream.send_all(_response("404 Not Found", [length(b"nope")], b"nope"))
    except trio.BrokenResourceError:
        pass  # the client gave up first, which several tests want


@pytest.fixture
async def server(nursery: trio.Nursery) -> Server:
    state = Server()

    async def handler(stream: trio.SocketStream) -> None:
        async with stream:
            await _handle(state, stream)

    listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
    state.port = listeners[0].socket.getsockname()[1]
    return state


def fake_resolver(table: dict[str, list[str]], calls: list[str] | None = None) -> Callable[[str, int], Awaitable[list[str]]]:
    async def resolve(host: str, port: int) -> list[str]:
        if calls is not None:
            calls.append(host)
        if host not in table:
            raise OSError(f"unknown host {host}")
        return table[host]

    return resolve


def loopback_as_public(dialled: list[str] | None = None) -> Callable[[str, int], Awaitable[trio.SocketStream]]:
    """The test seam: dial 127.0.0.1 when handed PUBLIC_IP, fail the test for anything else."""

    async def connect(ip: str, port: int) -> trio.SocketStream:
        if dialled is not None:
            dialled.append(ip)
        assert ip == PUBLIC_IP, f"tried to dial {ip}"
        return await trio.open_tcp_stream("127.0.0.1", port)

    return connect


RESOLVER = fake_resolver({
    "public.test": [PUBLIC_IP],
    "internal.test": ["10.1.2.3"],
    "mixed.test": [PUBLIC_IP, "10.0.0.1"],
    "mixed6.test": ["2606:4700::1111", "fe80::1%eth0"],
    "mapped.test": ["::ffff:127.0.0.1"],
})


async def guarded_fetch(url: str, **kwargs: object) -> object:
    options: dict[str, object] = {
        "max_bytes": MAX, "timeout": 5.0, "allow_private": False,
        "resolver": RESOLVER, "connector": loopback_as_public(),
    }
    options.update(kwargs)
    return await fetch_user_url(url, **options)  # type: ignore[arg-type]


# --- end to end ----------------------------------------------------------------------------


async def test_loopback_refused_without_allow_private(server: Server) -> None:
    for host in ("127.0.0.1", "localhost", "[::1]", "2130706433", "LOCALHOST."):
        with pytest.raises(FetchRefused):
            await fetch_user_url(server.url(host, "/ok.png"), max_bytes=MAX, timeout=5, allow_private=False)
    assert server.requests == []


async def test_loopback_fetched_with_allow_private(server: Server) -> None:
    # Default resolver and connector: the real path, on loopback.
    for host in ("127.0.0.1", "localhost"):
        fetched = await fetch_user_url(server.url(host, "/ok.png"), max_bytes=MAX, timeout=5, allow_private=True)
        assert fetched.data == PNG
        assert fetched.content_type == "image/png"
        assert fetched.filename == "büro.png"
        assert fetched.final_url == server.url(host, "/ok.png")


async def test_default_resolver_is_checked() -> None:
    backend = GuardedBackend(allow_private=False, resolver=resolve_with_getaddrinfo, connector=_must_not_connect)
    with pytest.raises(FetchRefused, match="127.0.0.1|::1"):
        await backend.vetted_addresses("localhost", 80)


async def test_public_name_is_fetched_through_the_vetted_ip(server: Server) -> None:
    dialled: list[str] = []
    fetched = await guarded_fetch(server.url("public.test", "/echo-headers"), connector=loopback_as_public(dialled))
    assert dialled == [PUBLIC_IP]  # the IP that was checked, not the name
    body = fetched.data.decode()  # type: ignore[attr-defined]
    assert f"('host', 'public.test:{server.port}')" in body  # the Host header keeps the name
    assert "Mozilla/5.0" in body and "('accept-encoding', 'identity')" in body


async def test_filename_from_url_path(server: Server) -> None:
    fetched = await guarded_fetch(server.url("public.test", "/files/report%20v2.pdf"))
    assert fetched.filename == "report v2.pdf"  # type: ignore[attr-defined]
    assert fetched.content_type is None  # type: ignore[attr-defined]


@pytest.mark.parametrize("host", ["mixed.test", "mixed6.test", "internal.test", "mapped.test"])
async def test_any_forbidden_answer_refuses_the_name(server: Server, host: str) -> None:
    dialled: list[str] = []
    with pytest.raises(FetchRefused, match="private or reserved"):
        await guarded_fetch(server.url(host, "/ok.png"), connector=loopback_as_public(dialled))
    assert dialled == []


async def test_unresolvable_name_fails(server: Server) -> None:
    with pytest.raises(FetchFailed, match="cannot resolve"):
        await guarded_fetch(server.url("nowhere.test", "/ok.png"))


async def test_dns_rebinding_is_caught_at_connect(server: Server) -> None:
    # First answer public, later answers loopback: each connection resolves and checks again,
    # and connects to the address it checked.
    answers = [[PUBLIC_IP], ["127.0.0.1"]]

    async def rebinding(host: str, port: int) -> list[str]:
        return answers.pop(0)

    await guarded_fetch(server.url("rebind.test", "/ok.png"), resolver=rebinding)
    with pytest.raises(FetchRefused):
        await guarded_fetch(server.url("rebind.test", "/ok.png"), resolver=rebinding)


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.1:{port}/ok.png",
        "http://0x7f.1:{port}/ok.png",
        "http://[::ffff:127.0.0.1]:{port}/ok.png",
        "http://internal.test:{port}/ok.png",
        "http://mixed.test:{port}/ok.png",
        "http://localhost:{port}/ok.png",
        "ftp://public.test/file",
        "file:///etc/passwd",
    ],
)
async def test_redirect_hops_are_rechecked(server: Server, target: str) -> None:
    # public.test passes the check (the seam dials loopback); the hop it redirects to must not.
    url = server.url("public.test", "/redirect?to=" + target.format(port=server.port))
    with pytest.raises(FetchRefused):
        await guarded_fetch(url)
    assert [path for path, _ in server.requests] == ["/redirect?to=" + target.format(port=server.port)]


async def test_relative_redirect_followed(server: Server) -> None:
    fetched = await guarded_fetch(server.url("public.test", "/redirect?to=/ok.png"))
    assert fetched.data == PNG  # type: ignore[attr-defined]
    assert fetched.final_url == server.url("public.test", "/ok.png")  # type: ignore[attr-defined]


async def test_redirect_limit(server: Server) -> None:
    with pytest.raises(FetchFailed, match="more than 3 redirects"):
        await guarded_fetch(server.url("public.test", "/loop"), max_redirects=3)
    assert len(server.requests) == 4


async def test_no_cookies_between_hops(server: Server) -> None:
    fetched = await guarded_fetch(server.url("public.test", "/set-cookie"))
    assert fetched.data == b""  # type: ignore[attr-defined]


@pytest.mark.parametrize("path", ["/big-cl", "/big-chunked", "/gzip-bomb"])
async def test_oversized_body_fails(server: Server, path: str) -> None:
    with pytest.raises(FetchFailed, match=rf"exceeds MAX_FETCH_BYTES \({MAX} bytes\)"):
        await guarded_fetch(server.url("public.test", path))


async def test_body_at_exactly_the_limit_is_accepted(server: Server) -> None:
    fetched = await guarded_fetch(server.url("public.test", "/exact"))
    assert len(fetched.data) == MAX  # type: ignore[attr-defined]


async def test_gzip_body_is_decoded(server: Server) -> None:
    fetched = await guarded_fetch(server.url("public.test", "/gzip-ok"))
    assert fetched.data == b"hello, gzip"  # type: ignore[attr-defined]


async def test_slow_server_times_out_within_the_bound(server: Server) -> None:
    start = trio.current_time()
    with pytest.raises(FetchFailed, match="timed out"):
        await guarded_fetch(server.url("public.test", "/slow"), timeout=0.5)
    assert trio.current_time() - start < 1.5


async def test_http_error_status_fails(server: Server) -> None:
    with pytest.raises(FetchFailed, match="HTTP 404"):
        await guarded_fetch(server.url("public.test", "/missing"))


async def test_unreachable_fails(server: Server) -> None:
    async def refuse(ip: str, port: int) -> trio.SocketStream:
        raise OSError(111, "Connection refused")

    with pytest.raises(FetchFailed, match="could not fetch"):
        await guarded_fetch(server.url("public.test", "/ok.png"), connector=refuse)


@pytest.mark.parametrize("url", ["ftp://example.com/x", "gopher://example.com/", "file:///etc/passwd",
                                 "javascript:alert(1)", "http://", "http://999.1.1.1/", "http://1.2.3.4.5/"])
async def test_bad_urls_refused_before_io(url: str) -> None:
    with pytest.raises(FetchRefused):
        await fetch_user_url(url, max_bytes=MAX, timeout=5, allow_private=False,
                             resolver=_must_not_resolve, connector=_must_not_connect)


async def test_proxy_still_refuses_literals() -> None:
    # With a proxy the connect-time check cannot run; literal private hosts are still refused.
    with pytest.raises(FetchRefused, match="127.0.0.1"):
        await fetch_user_url("http://0177.1/x", max_bytes=MAX, timeout=5, allow_private=False,
                             proxy="http://127.0.0.1:1")
    with pytest.raises(FetchFailed):  # a name goes to the proxy, which is not listening
        await fetch_user_url("http://public.test/x", max_bytes=MAX, timeout=5, allow_private=False,
                             proxy="http://127.0.0.1:1")


def test_embedded_forms_are_judged_by_their_ipv4() -> None:
    for v4 in ("127.0.0.1", "10.9.8.7", "192.168.4.4"):
        packed = struct.unpack(">I", ipaddress.IPv4Address(v4).packed)[0]
        for template in ("::ffff:{}", "64:ff9b::{}", "::{}"):
            assert is_forbidden(ipaddress.IPv6Address(template.format(v4)))
        assert is_forbidden(ipaddress.IPv6Address(f"2002:{packed >> 16:x}:{packed & 0xFFFF:x}::1"))


async def test_tls_keeps_the_hostname_for_sni_and_verification(
    nursery: trio.Nursery, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # We dial a vetted IP, but TLS must still send SNI for, and verify against, the URL's name.
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=public.test", "-addext", "subjectAltName=DNS:public.test"],
        check=True, capture_output=True,
    )
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    names: list[str | None] = []
    server_context.sni_callback = lambda _sock, name, _ctx: names.append(name)  # type: ignore[assignment,return-value]
    state = Server()

    async def handler(stream: trio.SSLStream[trio.SocketStream]) -> None:
        try:
            async with stream:
                await _handle(state, stream)  # type: ignore[arg-type]
        except trio.BrokenResourceError:
            pass  # the client refused our certificate

    listeners = await nursery.start(partial(trio.serve_ssl_over_tcp, handler, 0, server_context, host="127.0.0.1"))
    state.port = listeners[0].transport_listener.socket.getsockname()[1]
    monkeypatch.setattr(netguard, "_ssl_context", lambda: ssl.create_default_context(cafile=cert))
    resolver = fake_resolver({"public.test": [PUBLIC_IP], "other.test": [PUBLIC_IP]})

    fetched = await guarded_fetch(f"https://public.test:{state.port}/ok.png", resolver=resolver)
    assert fetched.data == PNG  # type: ignore[attr-defined]
    assert names == ["public.test"]
    with pytest.raises(FetchFailed, match="certificate"):
        await guarded_fetch(f"https://other.test:{state.port}/ok.png", resolver=resolver)


@pytest.mark.parametrize("location", ["http:%5C%5C127.0.0.1:9%5Csecret", "http://[::1", "http://a b/", "http://%zz/"])
async def test_malformed_redirect_is_a_clean_failure(server: Server, location: str) -> None:
    # httpx.InvalidURL is not an httpx.HTTPError: it must not escape the fetcher as a crash.
    with pytest.raises((FetchRefused, FetchFailed)):
        await guarded_fetch(server.url("public.test", "/redirect?to=" + location))
