"""A bounded soak (scripts/soak.py runs the long one): faulty cookies of several kinds, stream and
non-stream, every request under deadlines. 0 hangs, every answer well formed, no upstream
connection left busy, no 500, and RSS growth under a bound. Then the hang detector itself: it must
catch a service that is stuck and let one that is slow but moving through."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

from soak import Deadlines, check_stream, drive, soak

REQUESTS = 2500


async def test_soak_bounded() -> None:
    figures = await soak(REQUESTS, 40, seed=10)
    print(figures.report())
    assert figures.hangs == 0, figures.report()
    assert figures.malformed == [], figures.malformed[:5]
    assert figures.busy_upstream == 0
    assert figures.statuses[500] == 0 and figures.statuses[200] > 0, figures.report()
    assert sum(figures.statuses.values()) == REQUESTS
    # Measured after a warm-up request of each kind: 2,500 requests grew it by 0-3 MB.
    assert figures.rss_after_mb - figures.rss_before_mb < 64, figures.report()


ANSWER = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
          "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}]}
STREAM = (b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}\n\n'
          b'data: {"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}\n\n'
          b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
          b"data: [DONE]\n\n")


async def test_the_deadlines_catch_a_stuck_service_and_not_a_slow_one() -> None:
    """One connection each: no head at all; a head and a keep-alive, then silence; keep-alives
    forever; and a good answer trickled out over more than 2 silence deadlines, which is not a hang."""
    deadlines = Deadlines(head=0.6, silence=0.6, whole=2.5)
    accepted = 0

    async def serve(conn: trio.SocketStream) -> None:
        nonlocal accepted
        kind, accepted = accepted, accepted + 1
        try:
            await answer(conn, kind)
        except trio.BrokenResourceError:
            pass   # the client gave up on it: what a deadline does

    async def answer(conn: trio.SocketStream, kind: int) -> None:
        async with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += await conn.receive_some()
            head, body = data.split(b"\r\n\r\n", 1)
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            while len(body) < length:
                body += await conn.receive_some()
            stream = json.loads(body)["stream"]
            if kind == 0:
                await trio.sleep_forever()
            await conn.send_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: "
                                + (b"text/event-stream" if stream else b"application/json") + b"\r\n\r\n")
            if kind in (1, 2):
                while True:
                    await conn.send_all(b": keep-alive\n\n")
                    if kind == 1:
                        await trio.sleep_forever()
                    await trio.sleep(0.1)
            whole = STREAM if stream else json.dumps(ANSWER).encode()
            step = -(-len(whole) // 8)
            for start in range(0, len(whole), step):
                await trio.sleep(0.2)   # 1.6 s in all, each gap well under the silence deadline
                await conn.send_all(whole[start:start + step])

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, serve, 0)
        port = listeners[0].socket.getsockname()[1]
        figures = await drive(f"http://127.0.0.1:{port}", 4, 4, deadlines=deadlines)
        nursery.cancel_scope.cancel()
    notes = sorted(note.split(": ", 1)[1] for note in figures.hang_notes)
    assert figures.hangs == 3 and len(notes) == 3, figures.report()
    assert notes[0] == "HTTP 200: no byte for 0.6 s after 14 bytes", notes
    assert notes[1] == "no response head within 0.6 s", notes
    assert notes[2].startswith("not done within 2.5 s ("), notes
    assert dict(figures.statuses) == {200: 1} and figures.malformed == [], figures.report()


def test_the_stream_checker_catches_what_it_must() -> None:
    role = b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}\n\n'
    text = b'data: {"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}\n\n'
    finish = b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    error = b'data: {"error":{"message":"m","type":"t","param":null,"code":"upstream_truncated"}}\n\n'
    done = b"data: [DONE]\n\n"
    assert check_stream(role + text + finish + done) is None
    assert check_stream(role + b": keep-alive\n\n" + text + finish + done) is None
    assert check_stream(role + text + error + done) == "error:upstream_truncated"
    assert check_stream(role + text + finish) == "no [DONE] at the end"
    assert check_stream(role + text + done) == "0 finish chunks"
    assert check_stream(text + finish + done) == "no role chunk first"
    assert check_stream(role + error + error + done) == "more than one error event"
    assert check_stream(role + b"data: {nope\n\n" + done).startswith("not JSON")
