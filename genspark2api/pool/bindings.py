"""Conversation affinity: a follow-up turn goes back to the cookie and upstream thread (project)
that answered the turn before, and continues it there.

genspark-protocol.md §12.3: the server keeps the thread. A follow-up sends only the new turn with
the project id and the last `_event_index` seen, on the account that owns the project; a whole
transcript resent into an existing project comes back blank or as a refusal. So a binding is valid
only while it is the project's *head*, the conversation exactly as the project holds it: once a
turn has been added on top, the older state (a client regenerating or editing its last turn, or
trimming history) no longer matches, and that conversation starts a new project with its whole
transcript.

Why (genspark-protocol.md §5.5): a fresh Genspark chat may silently switch or degrade the model,
and a project already holds the earlier turns. deanxv bound one project per (cookie, model), so
unrelated conversations of all users piled into one upstream thread; we bind per *conversation*:
the key is the model plus the exact message history, so only a client that continues the same
conversation lands in the same project.

An OpenAI client resends the whole history each turn. After turn n we remember
`history + [answer]` under its key; turn n+1 sends `history + [answer] + [new user message]`,
and its history (everything before the new last user message) hashes to the same key. A request
*claims* the binding it continues (`claim`), so that two requests of the same state (a double
submit, a retry after a timeout) never both continue one project; the turn's success binds the
project's new head.

Pure and in memory: a bounded LRU with a maximum age, clock injected. With DATA_DIR every change
is also saved (pool/store.py, through `listeners`), so a follow-up after a restart still goes to
its project; without it a restart only costs a fresh upstream chat.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Binding:
    cookie_key: str
    project_id: str
    created: float
    last_event_index: int = -1   # §12.3: the next turn's `last_seen_event_index`


def _canonical_text(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n").strip()


def conversation_key(model: str, messages: Sequence[tuple[str, str]]) -> str:
    """sha256 hex of the model and the (role, text) pairs, line endings and outer whitespace
    canonicalised; stable across processes and Python versions (no `hash()`)."""
    canonical = [model.strip(), [[role.strip().lower(), _canonical_text(text)] for role, text in messages]]
    encoded = json.dumps(canonical, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(encoded.encode("utf-8")).hexdigest()


class ConversationBindings:
    """conversation key -> Binding, at most `max_entries`, each for at most `max_age` seconds.

    Expired entries are dropped when met: on lookup, from the old end on insert, and in full by
    `__len__` and `bound_projects`.
    """

    def __init__(
        self, *, max_entries: int = 10000, max_age: float = 86400.0, clock: Callable[[], float] = time.time
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._max_entries = max_entries
        self._max_age = max_age
        self._clock = clock
        # key -> (binding, stored at); order = least recently used first.
        self._entries: OrderedDict[str, tuple[Binding, float]] = OrderedDict()
        self._heads: dict[str, str] = {}   # project id -> the key of the conversation it holds now
        # Observers of changes, called with the conversation key (pool/store.py saves them).
        self.listeners: list[Callable[[str], None]] = []

    def __len__(self) -> int:
        self._purge()
        return len(self._entries)

    def lookup(self, model: str, history: Sequence[tuple[str, str]]) -> Binding | None:
        """The binding of the conversation whose earlier messages are `history`
        (everything before the new last user message), or None."""
        if not history:
            return None
        key = conversation_key(model, history)
        item = self._entries.get(key)
        if item is None:
            return None
        binding, stored = item
        if self._expired(stored, self._clock()):
            self._drop(key)
            return None
        if self._heads.get(binding.project_id) != key:
            self._drop(key)   # the project has moved on: this is an older branch of it
            return None
        self._entries.move_to_end(key)
        return binding

    def claim(self, model: str, history: Sequence[tuple[str, str]]) -> Binding | None:
        """`lookup`, and the binding is taken away: the project is about to move on, and a second
        request of the same state must not continue it too. The turn's success binds again."""
        binding = self.lookup(model, history)
        if binding is not None:
            self._drop(conversation_key(model, history))
        return binding

    def remember(self, model: str, history_with_answer: Sequence[tuple[str, str]], binding: Binding) -> None:
        """Bind the conversation as it stands after the answer just produced."""
        now = self._clock()
        key = conversation_key(model, history_with_answer)
        old_head = self._heads.get(binding.project_id)
        if old_head is not None and old_head != key:
            self._drop(old_head)
        self._drop(key)   # another project that held this same state no longer heads anything by it
        self._entries[key] = (binding, now)
        self._entries.move_to_end(key)
        self._heads[binding.project_id] = key
        self._changed(key)
        while self._entries:
            oldest_key, (_, stored) = next(iter(self._entries.items()))
            if len(self._entries) <= self._max_entries and not self._expired(stored, now):
                break
            self._drop(oldest_key)

    def unclaim(self, model: str, history: Sequence[tuple[str, str]], binding: Binding) -> None:
        """Give back a claimed binding whose turn produced no answer (a busy pool, a failure before
        the first byte): the client's retry continues the same project instead of starting over.
        Not when the project moved on meanwhile."""
        if binding.project_id not in self._heads:
            self.remember(model, history, binding)

    def forget_project(self, project_id: str) -> None:
        """Drop the binding of a project upstream no longer knows (HTTP 500, §12.5 E21)."""
        head = self._heads.get(project_id)
        if head is not None:
            self._drop(head)

    def _drop(self, key: str) -> None:
        item = self._entries.pop(key, None)
        if item is not None and self._heads.get(item[0].project_id) == key:
            del self._heads[item[0].project_id]
        if item is not None:
            self._changed(key)

    def _changed(self, key: str) -> None:
        for listener in self.listeners:
            listener(key)

    # ------------------------------------------------------------------ persistence

    def saved(self, key: str) -> tuple[Binding, float] | None:
        """The binding stored under a conversation key and when it was stored; None once dropped."""
        return self._entries.get(key)

    def restore(self, key: str, binding: Binding, stored: float) -> bool:
        """Take back a saved binding at start (call in `stored` order, oldest first, so the LRU
        order comes back and a project's newest head wins); False when it has expired meanwhile."""
        if self._expired(stored, self._clock()):
            return False
        older = self._heads.get(binding.project_id)
        if older is not None:
            self._drop(older)
        self._entries[key] = (binding, stored)
        self._heads[binding.project_id] = key
        while len(self._entries) > self._max_entries:
            self._drop(next(iter(self._entries)))
        return True

    def bound_projects(self) -> set[str]:
        """Project ids still bound to a live conversation (never auto-delete these, §5.9)."""
        self._purge()
        return {binding.project_id for binding, _ in self._entries.values()}

    def _expired(self, stored: float, now: float) -> bool:
        return now - stored >= self._max_age

    def _purge(self) -> None:
        now = self._clock()
        for key in [k for k, (_, stored) in self._entries.items() if self._expired(stored, now)]:
            self._drop(key)
