"""UPSTREAM_TRANSPORT=browser: curl_cffi behind the httpx seam, against the simulator on loopback.

What must hold is that nothing above the transport can tell the difference: the same answers, the
same classification of every error status, the client leaving closes the upstream connection (even
while upstream is silent), and PROXY_URL carries every call.
"""

from __future__ import annotations

import gzip
import json
from urllib.parse import urlsplit

import httpx
import pytest
import trio

pytest.importorskip("curl_cffi")

from conftest import ServiceFactory, free_port  # noqa: E402
from test_pool_e2e import (  # noqa: E402
    LoopbackProxy,
    answered,
    ask,
    cookie,
    pool_rows,
    serve,
    wait_for,
)

from genspark2api.settings import Settings, SettingsError  # noqa: E402
from genspark2api.simulator import Simulator  # noqa: E402
from genspark2api.upstream.browser import BrowserTransport  # noqa: E402
from genspark2api.upstream.classify import classify_exception  # noqa: E402

BODY = {"model": "gpt-5.4", "messages": [{"role": "user", "content": "hello"}]}
CHAT = "/api/agent/ask_proxy"


async def test_chat_end_to_end_with_a_browser_fingerprint(make_service: ServiceFactory, sim: Simulator) -> None:
    service = await make_service(UPSTREAM_TRANSPORT="browser")
    client = service.openai()
    stream = await client.chat.completions.create(**BODY, stream=True)
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert "You said: hello" in text
    whole = await client.chat.completions.create(**BODY)
    assert "You said: hello" in whole.choices[0].message.content

    asks = [r for r in sim.requests if r.path == CHAT]
    assert len(asks) == 2
    for seen in asks:
        # libcurl-impersonate's Chrome, not python-httpx: the UA and client hints match the fingerprint,
        # and an API call looks like the page's fetch(), not a navigation.
        assert "Chrome/" in seen.headers["user-agent"] and "python" not in seen.headers["user-agent"].lower()
        assert "Chrome" in seen.headers["sec-ch-ua"]
        assert (seen.headers["sec-fetch-mode"], seen.headers["sec-fetch-dest"]) == ("cors", "empty")
        assert "upgrade-insecure-requests" not in seen.headers and "upgrade" not in seen.headers
        assert seen.session_id == "ok-1" and seen.json["type"] == "ai_chat"
        assert seen.headers["origin"] == sim.url  # type: ignore[attr-defined]

    async with service.http() as http:
        status = (await http.get("/v1/upstream")).json()
    assert (status["transport"], status["impersonate"]) == ("browser", "chrome")


async def test_client_leaving_mid_stream_closes_the_upstream(make_service: ServiceFactory, sim: Simulator) -> None:
    sim.answer_delay = 0.5
    service = await make_service(UPSTREAM_TRANSPORT="browser")
    async with service.http() as http:
        async with http.stream("POST", "/v1/chat/completions", json={**BODY, "stream": True}) as response:
            async for line in response.aiter_lines():
                if "simulated" in line or '"content":"[' in line:
                    break
        left = trio.current_time()
    await wait_for(lambda: bool(sim.stream_closures), timeout=2.0)
    closure = sim.stream_closures[0]
    assert closure.completed is False and closure.closed_at - left < 1.0


async def test_client_leaving_while_upstream_is_silent_closes_it_at_once(
    make_service: ServiceFactory, sim: Simulator
) -> None:
    # libcurl sits in poll() with no callback to run; only shutting the socket down wakes it.
    sim.answer_delay_slow = 30.0
    service = await make_service(cookies=["slow-first-byte-1"], UPSTREAM_TRANSPORT="browser",
                                 FIRST_BYTE_HOLD_SECONDS="60")
    async with service.http() as http:
        with trio.move_on_after(0.4):
            await http.post("/v1/chat/completions", json={**BODY, "stream": True})
        left = trio.current_time()
    await wait_for(lambda: bool(sim.stream_closures), timeout=2.0)
    assert sim.stream_closures[0].completed is False
    assert sim.stream_closures[0].closed_at - left < 1.0


PARITY = ["internal-error", "service-unavailable", "cf-challenge", "cf-block", "not-login", "rate-limited",
          "bad-request-cf", "bad-request", "cut-stream", "stall", "free-limit"]


@pytest.mark.parametrize("scenario", PARITY)
async def test_every_failure_is_classified_as_with_httpx(nursery: trio.Nursery, sim: Simulator, scenario: str) -> None:
    seen = {}
    for transport in ("httpx", "browser"):
        value = cookie(scenario)
        service = await serve(nursery, sim, [value], UPSTREAM_TRANSPORT=transport, UPSTREAM_IDLE_TIMEOUT="1",
                              AUTO_MODEL_CHAT_MAP_TYPE="0")
        reply = await ask(service)
        row = next(iter((await pool_rows(service)).values()))
        seen[transport] = (reply.status, (reply.error or {}).get("code"), row["state"], row["reason"])
    assert seen["browser"] == seen["httpx"]
    status, code, _, _ = seen["httpx"]
    assert status >= 400 and code  # a real failure each time, not two identical successes


