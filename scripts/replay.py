#!/usr/bin/env python3
"""Replay a recorded upstream exchange through the adapters and print what the client would get.

    UPSTREAM_RECORD_DIR=rec python genspark2api.py         # record (secrets are redacted)
    python scripts/replay.py rec/20261201T203812.123Z-…-POST-api_agent_ask_proxy.exchange
    python scripts/replay.py FILE --protocol copilot       # read a chat stream as the other generation

The file format is described in genspark2api/upstream/recording.py. Nothing is sent anywhere: the recorded
response is served from memory to the same client, translator and classifier a live request uses.
Exit status: 0 for a complete answer, 1 when it classifies as a failure, 2 for an unreadable file.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from genspark2api.replay import replay_file  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", nargs="+", help="one or more .exchange files")
    parser.add_argument("--protocol", choices=("ai_chat", "copilot"), default=None,
                        help="adapter for a chat stream (default: from the recorded path)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)  # drift notices are printed in the report instead
    worst = 0
    for name in args.file:
        try:
            result = trio.run(replay_file, name, args.protocol)
        except (OSError, ValueError) as exc:
            print(f"{name}: {exc}", file=sys.stderr)
            worst = 2
            continue
        if len(args.file) > 1:
            print(f"== {name}")
        print("\n".join(result.lines()))
        if result.failure is not None or not result.done:
            worst = max(worst, 1)
    return worst


if __name__ == "__main__":
    sys.exit(main())
