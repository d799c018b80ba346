"""Per-client-IP request rate limit (`REQUEST_RATE_LIMIT` per minute), pure with a clock.

A token bucket per IP: a burst of `limit` requests, refilled at `limit` per minute. Idle buckets
are pruned so memory stays bounded whatever the number of clients.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class RateLimiter:
    def __init__(self, per_minute: int, *, clock: Callable[[], float] = time.monotonic, max_clients: int = 100_000) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.clock = clock
        self.max_clients = max_clients
        self._buckets: dict[str, tuple[float, float]] = {}  # ip -> (tokens, last update)

    def hit(self, ip: str) -> float | None:
        """Take one request for `ip`: None when allowed, else seconds until the next one is."""
        if self.capacity <= 0:
            return None
        now = self.clock()
        tokens, last = self._buckets.get(ip, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - last) * self.rate)
        if tokens < 1.0:
            self._buckets[ip] = (tokens, now)
            return (1.0 - tokens) / self.rate
        self._buckets[ip] = (tokens - 1.0, now)
        if len(self._buckets) > self.max_clients:
            self._prune(now)
        return None

    def _prune(self, now: float) -> None:
        full_after = self.capacity / self.rate
        for ip, (_, last) in list(self._buckets.items()):
            if now - last >= full_after:
                del self._buckets[ip]
        while len(self._buckets) > self.max_clients:  # still too many: drop the oldest
            del self._buckets[next(iter(self._buckets))]


class RecentRequests:
    """Requests in the last minute (the status page's "requests per minute"), pure with a clock.

    Counts per second in a ring of 60 slots, so memory is fixed whatever the traffic.
    """

    WINDOW = 60

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._slots = [(0, 0)] * self.WINDOW  # (second, count)

    def hit(self) -> None:
        second = int(self.clock())
        index = second % self.WINDOW
        stamp, count = self._slots[index]
        self._slots[index] = (second, count + 1 if stamp == second else 1)

    def per_minute(self) -> int:
        now = int(self.clock())
        return sum(count for stamp, count in self._slots if now - self.WINDOW < stamp <= now)
