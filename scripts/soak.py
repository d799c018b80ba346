#!/usr/bin/env python3
"""Soak: many requests through the service to the simulator, with faulty cookies of several kinds.

Every request runs under deadlines (a hang is counted, never waited out), every stream is checked
to be well formed (a role chunk first, then content, then a finish chunk or one error event, then
`data: [DONE]`), every non-stream answer is a chat completion or an OpenAI-shaped error. At the end
no upstream connection may be left busy, and the service's RSS growth is reported.

    python scripts/soak.py                          # 10,000 requests, 50 at a time (about two minutes)
    python scripts/soak.py --requests 2000 --concurrency 20
    python scripts/soak.py --env HEDGE_AFTER_SECONDS=0.5     # any service setting for the run

Three processes on 127.0.0.1, nothing else is contacted: the service runs in this one (its
upstream connections and its RSS are what the figures are about), the simulator in a second
(`python -m genspark2api.simulator`) and the clients in a third (this script with `--drive`,
speaking HTTP/1.1 with h11). The soak is CPU-bound, not paced: a request costs the service 9-13
ms of CPU, the simulator 6-8 and the clients 2, and one Python process runs on one core, so on
two cores the three processes do about twice the requests per second of one process doing it
all; and the clients' and the simulator's allocations stay out of the service's RSS. The suite
runs a bounded version (tests/test_soak.py) through `soak()`.

What counts as a hang (`Deadlines`): a deadline from a request's start alone measures the
machine: with the CPU shared, a healthy service on a slow machine answers late, and a 30 s
deadline counted 3-27 "hangs" in 800 requests on a loaded machine. So a stream's clock runs from
its last byte: a body that goes `silence` (20) seconds without a byte is stuck, since the soak's
service sends a keep-alive after each second of silence (STREAM_KEEPALIVE_SECONDS=1): 20 missed
keep-alives, not a slow machine. Before the response head nothing can show progress (the service
sends no head before it has an answer or a refusal), so the `head` deadline (60 s) is generous:
the soak's settings keep each legitimate wait before a head to seconds (POOL_WAIT_SECONDS=5,
FIRST_BYTE_HOLD_SECONDS=2, UPSTREAM_FIRST_EVENT_TIMEOUT=1.5), and the slowest of 2,500 answers
took 3-4 s (9 s with two CPU hogs and another test suite beside the soak). A request not done
in `whole` (120 s) is a hang too: keep-alives forever without an answer.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import resource
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import h11
import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

if TYPE_CHECKING:
    from genspark2api.runtime import Runtime

# Healthy cookies and faulty ones of several kinds (simulator scenarios, genspark2api/simulator/scenarios.py).
COOKIES = ["ok-1", "ok-2", "ok-3", "ok-4", "cut-stream-1", "flaky-1", "rate-limited-1", "not-login-1",
           "empty-answer-1", "slow-first-byte-1", "stall-1", "error-event-1", "overloaded-1"]
# The simulator's pacing: a short pause before every answer delta, so each one is its own write
# and a request can be cancelled mid-answer; slow-first-byte holds its head for 1 s (under
# UPSTREAM_FIRST_EVENT_TIMEOUT, so it answers late rather than stalls).
SIMULATOR_ARGS = ["--answer-delay", "0.002", "--task-poll-interval", "0.01", "--slow-first-byte", "1.0"]
# Every wait of the service short, so that failovers happen within the run and the longest
# legitimate wait for a response head stays far below `Deadlines.head`.
SERVICE_ENV = {
    "REQUEST_RATE_LIMIT": "0", "HEDGE_AFTER_SECONDS": "2", "UPSTREAM_FIRST_EVENT_TIMEOUT": "1.5",
    "UPSTREAM_IDLE_TIMEOUT": "2", "RATE_LIMIT_COOKIE_LOCK_DURATION": "2", "NETWORK_COOLDOWN_SECONDS": "1",
    "FIRST_BYTE_HOLD_SECONDS": "2", "POOL_WAIT_SECONDS": "5", "STREAM_KEEPALIVE_SECONDS": "1",
}
MODELS = ["gpt-5.4", "claude-sonnet-4-6", "gpt-5.4-search"]
MAX_WORDS = 4   # a question of 1-4 words: answers of a few deltas (each one costs CPU on every hop)


@dataclass(frozen=True)
class Deadlines:
    """When a request is hung (see the module docstring for why it is not one deadline from the start)."""

    head: float = 60.0      # request sent -> response head
    silence: float = 20.0   # between two reads of a response body
    whole: float = 120.0    # request sent -> body complete, whatever arrived meanwhile


@dataclass
class Figures:
    requests: int = 0
    hangs: int = 0
    hang_notes: list[str] = field(default_factory=list)
    malformed: list[str] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    error_codes: Counter = field(default_factory=Counter)   # of the non-200 answers
    stream_errors: Counter = field(default_factory=Counter)
    busy_upstream: int = 0
    rss_before_mb: float = 0.0
    rss_after_mb: float = 0.0
    seconds: float = 0.0
    cpu_seconds: dict[str, float] = field(default_factory=dict)   # per process: where the time went
    cookies: dict[str, tuple[int, int]] = field(default_factory=dict)   # name -> attempts (succeeded, failed)
    latencies: list[float] = field(default_factory=list)

    def report(self) -> str:
        lat = sorted(self.latencies) or [0.0]
        lines = [
            f"{self.requests} requests in {self.seconds:.1f} s ({self.requests / max(self.seconds, 1e-9):.0f}/s)",
            f"hangs: {self.hangs}  malformed: {len(self.malformed)}  busy upstream: {self.busy_upstream}",
            f"statuses: {dict(sorted(self.statuses.items()))}",
            f"error codes of the non-200 answers: {dict(self.error_codes)}",
            f"errors inside 200 streams: {dict(self.stream_errors)}",
            f"latency p50 {lat[len(lat) // 2]:.3f} s, p99 {lat[int(len(lat) * 0.99)]:.3f} s, max {lat[-1]:.3f} s",
            f"service RSS {self.rss_before_mb:.0f} MB -> {self.rss_after_mb:.0f} MB",
            "CPU seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in self.cpu_seconds.items()),
            "attempts per cookie, succeeded/failed: " + ", ".join(f"{k} {s}/{f}" for k, (s, f) in self.cookies.items()),
            *(f"  hang: {note}" for note in self.hang_notes[:10]),
        ]
        return "\n".join(lines)

    def to_json(self) -> str:
        # Not dataclasses.asdict: it rebuilds a Counter from (key, count) pairs, counting the pairs.
        return json.dumps({f.name: getattr(self, f.name) for f in fields(self)})

    @classmethod
    def from_json(cls, text: str) -> Figures:
        doc = json.loads(text)
        for name in ("statuses", "error_codes", "stream_errors"):
            # JSON keys are strings; statuses are counted by their number.
            doc[name] = Counter({(int(k) if name == "statuses" else k): v for k, v in doc[name].items()})
        return cls(**doc)


def cpu_seconds(pid: int | str = "self") -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields_ = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields_[11]) + int(fields_[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def check_stream(body: bytes) -> str | None:
    """None when the SSE body is a well-formed chat stream; else what is wrong. Also returns the
    error code via the `error:` prefix so the caller can count it."""
    if not body.endswith(b"data: [DONE]\n\n"):
        return "no [DONE] at the end"
    frames = [f for f in body[:-2].split(b"\n\n") if not f.startswith(b":")]
    if frames[-1] != b"data: [DONE]":
        return "[DONE] is not the last frame"
    payloads = []
    for frame in frames[:-1]:
        if not frame.startswith(b"data: "):
            return f"not a data frame: {frame[:60]!r}"
        try:
            payloads.append(json.loads(frame[6:]))
        except ValueError:
            return f"not JSON: {frame[:60]!r}"
    if not payloads or payloads[0].get("choices", [{}])[0].get("delta", {}).get("role") != "assistant":
        return "no role chunk first"
    last = payloads[-1]
    if "error" in last:
        if any("error" in p for p in payloads[:-1]):
            return "more than one error event"
        return "error:" + str(last["error"].get("code"))
    finishes = [p for p in payloads if p.get("choices") and p["choices"][0].get("finish_reason")]
    if len(finishes) != 1:
        return f"{len(finishes)} finish chunks"
    return None


def check_whole(status: int, body: bytes) -> str | None:
    try:
        doc = json.loads(body)
    except ValueError:
        return f"HTTP {status} body is not JSON"
    if status == 200:
        return None if doc.get("object") == "chat.completion" and doc.get("choices") else "200 without a completion"
    error = doc.get("error")
    if not isinstance(error, dict) or set(error) != {"message", "type", "param", "code"}:
        return f"HTTP {status} without an OpenAI error"
    return None


def cookie_outcomes(runtime: Runtime) -> dict[str, tuple[int, int]]:
    """Each of COOKIES' attempts that succeeded and failed: proof that the faults were met."""
    from genspark2api.pool.cookies import cookie_key, normalize_cookie_entry

    by_key = {c.key: c for c in runtime.pool.snapshot()}
    names = {cookie_key(normalize_cookie_entry(name) or name): name for name in COOKIES}
    return {names[key]: (c.successes, c.failures) for key, c in by_key.items() if key in names}


