#!/usr/bin/env python3
"""Benchmark: the service's cost, as figures against going to the fake upstream directly.

Three processes, so none slows another by sharing its interpreter: the fake upstream
(`scripts/fake_upstream.py`, a minimal raw-socket fake of `ai_chat`, because the simulator is
itself a Quart app and would be as slow as the service, making "direct" meaningless), the service
(`python genspark2api.py` with its default settings: the first-answer hold and whatever other
holds are on by default are on), and this process, the load generator. The load generator speaks
HTTP/1.1 over raw trio sockets with one keep-alive connection per client, so its own cost stays
small, and runs every measurement both directly against the fake and through the service in the
same run, so a noisy machine slows both alike.

    python scripts/bench.py            # about two minutes on a 2-core machine
    python scripts/bench.py --quick    # a smaller run (seconds), to check that it works

Rows: added time to first content (p50/p99, 1 and 50 clients), wall time of a 2,000-delta stream
(1 and 20 clients), service CPU µs per relayed event (fast and paced streams; from the service
process's own CPU time in /proc), new upstream connections per request (counted by the fake),
RSS with 1,000 open slow streams, non-stream requests per second (50 clients), start to ready.
It is a benchmark, not a test: nothing asserts timings. Nothing leaves 127.0.0.1; every loop is
bounded by a request count or a deadline.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
CONTENT = re.compile(rb'"content":"[^"]')    # a service chunk with answer text (the role chunk's is "")
DELTA = re.compile(rb'"delta":"[^"]')        # an upstream message_field_delta with text
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------------------ processes

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process, from /proc (utime and stime, fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def service_env(upstream_port: int, port: int, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GS_", "GENSPARK_", "API_SECRET"))}
    env.update({
        "HOST": HOST, "PORT": str(port), "GENSPARK_BASE_URL": f"http://{HOST}:{upstream_port}",
        "GS_COOKIE": ",".join(f"session_id=bench-{i}" for i in range(4)), "REQUEST_RATE_LIMIT": "0",
        # The per-cookie cap models Genspark's own limit (§12.5 E18: a 3rd request in flight is
        # refused); the fake has none, and this measures the relay, not four accounts' queue.
        "COOKIE_MAX_IN_FLIGHT": "0",
    })
    env.update(extra)
    return env


async def wait_ready(port: int, path: str, deadline: float) -> float:
    """Poll `path` every 2 ms until it answers 200; the time it took (bounded by `deadline`)."""
    started = time.perf_counter()
    with trio.fail_after(deadline):
        while True:
            try:
                conn = await Conn.open(port)
            except OSError:
                await trio.sleep(0.002)
                continue
            try:
                status, _, _ = await conn.request(b"GET", path.encode(), b"")
                if status == 200:
                    return time.perf_counter() - started
            except (OSError, trio.BrokenResourceError, EOFError):
                pass
            finally:
                await conn.aclose()
            await trio.sleep(0.002)


# ------------------------------------------------------------------------------ the client

class Conn:
    """One keep-alive HTTP/1.1 connection: a request out, the response body read as it comes."""

    def __init__(self, stream: trio.SocketStream, port: int) -> None:
        self.stream = stream
        self.port = port
        self.buffer = bytearray()

    @classmethod
    async def open(cls, port: int) -> Conn:
        return cls(await trio.open_tcp_stream(HOST, port), port)

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)

    async def _more(self) -> None:
        data = await self.stream.receive_some(65536)
        if not data:
            raise EOFError("the server closed the connection")
        self.buffer += data

    async def _line(self) -> bytes:
        while (end := self.buffer.find(b"\r\n")) < 0:
            await self._more()
        line = bytes(self.buffer[:end])
        del self.buffer[: end + 2]
        return line

    async def _exactly(self, n: int) -> bytes:
        while len(self.buffer) < n:
            await self._more()
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data

    async def request(self, method: bytes, path: bytes, body: bytes, marker: re.Pattern[bytes] | None = None,
                      on_first: Callable[[], None] | None = None) -> tuple[int, float | None, int]:
        """(status, seconds to the first `marker` match or None, body bytes); `on_first` is
        called when the marker is seen, before the body ends."""
        head = (b"%s %s HTTP/1.1\r\nhost: %s:%d\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\n\r\n" % (method, path, HOST.encode(), self.port, len(body)))
        started = time.perf_counter()
        await self.stream.send_all(head + body)
        status = int((await self._line()).split()[1])
        length, chunked = 0, False
        while line := await self._line():
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        first: float | None = None
        seen = bytearray()  # only until the marker is found
        total = 0

        def look(data: bytes) -> None:
            nonlocal first
            if first is None and marker is not None:
                seen.extend(data)
                if marker.search(seen):
                    first = time.perf_counter() - started
                    if on_first is not None:
                        on_first()

        if not chunked:
            data = await self._exactly(length)
            look(data)
            return status, first, len(data)
        while True:
            size = int((await self._line()).split(b";")[0], 16)
            if size == 0:
                await self._line()  # the blank line after the last chunk
                return status, first, total
            data = await self._exactly(size)
            await self._exactly(2)
            total += size
            look(data)


@dataclass
class Target:
    """Where a request goes and what it looks like: the fake directly, or through the service."""

    name: str
    port: int
    path: bytes
    marker: re.Pattern[bytes]

    def body(self, deltas: int, pace: float = 0.0, stream: bool = True) -> bytes:
        shape = f"deltas={deltas} pace={pace}"
        if self.name == "direct":
            return json.dumps({"type": "ai_chat", "user_s_input": shape}).encode()
        return json.dumps({"model": "gpt-5.4", "stream": stream,
                           "messages": [{"role": "user", "content": shape}]}).encode()


@dataclass
class Batch:
    wall: float
    first: list[float]     # seconds to first content, per request
    each: list[float]      # seconds per request
    errors: int


async def run_batch(target: Target, requests: int, clients: int, body: bytes) -> Batch:
    """`requests` requests over `clients` keep-alive connections, each client one at a time."""
    left = requests
    first: list[float] = []
    each: list[float] = []
    errors = 0

    async def client() -> None:
        nonlocal left, errors
        conn = await Conn.open(target.port)
        try:
            while left > 0:
                left -= 1
                started = time.perf_counter()
                try:
                    status, ttfc, _ = await conn.request(b"POST", target.path, body, target.marker)
                except (OSError, EOFError, trio.BrokenResourceError, ValueError):
                    errors += 1
                    await conn.aclose()
                    conn = await Conn.open(target.port)
                    continue
                each.append(time.perf_counter() - started)
                if status != 200:
                    errors += 1
                elif ttfc is not None:
                    first.append(ttfc)
        finally:
            await conn.aclose()

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(min(clients, requests)):
            nursery.start_soon(client)
    return Batch(time.perf_counter() - started, first, each, errors)


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


async def upstream_stats(port: int) -> dict[str, int]:
    conn = await Conn.open(port)
    try:
        await conn.stream.send_all(b"GET /stats HTTP/1.1\r\nhost: x\r\n\r\n")
        await conn._line()
        length = 0
        while line := await conn._line():
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        return json.loads(await conn._exactly(length))
    finally:
        await conn.aclose()


# ------------------------------------------------------------------------------ the rows

class Report:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str]] = []

    def add(self, metric: str, direct: str, service: str, compared: str) -> None:
        self.rows.append((metric, direct, service, compared))
        print(f"  {metric:<44}{direct:>12}{service:>12}{compared:>16}", flush=True)

    def header(self) -> None:
        print(f"  {'metric':<44}{'direct':>12}{'service':>12}{'service vs dir':>16}", flush=True)


async def measure(args: argparse.Namespace, fake_port: int, svc_pid: int, svc_port: int, report: Report) -> None:
    direct = Target("direct", fake_port, b"/api/agent/ask_proxy", DELTA)
    service = Target("service", svc_port, b"/v1/chat/completions", CONTENT)
    q = args.quick

    async def both(requests: int, clients: int, make_body: Callable[[Target], bytes]) -> tuple[Batch, Batch]:
        return (await run_batch(direct, requests, clients, make_body(direct)),
                await run_batch(service, requests, clients, make_body(service)))

    # Warm both paths (imports, tiktoken, caches, connection pools) before anything counts.
    await both(20 if q else 100, 10, lambda t: t.body(20))

    # Time to first content on a normal 20-delta answer.
    for clients, requests in ((1, 50 if q else 300), (50, 200 if q else 2000)):
        before = await upstream_stats(fake_port)
        d, s = await both(requests, clients, lambda t: t.body(20))
        after = await upstream_stats(fake_port)
        for p in (50, 99):
            dv, sv = pct(d.first, p) * 1e3, pct(s.first, p) * 1e3
            report.add(f"time to first content p{p}, {clients} client(s) ms", f"{dv:.2f}", f"{sv:.2f}", f"+{sv - dv:.2f} ms")
        # The direct clients open one connection each and reuse it; the rest is the service's.
        new = after["connections"] - before["connections"] - clients
        asked = after["requests"] - before["requests"] - requests
        report.add(f"new upstream connections per request, {clients} cl.", "0", f"{max(new, 0) / asked:.4f}", "")
        if d.errors or s.errors:
            report.add("  errors in the batch above", str(d.errors), str(s.errors), "")

    # Long fast streams: wall time, and the service's CPU per relayed event.
    deltas = 2000
    for clients, requests in ((1, 3 if q else 10), (20, 20 if q else 60)):
        cpu0 = cpu_seconds(svc_pid)
        d, s = await both(requests, clients, lambda t: t.body(deltas))
        cpu = cpu_seconds(svc_pid) - cpu0
        dv, sv = statistics.median(d.each) * 1e3, statistics.median(s.each) * 1e3
        report.add(f"wall of a {deltas}-delta stream, {clients} client(s) ms", f"{dv:.1f}", f"{sv:.1f}", f"x{sv / dv:.2f}")
        if clients > 1:
            report.add("service CPU per relayed event, fast µs", "", f"{cpu * 1e6 / (requests * deltas):.1f}", "")

    # Paced streams (a delta every 5 ms, like a quick model): CPU per event when little queues up.
    requests, deltas = (20, 100) if q else (100, 200)
    cpu0 = cpu_seconds(svc_pid)
    s = await run_batch(service, requests, 50, service.body(deltas, 0.005))
    cpu = cpu_seconds(svc_pid) - cpu0
    report.add("service CPU per relayed event, paced µs", "", f"{cpu * 1e6 / (requests * deltas):.1f}", "")

    # Whole (non-stream) answers at 50 clients: requests per second.
    requests = 300 if q else 3000
    d = await run_batch(direct, requests, 50, direct.body(20))
    s = await run_batch(service, requests, 50, service.body(20, stream=False))
    report.add("non-stream requests/s, 50 clients", f"{requests / d.wall:.0f}", f"{requests / s.wall:.0f}",
               f"{s.wall / d.wall:.1f}x slower")
    if d.errors or s.errors:
        report.add("  errors in the batch above", str(d.errors), str(s.errors), "")

    # Many open slow streams: the service's memory while they are all open.
    await open_streams(service, svc_pid, 100 if q else 1000, report)


async def open_streams(service: Target, pid: int, count: int, report: Report) -> None:
    """Open `count` streams whose deltas come one a second; RSS once each has its first content."""
    idle = rss_mib(pid)
    ready = 0
    errors = 0
    body = service.body(600, 1.0)  # ten minutes long: all still open when RSS is read

    conns: list[Conn] = []

    def opened() -> None:
        nonlocal ready
        ready += 1

    async def one(conn: Conn) -> None:
        nonlocal errors
        try:
            status, first, _ = await conn.request(b"POST", service.path, body, service.marker, opened)
            if status != 200 or first is None:
                errors += 1
        except (OSError, EOFError, trio.BrokenResourceError, ValueError):
            errors += 1

    async with trio.open_nursery() as nursery:
        for _ in range(count):
            try:
                conns.append(await Conn.open(service.port))
            except OSError:
                errors += 1
        for conn in conns:
            nursery.start_soon(one, conn)
        with trio.move_on_after(180):
            while ready + errors < count:
                await trio.sleep(0.1)
        await trio.sleep(1.0)  # a second of steady state: every stream has had a delta since
        peak = rss_mib(pid)
        nursery.cancel_scope.cancel()
    for conn in conns:
        await conn.aclose()
    report.add(f"RSS, idle MiB", "", f"{idle:.0f}", "")
    report.add(f"RSS with {count} open slow streams MiB", "", f"{peak:.0f}", f"{count - ready} not open")
    report.add(f"  errors while {count} streams were open", "", str(errors), "")


async def start_to_ready(fake_port: int, env_extra: dict[str, str], runs: int) -> float:
    times = []
    for _ in range(runs):
        port = free_port()
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, str(ROOT / "genspark2api.py")], cwd=ROOT,
                                env=service_env(fake_port, port, env_extra),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            await wait_ready(port, "/readyz", 30)
            times.append(time.perf_counter() - started)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)
    return statistics.median(times)


async def main(args: argparse.Namespace) -> None:
    extra = dict(kv.split("=", 1) for kv in args.env)
    fake_port, svc_port = free_port(), free_port()
    fake = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "fake_upstream.py"), "--port", str(fake_port)],
                            cwd=ROOT, stdout=subprocess.DEVNULL)
    service = None
    try:
        await wait_ready(fake_port, "/stats", 10)
        report = Report()
        print(f"fake upstream: scripts/fake_upstream.py (pid {fake.pid}); service: genspark2api.py; "
              f"load generator: this process. extra env: {extra or 'none'}", flush=True)
        report.header()
        ready = await start_to_ready(fake_port, extra, 3 if args.quick else 5)
        report.add("start to ready (median) s", "", f"{ready:.3f}", "")
        service = subprocess.Popen([sys.executable, str(ROOT / "genspark2api.py")], cwd=ROOT,
                                   env=service_env(fake_port, svc_port, extra),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL if args.quiet else None)
        await wait_ready(svc_port, "/readyz", 30)
        await measure(args, fake_port, service.pid, svc_port, report)
    finally:
        for proc in (service, fake):
            if proc is not None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests and streams: a check, not a figure")
    parser.add_argument("--quiet", action="store_true", help="hide the service's log")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="an extra setting for the service (repeatable), e.g. STREAM_COALESCE_SECONDS=0")
    trio.run(main, parser.parse_args())
