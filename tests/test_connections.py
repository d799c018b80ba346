"""How connections end, over raw sockets: early answers, keep-alive, HTTP/1.0, Connection: close,
WebSocket upgrades, large bodies. Every read is bounded; a hang fails the test."""

from __future__ import annotations

import json

import pytest
import trio
from conftest import Service, ServiceFactory

BODY = json.dumps({"model": "gpt-5.4", "messages": [{"role": "user", "content": "hi"}]}).encode()


def head(method: str, path: str, *, key: str | None = None, length: int | None = None, version: str = "1.1",
         extra: str = "") -> bytes:
    lines = [f"{method} {path} HTTP/{version}", "Host: test"]
    if key is not None:
        lines.append(f"Authorization: Bearer {key}")
    if length is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {length}"]
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode()


async def connect(service: Service) -> trio.SocketStream:
    host, port = service.url.removeprefix("http://").rsplit(":", 1)
    return await trio.open_tcp_stream(host, int(port))


class Reader:
    """Reads HTTP/1.x answers off one socket (Content-Length, chunked, or until EOF)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""
        self.eof = False

    async def _more(self) -> None:
        data = await self.stream.receive_some(65536)
        if not data:
            self.eof = True
        self.buffer += data

    async def answer(self, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
        with trio.fail_after(timeout):
            while b"\r\n\r\n" not in self.buffer:
                await self._more()
                assert not self.eof or b"\r\n\r\n" in self.buffer, self.buffer
            raw, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            status_line, *lines = raw.decode("latin1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
            status = int(status_line.split()[1])
            if "content-length" in headers:
                n = int(headers["content-length"])
                while len(self.buffer) < n:
                    await self._more()
                    assert not self.eof
                body, self.buffer = self.buffer[:n], self.buffer[n:]
            elif headers.get("transfer-encoding") == "chunked":
                body = b""
                while True:
                    while b"\r\n" not in self.buffer:
                        await self._more()
                        assert not self.eof
                    size_line, rest = self.buffer.split(b"\r\n", 1)
                    size = int(size_line, 16)
                    while len(rest) < size + 2:
                        await self._more()
                        assert not self.eof
                        size_line, rest = self.buffer.split(b"\r\n", 1)
                    body += rest[:size]
                    self.buffer = rest[size + 2:]
                    if size == 0:
                        break
            else:  # delimited by the end of the connection (HTTP/1.0)
                while not self.eof:
                    await self._more()
                body, self.buffer = self.buffer, b""
            return status, headers, body

    async def closed(self, timeout: float = 3.0) -> bool:
        """True when the server closes the connection within `timeout` (nothing else arrives)."""
        with trio.move_on_after(timeout):
            while not self.eof:
                await self._more()
            return self.buffer == b""
        return False


@pytest.fixture
async def keyed(make_service: ServiceFactory) -> Service:
    return await make_service(API_SECRET="sk-good")


@pytest.mark.parametrize("trial", range(3))
async def test_401_before_the_body_then_a_good_request_on_the_same_socket(keyed: Service, trial: int) -> None:
    stream = await connect(keyed)
    reader = Reader(stream)
    await stream.send_all(head("POST", "/v1/chat/completions", key="sk-bad", length=len(BODY)))
    await trio.sleep(0.01 * (trial + 1))  # the guard answers before the body is there
    await stream.send_all(BODY)
    status, _, body = await reader.answer()
    assert status == 401 and json.loads(body)["error"]["code"] == "invalid_api_key"
    await stream.send_all(head("POST", "/v1/chat/completions", key="sk-good", length=len(BODY)) + BODY)
    status, _, body = await reader.answer()
    assert status == 200 and "You said: hi" in json.loads(body)["choices"][0]["message"]["content"]
    await stream.aclose()


async def test_404_and_429_and_403_before_the_body_keep_the_connection_usable(make_service: ServiceFactory) -> None:
    for env, path, status in [({}, "/v1/embeddings", 404), ({"REQUEST_RATE_LIMIT": "1"}, "/v1/chat/completions", 429),
                              ({"IP_BLACK_LIST": "127.0.0.1"}, "/v1/chat/completions", 403)]:
        service = await make_service(**env)
        stream = await connect(service)
        reader = Reader(stream)
        if status == 429:  # spend the one allowed request first
            await stream.send_all(head("GET", "/v1/models"))
            assert (await reader.answer())[0] == 200
        await stream.send_all(head("POST", path, length=len(BODY)))
        await trio.sleep(0.02)
        await stream.send_all(BODY)
        assert (await reader.answer())[0] == status
        await stream.send_all(head("GET", "/healthz"))
        assert (await reader.answer())[0] in (200, 403)
        await stream.aclose()


async def test_a_body_that_never_comes_closes_the_connection_after_the_answer(make_service: ServiceFactory) -> None:
    service = await make_service(API_SECRET="sk-good")
    from genspark2api.api import app as app_module  # the guard's drain bound

    stream = await connect(service)
    reader = Reader(stream)
    await stream.send_all(head("POST", "/v1/chat/completions", key="sk-bad", length=len(BODY)))
    started = trio.current_time()
    status, headers, _ = await reader.answer(timeout=app_module.EARLY_ANSWER_DRAIN_SECONDS + 3)
    assert status == 401 and headers.get("connection") == "close"
    assert await reader.closed()
    assert trio.current_time() - started < app_module.EARLY_ANSWER_DRAIN_SECONDS + 2


async def test_openai_sdk_404_then_chat_on_the_same_client(make_service: ServiceFactory) -> None:
    import openai

    service = await make_service()
    client = service.openai()
    for _ in range(4):
        with pytest.raises(openai.NotFoundError):
            await client.embeddings.create(model="gpt-5.4", input="hi")
        with trio.fail_after(8):
            answer = await client.chat.completions.create(model="gpt-5.4", messages=[{"role": "user", "content": "hi"}])
        assert "You said: hi" in answer.choices[0].message.content


@pytest.mark.parametrize("stream_flag", [False, True])
async def test_http_1_0_answers_end_with_the_connection(service: Service, stream_flag: bool) -> None:
    body = json.dumps({"model": "gpt-5.4", "stream": stream_flag, "messages": [{"role": "user", "content": "hi"}]}).encode()
    stream = await connect(service)
    reader = Reader(stream)
    await stream.send_all(head("POST", "/v1/chat/completions", length=len(body), version="1.0") + body)
    status, _, answer = await reader.answer()
    assert status == 200
    if stream_flag:
        assert answer.endswith(b"data: [DONE]\n\n")
    else:
        assert "You said: hi" in answer.decode()
    assert reader.eof or await reader.closed()


@pytest.mark.parametrize("stream_flag", [False, True])
async def test_connection_close_on_http_1_1_is_honoured(service: Service, stream_flag: bool) -> None:
    body = json.dumps({"model": "gpt-5.4", "stream": stream_flag, "messages": [{"role": "user", "content": "hi"}]}).encode()
    stream = await connect(service)
    reader = Reader(stream)
    await stream.send_all(head("POST", "/v1/chat/completions", length=len(body), extra="Connection: close\r\n") + body)
    status, headers, _ = await reader.answer()
    assert status == 200 and headers.get("connection") == "close"
    assert await reader.closed()


async def test_keep_alive_still_works_for_many_requests(service: Service) -> None:
    stream = await connect(service)
    reader = Reader(stream)
    for _ in range(5):
        await stream.send_all(head("POST", "/v1/chat/completions", length=len(BODY)) + BODY)
        assert (await reader.answer())[0] == 200
        await stream.send_all(head("GET", "/healthz"))
        assert (await reader.answer())[0] == 200


@pytest.mark.parametrize("path", ["/healthz", "/v1/chat/completions", "/nowhere"])
async def test_websocket_upgrade_is_a_clean_400(make_service: ServiceFactory, path: str, caplog) -> None:
    service = await make_service(API_SECRET="sk-good")
    stream = await connect(service)
    reader = Reader(stream)
    await stream.send_all(head("GET", path, extra="Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                                                   "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"))
    status, headers, body = await reader.answer()
    assert status == 400 and headers["content-type"] == "application/json"
    assert json.loads(body)["error"]["code"] == "websocket_not_supported"
    assert await reader.closed()
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]


async def test_a_slow_body_gets_a_408_and_the_connection_ends(make_service: ServiceFactory) -> None:
    service = await make_service(BODY_TIMEOUT="1")
    stream = await connect(service)
    reader = Reader(stream)
    await stream.send_all(head("POST", "/v1/chat/completions", length=len(BODY)) + BODY[:10])
    started = trio.current_time()
    status, _, body = await reader.answer(timeout=8)
    assert status == 408 and json.loads(body)["error"]["code"] == "request_timeout"
    assert 0.9 < trio.current_time() - started < 8
    assert await reader.closed(timeout=8)


def test_slow_client_limits_reach_hypercorn() -> None:
    from genspark2api.cli import hypercorn_config
    from genspark2api.settings import Settings

    config = hypercorn_config(Settings.from_env({"KEEP_ALIVE_TIMEOUT": "20", "LISTEN_BACKLOG": "2048"}))
    assert (config.keep_alive_timeout, config.backlog) == (20.0, 2048)
    assert hypercorn_config(Settings()).backlog == 1024


async def test_slow_headers_are_cut_at_the_head_timeout_in_the_real_process(sim, tmp_path) -> None:
    from test_pool_e2e import service_process

    async with service_process(sim, tmp_path / "service.log", GS_COOKIE="ok-1", HEAD_TIMEOUT="1") as (_, http):
        stream = await trio.open_tcp_stream("127.0.0.1", http.base_url.port)
        reader = Reader(stream)
        started = trio.current_time()
        cut = False
        with trio.move_on_after(6):
            try:
                for byte in b"GET /healthz HTTP/1.1\r\nHost: test\r\n" * 4:  # a byte every 0.1 s: slowloris
                    await stream.send_all(bytes([byte]))
                    await trio.sleep(0.1)
            except trio.BrokenResourceError:
                cut = True
        assert cut or await reader.closed(timeout=3)
        assert trio.current_time() - started < 4


async def test_a_413_is_readable_while_the_client_is_still_sending(make_service: ServiceFactory) -> None:
    service = await make_service(MAX_REQUEST_BYTES=str(1024 * 1024))
    big = b'{"model": "gpt-5.4", "messages": [], "x": "' + b"a" * (8 * 1024 * 1024) + b'"}'
    async with service.http() as http:
        for _ in range(3):
            response = await http.post("/v1/chat/completions", content=big, headers={"Content-Type": "application/json"})
            assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"
            assert (await http.get("/healthz")).status_code == 200


async def test_large_bodies_are_decoded_a_few_at_a_time_and_the_loop_stays_responsive(make_service: ServiceFactory) -> None:
    service = await make_service(LARGE_BODY_CONCURRENCY="2")
    slots = service.runtime.large_body_slots
    big = b'{"model": "gpt-5.4", "messages": [], "metadata": {"blob": "' + b"b" * (4 * 1024 * 1024) + b'"}}'
    peak = 0
    health: list[float] = []
    statuses: list[int] = []

    async def upload(http) -> None:
        response = await http.post("/v1/chat/completions", content=big, headers={"Content-Type": "application/json"})
        statuses.append(response.status_code)

    async def watch(http, done: trio.Event) -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, slots.borrowed_tokens)
            started = trio.current_time()
            assert (await http.get("/healthz")).status_code == 200
            health.append(trio.current_time() - started)
            await trio.sleep(0.01)

    import httpx

    async with service.http(limits=httpx.Limits(max_connections=20)) as http:
        done = trio.Event()
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch, http, done)
                async with trio.open_nursery() as uploads:
                    for _ in range(12):
                        uploads.start_soon(upload, http)
                done.set()
    assert statuses == [400] * 12  # decoded and validated: 'messages' is empty
    assert 1 <= peak <= 2
    assert max(health) < 2.0
