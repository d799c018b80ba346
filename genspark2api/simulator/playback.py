"""Plays a script (streams.py) as SSE bytes in real time: the only place that sleeps.

Cancellation: when the client disconnects, quart-trio cancels the request, so the generator sees
``trio.Cancelled`` at its current sleep, or ``GeneratorExit`` at its current ``yield``
(python-stack.md §2.2). Nothing here catches either; the caller's ``finally`` records the closure.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import trio

from . import events as ev
from .streams import Pause, PauseKind, Step


@dataclass(frozen=True)
class Timing:
    answer_delay: float  # before every answer/reasoning delta
    task_poll_interval: float  # between progress rounds of task polling
    heartbeat_interval: float  # during a longer answer_delay, send `_updatetime` this often


def utc_now() -> datetime:
    return datetime.now(UTC)


async def play(script: Iterable[Step], timing: Timing, clock: Callable[[], datetime] = utc_now) -> AsyncIterator[bytes]:
    for step in script:
        if not isinstance(step, Pause):
            yield ev.encode_sse(step)
        elif step.seconds is not None:
            await trio.sleep(step.seconds)
        elif step.kind is PauseKind.FOREVER:
            await trio.sleep_forever()
        elif step.kind is PauseKind.POLL:
            await trio.sleep(timing.task_poll_interval)
        else:
            # §3.1 rule 6: the backend sends `_updatetime` heartbeats during long generations.
            remaining = timing.answer_delay
            while step.message_id is not None and 0 < timing.heartbeat_interval < remaining:
                await trio.sleep(timing.heartbeat_interval)
                remaining -= timing.heartbeat_interval
                yield ev.encode_sse(ev.heartbeat(step.message_id, clock()))
            await trio.sleep(remaining)
