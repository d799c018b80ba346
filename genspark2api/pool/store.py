"""State that survives a restart (issue #12): one SQLite database in `DATA_DIR`.

Who writes what: the cookie pool (state, counters, substitutions), the conversation bindings, the
video jobs (api/videos.py), the media links (core/media_links.py) and stored API responses
(`ResponseStore`, for the future `previous_response_id`). Each owner stays a pure in-memory table
with a `listeners` hook; this module turns its changes into rows.

Rules:

* Opened once at start (`open_store`): WAL, `quick_check`, the schema version and one write are
  tried there, so a corrupt, foreign, newer or unwritable database stops the start with one
  clear `StoreError` (or, with `DATA_DIR_FALLBACK=memory`, the service runs memory-only and says so
  loudly).
* Writes never block the answer path. The trio side only records the newest row per
  (table, key) in a coalescing dict under a lock held for a dict update; one writer thread takes
  the whole dict every `FLUSH_SECONDS` and writes it in one transaction. A change that happens 50
  times between two flushes costs one row write. `close()` (graceful shutdown) flushes what is
  left. A crash loses at most the last `FLUSH_SECONDS` of changes.
* Reads happen at start (`rows`, before serving) and, for stored responses, in a worker thread
  (`fetch`), after the pending writes were consulted so a `put` is visible at once.
* Partial rows: an upsert writes only the columns it names, so another writer (the admin API's
  `label`, `proxy`, `disabled`) and the pool's own row never overwrite each other's columns.
* No secrets at rest beyond what the configuration holds: cookies are stored by key and
  fingerprint, never their text, except those an operator added through the admin API (nothing
  else holds them; the file is created 0600); media links
  by the sha256 of their capability token.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from .bindings import Binding, ConversationBindings
from .cookies import EXTRA_ATTRIBUTES, CookiePool, SavedCookie
from .response_store import MemoryResponses

log = logging.getLogger("genspark2api.store")

DB_NAME = "genspark2api.sqlite3"
SCHEMA_VERSION = 1
FLUSH_SECONDS = 0.25
MAX_PENDING = 100_000          # distinct rows waiting for the writer; beyond that a write is dropped
CLOSE_TIMEOUT = 10.0
RETRY_SECONDS = 2.0            # between tries of a batch the database refused
MEMORY_RESPONSES_MAX = 1000    # stored responses held in memory (all of them without DATA_DIR)
MEMORY_RESPONSES_BYTES = 128 * 1024 * 1024

# table -> its primary key column. Column names below come from this code only, never from a request.
TABLES: dict[str, str] = {
    "cookies": "key",
    "bindings": "conversation",
    "video_jobs": "id",
    "media_links": "token_hash",
    "responses": "id",
}

SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS cookies (
    key TEXT PRIMARY KEY,              -- pool.cookies.cookie_key: a hash of the session id
    fingerprint TEXT NOT NULL DEFAULT '', -- a hash of the whole entry: a changed entry revives a dead cookie
    origin TEXT NOT NULL DEFAULT 'config', -- 'config' rows leave with their GS_COOKIE entry; others are the admin's
    cookie TEXT,                       -- the text of an admin-added cookie only (no configuration holds it)
    line_fingerprint TEXT NOT NULL DEFAULT '', -- a hash of the configuration line: an edited line's proxy/label win
    dead INTEGER NOT NULL DEFAULT 0,
    until REAL NOT NULL DEFAULT 0,     -- end of the cooldown, unix seconds
    reason TEXT,
    successes INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    last_used REAL,
    last_error TEXT,
    substitutions TEXT NOT NULL DEFAULT '{}',   -- JSON {"asked -> served": answers}
    label TEXT,                        -- per-cookie label, proxy and switch of the admin API
    proxy TEXT,
    disabled INTEGER NOT NULL DEFAULT 0,
    updated REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS bindings (
    conversation TEXT PRIMARY KEY,     -- pool.bindings.conversation_key
    cookie_key TEXT NOT NULL,
    project_id TEXT NOT NULL,
    created REAL NOT NULL,
    last_event_index INTEGER NOT NULL,
    stored REAL NOT NULL               -- unix seconds; the LRU order and the age limit
);
CREATE TABLE IF NOT EXISTS video_jobs (
    id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    doc BLOB NOT NULL                  -- api.videos.SavedVideoJob as JSON
);
CREATE TABLE IF NOT EXISTS media_links (
    token_hash TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    kind TEXT NOT NULL,
    cookie_key TEXT,
    content_type TEXT,
    expires REAL NOT NULL              -- unix seconds
);
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY,
    blob BLOB NOT NULL,
    expires_at REAL NOT NULL           -- unix seconds
);
"""