def busy_upstream(runtime: Runtime) -> int:
    """Upstream connections still carrying a request (none should, once every answer is done).

    Each egress route of the client (the default one, one per cookie proxy) has its own
    transport. A direct route's (upstream/connpool.py) counts what it lent out; a proxied route's
    is httpx's, whose httpcore pool keeps a NEW entry (no socket yet) for a request cancelled
    while it waited for a connection: not an open connection, so only ACTIVE ones count there.
    """
    from genspark2api.upstream.connpool import ReservingTransport

    client = runtime.client
    busy = 0
    for route in [client._default, *client._by_proxy.values()]:
        transport = route.transport
        if isinstance(transport, ReservingTransport):
            busy += transport.in_use()
        else:
            busy += sum("ACTIVE" in c.info() for c in transport._pool.connections)
    return busy


# --- the clients (the `--drive` process) ---------------------------------------------------


class Connection:
    """One keep-alive HTTP/1.1 connection to the service, spoken with h11 (hypercorn's and httpx's
    parser, strict about framing): a third of httpx's CPU per request, and every read in sight of
    the deadlines. A connection that is not reusable after an exchange is opened anew."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.stream: trio.SocketStream | None = None
        self.h11 = h11.Connection(h11.CLIENT)

    async def open(self) -> None:
        if self.stream is not None and self.h11.our_state is h11.IDLE and self.h11.their_state is h11.IDLE:
            return
        await self.close()
        self.stream = await trio.open_tcp_stream(self.host, self.port)
        self.h11 = h11.Connection(h11.CLIENT)

    async def close(self) -> None:
        if self.stream is not None:
            with trio.CancelScope(shield=True):
                await self.stream.aclose()
            self.stream = None

    async def next_event(self, silence: float | None = None) -> object:
        """The next h11 event; with `silence`, None when that long passes without a byte."""
        assert self.stream is not None
        while (event := self.h11.next_event()) is h11.NEED_DATA:
            with trio.move_on_after(silence if silence is not None else math.inf) as quiet:
                data = await self.stream.receive_some(65536)
            if quiet.cancelled_caught:
                return None
            self.h11.receive_data(data)   # b"" is the end of the connection
        return event


class Broken(Exception):
    """The answer's HTTP framing is wrong: malformed, not hung."""


