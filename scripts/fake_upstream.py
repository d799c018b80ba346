#!/usr/bin/env python3
"""A minimal, fast fake of Genspark's `ai_chat` endpoint, for `scripts/bench.py` only.

Why not the simulator: it is a Quart app with scenarios, state and pacing, and costs about as
much CPU per request as the service itself, so "direct" would be slow and the ratios would flatter
the service. This fake is raw trio sockets and pre-encoded bytes: HTTP/1.1 with keep-alive,
`POST /api/agent/ask_proxy` answers the §12.4 event sequence (project_start, message_start,
message_field_delta × N, message_field, message_result, project_field status FINISHED, then the
body ends), `GET /stats` reports how many connections and requests it saw.

The answer's shape comes from the request's last user text (`user_s_input`), so each request of
the load generator says what it wants: `deltas=N` (answer deltas, default 20) and `pace=S`
(seconds between deltas, default 0: as fast as the socket takes them).

    python scripts/fake_upstream.py --port 0      # prints "listening on http://127.0.0.1:PORT"

Nothing but 127.0.0.1 is bound.
"""

from __future__ import annotations

import argparse
import json
import re
from typing import ClassVar

import trio

WORD = "lorem "  # one token per delta, so counted usage is easy to check
_SHAPE = re.compile(r"(deltas|pace)=([0-9.]+)")


class Stats:
    connections = 0
    requests = 0
    others: ClassVar[dict[str, int]] = {}   # "METHOD path" of every other request (the service should send none)


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _event(obj: dict) -> bytes:
    return _chunk(b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n")


DELTA = _event({"message_id": "m1", "field_name": "content", "delta": WORD, "type": "message_field_delta"})
HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
    b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
    + _event({"id": "p-bench", "_event_index": 0, "type": "project_start"})
    + _event({"message_id": "m1", "type": "message_start"})
)


def _tail(deltas: int) -> bytes:
    text = WORD * deltas
    return (
        _event({"message_id": "m1", "field_name": "content", "field_value": text, "type": "message_field"})
        + _event({"type": "message_result", "message": {"id": "m1", "role": "assistant", "content": text}})
        + _event({"field_name": "status", "field_value": "FINISHED", "type": "project_field"})
        + b"0\r\n\r\n"
    )


_tails: dict[int, bytes] = {}


def _shape(body: bytes) -> tuple[int, float]:
    try:
        text = str(json.loads(body).get("user_s_input", ""))
    except (ValueError, AttributeError):
        text = ""
    found = dict(_SHAPE.findall(text))
    return max(1, int(float(found.get("deltas", 20)))), float(found.get("pace", 0))


async def _answer(stream: trio.SocketStream, body: bytes) -> None:
    deltas, pace = _shape(body)
    tail = _tails.get(deltas)
    if tail is None:
        tail = _tails[deltas] = _tail(deltas)
    if pace <= 0:
        out = bytearray(HEAD)
        for _ in range(deltas):
            out += DELTA
            if len(out) >= 16384:
                await stream.send_all(out)
                out = bytearray()
        await stream.send_all(bytes(out) + tail)
        return
    await stream.send_all(HEAD)
    for _ in range(deltas):
        await trio.sleep(pace)
        await stream.send_all(DELTA)
    await stream.send_all(tail)


async def _serve_connection(stream: trio.SocketStream) -> None:
    buffer = b""
    counted = False
    try:
        while True:
            while b"\r\n\r\n" not in buffer:
                data = await stream.receive_some(65536)
                if not data:
                    return
                buffer += data
            head, buffer = buffer.split(b"\r\n\r\n", 1)
            lines = head.split(b"\r\n")
            method, path, _ = lines[0].split(b" ", 2)
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            while len(buffer) < length:
                data = await stream.receive_some(65536)
                if not data:
                    return
                buffer += data
            body, buffer = buffer[:length], buffer[length:]
            if method == b"POST" and path.startswith(b"/api/agent/ask_proxy"):
                if not counted:
                    counted = True
                    Stats.connections += 1  # connections that carried an answer, not /stats polls
                Stats.requests += 1
                await _answer(stream, body)
            elif path == b"/stats":
                doc = json.dumps({"connections": Stats.connections, "requests": Stats.requests,
                                  "others": Stats.others}).encode()
                await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                                      b"content-length: %d\r\n\r\n%s" % (len(doc), doc))
            else:
                key = f"{method.decode()} {path.decode().split('?')[0]}"
                Stats.others[key] = Stats.others.get(key, 0) + 1
                await stream.send_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
    except (trio.BrokenResourceError, trio.ClosedResourceError, ValueError):
        return
    finally:
        await trio.aclose_forcefully(stream)


async def serve(port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve until cancelled; `nursery.start` returns the bound port."""
    listeners = await trio.open_tcp_listeners(port, host="127.0.0.1", backlog=4096)
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(_serve_connection, listeners)


async def main(port: int) -> None:
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(serve, port)
        print(f"listening on http://127.0.0.1:{bound}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    trio.run(main, parser.parse_args().port)
