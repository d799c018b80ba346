"""Drift notices: what Genspark sent that no adapter knows, logged once per kind and counted.

Upstream changes without notice (a new field in May 2025, §4.1 E6; the whole `ai_chat` stream by
September 2026, §12.1). When that happens the answer is usually still "successful", only emptier
or wrong, and nothing says why. Every place that drops an upstream event, field or error shape it
does not understand reports it here; the first sighting of each `(kind, name)` is one warning log
line with a redacted sample, later ones only count. `GET /v1/upstream` lists them.

`DriftRegistry` is pure (clock passed in, no I/O); the module-level `notice` is the one shared
registry plus the log line, so an adapter's hook is one call and needs no runtime handed down, the
way a logger needs none.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import msgspec

from ..redact import redact_json, redact_text

log = logging.getLogger("genspark2api.drift")

MAX_KINDS = 200          # distinct (kind, name) pairs kept; a flood of made-up names cannot grow memory
SAMPLE_CHARS = 400       # of the redacted JSON of the first sighting
OVERFLOW = ("overflow", "(more kinds than MAX_KINDS)")

# What the adapters know, so it is never reported. The G1 names are §3.3/§3.4; the §12.4 names are
# the September 2026 `ai_chat` stream (genspark-protocol.md §12.4.1, §12.4.2, §12.7.2).
KNOWN_EVENT_TYPES = frozenset({
    "project_start", "agent_notification", "message_start", "message_field", "message_field_delta",
    "message_result", "project_field", "error",
})
KNOWN_PROJECT_FIELDS = frozenset({
    "name", "status", "image_generation_agent.results", "video_generation_agent.results",
})
KNOWN_MESSAGE_FIELDS = frozenset({
    # G2 / §12.4
    "content", "reasoning_content", "thinking", "_updatetime",
    "session_state.session_limit_message", "session_state.search_queries",
    # G1 / §3.3
    "session_state.answer", "session_state.answerthink", "session_state.models", "session_state.thinking",
    "session_state.answer_is_finished", "session_state.answerthink_is_started",
    "session_state.answerthink_is_finished", "session_state.search_status_top_bar_data",
})
# §3.3: Mixture-of-Agents drafts (`session_state.layer_<n>_answer_<i>`) and the streaming extras a
# client must not show (`streaming_markmap`, `streaming_detail_answer[0]`).
KNOWN_FIELD_PREFIXES = ("session_state.layer", "session_state.streaming_")
# §2.3: the G1 task-status stream.
KNOWN_TASK_EVENTS = frozenset({"TASKS_STATUS_UPDATE", "TASKS_STATUS_COMPLETE"})


@dataclass(slots=True)
class DriftEntry:
    kind: str             # event_type | project_field | message_field | message_field_delta | task_event | http
    name: str
    count: int
    first_seen: float
    last_seen: float
    sample: str           # redacted, truncated JSON of the first sighting


class DriftRegistry:
    """Counts per `(kind, name)`, at most `max_kinds` of them. Pure: the clock is passed in."""

    def __init__(self, *, max_kinds: int = MAX_KINDS, sample_chars: int = SAMPLE_CHARS,
                 clock: Callable[[], float] = time.time) -> None:
        self.max_kinds = max_kinds
        self.sample_chars = sample_chars
        self.clock = clock
        self._entries: dict[tuple[str, str], DriftEntry] = {}

    def notice(self, kind: str, name: str, sample: Any) -> bool:
        """Count one sighting; True the first time this `(kind, name)` is seen (log it then)."""
        now = self.clock()
        key = (kind, name[:200])
        entry = self._entries.get(key)
        if entry is None and len(self._entries) >= self.max_kinds:
            key = OVERFLOW
            entry = self._entries.get(key)
        if entry is not None:
            entry.count += 1
            entry.last_seen = now
            return False
        self._entries[key] = DriftEntry(key[0], key[1], 1, now, now, self.sample(sample))
        return True

    def sample(self, value: Any) -> str:
        """Redacted JSON, cut to `sample_chars` (secrets are removed before cutting, so a cut cannot
        leave half a cookie behind)."""
        if isinstance(value, msgspec.Struct):
            value = {k: v for k, v in msgspec.structs.asdict(value).items() if v is not None}
        if isinstance(value, bytes):
            text = redact_text(value.decode("utf-8", "replace"))
        else:
            try:
                text = msgspec.json.encode(redact_json(value)).decode()
            except (TypeError, msgspec.EncodeError):
                text = redact_text(repr(value))
        return text if len(text) <= self.sample_chars else text[: self.sample_chars] + "…"

    def sample_of(self, kind: str, name: str) -> str:
        entry = self._entries.get((kind, name[:200])) or self._entries.get(OVERFLOW)
        return entry.sample if entry is not None else ""

    def snapshot(self) -> list[DriftEntry]:
        return sorted(self._entries.values(), key=lambda e: (-e.count, e.kind, e.name))

    def clear(self) -> None:
        self._entries.clear()


REGISTRY = DriftRegistry()


@contextmanager
def capture() -> Iterator[DriftRegistry]:
    """Count into a fresh registry for a while (a replay, a test), then put the shared one back."""
    global REGISTRY
    saved, REGISTRY = REGISTRY, DriftRegistry()
    try:
        yield REGISTRY
    finally:
        REGISTRY = saved


def notice(kind: str, name: str, sample: Any) -> bool:
    """Report something unknown from upstream; the first sighting of a kind is one WARNING line."""
    first = REGISTRY.notice(kind, name, sample)
    if first:
        log.warning("upstream drift: unknown %s %r (logged once; counted in GET /v1/upstream); sample: %s",
                    kind, name, REGISTRY.sample_of(kind, name))
    return first


# ------------------------------------------------------------------ the adapters' one-line hooks

# The raw JSON of the events being handled, set by upstream.UpstreamStream for each body chunk it
# decodes (in the task that feeds the translator), so a sample shows the keys the loose
# `UpstreamEvent` struct drops, which are the interesting part of an unknown event. A chunk may
# carry several events: the sample is the first of its type (and field name) among them.
current_payload: ContextVar[tuple[bytes, ...]] = ContextVar("drift_current_payload", default=())


def _sample(event: Any) -> Any:
    kind = getattr(event, "type", None)
    field = getattr(event, "field_name", None)
    for raw in current_payload.get():
        try:
            doc = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            continue
        if isinstance(doc, dict) and doc.get("type", "") == kind and doc.get("field_name") == field:
            return doc
    return event


def unhandled_event(event: Any) -> None:
    """An answer event the translator dropped: report its type, or a `project_field` it does not know."""
    kind = getattr(event, "type", "") or "(no type)"
    if kind not in KNOWN_EVENT_TYPES:
        notice("event_type", kind, _sample(event))
    elif kind == "project_field":
        name = getattr(event, "field_name", None) or "(no field_name)"
        if name not in KNOWN_PROJECT_FIELDS:
            notice("project_field", name, _sample(event))


def unhandled_field(event: Any) -> None:
    """A `message_field` / `message_field_delta` whose `field_name` the translator dropped."""
    name = getattr(event, "field_name", None) or "(no field_name)"
    if name not in KNOWN_MESSAGE_FIELDS and not name.startswith(KNOWN_FIELD_PREFIXES):
        notice(getattr(event, "type", "") or "message_field", name, _sample(event))


def unhandled_task_event(event: Any) -> None:
    """A task-status line (`ig_tasks_status` / `vg_tasks_status`) the board could not read."""
    if isinstance(event, dict):
        kind = event.get("type")
        name = str(kind) if kind else "{" + ",".join(sorted(str(k) for k in event)[:8]) + "}"
    else:
        name = type(event).__name__
    if name not in KNOWN_TASK_EVENTS:
        notice("task_event", name, event)


def as_rows() -> list[dict[str, Any]]:
    """For `GET /v1/upstream`."""
    return [
        {"kind": e.kind, "name": e.name, "count": e.count, "first_seen": e.first_seen,
         "last_seen": e.last_seen, "sample": e.sample}
        for e in REGISTRY.snapshot()
    ]