async def fetch(conn: Connection, body: bytes, deadlines: Deadlines) -> tuple[int, bytes] | str:
    """POST one chat request: (status, body), or why it counts as hung."""
    received = 0
    try:
        with trio.move_on_after(deadlines.whole) as whole:
            with trio.move_on_after(deadlines.head) as head:
                await conn.open()
                assert conn.stream is not None
                request = h11.Request(method="POST", target="/v1/chat/completions", headers=[
                    ("Host", f"{conn.host}:{conn.port}"), ("Content-Type", "application/json"),
                    ("Content-Length", str(len(body)))])
                await conn.stream.send_all(conn.h11.send(request) + conn.h11.send(h11.Data(data=body))
                                           + conn.h11.send(h11.EndOfMessage()))
                while not isinstance(event := await conn.next_event(), h11.Response):
                    if not isinstance(event, h11.InformationalResponse):
                        raise Broken(f"{type(event).__name__} before the response head")
            if head.cancelled_caught:
                await conn.close()
                return f"no response head within {deadlines.head:g} s"
            chunks = []
            # The deadline restarts with every read: a slow machine delays bytes, a stuck service
            # stops them.
            while not isinstance(part := await conn.next_event(deadlines.silence), h11.EndOfMessage):
                if part is None:
                    await conn.close()
                    return f"HTTP {event.status_code}: no byte for {deadlines.silence:g} s after {received} bytes"
                if not isinstance(part, h11.Data):
                    raise Broken(f"{type(part).__name__} inside the body")
                chunks.append(part.data)
                received += len(part.data)
            if conn.h11.our_state is h11.DONE and conn.h11.their_state is h11.DONE:
                conn.h11.start_next_cycle()
            return event.status_code, b"".join(chunks)
        assert whole.cancelled_caught
        await conn.close()
        return f"not done within {deadlines.whole:g} s ({received} bytes)"
    except Broken:
        await conn.close()
        raise
    except (h11.ProtocolError, trio.BrokenResourceError) as exc:
        await conn.close()
        raise Broken(f"{type(exc).__name__}: {exc} (after {received} bytes of the body)") from None


