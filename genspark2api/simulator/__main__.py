"""``python -m genspark2api.simulator [--host H] [--port P] [--answer-delay S]``: run the fake alone."""

from __future__ import annotations

import argparse
import logging
import signal
from functools import partial

import trio

from .server import Simulator, serve_simulator


async def _run(sim: Simulator, host: str, port: int) -> None:
    async with trio.open_nursery() as nursery:
        base_url = await nursery.start(serve_simulator, sim, host, port)
        print(f"Genspark simulator listening on {base_url}", flush=True)
        # PID 1 ignores SIGTERM without a handler (python-stack.md §3).
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                nursery.cancel_scope.cancel()
                return


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m genspark2api.simulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7056)
    parser.add_argument("--answer-delay", type=float, default=0.05, help="seconds before each answer delta")
    parser.add_argument("--task-poll-interval", type=float, default=0.5)
    parser.add_argument("--heartbeat-interval", type=float, default=0.5)
    parser.add_argument("--slow-first-byte", type=float, default=3.0, help="delay of the slow-first-byte scenario")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sim = Simulator(args.answer_delay, args.task_poll_interval, args.heartbeat_interval, args.slow_first_byte)
    trio.run(partial(_run, sim, args.host, args.port))


if __name__ == "__main__":
    main()
