"""``python -m genspark2api.simulator [--host H] [--port P] [--answer-delay S] [--option K=V …]``: run
the fake alone. ``--option`` sets one of the §12 switches of options.py, e.g.
``--option require_origin=false --option five_hour_budget=20``."""

from __future__ import annotations

import argparse
import logging
import signal
from dataclasses import fields
from functools import partial
from typing import Any

import trio

from .options import SimOptions
from .server import Simulator, serve_simulator

_OPTION_NAMES = {f.name for f in fields(SimOptions)}


def _option(text: str) -> tuple[str, Any]:
    """``name=value``; the value is a bool, ``none``, a number or else a string."""
    name, sep, raw = text.partition("=")
    if not sep or name not in _OPTION_NAMES:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE with NAME one of {', '.join(sorted(_OPTION_NAMES))}")
    lowered = raw.lower()
    if lowered in ("true", "false"):
        return name, lowered == "true"
    if lowered == "none":
        return name, None
    for number in (int, float):
        try:
            return name, number(raw)
        except ValueError:
            pass
    return name, raw


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
    parser.add_argument("--option", type=_option, action="append", default=[], metavar="NAME=VALUE",
                        help="a genspark-protocol.md §12 switch (options.py); repeatable")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sim = Simulator(args.answer_delay, args.task_poll_interval, args.heartbeat_interval, args.slow_first_byte,
                    **dict(args.option))
    trio.run(partial(_run, sim, args.host, args.port))


if __name__ == "__main__":
    main()
