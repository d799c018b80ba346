"""A bounded soak (scripts/soak.py runs the long one): faulty cookies of several kinds, stream and
non-stream, every request under a deadline. 0 hangs, every answer well formed, no upstream
connection left busy, no 500, and RSS growth under a bound."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

from soak import check_stream, soak  # noqa: E402


async def test_soak_bounded() -> None:
    figures = await soak(800, 40, seed=10)
    print(figures.report())
    assert figures.hangs == 0, figures.report()
    assert figures.malformed == [], figures.malformed[:5]
    assert figures.busy_upstream == 0
    assert figures.statuses[500] == 0 and figures.statuses[200] > 0, figures.report()
    assert sum(figures.statuses.values()) == 800
    assert figures.rss_after_mb - figures.rss_before_mb < 300, figures.report()


def test_the_stream_checker_catches_what_it_must() -> None:
    role = b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}\n\n'
    text = b'data: {"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}\n\n'
    finish = b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    error = b'data: {"error":{"message":"m","type":"t","param":null,"code":"upstream_truncated"}}\n\n'
    done = b"data: [DONE]\n\n"
    assert check_stream(role + text + finish + done) is None
    assert check_stream(role + b": keep-alive\n\n" + text + finish + done) is None
    assert check_stream(role + text + error + done) == "error:upstream_truncated"
    assert check_stream(role + text + finish) == "no [DONE] at the end"
    assert check_stream(role + text + done) == "0 finish chunks"
    assert check_stream(text + finish + done) == "no role chunk first"
    assert check_stream(role + error + error + done) == "more than one error event"
    assert check_stream(role + b"data: {nope\n\n" + done).startswith("not JSON")
