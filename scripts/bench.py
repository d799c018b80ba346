#!/usr/bin/env python3
"""Benchmark: the service's overhead as ratios against talking to the simulator directly.

Both sides run in this one process and one run, on loopback, so a noisy machine slows both alike
and the ratios stay meaningful. For each mode it sends the same bounded number of requests at the
same concurrency, first straight to the simulator's chat endpoint, then through the service, and
reports wall time, time to first byte and the ratios.

    python scripts/bench.py                 # defaults: 200 requests, concurrency 20
    python scripts/bench.py --requests 1000 --concurrency 50 --deltas 200
    python scripts/bench.py --transport browser     # the service talks to upstream through curl_cffi

Nothing leaves 127.0.0.1; every loop is bounded by --requests.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import httpx
import trio
from hypercorn.config import Config
from hypercorn.trio import serve

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from genspark2api.app import create_app  # noqa: E402
from genspark2api.runtime import Runtime  # noqa: E402
from genspark2api.settings import Settings  # noqa: E402
from genspark2api.simulator import Simulator, serve_simulator  # noqa: E402


async def run_batch(send_one, requests: int, concurrency: int) -> tuple[float, list[float]]:
    limiter = trio.Semaphore(concurrency)
    first_bytes: list[float] = []

    async def one() -> None:
        async with limiter:
            first_bytes.append(await send_one())

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(requests):
            nursery.start_soon(one)
    return time.perf_counter() - started, first_bytes


async def main(args: argparse.Namespace) -> None:
    sim = Simulator()
    async with trio.open_nursery() as nursery:
        sim_url = await nursery.start(serve_simulator, sim, "127.0.0.1", 0)
        settings = Settings.from_env({
            "GENSPARK_BASE_URL": sim_url, "GS_COOKIE": ",".join(f"bench-{i}" for i in range(4)),
            "GENSPARK_CHAT_PROTOCOL": "copilot", "REQUEST_RATE_LIMIT": "0", "UPSTREAM_TRANSPORT": args.transport,
        })
        runtime = Runtime(settings)
        config = Config()
        config.bind = ["127.0.0.1:0"]
        config.accesslog = None
        binds = await nursery.start(partial(serve, create_app(runtime), config, shutdown_trigger=trio.sleep_forever))
        service_url = binds[0]
        prompt = "benchmark " * args.deltas  # the simulator echoes it: longer prompt, more deltas
        limits = httpx.Limits(max_connections=args.concurrency * 2)
        async with httpx.AsyncClient(timeout=60, limits=limits) as http:

            async def direct(stream: bool) -> float:
                body = {
                    "type": "COPILOT_MOA_CHAT", "current_query_string": "type=COPILOT_MOA_CHAT",
                    "extra_data": {"models": ["gpt-5.4"], "request_web_knowledge": False},
                    "messages": [{"role": "user", "content": prompt}], "action_params": {},
                }
                started = time.perf_counter()
                first = None
                async with http.stream("POST", sim_url + "/api/copilot/ask", json=body,
                                       headers={"Cookie": "session_id=bench-direct"}) as r:
                    async for _ in r.aiter_raw():
                        first = first or time.perf_counter() - started
                return first or 0.0

            async def proxied(stream: bool) -> float:
                body = {"model": "gpt-5.4", "stream": stream, "messages": [{"role": "user", "content": prompt}]}
                started = time.perf_counter()
                first = None
                async with http.stream("POST", service_url + "/v1/chat/completions", json=body) as r:
                    assert r.status_code == 200, r.status_code
                    async for _ in r.aiter_raw():
                        first = first or time.perf_counter() - started
                return first or 0.0

            print(f"{args.requests} requests per batch, concurrency {args.concurrency}, "
                  f"~{args.deltas} answer deltas each; token counting: {runtime.counter.description}")
            print(f"{'mode':<12}{'direct s':>10}{'service s':>11}{'ratio':>8}{'ttfb direct ms':>16}{'ttfb svc ms':>13}{'ratio':>8}")
            for stream in (True, False):
                await run_batch(partial(direct, stream), min(20, args.requests), args.concurrency)  # warm up
                await run_batch(partial(proxied, stream), min(20, args.requests), args.concurrency)
                d_wall, d_first = await run_batch(partial(direct, stream), args.requests, args.concurrency)
                s_wall, s_first = await run_batch(partial(proxied, stream), args.requests, args.concurrency)
                d_ttfb = statistics.median(d_first) * 1000
                s_ttfb = statistics.median(s_first) * 1000
                name = "stream" if stream else "non-stream"
                print(f"{name:<12}{d_wall:>10.2f}{s_wall:>11.2f}{s_wall / d_wall:>8.2f}"
                      f"{d_ttfb:>16.1f}{s_ttfb:>13.1f}{s_ttfb / d_ttfb:>8.2f}")
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--deltas", type=int, default=50)
    parser.add_argument("--transport", choices=("httpx", "browser"), default="httpx",
                        help="the service's UPSTREAM_TRANSPORT (the direct side always uses httpx)")
    trio.run(main, parser.parse_args())