class StoreError(Exception):
    """The state database cannot be used; the message is shown to the operator as is."""


Row = dict[str, Any]


@dataclass(slots=True)
class _Pending:
    delete_first: bool           # drop the stored row before writing `row` (None: only drop it)
    row: Row | None


class StateStore:
    """The interface of both stores. This one keeps nothing (DATA_DIR unset): memory only."""

    persistent = False
    description = "memory only (DATA_DIR is unset): pool state, bindings, video jobs and media links end with the process"

    def upsert(self, table: str, row: Row) -> None:
        """Write the named columns of one row (the others keep their stored values)."""

    def replace(self, table: str, row: Row) -> None:
        """Write one row afresh: columns it does not name get their defaults."""

    def delete(self, table: str, key: str) -> None:
        """Drop one row."""

    def rows(self, table: str) -> list[Row]:
        """Every stored row of `table` (at start, before serving: this reads synchronously)."""
        return []

    async def fetch(self, table: str, key: str) -> Row | None:
        return None

    def close(self) -> None:
        """Flush and stop (graceful shutdown). Writes after this are ignored."""


class SqliteStore(StateStore):
    persistent = True

    def __init__(self, path: Path, connection: sqlite3.Connection) -> None:
        self.path = path
        self.description = f"saved in the SQLite database {path}"
        self._reader = connection            # used under _read_lock, from trio's worker threads
        self._read_lock = threading.Lock()
        self._lock = threading.Lock()        # guards _pending and _closed
        self._pending: dict[tuple[str, str], _Pending] = {}
        self._wake = threading.Event()
        self._closed = False
        self._dropped = 0
        self._last_error_log = 0.0
        self._writer = threading.Thread(target=self._write_loop, name="genspark2api-store", daemon=True)
        self._writer.start()

    # ------------------------------------------------------------------ the trio side: enqueue only

    def upsert(self, table: str, row: Row) -> None:
        self._enqueue(table, row, delete_first=False)

    def replace(self, table: str, row: Row) -> None:
        self._enqueue(table, row, delete_first=True)

    def delete(self, table: str, key: str) -> None:
        self._enqueue(table, {TABLES[table]: key}, delete_first=True, row_kept=False)

    def _enqueue(self, table: str, row: Row, *, delete_first: bool, row_kept: bool = True) -> None:
        key = (table, str(row[TABLES[table]]))
        with self._lock:
            if self._closed:
                return
            old = self._pending.get(key)
            if old is None and len(self._pending) >= MAX_PENDING:
                self._dropped += 1
                if self._dropped == 1:
                    log.error("the state database falls behind (%d rows wait): dropping writes", MAX_PENDING)
                return
            new_row = row if row_kept else None
            if old is not None and not delete_first:
                # An upsert on top of what waits: merge, keep the earlier delete.
                merged = {**old.row, **row} if old.row is not None else row
                self._pending[key] = _Pending(old.delete_first, merged)
            else:  # nothing waits, or this one drops the stored row anyway
                self._pending[key] = _Pending(delete_first, new_row)
        self._wake.set()

    # ------------------------------------------------------------------ the writer thread

    def _write_loop(self) -> None:
        try:
            connection = _connect(self.path)
        except sqlite3.Error as exc:
            log.error("state database writer cannot open %s: %s; changes are not saved", self.path, exc)
            return
        try:
            while True:
                self._wake.wait()
                if not self._is_closed():
                    time.sleep(FLUSH_SECONDS)  # let a burst of changes coalesce into one transaction
                self._wake.clear()
                stop = self._is_closed()   # read after clear(): a close() from now on wakes us again
                if not self._flush(connection):
                    if stop:
                        time.sleep(FLUSH_SECONDS)
                        self._flush(connection)   # a last try of the final batch (a lock, a full disk)
                        return
                    time.sleep(RETRY_SECONDS)
                    self._wake.set()   # retried without waiting for the next change
                    continue
                if stop:
                    return
        finally:
            connection.close()

    def _is_closed(self) -> bool:
        with self._lock:
            return self._closed

    def _flush(self, connection: sqlite3.Connection) -> bool:
        """Write what is pending in one transaction; False when it failed (the batch is kept)."""
        with self._lock:
            batch, self._pending = self._pending, {}
        if not batch:
            return True
        try:
            with connection:  # one transaction, committed or rolled back as a whole
                for (table, key), pending in batch.items():
                    _write(connection, table, key, pending)
        except sqlite3.Error as exc:
            now = time.monotonic()
            if now - self._last_error_log > 60:
                self._last_error_log = now
                log.error("the state database could not be written (%s); retrying", exc)
            with self._lock:  # newer changes win over the failed batch
                for item, pending in batch.items():
                    self._pending.setdefault(item, pending)
            return False
        return True

    # ------------------------------------------------------------------ reads

    def rows(self, table: str) -> list[Row]:
        with self._read_lock:
            cursor = self._reader.execute(f"SELECT * FROM {table}")
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, values, strict=True)) for values in cursor.fetchall()]

    async def fetch(self, table: str, key: str) -> Row | None:
        with self._lock:
            pending = self._pending.get((table, key))
        if pending is not None:
            if pending.row is None:
                return None
            if not pending.delete_first:
                stored = await self._read(table, key)
                return {**(stored or {}), **pending.row}
            return dict(pending.row)
        return await self._read(table, key)

    async def _read(self, table: str, key: str) -> Row | None:
        def read() -> Row | None:
            with self._read_lock:
                cursor = self._reader.execute(f"SELECT * FROM {table} WHERE {TABLES[table]} = ?", (key,))
                values = cursor.fetchone()
                return dict(zip([d[0] for d in cursor.description], values, strict=True)) if values else None

        return await trio.to_thread.run_sync(read)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._wake.set()
        self._writer.join(CLOSE_TIMEOUT)
        if self._writer.is_alive():
            log.error("the state database writer did not finish within %g s; the newest changes may be lost", CLOSE_TIMEOUT)
        with self._read_lock:
            self._reader.close()


