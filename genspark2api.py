#!/usr/bin/env python3
"""Run the service: `python genspark2api.py` (add `--demo` to try it on the built-in simulator)."""

from genspark2api.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
