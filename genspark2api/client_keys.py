"""Named client keys (`API_SECRET`), their per-minute limits (`API_KEY_RPM`) and their usage.

An `API_SECRET` entry is `name:key` or a plain `key`. Only the first ':' splits, and only when
what comes before it is a name (letters, digits, `_` and `-`, at most 32 characters): a key may
itself contain ':' (`alice:abc:def` is the key `abc:def` named `alice`). The catch is a plain key
whose head looks like a name (`abc:def` reads as the key `def` named `abc`); give such a key a
name. A plain key is named after its place in the list (`key1`, `key2`, ...), so the order of
`API_SECRET` keeps the names stable.

The name is what logs, `/metrics` and the admin view show; the key itself is never shown.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable

import msgspec

NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")
EVERY_KEY = "*"  # API_KEY_RPM: the limit of every key without its own entry


class ClientKey(msgspec.Struct, frozen=True):
    name: str
    secret: str


def parse_client_keys(entries: Iterable[str]) -> tuple[ClientKey, ...]:
    """`API_SECRET` entries -> keys with names; ValueError on a duplicate name or key."""
    keys: list[ClientKey] = []
    for position, entry in enumerate(entries, 1):
        head, sep, tail = entry.partition(":")
        if sep and tail and NAME.fullmatch(head):
            keys.append(ClientKey(head, tail))
        else:
            keys.append(ClientKey(f"key{position}", entry))
    names = [k.name for k in keys]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"API_SECRET names a key twice: {', '.join(twice)}; give each key its own name")
    secrets = [k.secret for k in keys]
    if len(set(secrets)) != len(secrets):
        raise ValueError("API_SECRET holds the same key under two names; each key must appear once")
    return tuple(keys)


def parse_key_rpm(raw: str) -> tuple[tuple[str, int], ...]:
    """`API_KEY_RPM=alice=60,bob=10,*=30` -> ((name, requests per minute), ...); ValueError if malformed."""
    limits: dict[str, int] = {}
    for item in (p.strip() for p in raw.split(",")):
        if not item:
            continue
        name, sep, value = (s.strip() for s in item.partition("="))
        if not sep or not (name == EVERY_KEY or NAME.fullmatch(name)) or not value.isdigit():
            raise ValueError(f"entry {item!r} is not accepted; use name=requests_per_minute,... (e.g. alice=60,*=30)")
        if name in limits:
            raise ValueError(f"entry {item!r} repeats the key name {name!r}")
        limits[name] = int(value)
    return tuple(limits.items())


def limits_by_key(keys: Iterable[ClientKey], rpm: Iterable[tuple[str, int]]) -> dict[str, int]:
    """Each key name's requests per minute (0 = none); ValueError naming an unknown key."""
    table = dict(rpm)
    names = [k.name for k in keys]
    unknown = sorted(set(table) - set(names) - {EVERY_KEY})
    if unknown:
        raise ValueError(f"names no key of API_SECRET: {', '.join(unknown)} (keys: {', '.join(names) or 'none'})")
    default = table.get(EVERY_KEY, 0)
    return {name: table.get(name, default) for name in names}


class KeyUsageRow(msgspec.Struct, frozen=True):
    """One client key's counters, for the admin view (never the key, only its name)."""

    name: str
    requests: int
    rate_limited: int
    prompt_tokens: int
    completion_tokens: int
    last_used: float | None
    requests_per_minute: int   # the key's limit; 0 = none


class _Counts:
    __slots__ = ("completion_tokens", "last_used", "prompt_tokens", "rate_limited", "requests")

    def __init__(self) -> None:
        self.requests = self.rate_limited = self.prompt_tokens = self.completion_tokens = 0
        self.last_used: float | None = None


class KeyUsage:
    """Requests and tokens per client key name, since the start (`runtime.key_usage`).

    Counts only the names it was built with, so the label set of `/metrics` stays bounded. No
    lock: every caller runs on the one trio thread, and no method awaits.
    """

    def __init__(self, limits: dict[str, int], *, clock: Callable[[], float] = time.time) -> None:
        self.limits = dict(limits)
        self._clock = clock
        self._counts = {name: _Counts() for name in limits}

    def request(self, name: str | None) -> None:
        counts = self._counts.get(name or "")
        if counts is None:
            return
        counts.requests += 1
        counts.last_used = self._clock()

    def refused(self, name: str) -> None:
        """A request of `name` answered 429 by its API_KEY_RPM limit (counted in `request` too)."""
        counts = self._counts.get(name)
        if counts is not None:
            counts.rate_limited += 1

    def tokens(self, name: str | None, prompt: int, completion: int) -> None:
        counts = self._counts.get(name or "")
        if counts is None:
            return
        counts.prompt_tokens += max(0, prompt)
        counts.completion_tokens += max(0, completion)

    def snapshot(self) -> list[KeyUsageRow]:
        return [
            KeyUsageRow(name, c.requests, c.rate_limited, c.prompt_tokens, c.completion_tokens, c.last_used,
                        self.limits[name])
            for name, c in self._counts.items()
        ]
