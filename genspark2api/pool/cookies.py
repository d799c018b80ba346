"""The cookie pool: which Genspark account serves the next attempt, and what a failure costs it.

A pure state machine (clock injected, no I/O, no locks): trio runs it from one thread, and every
method completes without awaiting, so there is nothing to race.

Rules (genspark-protocol.md §1.3, §4.2; openai-compat.md §1b, §5 item 2):

* A lease is taken per attempt and given back with the outcome. `acquire` counts the lease at
  once, so concurrent acquirers spread over the cookies instead of piling onto one.
* Selection: the preferred cookie (conversation affinity) when usable, else the fewest leases in
  flight, then the least recently handed out (never used first), then configuration order.
* Outcomes: account-scoped temporary failures cool the cookie down until upstream's reset time, or
  for the kind's duration in `CooldownPolicy`; NETWORK and OVERLOADED cool it briefly;
  ACCOUNT_DEAD disables it until its `GS_COOKIE` entry changes (deanxv brought dead cookies back
  silently every day at 17:05, §1.3; we don't); UPSTREAM_WIDE and REQUEST cost nothing.
* A cooldown never shortens another: the later end wins.
"""

from __future__ import annotations

import enum
import hashlib
import itertools
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field

from ..redact import mask_cookie
from ..upstream.classify import BLAMELESS_KINDS, Failure, FailureKind

SESSION_ID = "session_id="
KEY_LENGTH = 12


@dataclass(frozen=True, slots=True)
class CooldownPolicy:
    """How long each failure kind keeps a cookie out of rotation, in seconds.

    NETWORK failures escalate on repeats without a success in between:
    `network_seconds * 2 ** (consecutive_failures - 1)`, at most `network_seconds *
    network_max_factor` (30 s, 60 s, 120 s, 240 s, then 300 s with the defaults). One flaky
    connection costs little; a cookie whose requests keep dying (an IP-level block) backs off.
    """

    rate_limit_seconds: float = 600.0            # RATE_LIMIT_COOKIE_LOCK_DURATION (§4.2 E3, §12.5 E17)
    quota_seconds: float = 86400.0               # credits gone without a reset time (§12.5 E16: KE 24 h)
    session_limit_seconds: float = 1800.0        # §12.5 E13/E14a without a reset: AX-P 1 800 s, TT 30 min
    network_seconds: float = 30.0                # NETWORK_COOLDOWN_SECONDS
    overloaded_seconds: float = 60.0
    network_max_factor: float = 10.0
    throttled_seconds: float = 30.0              # §12.5 E18: HTTP 429 recovers in ~30 s; doubles on repeats
    placeholder_seconds: float = 60.0            # §12.5 E15: KE rests the account 60 s

    def duration(self, kind: FailureKind, consecutive_failures: int) -> float:
        if kind is FailureKind.RATE_LIMITED:
            return self.rate_limit_seconds
        if kind is FailureKind.THROTTLED:
            factor = 2.0 ** max(consecutive_failures - 1, 0)
            return min(self.throttled_seconds * factor, max(self.rate_limit_seconds, self.throttled_seconds))
        if kind is FailureKind.PLACEHOLDER:
            return self.placeholder_seconds
        if kind is FailureKind.QUOTA_EXHAUSTED:
            return self.quota_seconds
        if kind is FailureKind.SESSION_LIMIT:
            return self.session_limit_seconds
        if kind is FailureKind.OVERLOADED:
            return self.overloaded_seconds
        if kind is FailureKind.NETWORK:
            factor = min(2.0 ** max(consecutive_failures - 1, 0), self.network_max_factor)
            return self.network_seconds * factor
        return 0.0


class CookieState(enum.StrEnum):
    HEALTHY = "healthy"
    COOLING = "cooling"
    DEAD = "dead"


@dataclass(frozen=True, slots=True)
class Lease:
    """One attempt's hold on a cookie. `key` is the cookie's stable id; `cookie` the Cookie header."""

    key: str
    cookie: str = field(repr=False)
    masked: str
    token: int
    capped: bool = True   # counts against COOKIE_MAX_IN_FLIGHT (chat does; generations do not)