async def drive(base_url: str, requests: int, concurrency: int, *, seed: int = 1,
                deadlines: Deadlines = Deadlines()) -> Figures:
    """`requests` chat requests over `concurrency` connections, half of them streams; the figures of
    the answers (`busy_upstream` and RSS are the service side's, left 0 here)."""
    figures = Figures(requests=requests)
    rng = random.Random(seed)
    # Drawn before the start, so the mix does not depend on which answer comes back first.
    mix = [(rng.random() < 0.5, rng.choice(MODELS), rng.randint(1, MAX_WORDS)) for _ in range(requests)]
    url = urlsplit(base_url)
    assert url.hostname is not None and url.port is not None, base_url

    async def one(conn: Connection, n: int) -> None:
        stream, model, words = mix[n]
        body = json.dumps({"model": model, "stream": stream,
                           "messages": [{"role": "user", "content": f"soak {n} " + "word " * words}]}).encode()
        started = trio.current_time()
        try:
            result = await fetch(conn, body, deadlines)
        except Broken as exc:
            figures.malformed.append(f"#{n} stream={stream}: {exc}")
            return
        finally:
            figures.latencies.append(trio.current_time() - started)
        if isinstance(result, str):
            figures.hangs += 1
            figures.hang_notes.append(f"#{n} stream={stream}: {result}")
            return
        status, content = result
        figures.statuses[status] += 1
        if stream and status == 200:
            problem = check_stream(content)
            if problem and problem.startswith("error:"):
                figures.stream_errors[problem[6:]] += 1
                problem = None
        else:
            problem = check_whole(status, content)
            if problem is None and status != 200:
                figures.error_codes[f"{status} {json.loads(content)['error']['code']}"] += 1
        if problem:
            figures.malformed.append(f"#{n} stream={stream}: {problem}")

    todo = iter(range(requests))   # shared: each request number is handed to one connection

    async def client() -> None:
        conn = Connection(url.hostname, url.port)
        try:
            for n in todo:
                await one(conn, n)
        finally:
            await conn.close()

    started = time.perf_counter()
    async with trio.open_nursery() as clients:
        for _ in range(concurrency):
            clients.start_soon(client)
    figures.seconds = time.perf_counter() - started
    return figures


# --- the service side (this process) -------------------------------------------------------


async def start_simulator(nursery: trio.Nursery) -> tuple[str, int]:
    """`python -m genspark2api.simulator` on a free port, stopped with the nursery; its base URL and pid."""
    command = [sys.executable, "-m", "genspark2api.simulator", "--host", "127.0.0.1", "--port", "0",
               *SIMULATOR_ARGS]
    process = await nursery.start(partial(trio.run_process, command, cwd=ROOT, stdout=subprocess.PIPE,
                                          check=False))
    out = b""
    with trio.fail_after(60):   # its first line: "Genspark simulator listening on http://127.0.0.1:PORT"
        while b"\n" not in out:
            chunk = await process.stdout.receive_some()
            if not chunk:
                raise RuntimeError(f"the simulator exited before it listened: {out!r}")
            out += chunk
    nursery.start_soon(_drain, process.stdout)
    return out.split(b"\n")[0].split()[-1].decode(), process.pid


async def _drain(stream: trio.abc.ReceiveStream) -> None:
    while await stream.receive_some():
        pass


async def warm_up(base_url: str) -> None:
    """A stream and a whole answer before the RSS baseline, from this process: what the service
    builds or loads on first use (the tokenizer loads on a thread after the start, ~40 MB) is not
    the soak's growth."""
    url = urlsplit(base_url)
    assert url.hostname is not None and url.port is not None, base_url
    conn = Connection(url.hostname, url.port)
    try:
        for stream in (True, False):
            body = {"model": MODELS[0], "stream": stream, "messages": [{"role": "user", "content": "warm up"}]}
            await fetch(conn, json.dumps(body).encode(), Deadlines())
    finally:
        await conn.close()


