"""A client that stops reading is let go after CLIENT_SEND_TIMEOUT (api/client_deadlines.py, issue #10).

Before the deadline, hypercorn's shielded `send_all` waited forever on such a client, and the answer
held its upstream stream and the cookie's in-flight slot as long as the client kept the socket open.
"""

from __future__ import annotations

import json
import socket

import trio
from hypercorn.events import Closed, RawData

from genspark2api.api import client_deadlines


class StuckStream:
    """A stream whose writes never complete (a peer that stopped reading)."""

    def __init__(self) -> None:
        self.closed = False

    async def send_all(self, data: bytes) -> None:
        await trio.sleep_forever()

    async def aclose(self) -> None:
        self.closed = True


class FastStream(StuckStream):
    async def send_all(self, data: bytes) -> None:
        self.sent = data


class Recorder:
    def __init__(self) -> None:
        self.events: list[object] = []

    async def handle(self, event: object) -> None:
        self.events.append(event)


class Config:
    genspark2api_send_timeout = 0.2
    genspark2api_head_timeout = None


class Server:
    def __init__(self, stream: StuckStream) -> None:
        self.stream = stream
        self.protocol = Recorder()
        self.send_lock = trio.Lock()
        self.config = Config()


async def test_a_write_that_never_completes_closes_the_connection_at_the_deadline() -> None:
    server = Server(StuckStream())
    with trio.fail_after(5):
        start = trio.current_time()
        await client_deadlines.protocol_send(server, RawData(b"data: x\n\n"))
        waited = trio.current_time() - start
    assert server.stream.closed
    assert any(isinstance(e, Closed) for e in server.protocol.events)
    assert 0.15 <= waited < 2


async def test_a_write_that_completes_leaves_the_connection_alone() -> None:
    server = Server(FastStream())
    await client_deadlines.protocol_send(server, RawData(b"abc"))
    assert server.stream.sent == b"abc" and not server.stream.closed and not server.protocol.events


async def test_the_write_stays_shielded_and_the_deadline_still_ends_it() -> None:
    # hypercorn relies on a begun write not being cancelled by the request's own scope ...
    server = Server(StuckStream())
    with trio.fail_after(5):
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client_deadlines.protocol_send, server, RawData(b"x"))
                await trio.sleep(0.05)
                scope.cancel()
                start = trio.current_time()
        waited = trio.current_time() - start
    # ... so the cancellation waited for the deadline, which closed the connection.
    assert server.stream.closed and waited >= 0.1


async def test_a_live_stream_to_a_client_that_stops_reading_releases_its_upstream(make_service, sim) -> None:
    service = await make_service(CLIENT_SEND_TIMEOUT="1", STREAM_COALESCE_SECONDS="0")
    host, port = service.url.removeprefix("http://").split(":")
    # The simulator echoes the question: a long question makes an answer far larger than the
    # socket buffers of a client that reads nothing (its receive buffer is made tiny).
    question = "lorem ipsum dolor sit amet " * 120_000
    body = json.dumps({"model": "claude-sonnet-4-6", "stream": True,
                       "messages": [{"role": "user", "content": question}]}).encode()
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    with sock, trio.fail_after(60):
        await sock.connect((host, int(port)))
        head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        await sock.send(head)
        view = memoryview(body)
        while view:
            sent = await sock.send(view[:65536])
            view = view[sent:]
        # Read the head and a little of the answer, then stop reading.
        first = await sock.recv(1024)
        assert first.startswith(b"HTTP/1.1 200")
        assert _in_flight(sim) == 1
        stopped = trio.current_time()
        # The deadline closes the connection, and with it the upstream stream is released.
        while _in_flight(sim):
            await trio.sleep(0.05)
        assert trio.current_time() - stopped >= 0.9
        # The service closed its side: what is left to read ends, without an end of the stream.
        rest = b""
        while chunk := await sock.recv(65536):
            rest += chunk
        assert b"data: [DONE]" not in rest


def _in_flight(sim) -> int:
    return sum(sim.ledger.in_flight.values())


async def _open(service) -> trio.SocketStream:
    host, port = service.url.removeprefix("http://").split(":")
    return await trio.open_tcp_stream(host, int(port))


async def _closed_within(stream: trio.SocketStream, seconds: float) -> bytes:
    """What the server sent before closing; fails if it is still open after `seconds`."""
    got = b""
    with trio.fail_after(seconds):
        while chunk := await stream.receive_some(65536):
            got += chunk
    return got


GET_MODELS = b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n"


async def _response(stream: trio.SocketStream) -> bytes:
    """One whole answer with a Content-Length (status line first)."""
    got = b""
    with trio.fail_after(5):
        while b"\r\n\r\n" not in got:
            got += await stream.receive_some(65536)
        head, _, body = got.partition(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:")))
        while len(body) < length:
            body += await stream.receive_some(65536)
    return head


async def test_a_head_sent_too_slowly_closes_the_connection(make_service) -> None:
    service = await make_service(HEAD_TIMEOUT="1")
    async with await _open(service) as stream:
        start = trio.current_time()
        await stream.send_all(b"GET /v1/models HTTP/1.1\r\nHo")
        assert await _closed_within(stream, 4) == b""   # no request yet, so no answer
        assert trio.current_time() - start >= 0.9


async def test_the_head_timer_starts_with_each_head_not_with_the_connection(make_service) -> None:
    service = await make_service(HEAD_TIMEOUT="1")
    async with await _open(service) as stream:
        await trio.sleep(1.5)   # idle: only the keep-alive timeout (5 s in tests) applies
        await stream.send_all(b"GET /v1/models HTTP/1.1\r\n")
        await trio.sleep(0.3)
        await stream.send_all(b"Host: x\r\n\r\n")   # a head in two parts, inside the deadline
        assert (await _response(stream)).startswith(b"HTTP/1.1 200")
        # The next head on the same connection gets its own deadline.
        await trio.sleep(0.2)
        await stream.send_all(b"GET /v1/mo")
        rest = await _closed_within(stream, 4)
        assert b"HTTP/1.1" not in rest


async def test_whole_heads_never_meet_the_head_timer(make_service) -> None:
    service = await make_service(HEAD_TIMEOUT="1")
    async with await _open(service) as stream:
        for _ in range(3):
            await stream.send_all(GET_MODELS)
            assert (await _response(stream)).startswith(b"HTTP/1.1 200")
            await trio.sleep(0.6)   # 1.8 s in all: longer than HEAD_TIMEOUT, shorter than keep-alive
