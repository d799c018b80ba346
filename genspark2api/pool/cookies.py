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

Operators change the pool at run time too (the admin API and page): add, remove, disable and
enable, revive a dead cookie, reset a cooldown, set a cookie's proxy and label, store a probe's
result. Each mutation calls `_changed(key)`, which tells every listener (the SQLite store persists
state through this hook). A configuration line (`GS_COOKIE`, `GS_COOKIE_FILE`) may carry a proxy
and a label: `cookie | proxy=socks5://host:1080 | label=alice` (a tab works as the separator too).
"""

from __future__ import annotations

import enum
import hashlib
import itertools
import re
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlsplit

from ..redact import mask_cookie, mask_proxy
from ..upstream.account import AccountProbe
from ..upstream.classify import BLAMELESS_KINDS, Failure, FailureKind

SESSION_ID = "session_id="
KEY_LENGTH = 12

# A configuration line: `cookie | proxy=… | label=…`. The separator is ` | ` (with the spaces) or a
# tab: a bare `|` can occur inside the value of some browser cookie, a spaced one does not. A line
# that starts with `|` has no cookie at all.
SPEC_SEPARATOR = re.compile(r"\s*\t\s*|\s+\|\s+|^\|\s*")
PROXY_SCHEMES = ("http", "https", "socks5", "socks5h")
DIRECT = "direct"            # `proxy=direct`: this cookie connects without PROXY_URL
LABEL_MAX = 64
PROBE_NOT_LOGGED_IN = "account_not_logged_in"
DISABLED_BY_OPERATOR = "disabled_by_operator"


class _Unset(enum.Enum):
    UNSET = "unset"


UNSET: Final = _Unset.UNSET  # "leave as it is", distinct from None ("clear it")


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
    DISABLED = "disabled"   # by an operator; its cooldown and death are kept underneath


class CookieOrigin(enum.StrEnum):
    CONFIG = "config"       # GS_COOKIE / GS_COOKIE_FILE: leaves the pool when its line does
    ADMIN = "admin"         # added at run time: survives reloads of the configuration


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
    label: str | None = None
    proxy: str | None = None        # the cookie's own proxy (password masked), "direct", None = PROXY_URL
    origin: CookieOrigin = CookieOrigin.CONFIG
    probe: AccountProbe | None = None
    dead: bool = False              # also while disabled (the state then says disabled)


@dataclass(frozen=True, slots=True)
class CookieSpec:
    """One configuration entry, parsed: the Cookie header, its proxy and label, and the raw text
    (so a reload can tell an edited line from an unchanged one)."""

    cookie: str = field(repr=False)
    proxy: str | None = None
    label: str | None = None
    line: str = field(default="", repr=False)


def check_proxy_url(url: str) -> str:
    """A per-cookie proxy: `http`, `https`, `socks5` or `socks5h` with a host, or `direct`."""
    url = url.strip()
    if url.lower() == DIRECT:
        return DIRECT
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValueError("the proxy is not a URL") from None
    if parts.scheme.lower() not in PROXY_SCHEMES or not parts.hostname:
        raise ValueError(f"the proxy must be {', '.join(PROXY_SCHEMES)}://host:port (or 'direct')")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("the proxy URL must not have a path, query or fragment")
    return url


def check_label(label: str) -> str | None:
    """A cookie's label: up to 64 printable characters, without `|`; empty = no label."""
    label = label.strip()
    if not label:
        return None
    if len(label) > LABEL_MAX or "|" in label or not label.isprintable():
        raise ValueError(f"a label is at most {LABEL_MAX} printable characters without '|'")
    return label


def parse_cookie_spec(entry: str) -> CookieSpec | None:
    """`cookie[ | proxy=URL][ | label=TEXT]` -> CookieSpec; None for an empty entry.

    Raises ValueError (with the cookie masked) for an unknown field, a bad proxy or label: a
    cookie meant to go through a proxy must never silently go without it.
    """
    line = entry.strip()
    head, *fields = SPEC_SEPARATOR.split(line)
    cookie = normalize_cookie_entry(head)
    if cookie is None:
        if fields:
            raise ValueError("an entry with proxy= or label= has no cookie")
        return None
    proxy: str | None = None
    label: str | None = None
    for raw in fields:
        name, sep, value = raw.strip().partition("=")
        name = name.strip().lower()
        try:
            if sep and name == "proxy":
                proxy = check_proxy_url(value)
            elif sep and name == "label":
                label = check_label(value)
            else:
                raise ValueError(f"unknown field {name[:20]!r}: use proxy=URL or label=TEXT")
        except ValueError as exc:
            raise ValueError(f"cookie {mask_cookie(cookie)}: {exc}") from None
    return CookieSpec(cookie, proxy, label, line)


