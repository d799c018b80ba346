"""STREAM_COALESCE_SECONDS: later frames share writes, the first content frame never waits, and
the bytes are the same SSE whatever the window.

Writes are observed on the wire: hypercorn sends each body chunk Quart hands it as one HTTP/1.1
chunk, so a raw client that records the chunks (and when they came) sees every send.
"""

from __future__ import annotations

import json
import re
import time

import trio
import trio.testing
from conftest import ServiceFactory, sse_frames

from genspark2api.api.sse_body import SSEBody
from genspark2api.simulator import Simulator


async def chunked_post(url: str, path: str, body: dict) -> list[tuple[float, bytes]]:
    """POST with a raw socket; the response body's HTTP chunks with their arrival times (seconds
    after the request went out)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    payload = json.dumps(body).encode()
    stream = await trio.open_tcp_stream(host, int(port))
    buffer = bytearray()

    async def need(n: int) -> None:
        while len(buffer) < n:
            data = await stream.receive_some(65536)
            assert data, "the service closed the connection mid-body"
            buffer.extend(data)

    async def line() -> bytes:
        while b"\r\n" not in buffer:
            await need(len(buffer) + 1)
        end = buffer.index(b"\r\n")
        out = bytes(buffer[:end])
        del buffer[: end + 2]
        return out

    started = time.monotonic()
    chunks: list[tuple[float, bytes]] = []
    async with stream:
        await stream.send_all(
            b"POST %s HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (path.encode(), len(payload), payload)
        )
        assert (await line()).startswith(b"HTTP/1.1 200")
        headers = []
        while header := await line():
            headers.append(header.lower())
        assert b"transfer-encoding: chunked" in headers
        with trio.fail_after(20):
            while size := int(await line(), 16):
                await need(size + 2)
                chunks.append((time.monotonic() - started, bytes(buffer[:size])))
                del buffer[: size + 2]
    return chunks


def normalised(body: bytes) -> list[bytes]:
    """The frames with the per-answer id and timestamp blanked, so two answers compare."""
    return [re.sub(rb'"created":\d+', b'"created":0', re.sub(rb'"id":"chatcmpl-[0-9a-f]+"', b'"id":"x"', f))
            for f in sse_frames(body)]


CHAT = "/v1/chat/completions"


def contents(chunk: bytes) -> list[str]:
    out = []
    for frame in sse_frames(chunk):
        assert frame.startswith(b"data: "), frame
        if frame == b"data: [DONE]":
            continue
        doc = json.loads(frame[6:])
        for choice in doc["choices"]:
            if choice["delta"].get("content"):
                out.append(choice["delta"]["content"])
    return out


async def test_coalesced_frames_are_the_same_sse_bytes(sim: Simulator, make_service: ServiceFactory) -> None:
    sim.answer_delay = 0.002  # type: ignore[attr-defined]
    question = " ".join(f"word{i}" for i in range(60))
    body = {"model": "gpt-5.4", "stream": True, "messages": [{"role": "user", "content": question}],
            "stream_options": {"include_usage": True}}
    plain = await make_service(STREAM_COALESCE_SECONDS="0")
    batched = await make_service(STREAM_COALESCE_SECONDS="0.2")
    one = await chunked_post(plain.url, CHAT, body)
    many = await chunked_post(batched.url, CHAT, body)
    joined_one = b"".join(c for _, c in one)
    joined_many = b"".join(c for _, c in many)
    assert normalised(joined_many) == normalised(joined_one)
    # Every write ends on a frame boundary: a client may parse each one on its own.
    for _, chunk in many:
        assert chunk.endswith(b"\n\n")
        contents(chunk)
    assert len(many) < len(one) / 3, (len(many), len(one))  # the window did batch the deltas


async def test_the_first_content_frame_is_not_held_for_the_window(sim: Simulator, make_service: ServiceFactory) -> None:
    sim.answer_delay = 0.15  # type: ignore[attr-defined]
    service = await make_service(STREAM_COALESCE_SECONDS="1")
    body = {"model": "gpt-5.4", "stream": True, "messages": [{"role": "user", "content": "one two three four five six"}]}
    chunks = await chunked_post(service.url, CHAT, body)
    with_content = [(t, c) for t, c in chunks if contents(c)]
    first_at, first = with_content[0]
    # The first delta is written on its own as soon as it is there: no other delta, no 1 s wait.
    assert len(contents(first)) == 1
    later_at, later = with_content[1]
    assert later_at - first_at > 0.5, "the next write waited for the window"
    assert len(contents(later)) > 1, "and carried what arrived meanwhile"
    # Nothing is lost: the content joins up to the whole answer.
    text = "".join(x for _, c in chunks for x in contents(c))
    assert text.endswith("You said: one two three four five six")
    assert chunks[-1][1].endswith(b"data: [DONE]\n\n")


class _Frames(SSEBody):
    """The smallest SSE body on top of `_gather`: each item is its own frame."""

    def __init__(self, recv: trio.MemoryReceiveChannel, window: float) -> None:
        self.recv = recv
        self.coalesce_window = window

    def _cancel(self) -> None:
        self.recv.close()

    async def _frames(self):
        while True:
            try:
                item = await self.recv.receive()
            except trio.EndOfChannel:
                return
            out, _ = await self._gather(item, self.recv.receive_nowait, lambda more: (more, False))
            yield out


async def test_only_a_fast_stream_waits_for_the_window(autojump_clock: trio.testing.MockClock) -> None:
    # Items farther apart than the window are written the moment they come (no 0.1 s added to
    # each, no timer per frame: a thousand slow streams cost a thousand timers a second); items
    # that come sooner than a window after the last write share the next write.
    send, recv = trio.open_memory_channel(100)
    body = _Frames(recv, window=0.1)
    start = trio.current_time()

    async def produce() -> None:
        async with send:
            for at, item in [(0.0, b"a"), (1.0, b"b"), (2.0, b"c"), (2.02, b"d"), (2.04, b"e"), (2.06, b"f")]:
                await trio.sleep_until(start + at)
                await send.send(item)

    written: list[tuple[float, bytes]] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(produce)
        async for frames in body:
            written.append((round(trio.current_time() - start, 3), frames))
    assert written == [(0.0, b"a"), (1.0, b"b"), (2.0, b"c"), (2.12, b"def")]
