"""The upstream client's own rules (its I/O is covered end to end against the simulator)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from genspark2api.settings import Settings
from genspark2api.upstream.client import GensparkClient


@pytest.mark.parametrize(
    ("url", "same"),
    [
        ("https://www.genspark.ai/api/files/x.png", True),
        ("HTTPS://WWW.GENSPARK.AI/x", True),
        ("https://www.genspark.ai.evil.example/x.png", False),
        ("https://www.genspark.ai@evil.example/x.png", False),
        ("http://www.genspark.ai/x", False),
        ("https://www.genspark.ai:8443/x", False),
        ("https://cdn.example/x.png", False),
    ],
)
def test_the_cookie_only_goes_to_the_upstream_origin(url: str, same: bool) -> None:
    assert GensparkClient(Settings()).same_origin(url) is same


@asynccontextmanager
async def answering(response: bytes) -> AsyncIterator[GensparkClient]:
    """A client whose upstream is a loopback server answering every request with `response`."""
    async def serve(stream: trio.SocketStream) -> None:
        data = b""
        while True:
            while b"\r\n\r\n" not in data:
                more = await stream.receive_some()
                if not more:
                    return
                data += more
            data = data.partition(b"\r\n\r\n")[2]   # the requests here carry a 2-byte body at most
            await stream.send_all(response)

    async with trio.open_nursery() as nursery:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        nursery.start_soon(trio.serve_listeners, serve, listeners)
        port = listeners[0].socket.getsockname()[1]
        client = GensparkClient(Settings.from_env({"GENSPARK_BASE_URL": f"http://127.0.0.1:{port}"}))
        try:
            with trio.fail_after(10):
                yield client
        finally:
            await client.aclose()
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("encoding", ["", "gzip"])
async def test_an_event_stream_reads_the_same_plain_or_compressed(encoding: str) -> None:
    # open_stream reads a body without content encoding straight from the transport's stream
    # (fewer layers per chunk) and lets httpx decode an encoded one: both give the same events.
    import gzip

    events = b"".join(b'data: {"type":"message_field_delta","field_name":"content","delta":"%d "}\n\n' % i
                      for i in range(30))
    body = gzip.compress(events) if encoding else events
    head = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            + (b"Content-Encoding: gzip\r\n" if encoding else b"")
            + b"Transfer-Encoding: chunked\r\n\r\n")
    # The body in small chunks, as an event stream arrives.
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 50]), body[i:i + 50]) for i in range(0, len(body), 50))

    async with answering(head + chunked + b"0\r\n\r\n") as client, \
            client.open_stream("/api/agent/ask_proxy", cookie="session_id=t", json={}) as stream:
        deltas = [event.delta async for event in stream.events()]
    assert deltas == [f"{i} " for i in range(30)]


async def test_an_iterator_left_early_is_closed_with_the_stream() -> None:
    # A consumer that stops at the answer's last event leaves its iterator suspended; open_stream
    # closes it, so trio's garbage hook never spends a task finalizing it. next_events (the chat
    # path's read) gives the events chunk by chunk, then None.

    body = b"".join(b'data: {"type":"message_field_delta","field_name":"content","delta":"%d"}\n\n' % i
                    for i in range(6))
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: %d\r\n\r\n" % len(body)

    async with answering(head + body) as client:
        async with client.open_stream("/api/agent/ask_proxy", cookie="session_id=t", json={}) as stream:
            iterator = stream.events()
            async for event in iterator:
                assert event.delta == "0"
                break
            assert iterator.ag_frame is not None   # suspended, not finished
        assert iterator.ag_frame is None           # closed by the stream
        async with client.open_stream("/api/agent/ask_proxy", cookie="session_id=t", json={}) as stream:
            seen = []
            while (events := await stream.next_events()) is not None:
                seen += [event.delta for event in events]
            assert await stream.next_events() is None
    assert seen == [str(i) for i in range(6)]