class PoolUnavailable(Exception):
    """No cookie can take this attempt.

    `reason`: "cooling" (some cookie is alive but none is usable now: answer 429 with
    Retry-After), "busy" (usable cookies exist but each is at its in-flight cap: wait for one),
    "dead" (every cookie is disabled) or "empty" (none configured); both 503.
    `retry_after`: seconds until a cookie is usable again, None when none will be by waiting.
    """

    def __init__(self, reason: str, retry_after: float | None, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.retry_after = retry_after
        self.detail = detail


@dataclass(frozen=True)
class CookieStatus:
    key: str
    masked: str
    state: CookieState
    reason: str | None              # failure code while cooling or dead
    until: float | None             # end of the cooldown (unix seconds)
    in_flight: int
    successes: int
    failures: int
    consecutive_failures: int
    last_used: float | None
    last_error_detail: str | None
    substitutions: dict[str, int] = field(default_factory=dict)


# Attributes a pool entry may carry beyond its state (the admin API's per-cookie settings); saved
# and restored when the entry has them.
EXTRA_ATTRIBUTES = ("label", "proxy", "disabled")


@dataclass(frozen=True, slots=True)
class SavedCookie:
    """What of a cookie survives a restart (pool/store.py): its state and counters, not its text.

    `fingerprint` identifies the entry text, so a dead cookie whose entry changed while the
    service was down (a new login pasted under the same session id) comes back, as `reload` does.
    """

    key: str
    fingerprint: str
    dead: bool = False
    until: float = 0.0
    reason: str | None = None
    successes: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    last_used: float | None = None
    last_error_detail: str | None = None
    substitutions: dict[str, int] = field(default_factory=dict)
    extra: dict[str, object] = field(default_factory=dict)


def cookie_fingerprint(cookie: str) -> str:
    """A one-way id of a whole cookie entry (never the text itself at rest)."""
    return hashlib.sha256(b"genspark2api-entry:" + cookie.encode()).hexdigest()[:32]


def normalize_cookie_entry(entry: str) -> str | None:
    """One `GS_COOKIE` entry -> the Cookie header value (genspark-protocol.md §1.3).

    Trimmed first (deanxv prefixed before trimming, so ` abc` became `session_id= abc`); an
    entry without `session_id=` is a bare session id and gets the prefix; anything else (a whole
    browser cookie string) is used verbatim. Empty entries, and entries whose session id is
    empty, are None.
    """
    entry = entry.strip()
    if not entry:
        return None
    if SESSION_ID not in entry:
        entry = SESSION_ID + entry
    return entry if _session_id(entry) else None


def _session_id(cookie: str) -> str:
    for part in cookie.split(";"):
        name, _, value = part.strip().partition("=")
        if name == "session_id":
            return value.strip()
    return ""


def cookie_key(cookie: str) -> str:
    """The stable id of a cookie: a sha256 prefix of its session id (the account), so the same
    account pasted twice, once bare and once as a browser string, is one pool entry."""
    identity = _session_id(cookie) or cookie
    return hashlib.sha256(identity.encode()).hexdigest()[:KEY_LENGTH]


@dataclass(slots=True, eq=False)
class _Cookie:
    key: str
    cookie: str = field(repr=False)
    masked: str
    dead: bool = False
    until: float = 0.0
    reason: str | None = None
    in_flight: int = 0
    capped_in_flight: int = 0          # the leases that count against the in-flight cap
    leases: set[int] = field(default_factory=set)
    successes: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    last_used: float | None = None
    use_order: int = 0                 # 0 = never handed out; else a monotonically rising counter
    last_error_detail: str | None = None
    substitutions: dict[str, int] = field(default_factory=dict)   # "asked -> served": answers (§12.8.3)
    consecutive_substitutions: int = 0

    def state(self, now: float) -> CookieState:
        if self.dead:
            return CookieState.DEAD
        return CookieState.COOLING if self.until > now else CookieState.HEALTHY


class CookiePool:
    def __init__(
        self,
        entries: Iterable[str],
        *,
        clock: Callable[[], float] = time.time,
        policy: CooldownPolicy = CooldownPolicy(),
        max_in_flight: int = 0,
    ) -> None:
        self._clock = clock
        self._policy = policy
        self._max_in_flight = max_in_flight  # per cookie; 0 = no cap
        self._cookies: dict[str, _Cookie] = {}
        self._tokens = itertools.count(1)
        self._uses = itertools.count(1)
        # Observers of state changes, called with the cookie's key (the store, the admin page).
        self.listeners: list[Callable[[str], None]] = []
        self.reload(entries)

    def __len__(self) -> int:
        return len(self._cookies)

    # -------------------------------------------------------------------------- leases

    def acquire(self, *, exclude: Collection[str] = (), prefer: str | None = None, capped: bool = True) -> Lease:
        """Lease the best usable cookie not in `exclude` (keys already tried by this request).

        `capped=False` (image and video generations): §12.5 E18's concurrency limit is a chat one
        (TT-1 ran 8 image requests in parallel on one account), so such a lease neither needs a
        free slot nor takes one; it still counts for spreading the load.

        Raises PoolUnavailable when none is usable; see `_unavailable` for reason and Retry-After.
        """
        now = self._clock()
        usable = [c for c in self._cookies.values() if c.key not in exclude and c.state(now) is CookieState.HEALTHY]
        if not usable:
            raise self._unavailable(now, exclude)
        if self._max_in_flight and capped:
            # §12.5 E18: a 3rd request in flight on one account is answered 429 and the account is
            # then throttled for ~30 s; waiting for a free slot is cheaper than that.
            free = [c for c in usable if c.capped_in_flight < self._max_in_flight]
            if not free:
                raise PoolUnavailable(
                    "busy", 0.0,
                    f"Every usable Genspark cookie already has {self._max_in_flight} requests in flight "
                    "(COOKIE_MAX_IN_FLIGHT).",
                )
            usable = free
        preferred = self._cookies.get(prefer) if prefer is not None else None
        if preferred is not None and preferred in usable:
            chosen = preferred
        else:
            # min() keeps the first of equals, i.e. configuration order breaks the last tie.
            chosen = min(usable, key=lambda c: (c.in_flight, c.use_order))
        token = next(self._tokens)
        chosen.in_flight += 1
        chosen.capped_in_flight += capped
        chosen.leases.add(token)
        chosen.last_used = now
        chosen.use_order = next(self._uses)
        self._changed(chosen.key)
        return Lease(chosen.key, chosen.cookie, chosen.masked, token, capped)

    def release(self, lease: Lease, failure: Failure | None = None, *, cancelled: bool = False) -> None:
        """Give a lease back with its outcome (None = success). Idempotent per lease.

        `cancelled`: the attempt was stopped before it had an outcome (it lost a race, its client
        left, the request ended): neither a success nor a failure, so a cookie that never answers
        cannot stay healthy on the credit of attempts that were cut short.

        A lease of a cookie removed by `reload` is ignored; so is the outcome of a lease taken
        before the cookie's entry was replaced (the new entry is a fresh start).
        """
        entry = self._cookies.get(lease.key)
        if entry is None or lease.token not in entry.leases:
            return
        self._settle(entry, lease, failure, cancelled)
        self._changed(entry.key)

    def _settle(self, entry: _Cookie, lease: Lease, failure: Failure | None, cancelled: bool) -> None:
        entry.leases.discard(lease.token)
        entry.in_flight -= 1
        entry.capped_in_flight -= lease.capped
        if entry.cookie != lease.cookie or cancelled:
            return
        if failure is None:
            entry.successes += 1
            entry.consecutive_failures = 0
            return
        if failure.kind in BLAMELESS_KINDS:
            return  # not the cookie's fault: counts nothing against it
        now = self._clock()
        entry.failures += 1
        entry.consecutive_failures += 1
        entry.last_error_detail = failure.detail
        if failure.permanent:
            entry.dead = True
            entry.reason = failure.code
            return
        if failure.reset_at is not None and failure.reset_at > now:
            until = failure.reset_at
        else:
            until = now + self._policy.duration(failure.kind, entry.consecutive_failures)
        if until > entry.until:
            entry.until = until
            entry.reason = failure.code

    def cool(self, key: str, seconds: float, code: str, detail: str) -> None:
        """Rest a cookie for a policy reason of ours (not an upstream failure, so no counters)."""
        entry = self._cookies.get(key)
        if entry is None or entry.dead:
            return
        until = self._clock() + seconds
        if until > entry.until:
            entry.until, entry.reason, entry.last_error_detail = until, code, detail
            self._changed(key)

    def revive(self, key: str) -> bool:
        """An operator brings a cookie back: no longer dead, no cooldown, failure run reset.
        False when no cookie has this key. Counters and history stay."""
        entry = self._cookies.get(key)
        if entry is None:
            return False
        entry.dead, entry.until, entry.reason, entry.consecutive_failures = False, 0.0, None, 0
        self._changed(key)
        return True

    def _changed(self, key: str) -> None:
        """Tell every listener that the cookie `key` changed (or left the pool)."""
        for listener in self.listeners:
            listener(key)

    def note_served(self, key: str, requested: str, served: str, *, substituted: bool) -> int:
        """Record which model really answered on a cookie (§12.8.3); returns the cookie's run of
        consecutive substituted answers (0 after an honoured one)."""
        entry = self._cookies.get(key)
        if entry is None:
            return 0
        if not substituted:
            entry.consecutive_substitutions = 0
            return 0
        label = f"{requested} -> {served}"
        entry.substitutions[label] = entry.substitutions.get(label, 0) + 1
        entry.consecutive_substitutions += 1
        self._changed(key)
        return entry.consecutive_substitutions

    def _unavailable(self, now: float, exclude: Collection[str]) -> PoolUnavailable:
        """Why nothing is usable.

        Retry-After is about the pool, not about this request: excluded cookies count by their
        pool state like any other. A cooling cookie recovers at its `until`; an alive cookie
        that is healthy but was excluded (this request already tried it and it was not
        penalised) is usable by a new request at once, so retry_after is 0.
        """
        if not self._cookies:
            return PoolUnavailable("empty", None, "No Genspark cookies are configured (GS_COOKIE / GS_COOKIE_FILE).")
        alive = [c for c in self._cookies.values() if not c.dead]
        if not alive:
            reasons = ", ".join(sorted({c.reason or "disabled" for c in self._cookies.values()}))
            return PoolUnavailable(
                "dead",
                None,
                f"All {len(self._cookies)} Genspark cookies are disabled ({reasons}); "
                "log in again and update GS_COOKIE.",
            )
        cooling = [c for c in alive if c.until > now]
        if len(cooling) < len(alive):
            retry_after = 0.0
        else:
            retry_after = max(0.0, min(c.until for c in cooling) - now)
        tried = sum(1 for c in alive if c.key in exclude)
        return PoolUnavailable(
            "cooling",
            retry_after,
            f"No Genspark cookie is usable right now: {len(cooling)} cooling down, {tried} already tried "
            f"by this request, {len(self._cookies) - len(alive)} disabled; the next one is usable in "
            f"{retry_after:.0f} s.",
        )

    # -------------------------------------------------------------------------- configuration

    def reload(self, entries: Iterable[str]) -> tuple[int, int]:
        """Replace the configured cookies; returns (added, removed).

        Entries are normalised and collapse by account (session id). Kept cookies keep their
        state and counters; a dead cookie comes back only when its entry text changed (a new
        login pasted under the same key). Leases of removed cookies are ignored on release.
        """
        fresh: dict[str, _Cookie] = {}
        for raw in entries:
            cookie = normalize_cookie_entry(raw)
            if cookie is None:
                continue
            key = cookie_key(cookie)
            if key in fresh:
                continue  # a duplicate: the first entry wins
            entry = self._cookies.get(key) or _Cookie(key, cookie, mask_cookie(cookie))
            if entry.cookie != cookie:
                entry.cookie = cookie
                entry.masked = mask_cookie(cookie)
                if entry.dead:
                    entry.dead = False
                    entry.reason = None
                    entry.consecutive_failures = 0
            fresh[key] = entry
        added = sum(1 for key in fresh if key not in self._cookies)
        removed = sum(1 for key in self._cookies if key not in fresh)
        before = list(self._cookies)
        self._cookies = fresh
        for key in dict.fromkeys([*before, *fresh]):
            self._changed(key)
        return added, removed

    # -------------------------------------------------------------------------- persistence

    def saved(self, key: str) -> SavedCookie | None:
        """What to store of the cookie `key`; None once it left the pool."""
        c = self._cookies.get(key)
        if c is None:
            return None
        extra = {name: getattr(c, name) for name in EXTRA_ATTRIBUTES if hasattr(c, name)}
        return SavedCookie(c.key, cookie_fingerprint(c.cookie), c.dead, c.until, c.reason, c.successes, c.failures,
                           c.consecutive_failures, c.last_used, c.last_error_detail, dict(c.substitutions), extra)

    def restore(self, saved: SavedCookie) -> str | None:
        """Take back a stored state at start, for a cookie still configured.

        Returns None when the key is not in the pool, "revived" when the stored cookie was dead but
        its entry has changed since (a new login), else "restored".
        """
        entry = self._cookies.get(saved.key)
        if entry is None:
            return None
        entry.until, entry.reason = saved.until, saved.reason
        entry.successes, entry.failures = saved.successes, saved.failures
        entry.consecutive_failures = saved.consecutive_failures
        entry.last_used, entry.last_error_detail = saved.last_used, saved.last_error_detail
        entry.substitutions = dict(saved.substitutions)
        for name, value in saved.extra.items():
            if name in EXTRA_ATTRIBUTES and hasattr(entry, name):
                setattr(entry, name, value)
        outcome = "restored"
        if saved.dead and saved.fingerprint != cookie_fingerprint(entry.cookie):
            entry.reason, entry.consecutive_failures, outcome = None, 0, "revived"
        else:
            entry.dead = saved.dead
        self._changed(saved.key)
        return outcome

    def detached_lease(self, key: str | None) -> Lease | None:
        """A lease-shaped handle on the cookie `key` for work that outlived its lease (a video job
        resumed after a restart polls and downloads on the account that owns its tasks). It holds
        no slot and settles nothing: releasing it is a no-op. None once the cookie left the pool."""
        entry = self._cookies.get(key) if key is not None else None
        if entry is None:
            return None
        return Lease(entry.key, entry.cookie, entry.masked, 0, capped=False)

    # -------------------------------------------------------------------------- views

    def earliest_recovery(self) -> float | None:
        """When the first cooling cookie becomes usable again (unix seconds); None if none cools."""
        now = self._clock()
        ends = [c.until for c in self._cookies.values() if not c.dead and c.until > now]
        return min(ends, default=None)

    def snapshot(self) -> list[CookieStatus]:
        now = self._clock()
        out = []
        for c in self._cookies.values():
            state = c.state(now)
            out.append(
                CookieStatus(
                    key=c.key,
                    masked=c.masked,
                    state=state,
                    reason=c.reason if state is not CookieState.HEALTHY else None,
                    until=c.until if state is CookieState.COOLING else None,
                    in_flight=c.in_flight,
                    successes=c.successes,
                    failures=c.failures,
                    consecutive_failures=c.consecutive_failures,
                    last_used=c.last_used,
                    last_error_detail=c.last_error_detail,
                    substitutions=dict(c.substitutions),
                )
            )
        return out

    def summary(self) -> str:
        """One line per cookie, masked, for the start-up log."""
        if not self._cookies:
            return "no cookies configured (GS_COOKIE is empty)"
        now = self._clock()
        lines = []
        for number, status in enumerate(self.snapshot(), 1):
            line = f"#{number} {status.key} {status.masked}: {status.state}"
            if status.state is CookieState.COOLING and status.until is not None:
                line += f" for {status.until - now:.0f} s ({status.reason})"
            elif status.state is CookieState.DEAD:
                line += f" ({status.reason})"
            lines.append(line)
        return "\n".join(lines)
