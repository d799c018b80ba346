"""Stored Responses (`POST /v1/responses` with `store` not false): id -> encoded bytes, bounded.

The Responses door keeps each answered response so that `GET /v1/responses/{id}`, its
`input_items` and a follow-up's `previous_response_id` can find it. This is the in-process part:
all of them without DATA_DIR (lost on restart, like everything then: a lost response costs the
client a 404 and a resend of its history), and the recent ones in front of the database with it
(store.ResponseStore).

Bounded three ways, because a client controls what goes in (a data: image in the input is kept
with it): at most `max_entries`, at most `max_bytes` in all (least recently used dropped first),
and each until its `expires_at`. The store sees only bytes; what they hold is the door's business.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable


class MemoryResponses:
    """An LRU of id -> (bytes, expires_at), with an entry count and a byte bound; clock injected."""

    def __init__(self, *, max_entries: int, max_bytes: int, clock: Callable[[], float] = time.time) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError("max_entries and max_bytes must be at least 1")
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._clock = clock
        self._entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()   # least recently used first
        self._bytes = 0

    def __len__(self) -> int:
        self._purge()
        return len(self._entries)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def put(self, id: str, value: bytes, expires_at: float) -> None:
        """Keep `value` under `id` until `expires_at` (unix seconds). A value larger than the whole
        byte bound is not kept at all: it would only push everything else out, then itself."""
        self.delete(id)
        if len(value) > self._max_bytes or expires_at <= self._clock():
            return
        self._entries[id] = (value, expires_at)
        self._bytes += len(value)
        while len(self._entries) > self._max_entries or self._bytes > self._max_bytes:
            self.delete(next(iter(self._entries)))
        self._purge()

    def get(self, id: str) -> bytes | None:
        item = self._entries.get(id)
        if item is None:
            return None
        value, expires_at = item
        if expires_at <= self._clock():
            self.delete(id)
            return None
        self._entries.move_to_end(id)
        return value

    def delete(self, id: str) -> None:
        item = self._entries.pop(id, None)
        if item is not None:
            self._bytes -= len(item[0])

    def _purge(self) -> None:
        now = self._clock()
        for key in [k for k, (_, expires_at) in self._entries.items() if expires_at <= now]:
            self.delete(key)