@pytest.mark.parametrize("scheme", ["http", "socks5", "socks5h"])
async def test_proxy_url_carries_the_browser_transport(nursery: trio.Nursery, sim: Simulator, scheme: str) -> None:
    # The upstream host exists only for the proxy: a call that bypassed it could not connect.
    address = urlsplit(sim.url)  # type: ignore[attr-defined]
    upstream = f"http://genspark.invalid:{free_port()}"
    proxy = LoopbackProxy("http" if scheme == "http" else "socks5", "genspark.invalid",
                          (address.hostname or "", address.port or 80))
    port = await nursery.start(proxy.serve)
    service = await serve(nursery, sim, [cookie("ok")], GENSPARK_BASE_URL=upstream, UPSTREAM_TRANSPORT="browser",
                          PROXY_URL=f"{scheme}://127.0.0.1:{port}", AUTO_MODEL_CHAT_MAP_TYPE="0")
    assert answered(await ask(service))
    assert answered(await ask(service, stream=True))
    assert [r.path for r in sim.requests].count(CHAT) == 2
    if scheme == "http":
        assert len(proxy.seen) == 2 and all(line == f"POST {upstream}{CHAT}" for line in proxy.seen)
    else:
        assert proxy.seen == [f"CONNECT {urlsplit(upstream).netloc}"] * 2


# ------------------------------------------------------------------------------ the transport alone


async def one_shot_server(nursery: trio.Nursery, reply: bytes, *, then_wait: bool = False) -> int:
    """A raw HTTP/1.1 server answering every connection with `reply` (and holding it open)."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")

    async def handle(stream: trio.SocketStream) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some()
            if not chunk:
                return
            data += chunk
        await stream.send_all(reply)
        if then_wait:
            await trio.sleep(30)

    nursery.start_soon(trio.serve_listeners, handle, listeners)
    return listeners[0].socket.getsockname()[1]


async def test_a_compressed_body_is_decoded_exactly_once(nursery: trio.Nursery) -> None:
    payload = json.dumps({"ok": True, "text": "é" * 50}).encode()
    packed = gzip.compress(payload)
    port = await one_shot_server(nursery, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
                                 + f"Content-Length: {len(packed)}\r\nConnection: close\r\n\r\n".encode() + packed)
    async with httpx.AsyncClient(transport=BrowserTransport()) as client:
        response = await client.get(f"http://127.0.0.1:{port}/x")
    assert response.status_code == 200 and response.content == payload
    assert "content-encoding" not in response.headers


async def test_transport_failures_map_to_the_httpx_exceptions_the_classifier_knows(nursery: trio.Nursery) -> None:
    async with httpx.AsyncClient(transport=BrowserTransport(), timeout=httpx.Timeout(5, read=1)) as client:
        with pytest.raises(httpx.ConnectError) as refused:
            await client.get(f"http://127.0.0.1:{free_port()}/")
        assert classify_exception(refused.value).code == "upstream_network_error"

        port = await one_shot_server(nursery, b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: {}\n\n",
                                     then_wait=True)
        started = trio.current_time()
        with pytest.raises(httpx.ReadTimeout) as silent:
            async with client.stream("GET", f"http://127.0.0.1:{port}/") as response:
                async for _ in response.aiter_bytes():
                    pass
        assert 0.8 < trio.current_time() - started < 4.0
        assert classify_exception(silent.value).code == "upstream_timeout"

        with pytest.raises(httpx.ProxyError):
            async with httpx.AsyncClient(transport=BrowserTransport(proxy=f"http://127.0.0.1:{free_port()}")) as proxied:
                await proxied.get("http://genspark.invalid/")


def test_settings_refuse_an_unknown_browser_and_accept_the_aliases() -> None:
    assert Settings.from_env({"UPSTREAM_TRANSPORT": "browser"}).upstream_impersonate == "chrome"
    assert Settings.from_env({"UPSTREAM_TRANSPORT": "browser", "UPSTREAM_IMPERSONATE": "Chrome146"}).upstream_impersonate == "chrome146"
    with pytest.raises(SettingsError) as info:
        Settings.from_env({"UPSTREAM_TRANSPORT": "browser", "UPSTREAM_IMPERSONATE": "netscape4"})
    assert "UPSTREAM_IMPERSONATE" in str(info.value) and "chrome" in str(info.value)
    with pytest.raises(SettingsError):
        Settings.from_env({"UPSTREAM_TRANSPORT": "curl"})
    # httpx stays the default, and the impersonation target is not checked without the browser transport.
    assert Settings.from_env({"UPSTREAM_IMPERSONATE": "netscape4"}).upstream_transport == "httpx"