async def run_clients(base_url: str, requests: int, concurrency: int, seed: int, deadlines: Deadlines) -> Figures:
    """`drive` in its own process (`--drive`), so that the clients get a core of their own."""
    command = [sys.executable, str(Path(__file__).resolve()), "--drive", base_url, "--requests", str(requests),
               "--concurrency", str(concurrency), "--seed", str(seed), "--deadlines", json.dumps(asdict(deadlines))]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)   # of every child waited for so far
    done = await trio.run_process(command, cwd=ROOT, capture_stdout=True, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"the soak's clients failed (exit status {done.returncode}); see stderr")
    figures = Figures.from_json(done.stdout.decode().strip().splitlines()[-1])
    figures.cpu_seconds["clients"] = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return figures


async def soak(requests: int, concurrency: int, *, seed: int = 1, env: dict[str, str] | None = None,
               deadlines: Deadlines = Deadlines()) -> Figures:
    # Imported here: the clients' process (`--drive`) needs none of the service.
    from hypercorn.config import Config
    from hypercorn.trio import serve

    from genspark2api.api.app import create_app
    from genspark2api.runtime import Runtime
    from genspark2api.settings import Settings

    async with trio.open_nursery() as nursery:
        sim_url, sim_pid = await start_simulator(nursery)
        settings = Settings.from_env({"GENSPARK_BASE_URL": sim_url, "GS_COOKIE": ",".join(COOKIES),
                                      **SERVICE_ENV, **(env or {})})
        runtime = Runtime(settings)
        config = Config()
        config.bind = ["127.0.0.1:0"]
        config.accesslog = None
        binds = await nursery.start(partial(serve, create_app(runtime), config, shutdown_trigger=trio.sleep_forever))
        await warm_up(binds[0])
        rss_before, cpu_before = rss_mb(), cpu_seconds()
        figures = await run_clients(binds[0], requests, concurrency, seed, deadlines)
        figures.rss_before_mb = rss_before
        figures.cpu_seconds |= {"service": cpu_seconds() - cpu_before, "simulator": cpu_seconds(sim_pid)}
        with trio.move_on_after(3):  # cancelled attempts close their upstream connections promptly
            while busy_upstream(runtime):
                await trio.sleep(0.05)
        figures.busy_upstream = busy_upstream(runtime)
        figures.rss_after_mb = rss_mb()
        figures.cookies = cookie_outcomes(runtime)
        nursery.cancel_scope.cancel()
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="A request is hung when its response head takes HEAD s, its body goes SILENCE s without a byte "
               "(the service sends a keep-alive every second) or it is not done in WHOLE s. Exit status 1 on "
               "any hang, malformed answer, HTTP 500 or upstream connection left busy.")
    parser.add_argument("--requests", type=int, default=10_000, help="how many (default 10000)")
    parser.add_argument("--concurrency", type=int, default=50, help="how many at a time (default 50)")
    parser.add_argument("--seed", type=int, default=1, help="of the request mix: stream or not, model, question")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="a service setting for this run, e.g. --env HEDGE_AFTER_SECONDS=0.5 (repeatable)")
    parser.add_argument("--deadlines", type=lambda text: Deadlines(**json.loads(text)), default=Deadlines(),
                        metavar="JSON", help=f"when a request is hung, default '{json.dumps(asdict(Deadlines()))}'")
    parser.add_argument("--drive", metavar="URL",
                        help="only the clients, against a service at URL; prints the figures as JSON "
                             "(how the soak runs its clients in their own process)")
    args = parser.parse_args()
    if args.drive:
        figures = trio.run(partial(drive, args.drive, args.requests, args.concurrency, seed=args.seed,
                                   deadlines=args.deadlines))
        print(figures.to_json())
        return 0
    env = dict(item.split("=", 1) for item in args.env)
    logging.basicConfig(level=logging.ERROR)  # every failed attempt is a warning: the figures say it all
    figures = trio.run(partial(soak, args.requests, args.concurrency, seed=args.seed, env=env,
                               deadlines=args.deadlines))
    print(figures.report())
    for line in figures.malformed[:20]:
        print("  malformed:", line)
    return 1 if figures.hangs or figures.malformed or figures.busy_upstream or figures.statuses[500] else 0


if __name__ == "__main__":
    sys.exit(main())