def _write(connection: sqlite3.Connection, table: str, key: str, pending: _Pending) -> None:
    key_column = TABLES[table]
    if pending.delete_first:
        connection.execute(f"DELETE FROM {table} WHERE {key_column} = ?", (key,))
    row = pending.row
    if row is None:
        return
    columns = list(row)
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c != key_column) or f"{key_column} = excluded.{key_column}"
    connection.execute(
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)}) "
        f"ON CONFLICT({key_column}) DO UPDATE SET {updates}",
        [row[c] for c in columns],
    )


def _connect(path: Path) -> sqlite3.Connection:
    if not path.exists():
        # Owner-only from the first byte: it may hold cookies an operator added at run time.
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    connection = sqlite3.connect(path, timeout=5.0, isolation_level=None, check_same_thread=False)
    connection.isolation_level = ""   # `with connection:` wraps a transaction (deferred BEGIN)
    connection.execute("PRAGMA synchronous=NORMAL")   # WAL: durable at each checkpoint, never corrupt
    connection.execute("PRAGMA busy_timeout=5000")
    return connection


def open_sqlite(data_dir: Path) -> SqliteStore:
    """Open (or create) the database and prove it usable now, at start; StoreError says why not."""
    path = data_dir / DB_NAME
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"DATA_DIR={str(data_dir)!r} cannot be created: {exc.strerror or exc}") from None
    connection: sqlite3.Connection | None = None
    try:
        connection = _connect(path)
        mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            # Some network file systems cannot share WAL's memory map; the rollback journal is slower but safe.
            log.warning("the state database %s runs in journal mode %s, not WAL (the file system refuses it)", path, mode)
        check = connection.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise StoreError(f"the state database {path} is damaged ({check})")
        version = _stored_version(connection)
        if version is not None and version > SCHEMA_VERSION:
            raise StoreError(f"the state database {path} was written by a newer genspark2api (schema {version}, "
                             f"this one reads {SCHEMA_VERSION})")
        with connection:   # also the write test: a read-only file or directory fails here
            connection.executescript("BEGIN;" + SCHEMA + "DELETE FROM schema_version;"
                                     f"INSERT INTO schema_version (version) VALUES ({SCHEMA_VERSION});COMMIT;")
        with connection:  # committed: this connection stays open as the reader and must hold no lock
            connection.execute("DELETE FROM responses WHERE expires_at <= ?", (time.time(),))
            connection.execute("DELETE FROM media_links WHERE expires <= ?", (time.time(),))
    except sqlite3.Error as exc:
        if connection is not None:
            connection.close()
        raise StoreError(f"the state database {path} cannot be used: {exc}") from None
    except StoreError:
        if connection is not None:
            connection.close()
        raise
    return SqliteStore(path, connection)


