#!/usr/bin/env python3
"""Soak: many requests through the service to the simulator, with faulty cookies of several kinds.

Every request has a deadline (a hang is counted, never waited out), every stream is checked to be
well formed (a role chunk first, then content, then a finish chunk or one error event, then
`data: [DONE]`), every non-stream answer is a chat completion or an OpenAI-shaped error. At the end
no upstream connection may be left busy, and the process's RSS growth is reported.

    python scripts/soak.py                          # 10,000 requests, 50 at a time (a few minutes)
    python scripts/soak.py --requests 2000 --concurrency 20
    python scripts/soak.py --env HEDGE_AFTER_SECONDS=0.5     # any service setting for the run

Both sides run in this process on 127.0.0.1; nothing else is contacted. The suite runs a bounded
version (tests/test_soak.py) through `soak()`.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import httpx
import trio
from hypercorn.config import Config
from hypercorn.trio import serve

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from genspark2api.api.app import create_app  # noqa: E402
from genspark2api.runtime import Runtime  # noqa: E402
from genspark2api.settings import Settings  # noqa: E402
from genspark2api.simulator import Simulator, serve_simulator  # noqa: E402

# Healthy cookies and faulty ones of several kinds (simulator scenarios, genspark2api/simulator/scenarios.py).
COOKIES = ["ok-1", "ok-2", "ok-3", "ok-4", "cut-stream-1", "flaky-1", "rate-limited-1", "not-login-1",
           "empty-answer-1", "slow-first-byte-1", "stall-1", "error-event-1", "overloaded-1"]
DEADLINE = 30.0   # per request: longer is a hang


@dataclass
class Figures:
    requests: int = 0
    hangs: int = 0
    malformed: list[str] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    stream_errors: Counter = field(default_factory=Counter)
    busy_upstream: int = 0
    rss_before_mb: float = 0.0
    rss_after_mb: float = 0.0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)

    def report(self) -> str:
        lat = sorted(self.latencies) or [0.0]
        return (
            f"{self.requests} requests in {self.seconds:.1f} s ({self.requests / max(self.seconds, 1e-9):.0f}/s)\n"
            f"hangs: {self.hangs}  malformed: {len(self.malformed)}  busy upstream connections at the end: "
            f"{self.busy_upstream}\n"
            f"statuses: {dict(sorted(self.statuses.items()))}\n"
            f"errors inside 200 streams: {dict(self.stream_errors)}\n"
            f"latency p50 {lat[len(lat) // 2]:.3f} s, p99 {lat[int(len(lat) * 0.99)]:.3f} s, max {lat[-1]:.3f} s\n"
            f"RSS {self.rss_before_mb:.0f} MB -> {self.rss_after_mb:.0f} MB"
        )


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


def busy_upstream(runtime: Runtime) -> int:
    """Upstream connections still carrying a request (none should, once every answer is done).

    httpcore keeps a NEW entry (no socket yet) for a request cancelled while it waited for a
    connection; those are not open connections, so only ACTIVE ones count.
    """
    pool = runtime.client._http._transport._pool  # httpcore's pool behind the one upstream client
    return sum(1 for c in pool.connections if "ACTIVE" in c.info())


async def soak(requests: int, concurrency: int, *, seed: int = 1, env: dict[str, str] | None = None) -> Figures:
    figures = Figures(rss_before_mb=rss_mb())
    rng = random.Random(seed)
    async with trio.open_nursery() as nursery:
        sim = Simulator(answer_delay=0.002, task_poll_interval=0.01, answer_delay_slow=1.0)
        sim_url = await nursery.start(serve_simulator, sim, "127.0.0.1", 0)
        settings = Settings.from_env({
            "GENSPARK_BASE_URL": sim_url, "GS_COOKIE": ",".join(COOKIES), "REQUEST_RATE_LIMIT": "0",
            "HEDGE_AFTER_SECONDS": "2", "UPSTREAM_FIRST_EVENT_TIMEOUT": "1.5", "UPSTREAM_IDLE_TIMEOUT": "2",
            "RATE_LIMIT_COOKIE_LOCK_DURATION": "2", "NETWORK_COOLDOWN_SECONDS": "1", "FIRST_BYTE_HOLD_SECONDS": "2",
            **(env or {}),
        })
        runtime = Runtime(settings)
        config = Config()
        config.bind = ["127.0.0.1:0"]
        config.accesslog = None
        binds = await nursery.start(partial(serve, create_app(runtime), config, shutdown_trigger=trio.sleep_forever))
        limiter = trio.Semaphore(concurrency)

        async def one(http: httpx.AsyncClient, n: int) -> None:
            stream = rng.random() < 0.5
            body = {"model": rng.choice(["gpt-5.4", "claude-sonnet-4-6", "gpt-5.4-search"]), "stream": stream,
                    "messages": [{"role": "user", "content": f"soak {n} " + "word " * rng.randint(1, 30)}]}
            async with limiter:
                started = trio.current_time()
                with trio.move_on_after(DEADLINE) as deadline:
                    response = await http.post("/v1/chat/completions", json=body)
                figures.latencies.append(trio.current_time() - started)
            if deadline.cancelled_caught:
                figures.hangs += 1
                return
            figures.statuses[response.status_code] += 1
            if stream and response.status_code == 200:
                problem = check_stream(response.content)
                if problem and problem.startswith("error:"):
                    figures.stream_errors[problem[6:]] += 1
                    problem = None
            else:
                problem = check_whole(response.status_code, response.content)
            if problem:
                figures.malformed.append(f"#{n} stream={stream}: {problem}")

        started = time.perf_counter()
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(base_url=binds[0], timeout=DEADLINE + 5, limits=limits) as http:
            async with trio.open_nursery() as clients:
                for n in range(requests):
                    clients.start_soon(one, http, n)
        figures.seconds = time.perf_counter() - started
        figures.requests = requests
        with trio.move_on_after(3):  # cancelled attempts close their upstream connections promptly
            while busy_upstream(runtime):
                await trio.sleep(0.05)
        figures.busy_upstream = busy_upstream(runtime)
        if figures.busy_upstream:
            pool = runtime.client._http._transport._pool
            print("busy upstream connections:", [repr(c) for c in pool.connections if "ACTIVE" in c.info()],
                  file=sys.stderr)
        figures.rss_after_mb = rss_mb()
        nursery.cancel_scope.cancel()
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="a service setting for this run, e.g. --env HEDGE_AFTER_SECONDS=0.5 (repeatable)")
    args = parser.parse_args()
    env = dict(item.split("=", 1) for item in args.env)
    logging.basicConfig(level=logging.ERROR)  # every failed attempt is a warning: the figures say it all
    figures = trio.run(partial(soak, args.requests, args.concurrency, seed=args.seed, env=env))
    print(figures.report())
    for line in figures.malformed[:20]:
        print("  malformed:", line)
    return 1 if figures.hangs or figures.malformed or figures.busy_upstream else 0


if __name__ == "__main__":
    sys.exit(main())
