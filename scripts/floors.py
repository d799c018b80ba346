#!/usr/bin/env python3
"""The stack's own floor: what the libraries the service is built on cost by themselves.

`scripts/bench.py` says what the service costs; this says how much of that the chosen stack
(hypercorn + quart-trio serving, httpx/httpcore fetching, trio scheduling) costs with none of our
code, measured the same way (CPU time of the process doing the work, from /proc), so the gap
between the service and a goal can be told apart from the gap between the stack and the goal.

    python scripts/floors.py

Rows:
- a bare quart-trio app on hypercorn's trio worker answering `GET /healthz` with a small JSON
  body, keep-alive, one client: server CPU per request (its own process);
- httpx streaming one 20-delta `ai_chat` answer from the benchmark's fake upstream over a
  keep-alive connection, and the same through httpcore alone and over a raw trio socket: client
  CPU per answer;
- a trio cancel scope entered and left (every timeout, deadline and shield is one);
- importing quart-trio, hypercorn's trio worker, httpx, trio and msgspec in a fresh interpreter.

A benchmark, not a test: nothing asserts. Nothing leaves 127.0.0.1; every loop is bounded.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import Conn, cpu_seconds, free_port, wait_ready  # this directory's module

ROOT = Path(__file__).resolve().parent.parent
REQUESTS = 800   # below hypercorn's keep_alive_max_requests (1,000), so one connection carries them

BARE_APP = """
import sys, trio
from hypercorn.config import Config
from hypercorn.trio import serve
from quart_trio import QuartTrio
app = QuartTrio("bare")
@app.get("/healthz")
async def healthz():
    return {"status": "ok"}
config = Config()
config.bind = [f"127.0.0.1:{sys.argv[1]}"]
config.accesslog = None
trio.run(serve, app, config)
"""

CLIENTS = """
import json, sys, time
import httpcore, httpx, trio
port, n = int(sys.argv[1]), int(sys.argv[2])
url = f"http://127.0.0.1:{port}/api/agent/ask_proxy"
body = json.dumps({"type": "ai_chat", "user_s_input": "deltas=20 pace=0"}).encode()
headers = {"Cookie": "session_id=floor", "Content-Type": "application/json"}

async def measure(one):
    for _ in range(50):
        await one()
    started = time.process_time()
    for _ in range(n):
        await one()
    return (time.process_time() - started) / n

async def main():
    out = {}
    async with httpx.AsyncClient() as client:
        async def via_httpx():
            async with client.stream("POST", url, content=body, headers=headers) as response:
                async for _ in response.aiter_bytes():
                    pass
        out["httpx"] = await measure(via_httpx)
    async with httpcore.AsyncConnectionPool() as pool:
        async def via_httpcore():
            async with pool.stream("POST", url, content=body, headers=headers) as response:
                async for _ in response.aiter_stream():
                    pass
        out["httpcore"] = await measure(via_httpcore)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    request = b"POST /api/agent/ask_proxy HTTP/1.1\\r\\nhost: x\\r\\ncontent-length: %d\\r\\n\\r\\n%s" % (len(body), body)
    async def raw():
        await stream.send_all(request)
        data = b""
        while not data.endswith(b"0\\r\\n\\r\\n"):
            data += await stream.receive_some(65536)
    out["raw"] = await measure(raw)
    await stream.aclose()
    scopes = 20000
    started = time.perf_counter()
    for _ in range(scopes):
        with trio.move_on_after(60):
            pass
    out["scope"] = (time.perf_counter() - started) / scopes
    print(json.dumps(out))

trio.run(main)
"""


def import_seconds(runs: int = 5) -> float:
    """Median wall time of importing the frameworks in a fresh interpreter."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import quart_trio, hypercorn.trio, httpx, trio, msgspec"],
                       check=True, cwd=ROOT)
        times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2]


async def bare_server_cpu() -> float:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(BARE_APP), str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        await wait_ready(port, "/healthz", 30)
        conn = await Conn.open(port)
        for _ in range(50):
            await conn.request(b"GET", b"/healthz", b"")
        await conn.aclose()
        conn = await Conn.open(port)
        before = cpu_seconds(proc.pid)
        for _ in range(REQUESTS):
            await conn.request(b"GET", b"/healthz", b"")
        spent = cpu_seconds(proc.pid) - before
        await conn.aclose()
        return spent / REQUESTS
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


async def main() -> None:
    fake_port = free_port()
    fake = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "fake_upstream.py"), "--port", str(fake_port)],
                            cwd=ROOT, stdout=subprocess.DEVNULL)
    try:
        await wait_ready(fake_port, "/stats", 10)
        server = await bare_server_cpu()
        done = subprocess.run([sys.executable, "-c", textwrap.dedent(CLIENTS), str(fake_port), str(REQUESTS)],
                              check=True, capture_output=True, text=True, cwd=ROOT)
        clients = json.loads(done.stdout)
    finally:
        fake.send_signal(signal.SIGTERM)
        fake.wait(10)
    rows = [
        ("bare quart-trio on hypercorn, GET /healthz: server CPU per request", f"{server * 1e3:.2f} ms"),
        ("httpx, one 20-delta answer streamed from the fake: client CPU", f"{clients['httpx'] * 1e3:.2f} ms"),
        ("httpcore alone, the same answer", f"{clients['httpcore'] * 1e3:.2f} ms"),
        ("raw trio socket, the same answer", f"{clients['raw'] * 1e3:.2f} ms"),
        ("a trio cancel scope (move_on_after) entered and left", f"{clients['scope'] * 1e6:.1f} µs"),
        ("importing quart-trio, hypercorn.trio, httpx, trio, msgspec (median of 5)", f"{import_seconds():.2f} s"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value:>10}")


if __name__ == "__main__":
    trio.run(main)