def _stored_version(connection: sqlite3.Connection) -> int | None:
    table = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'").fetchone()
    if table is None:
        others = connection.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0]
        if others:
            raise StoreError("the state database holds tables of another program; point DATA_DIR at a directory of its own")
        return None
    row = connection.execute("SELECT max(version) FROM schema_version").fetchone()
    return row[0] if row else None


def open_store(data_dir: str, fallback: str = "fail") -> StateStore:
    """The store of these settings: memory only without DATA_DIR; else SQLite, or StoreError.

    `fallback="memory"` (DATA_DIR_FALLBACK): a database that cannot be used is logged loudly and
    the service runs memory-only instead of refusing to start.
    """
    if not data_dir:
        return StateStore()
    try:
        return open_sqlite(Path(data_dir))
    except StoreError as exc:
        if fallback != "memory":
            raise
        for line in (
            f"DATA_DIR: {exc}",
            "DATA_DIR_FALLBACK=memory: RUNNING WITH MEMORY-ONLY STATE. Dead and cooling cookies, conversation",
            "bindings, video jobs and media links are FORGOTTEN AT THE NEXT RESTART. Fix DATA_DIR and restart.",
        ):
            log.warning(line)
        store = StateStore()
        store.description = f"memory only: DATA_DIR cannot be used ({exc})"
        return store


# ------------------------------------------------------------------------------ stored responses


class ResponseStore:
    """Stored API responses with an expiry: `put(id, blob, expires_at)`, `await get(id)`, `delete(id)`.

    For the Responses API's `previous_response_id` and `GET /v1/responses/{id}`: the door stores
    its own encoding, an opaque blob here. The recent ones are held in memory (MemoryResponses:
    bounded by count and bytes); with DATA_DIR every one is also in the database, so it outlives
    the memory bound and a restart. `expires_at` is unix seconds.
    """

    def __init__(self, store: StateStore, *, clock: Callable[[], float] = time.time,
                 memory_max: int = MEMORY_RESPONSES_MAX, memory_bytes: int = MEMORY_RESPONSES_BYTES) -> None:
        self._store = store
        self._clock = clock
        self._memory = MemoryResponses(max_entries=memory_max, max_bytes=memory_bytes, clock=clock)

    def put(self, response_id: str, blob: bytes, expires_at: float) -> None:
        blob = bytes(blob)
        self._memory.put(response_id, blob, expires_at)
        if self._store.persistent:
            self._store.replace("responses", {"id": response_id, "blob": blob, "expires_at": float(expires_at)})

    async def get(self, response_id: str) -> bytes | None:
        """The blob, or None when unknown or expired."""
        blob = self._memory.get(response_id)
        if blob is not None or not self._store.persistent:
            return blob
        row = await self._store.fetch("responses", response_id)
        if row is None or row["expires_at"] <= self._clock():
            return None
        return bytes(row["blob"])

    def delete(self, response_id: str) -> None:
        self._memory.delete(response_id)
        if self._store.persistent:
            self._store.delete("responses", response_id)


# ------------------------------------------------------------------------------ helpers for owners


def json_text(value: Mapping[str, Any] | Iterable[Any]) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def json_value(text: str | None, default: Any) -> Any:
    """A stored JSON column; a damaged one reads as `default` (never stops the start)."""
    if not text:
        return default
    try:
        return json.loads(text)
    except ValueError:
        return default


# ------------------------------------------------------------------------------ the cookie pool


