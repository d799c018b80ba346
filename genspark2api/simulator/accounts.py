"""Per-account upstream bookkeeping for ask_proxy: concurrency, rate, 5-hour window, credits.

Pure apart from its own memory: every method takes the time it should act at (``now``, trio's
monotonic clock for gates; wall-clock unix seconds for the quota window, because its end is
shown to clients as ``Resets {time:N}``). An account is a session id (§12.5 notes: "the 5-hour
quota is per account").
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

FIVE_HOURS = 5 * 3600
RATE_WINDOW = 60.0
FREE_GRANT = 100  # §12.5 free tier: 100 credits once per account; what billing shows when unlimited


@dataclass
class AccountLedger:
    in_flight: dict[str, int] = field(default_factory=dict)
    peak_in_flight: dict[str, int] = field(default_factory=dict)   # for tests: the most at once
    penalty_until: dict[str, float] = field(default_factory=dict)
    recent_asks: dict[str, deque[float]] = field(default_factory=dict)
    ask_counts: dict[str, int] = field(default_factory=dict)  # ai_chat asks that got an answer stream
    windows: dict[str, tuple[int, int]] = field(default_factory=dict)  # session id -> (window end, asks used)
    credits_used: dict[str, int] = field(default_factory=dict)

    # --- §12.5 E18: concurrency and rate -----------------------------------------------------

    def admit(self, session_id: str, now: float, *, max_concurrent: int | None, penalty: float,
              rate_per_minute: int | None) -> bool:
        """True when a new ai_chat ask may start (and then counts it as in flight)."""
        if now < self.penalty_until.get(session_id, float("-inf")):
            return False
        if max_concurrent is not None and self.in_flight.get(session_id, 0) >= max_concurrent:
            self.penalty_until[session_id] = now + penalty  # "recovery ~30 s" (SB [O])
            return False
        recent = self.recent_asks.setdefault(session_id, deque())
        while recent and recent[0] <= now - RATE_WINDOW:
            recent.popleft()
        if rate_per_minute is not None and len(recent) >= rate_per_minute:
            return False
        recent.append(now)
        self.in_flight[session_id] = self.in_flight.get(session_id, 0) + 1
        self.peak_in_flight[session_id] = max(self.peak_in_flight.get(session_id, 0), self.in_flight[session_id])
        return True

    def release(self, session_id: str) -> None:
        self.in_flight[session_id] = max(0, self.in_flight.get(session_id, 0) - 1)

    # --- asks, quota window, credits -----------------------------------------------------------

    def count_ask(self, session_id: str) -> int:
        """The number of this ask among the session id's asks (1-based)."""
        self.ask_counts[session_id] = self.ask_counts.get(session_id, 0) + 1
        return self.ask_counts[session_id]

    def window_spent(self, session_id: str, unix_now: int, budget: int | None) -> int | None:
        """The fixed end of a spent 5-hour window (§12.11 item 8), else None."""
        if budget is None:
            return None
        end, used = self.windows.get(session_id, (0, 0))
        if unix_now >= end:
            return None
        return end if used >= budget else None

    def spend_window(self, session_id: str, unix_now: int, budget: int | None) -> None:
        if budget is None:
            return
        end, used = self.windows.get(session_id, (0, 0))
        if unix_now >= end:  # the window opens with the first ask after the last one closed
            end, used = unix_now + FIVE_HOURS, 0
        self.windows[session_id] = (end, used + 1)

    def credits_left(self, session_id: str, credits: int | None) -> int:
        if credits is None:
            return FREE_GRANT
        return max(0, credits - self.credits_used.get(session_id, 0))

    def spend_credit(self, session_id: str) -> None:
        self.credits_used[session_id] = self.credits_used.get(session_id, 0) + 1