def parse_cookie_specs(entries: Iterable[str]) -> list[CookieSpec]:
    """Every non-empty entry parsed; the first bad one raises ValueError naming its number."""
    specs = []
    for number, entry in enumerate(entries, 1):
        try:
            spec = parse_cookie_spec(entry)
        except ValueError as exc:
            raise ValueError(f"cookie entry #{number}: {exc}") from None
        if spec is not None:
            specs.append(spec)
    return specs


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
    origin: str = CookieOrigin.CONFIG.value
    # A hash of the configuration line: a proxy or label an operator set lasts until the line is
    # edited, across restarts too (an edited `| proxy=…` wins over the stored one).
    line_fingerprint: str = ""
    # The cookie text, only for cookies an operator added at run time: no configuration holds
    # them, so without it they would not come back after a restart.
    cookie: str | None = field(default=None, repr=False)


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
    disabled: bool = False             # by an operator
    label: str | None = None
    proxy: str | None = None
    origin: CookieOrigin = CookieOrigin.CONFIG
    line: str = field(default="", repr=False)   # the configuration text it came from
    probe: AccountProbe | None = None

    def state(self, now: float) -> CookieState:
        if self.disabled:
            return CookieState.DISABLED
        if self.dead:
            return CookieState.DEAD
        return CookieState.COOLING if self.until > now else CookieState.HEALTHY

    @property
    def alive(self) -> bool:
        return not (self.dead or self.disabled)

    def take_cookie(self, cookie: str) -> None:
        """A new cookie text for the same account: a new login, so a dead entry is a fresh start."""
        if cookie == self.cookie:
            return
        self.cookie = cookie
        self.masked = mask_cookie(cookie)
        if self.dead:
            self.dead = False
            self.reason = None
            self.consecutive_failures = 0


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
        # Keys an operator removed, with the configuration line they had: a reload does not bring
        # one back until its line changes (a new login pasted).
        self._removed: dict[str, str] = {}
        # The proxies of removed cookies, for their leases still in flight (their downloads too).
        self._former_proxies: dict[str, str | None] = {}
        self.listeners: list[Callable[[str], None]] = []
        self.reload(entries)

    def _changed(self, key: str) -> None:
        for listener in self.listeners:
            listener(key)

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

    def _settle(self, entry: _Cookie, lease: Lease, failure: Failure | None, cancelled: bool) -> None:
        entry.leases.discard(lease.token)
        entry.in_flight -= 1
        entry.capped_in_flight -= lease.capped
        self._record_outcome(entry, lease, failure, cancelled=cancelled)
        self._changed(entry.key)

    def _record_outcome(self, entry: _Cookie, lease: Lease, failure: Failure | None, *, cancelled: bool) -> None:
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
        alive = [c for c in self._cookies.values() if c.alive]
        if not alive:
            reasons = ", ".join(sorted({
                DISABLED_BY_OPERATOR if c.disabled else (c.reason or "disabled") for c in self._cookies.values()
            }))
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

        Entries are parsed (`parse_cookie_spec`; a bad one raises ValueError and changes nothing),
        normalised and collapse by account (session id). Kept cookies keep their state and
        counters; a dead cookie comes back only when its entry text changed (a new login pasted
        under the same key). A line's proxy and label apply when the line is new or edited, so a
        proxy or label an operator set lasts until someone edits that line. Cookies an operator
        added stay; one an operator removed stays out while its line is unchanged. Leases of
        removed cookies are ignored on release.
        """
        specs = parse_cookie_specs(entries)
        fresh: dict[str, _Cookie] = {}
        for spec in specs:
            key = cookie_key(spec.cookie)
            if key in fresh:
                continue  # a duplicate: the first entry wins
            if self._removed.get(key) == spec.line:
                continue
            self._removed.pop(key, None)
            self._former_proxies.pop(key, None)
            entry = self._cookies.get(key)
            if entry is None:
                entry = _Cookie(key, spec.cookie, mask_cookie(spec.cookie), proxy=spec.proxy, label=spec.label, line=spec.line)
            else:
                entry.take_cookie(spec.cookie)
                if entry.line != spec.line:
                    entry.proxy, entry.label, entry.line = spec.proxy, spec.label, spec.line
                entry.origin = CookieOrigin.CONFIG
            fresh[key] = entry
        for key, entry in self._cookies.items():
            if key not in fresh and entry.origin is CookieOrigin.ADMIN:
                fresh[key] = entry
        added = [key for key in fresh if key not in self._cookies]
        removed = [key for key in self._cookies if key not in fresh]
        for key in removed:
            self._former_proxies[key] = self._cookies[key].proxy
        self._cookies = fresh
        for key in (*added, *removed, *(k for k in fresh if k not in added)):
            self._changed(key)
        return len(added), len(removed)

    # -------------------------------------------------------------------------- operator actions

    def add(
        self, entries: Iterable[str], *, proxy: str | None | _Unset = UNSET, label: str | None | _Unset = UNSET
    ) -> list[tuple[str, str]]:
        """Add cookies at run time (a pasted list, one per entry; each may carry `| proxy=…`).

        Returns `(key, outcome)` per account: "added"; "updated" (a known account with a new cookie
        text: a new login, so a dead one is a fresh start); "unchanged". `proxy` / `label`, when
        given, apply to every entry (over the entries' own). Raises ValueError on a bad entry,
        before anything changes.
        """
        if proxy is not UNSET and proxy is not None:
            proxy = check_proxy_url(proxy)
        if label is not UNSET and label is not None:
            label = check_label(label)
        results: dict[str, str] = {}
        for spec in parse_cookie_specs(entries):
            key = cookie_key(spec.cookie)
            if key in results:
                continue
            entry = self._cookies.get(key)
            if entry is None:
                entry = _Cookie(key, spec.cookie, mask_cookie(spec.cookie), origin=CookieOrigin.ADMIN)
                entry.proxy, entry.label = spec.proxy, spec.label
                self._cookies[key] = entry
                self._removed.pop(key, None)
                self._former_proxies.pop(key, None)
                outcome = "added"
            else:
                outcome = "unchanged" if entry.cookie == spec.cookie else "updated"
                entry.take_cookie(spec.cookie)
                if spec.proxy is not None:
                    entry.proxy = spec.proxy
                if spec.label is not None:
                    entry.label = spec.label
            if proxy is not UNSET:
                entry.proxy = proxy
            if label is not UNSET:
                entry.label = label
            results[key] = outcome
            self._changed(key)
        return list(results.items())

    def remove(self, key: str) -> bool:
        """Take a cookie out of the pool; its leases in flight finish, their outcomes ignored."""
        entry = self._cookies.pop(key, None)
        if entry is None:
            return False
        if entry.origin is CookieOrigin.CONFIG:
            self._removed[key] = entry.line
        self._former_proxies[key] = entry.proxy
        self._changed(key)
        return True

    def set_disabled(self, key: str, disabled: bool) -> bool:
        """Disable (out of rotation, state kept underneath) or enable a cookie."""
        entry = self._cookies.get(key)
        if entry is None:
            return False
        entry.disabled = disabled
        self._changed(key)
        return True

    def revive(self, key: str) -> bool:
        """Bring a dead cookie back to healthy now (an operator knows the account works again):
        a cooldown left from before it died ends too. An operator's disable stays."""
        entry = self._cookies.get(key)
        if entry is None:
            return False
        if entry.dead:
            entry.dead = False
            entry.until = 0.0
            entry.reason = None
            entry.consecutive_failures = 0
        self._changed(key)
        return True

    def reset_cooldown(self, key: str) -> bool:
        """End a cooldown now; the escalation of repeated failures starts over too."""
        entry = self._cookies.get(key)
        if entry is None:
            return False
        entry.until = 0.0
        entry.consecutive_failures = 0
        if not entry.dead:
            entry.reason = None
        self._changed(key)
        return True

    def configure(self, key: str, *, proxy: str | None | _Unset = UNSET, label: str | None | _Unset = UNSET) -> bool:
        """Set (or with None clear) a cookie's proxy and label; ValueError on a bad value."""
        entry = self._cookies.get(key)
        if entry is None:
            return False
        new_proxy = entry.proxy if proxy is UNSET else (None if proxy is None else check_proxy_url(proxy))
        new_label = entry.label if label is UNSET else (None if label is None else check_label(label))
        entry.proxy, entry.label = new_proxy, new_label
        self._changed(key)
        return True

    def record_probe(self, key: str, probe: AccountProbe) -> bool:
        """Keep a probe's result on the cookie. A session upstream no longer knows (§12.5 E24) is
        dead, as a chat attempt would find; a probe that found it logged in revives nothing:
        that stays the operator's call."""
        entry = self._cookies.get(key)
        if entry is None:
            return False
        entry.probe = probe
        if probe.logged_in is False:
            entry.dead = True
            entry.reason = PROBE_NOT_LOGGED_IN
            entry.last_error_detail = probe.error or "The account probe found the session logged out."
        self._changed(key)
        return True

    def proxy_for(self, cookie: str) -> str | None:
        """The proxy configured for this cookie's account (None = PROXY_URL, `direct` = none)."""
        key = cookie_key(cookie)
        entry = self._cookies.get(key)
        if entry is not None:
            return entry.proxy
        return self._former_proxies.get(key)

    def now(self) -> float:
        """The pool's clock (unix seconds), for views that show how long a cooldown has left."""
        return self._clock()

    def cookie_of(self, key: str) -> str | None:
        """The Cookie header of a pool entry (for a probe; never shown)."""
        entry = self._cookies.get(key)
        return entry.cookie if entry is not None else None

    # -------------------------------------------------------------------------- persistence

    def saved(self, key: str) -> SavedCookie | None:
        """What to store of the cookie `key`; None once it left the pool."""
        c = self._cookies.get(key)
        if c is None:
            return None
        extra = {name: getattr(c, name) for name in EXTRA_ATTRIBUTES if hasattr(c, name)}
        admin = c.origin is CookieOrigin.ADMIN
        return SavedCookie(c.key, cookie_fingerprint(c.cookie), c.dead, c.until, c.reason, c.successes, c.failures,
                           c.consecutive_failures, c.last_used, c.last_error_detail, dict(c.substitutions), extra,
                           c.origin.value, cookie_fingerprint(c.line) if c.line else "", c.cookie if admin else None)

    def restore(self, saved: SavedCookie) -> str | None:
        """Take back a stored state at start, for a cookie still configured.

        Returns None when the key is not in the pool, "revived" when the stored cookie was dead but
        its entry has changed since (a new login), else "restored". A cookie an operator added at
        run time (stored with its text) joins the pool again first.
        """
        entry = self._cookies.get(saved.key)
        if entry is None and saved.origin == CookieOrigin.ADMIN.value and saved.cookie:
            self.add([saved.cookie])
            entry = self._cookies.get(saved.key)
        if entry is None:
            return None
        entry.until, entry.reason = saved.until, saved.reason
        entry.successes, entry.failures = saved.successes, saved.failures
        entry.consecutive_failures = saved.consecutive_failures
        entry.last_used, entry.last_error_detail = saved.last_used, saved.last_error_detail
        entry.substitutions = dict(saved.substitutions)
        line_edited = bool(entry.line) and saved.line_fingerprint != cookie_fingerprint(entry.line)
        for name, value in saved.extra.items():
            if name in ("proxy", "label") and line_edited:
                continue   # the edited line's own proxy and label apply
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
        ends = [c.until for c in self._cookies.values() if c.alive and c.until > now]
        return min(ends, default=None)

    def snapshot(self) -> list[CookieStatus]:
        now = self._clock()
        return [self._status(c, now) for c in self._cookies.values()]

    def status(self, key: str) -> CookieStatus | None:
        entry = self._cookies.get(key)
        return None if entry is None else self._status(entry, self._clock())

    @staticmethod
    def _status(c: _Cookie, now: float) -> CookieStatus:
        state = c.state(now)
        if state is CookieState.DISABLED:
            reason = DISABLED_BY_OPERATOR
        else:
            reason = c.reason if state is not CookieState.HEALTHY else None
        return CookieStatus(
            key=c.key,
            masked=c.masked,
            state=state,
            reason=reason,
            until=c.until if c.until > now and not c.dead else None,
            in_flight=c.in_flight,
            successes=c.successes,
            failures=c.failures,
            consecutive_failures=c.consecutive_failures,
            last_used=c.last_used,
            last_error_detail=c.last_error_detail,
            substitutions=dict(c.substitutions),
            label=c.label,
            proxy=mask_proxy(c.proxy) if c.proxy else None,
            origin=c.origin,
            probe=c.probe,
            dead=c.dead,
        )

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
            elif status.state in (CookieState.DEAD, CookieState.DISABLED):
                line += f" ({status.reason})"
            if status.label:
                line += f" [{status.label}]"
            lines.append(line)
        return "\n".join(lines)