def cookie_row(saved: SavedCookie, now: float) -> Row:
    row: Row = {
        "key": saved.key, "fingerprint": saved.fingerprint, "dead": int(saved.dead), "until": saved.until,
        "reason": saved.reason, "successes": saved.successes, "failures": saved.failures,
        "consecutive_failures": saved.consecutive_failures, "last_used": saved.last_used,
        "last_error": saved.last_error_detail, "substitutions": json_text(saved.substitutions), "updated": now,
        "origin": saved.origin, "cookie": saved.cookie, "line_fingerprint": saved.line_fingerprint,
    }
    for name, value in saved.extra.items():
        row[name] = int(value) if isinstance(value, bool) else value
    return row


def saved_cookie(row: Row) -> SavedCookie:
    substitutions = json_value(row.get("substitutions"), {})
    if not isinstance(substitutions, dict):
        substitutions = {}
    extra = {name: row[name] for name in EXTRA_ATTRIBUTES if row.get(name) is not None}
    if "disabled" in extra:
        extra["disabled"] = bool(extra["disabled"])
    return SavedCookie(
        key=row["key"], fingerprint=row.get("fingerprint") or "", dead=bool(row.get("dead")),
        until=float(row.get("until") or 0.0), reason=row.get("reason"), successes=int(row.get("successes") or 0),
        failures=int(row.get("failures") or 0), consecutive_failures=int(row.get("consecutive_failures") or 0),
        last_used=row.get("last_used"), last_error_detail=row.get("last_error"),
        substitutions={str(k): int(v) for k, v in substitutions.items() if isinstance(v, int)}, extra=extra,
        origin=row.get("origin") or "config", cookie=row.get("cookie"),
        line_fingerprint=row.get("line_fingerprint") or "",
    )


def attach_pool(store: StateStore, pool: CookiePool, clock: Callable[[], float] = time.time) -> str:
    """Restore the stored state of the configured cookies, drop the rows of cookies no longer
    configured, save every cookie now (a new one joins healthy) and from now on every change.
    Returns a line for the start-up log."""
    if not store.persistent:
        return "cookie pool: memory only"
    restored: list[str] = []
    kept = {s.key for s in pool.snapshot()}
    for row in store.rows("cookies"):
        admin = (row.get("origin") or "config") != "config"
        if row["key"] not in kept and not (admin and row.get("cookie")):
            store.delete("cookies", row["key"])   # its GS_COOKIE entry was removed
            continue
        outcome = pool.restore(saved_cookie(row))   # an admin-added cookie joins again here
        if outcome is not None:
            restored.append(outcome)
    kept = {s.key for s in pool.snapshot()}

    def save(key: str) -> None:
        saved = pool.saved(key)
        if saved is None:
            store.delete("cookies", key)
        else:
            store.upsert("cookies", cookie_row(saved, clock()))

    for key in kept:
        save(key)
    pool.listeners.append(save)
    states = [s.state.value for s in pool.snapshot()]
    revived = restored.count("revived")
    counts = ", ".join(f"{states.count(v)} {v}" for v in ("healthy", "cooling", "dead"))
    line = f"cookie pool: {len(restored)} of {len(kept)} cookie(s) restored ({counts})"
    return line + (f"; {revived} dead cookie(s) revived because their entry changed" if revived else "")


# ------------------------------------------------------------------------------ conversation bindings


def attach_bindings(store: StateStore, bindings: ConversationBindings) -> int:
    """Restore the saved bindings (the expired ones are dropped) and save every change from now on.
    Returns how many came back."""
    restored = 0
    rows = sorted(store.rows("bindings"), key=lambda r: r["stored"])
    for row in rows:
        binding = Binding(row["cookie_key"], row["project_id"], row["created"], int(row["last_event_index"]))
        bindings.restore(row["conversation"], binding, row["stored"])
    for row in rows:  # expired, or an older head of a project restored after it
        if bindings.saved(row["conversation"]) is None:
            store.delete("bindings", row["conversation"])
        else:
            restored += 1

    def save(key: str) -> None:
        item = bindings.saved(key)
        if item is None:
            store.delete("bindings", key)
            return
        binding, stored = item
        store.replace("bindings", {"conversation": key, "cookie_key": binding.cookie_key, "project_id": binding.project_id,
                                   "created": binding.created, "last_event_index": binding.last_event_index,
                                   "stored": stored})

    bindings.listeners.append(save)
    return restored
