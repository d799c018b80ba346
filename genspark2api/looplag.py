"""Whether the service's own event loop is running late.

A timer that says "the upstream has been silent for 10 s" measures the upstream only while the
loop keeps up. Under a burst (a thousand requests arriving at once, each a few ms of CPU) every
request waits its turn for each of its steps, and the loop's wakes come 0.1-0.7 s late over and
over for as long as the burst lasts: an answer's events then sit unread in our socket while its
hedge timer fires, and a hedge doubles the very load that delayed it and blames a healthy cookie
(`FailoverRunner` asks `behind()` before it hedges).

The measure is a task that sleeps a short interval and notes how late it wakes. One late wake is
noise (a slow request, a GC pause); the loop is "behind" while its wake is overdue by `LATE` now,
or was at any time in the last `WINDOW` seconds (a burst comes and goes between wakes). An idle
or moderately busy loop wakes within a few ms.
"""

from __future__ import annotations

import math

import trio

INTERVAL = 0.1      # seconds between the monitor's wakes
LATE = 0.2          # a wake this late (seconds) means the loop is saturated
WINDOW = 5.0        # ... and it counts as behind for this long after such a wake


class LoopLag:
    def __init__(self, late: float = LATE, window: float = WINDOW) -> None:
        self.late = late
        self.window = window
        self.last = 0.0                        # how late the last wake was, seconds
        self._late_at = -math.inf              # when a wake was last `late` or later
        self._slept_at: float | None = None    # when the monitor last went to sleep (None: not watching)

    async def watch(self) -> None:
        """Run in the app nursery for the service's life."""
        try:
            while True:
                self._slept_at = trio.current_time()
                await trio.sleep(INTERVAL)
                now = trio.current_time()
                self.last = max(0.0, now - self._slept_at - INTERVAL)
                if self.last >= self.late:
                    self._late_at = now
        finally:
            self._slept_at = None

    def overdue(self) -> float:
        """How late the monitor's next wake is right now (0 when on time or not watching)."""
        if self._slept_at is None:
            return 0.0
        return max(0.0, trio.current_time() - self._slept_at - INTERVAL)

    def behind(self) -> bool:
        if self._slept_at is None:
            return False
        return self.overdue() >= self.late or trio.current_time() - self._late_at <= self.window
