"""The event-loop lag monitor that keeps a burst from turning into hedges (looplag.py)."""

from __future__ import annotations

import time

import trio

from genspark2api.looplag import INTERVAL, LoopLag


async def test_a_loop_held_up_is_behind_for_a_while_and_an_idle_loop_is_not() -> None:
    lag = LoopLag(late=0.6, window=1.0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lag.watch)
        await trio.sleep(INTERVAL * 3)
        assert not lag.behind()
        time.sleep(1.0)  # noqa: ASYNC251 - the point: the loop is blocked, every task waits, the monitor too
        assert lag.behind() and lag.overdue() >= 0.6   # seen at once: its wake is overdue
        await trio.sleep(INTERVAL * 3)
        assert lag.last < 0.6 and lag.behind()         # on time again, but within the window
        await trio.sleep(1.2)
        assert not lag.behind()                        # the window has passed
        nursery.cancel_scope.cancel()
    assert not lag.behind() and lag.overdue() == 0.0   # not watching: never "behind"
