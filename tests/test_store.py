"""The state store (pool/store.py) in process: rows, coalescing, start errors, stored responses,
and each owner's save and restore. The restart of the real process is test_persistence.py."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from conftest import FAKE_T0, FakeClock

from genspark2api.core.media_links import MediaLinks, attach_links, token_digest
from genspark2api.pool.bindings import Binding, ConversationBindings
from genspark2api.pool.cookies import (
    CookiePool,
    CookieState,
    cookie_key,
    normalize_cookie_entry,
)
from genspark2api.pool.store import (
    DB_NAME,
    ResponseStore,
    SqliteStore,
    StateStore,
    StoreError,
    attach_bindings,
    attach_pool,
    open_sqlite,
    open_store,
)
from genspark2api.upstream.classify import Failure, FailureKind

DEAD = Failure(FailureKind.ACCOUNT_DEAD, "cookie_not_logged_in", "not login")
LIMITED = Failure(FailureKind.RATE_LIMITED, "upstream_rate_limited", "Rate limit exceeded cf1")


def key(entry: str) -> str:
    return cookie_key(normalize_cookie_entry(entry) or "")


def reopen(store: SqliteStore) -> SqliteStore:
    """What the next process sees: everything flushed, the file opened afresh."""
    store.close()
    return open_sqlite(store.path.parent)


# ------------------------------------------------------------------------------ the store itself


def test_writes_coalesce_and_reach_the_file_on_close(tmp_path: Path) -> None:
    store = open_sqlite(tmp_path)
    for n in range(50):
        store.upsert("cookies", {"key": "k1", "successes": n})
    store.upsert("cookies", {"key": "k1", "label": "work"})   # a partial row: merged, not replacing
    store.upsert("cookies", {"key": "k2"})
    store.delete("cookies", "k2")
    store = reopen(store)
    rows = {r["key"]: r for r in store.rows("cookies")}
    assert set(rows) == {"k1"} and rows["k1"]["successes"] == 49 and rows["k1"]["label"] == "work"
    # An upsert leaves columns it does not name alone; replace resets them.
    store.upsert("cookies", {"key": "k1", "successes": 50})
    store = reopen(store)
    assert store.rows("cookies")[0]["label"] == "work"
    store.replace("cookies", {"key": "k1", "successes": 1})
    store = reopen(store)
    assert store.rows("cookies")[0]["label"] is None
    assert sqlite3.connect(tmp_path / DB_NAME).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.close()
    store.upsert("cookies", {"key": "late"})   # after close: ignored, never raises


def test_a_corrupt_file_a_newer_schema_and_a_foreign_database_stop_the_start(tmp_path: Path) -> None:
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / DB_NAME).write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="cannot be used: file is not a database"):
        open_store(str(tmp_path / "corrupt"))
    newer = tmp_path / "newer"
    open_sqlite(newer).close()
    with sqlite3.connect(newer / DB_NAME) as db:
        db.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(StoreError, match="newer genspark2api"):
        open_store(str(newer))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    with sqlite3.connect(foreign / DB_NAME) as db:
        db.execute("CREATE TABLE notes (x)")
    with pytest.raises(StoreError, match="tables of another program"):
        open_store(str(foreign))
    # The fallback: memory only, and it says so.
    fallback = open_store(str(tmp_path / "corrupt"), "memory")
    assert not fallback.persistent and "DATA_DIR cannot be used" in fallback.description


def test_a_directory_that_cannot_be_made_stops_the_start(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(StoreError, match=r"DATA_DIR='.*a-file/state' cannot be created: Not a directory"):
        open_store(str(tmp_path / "a-file" / "state"))
    # A database path that is a directory: sqlite cannot open it.
    (tmp_path / "odd" / DB_NAME).mkdir(parents=True)
    with pytest.raises(StoreError, match="cannot be used: unable to open database file"):
        open_store(str(tmp_path / "odd"))


async def test_stored_responses_in_memory_and_on_disk(tmp_path: Path) -> None:
    clock = FakeClock(time.time())   # the database drops expired rows by the real clock when it opens
    t0 = clock.now
    for store in (StateStore(), open_sqlite(tmp_path)):
        responses = ResponseStore(store, clock=clock, memory_max=3)
        responses.put("resp_1", b"one", t0 + 60)
        responses.put("resp_2", b"two", t0 + 10)
        assert await responses.get("resp_1") == b"one"       # visible before any flush
        assert await responses.get("resp_unknown") is None
        responses.delete("resp_1")
        assert await responses.get("resp_1") is None
        clock.advance(11)
        assert await responses.get("resp_2") is None          # expired
        clock.now = t0
        if store.persistent:
            responses.put("resp_3", b"three", t0 + 60)
            reopened = reopen(store)                            # type: ignore[arg-type]
            again = ResponseStore(reopened, clock=clock)
            assert await again.get("resp_3") == b"three" and await again.get("resp_1") is None
            reopened.close()
        else:
            for n in range(5):
                responses.put(f"many_{n}", b"x", t0 + 100 + n)
            assert await responses.get("many_0") is None and await responses.get("many_4") == b"x"


# ------------------------------------------------------------------------------ the owners


async def test_cookie_states_survive_and_follow_the_configuration(tmp_path: Path) -> None:
    clock = FakeClock()
    store = open_sqlite(tmp_path)
    pool = CookiePool(["dead-1", "cool-1", "ok-1"], clock=clock)
    attach_pool(store, pool, clock)
    pool.release(pool.acquire(prefer=key("dead-1")), DEAD)
    pool.release(pool.acquire(prefer=key("cool-1")), LIMITED)
    pool.release(pool.acquire(prefer=key("ok-1")))
    pool.note_served(key("ok-1"), "gpt-5.4", "gpt-5", substituted=True)
    store = reopen(store)

    clock.advance(60)
    again = CookiePool(["dead-1", "cool-1", "ok-1"], clock=clock)
    line = attach_pool(store, again, clock)
    assert "3 of 3 cookie(s) restored (1 healthy, 1 cooling, 1 dead)" in line
    states = {s.key: s for s in again.snapshot()}
    assert states[key("dead-1")].state is CookieState.DEAD and states[key("dead-1")].reason == "cookie_not_logged_in"
    cooling = states[key("cool-1")]
    assert cooling.state is CookieState.COOLING and cooling.until == pytest.approx(FAKE_T0 + 600)
    assert states[key("ok-1")].successes == 1 and states[key("ok-1")].substitutions == {"gpt-5.4 -> gpt-5": 1}
    assert again.revive(key("dead-1")) and not again.revive("no-such-key")
    store = reopen(store)

    # dead-1 was revived; cool-1 leaves the configuration (and the store), new-1 joins healthy.
    third = CookiePool(["dead-1", "ok-1", "new-1"], clock=clock)
    attach_pool(store, third, clock)
    assert {s.key: s.state for s in third.snapshot()} == {
        key("dead-1"): CookieState.HEALTHY, key("ok-1"): CookieState.HEALTHY, key("new-1"): CookieState.HEALTHY}
    store = reopen(store)
    assert {r["key"] for r in store.rows("cookies")} == {key("dead-1"), key("ok-1"), key("new-1")}
    assert all("dead-1" not in str(r) for r in store.rows("cookies"))   # never the cookie text
    store.close()


async def test_a_dead_cookie_whose_entry_changed_comes_back(tmp_path: Path) -> None:
    store = open_sqlite(tmp_path)
    pool = CookiePool(["session_id=acct-1; theme=dark"])
    attach_pool(store, pool)
    pool.release(pool.acquire(), DEAD)
    store = reopen(store)
    same = CookiePool(["session_id=acct-1; theme=dark"])
    attach_pool(store, same)
    assert same.snapshot()[0].state is CookieState.DEAD
    store = reopen(store)
    relogged = CookiePool(["session_id=acct-1; theme=light"])   # same account, a new entry
    assert "1 dead cookie(s) revived" in attach_pool(store, relogged)
    assert relogged.snapshot()[0].state is CookieState.HEALTHY
    store.close()


async def test_bindings_survive_with_their_order_and_age(tmp_path: Path) -> None:
    clock = FakeClock()
    store = open_sqlite(tmp_path)
    bindings = ConversationBindings(clock=clock, max_age=100)
    attach_bindings(store, bindings)
    turn = [("user", "hi"), ("assistant", "hello")]
    bindings.remember("m", turn, Binding("c1", "p1", FAKE_T0, last_event_index=7))
    clock.advance(50)
    bindings.remember("m", [("user", "other")], Binding("c2", "p2", clock()))
    claimed = bindings.claim("m", [("user", "gone")])
    assert claimed is None
    store = reopen(store)
    again = ConversationBindings(clock=clock, max_age=100)
    assert attach_bindings(store, again) == 2
    assert again.lookup("m", turn) == Binding("c1", "p1", FAKE_T0, last_event_index=7)
    store = reopen(store)
    clock.advance(60)   # p1's binding is 110 s old now: expired, and it leaves the store
    third = ConversationBindings(clock=clock, max_age=100)
    assert attach_bindings(store, third) == 1 and third.lookup("m", turn) is None
    store = reopen(store)
    assert len(store.rows("bindings")) == 1
    store.close()


async def test_media_links_survive_by_token_digest(tmp_path: Path) -> None:
    mono = FakeClock(1000.0)
    wall = FakeClock(time.time())   # the database drops expired links by the real clock when it opens
    store = open_sqlite(tmp_path)
    pool = CookiePool(["ok-1"])
    links = MediaLinks(100, clock=mono)
    attach_links(store, links, pool, wall)
    lease = pool.acquire()
    token = links.add("https://genspark.test/file.png", "image", lease, "image/png")
    short = links.add("https://genspark.test/old.png", "image", None, None)
    store = reopen(store)
    assert {r["token_hash"] for r in store.rows("media_links")} == {token_digest(token), token_digest(short)}
    assert all(token not in str(r) for r in store.rows("media_links"))
    # The next process: another monotonic origin, 40 s later on the wall clock.
    mono2, wall.now = FakeClock(5.0), wall.now + 40
    again = MediaLinks(100, clock=mono2)
    assert attach_links(store, again, pool, wall) == 2
    link = again.get(token)
    assert link is not None and link.cookie == lease.cookie and link.expires == pytest.approx(5.0 + 60)
    mono2.advance(61)
    assert again.get(token) is None
    store.close()


async def test_video_jobs_come_back_finished_resumable_or_interrupted(tmp_path: Path) -> None:
    from genspark2api.api.videos import VideoJobStore, parse_video_job
    from genspark2api.core.generation import Generated

    clock = FakeClock(time.time())
    store = open_sqlite(tmp_path)
    pool = CookiePool(["ok-1"])
    jobs = VideoJobStore(10, 3600, clock, store)
    request = parse_video_job({"prompt": "a cat", "seconds": "8", "size": "1280x720"})
    done, running, early = jobs.create(request), jobs.create(request), jobs.create(request)
    lease = pool.acquire(capped=False)
    done.complete(Generated(("https://genspark.test/v.mp4",), (), "proj-1", lease), clock())
    jobs.changed(done)
    running.status, running.progress, running.task_ids, running.cookie_key = "in_progress", 40, ("t1",), lease.key
    jobs.changed(running)
    store.upsert("video_jobs", {"id": "video_broken", "created_at": clock(), "doc": b"{not json"})
    store = reopen(store)

    again = VideoJobStore(10, 3600, clock, store)
    resumable = again.restore(pool.detached_lease)
    assert [j.id for j in resumable] == [running.id] and resumable[0].task_ids == ("t1",)
    restored = again.get(done.id)
    assert restored.status == "completed" and restored.result is not None
    assert restored.result.urls == ("https://genspark.test/v.mp4",) and restored.result.lease.cookie == lease.cookie
    assert restored.view(3600).seconds == "8" and restored.view(3600).size == "1280x720"
    interrupted = again.get(early.id)
    assert interrupted.status == "failed" and interrupted.error.code == "job_interrupted"
    store = reopen(store)
    assert {r["id"] for r in store.rows("video_jobs")} == {done.id, running.id, early.id}
    store.close()


async def test_a_reload_saves_removals_and_additions_at_once(tmp_path: Path) -> None:
    store = open_sqlite(tmp_path)
    pool = CookiePool(["ok-1", "ok-2"])
    attach_pool(store, pool)
    pool.reload(["ok-2", "ok-3"])   # SIGHUP or the cookie file watcher
    store = reopen(store)
    assert {r["key"] for r in store.rows("cookies")} == {key("ok-2"), key("ok-3")}
    store.close()


async def test_what_an_operator_changed_survives_a_restart(tmp_path: Path) -> None:
    # The admin API's changes "persist in DATA_DIR" (issue #12): an added cookie (whose text no
    # configuration holds), a disabled one, a proxy and a label, and a removal stays removed.
    clock = FakeClock()
    store = open_sqlite(tmp_path)
    pool = CookiePool(["ok-1", "ok-2"], clock=clock)
    attach_pool(store, pool, clock)
    assert pool.add(["session_id=added-1"], label="spare") == [(key("added-1"), "added")]
    assert pool.set_disabled(key("ok-2"), True)
    assert pool.configure(key("ok-1"), proxy="socks5://127.0.0.1:1080", label="alice")
    store = reopen(store)

    again = CookiePool(["ok-1", "ok-2"], clock=clock)
    attach_pool(store, again, clock)
    states = {s.key: s for s in again.snapshot()}
    assert set(states) == {key("ok-1"), key("ok-2"), key("added-1")}
    assert states[key("added-1")].label == "spare" and states[key("added-1")].state is CookieState.HEALTHY
    assert again.cookie_of(key("added-1")) == "session_id=added-1"
    assert states[key("ok-2")].state is CookieState.DISABLED
    assert states[key("ok-1")].label == "alice" and again.proxy_for("session_id=ok-1") == "socks5://127.0.0.1:1080"
    # Only the operator's own cookie has its text at rest, and the file is the owner's alone.
    rows = {r["key"]: r for r in store.rows("cookies")}
    assert rows[key("added-1")]["cookie"] == "session_id=added-1" and rows[key("ok-1")]["cookie"] is None
    assert (tmp_path / "genspark2api.sqlite3").stat().st_mode & 0o077 == 0
    # Removing the added cookie removes its row (and text) too.
    assert again.remove(key("added-1"))
    store = reopen(store)
    assert key("added-1") not in {r["key"] for r in store.rows("cookies")}


async def test_an_edited_lines_proxy_wins_over_the_stored_one(tmp_path: Path) -> None:
    # The review's reproduction: a stored proxy outlived the edit of its line across a restart.
    clock = FakeClock()
    store = open_sqlite(tmp_path)
    pool = CookiePool(["ok-1 | proxy=socks5://old:1080", "ok-2 | proxy=socks5://keep:1080"], clock=clock)
    attach_pool(store, pool, clock)
    pool.configure(key("ok-2"), label="mine")
    store = reopen(store)
    again = CookiePool(["ok-1 | proxy=socks5://new:1080", "ok-2 | proxy=socks5://keep:1080"], clock=clock)
    attach_pool(store, again, clock)
    assert again.proxy_for("session_id=ok-1") == "socks5://new:1080"
    assert again.proxy_for("session_id=ok-2") == "socks5://keep:1080" and again.status(key("ok-2")).label == "mine"


def test_a_refused_write_is_retried_without_waiting_for_another_change(tmp_path: Path, monkeypatch) -> None:
    from genspark2api.pool import store as store_module

    real = store_module._write
    refusals = [sqlite3.OperationalError("database is locked")]

    def flaky(connection, table, key, pending):
        if refusals:
            raise refusals.pop()
        real(connection, table, key, pending)

    monkeypatch.setattr(store_module, "_write", flaky)
    monkeypatch.setattr(store_module, "RETRY_SECONDS", 0.05)
    store = open_sqlite(tmp_path)
    store.upsert("cookies", {"key": "k1", "successes": 7})
    deadline = time.monotonic() + 5
    seen: list[dict] = []
    while time.monotonic() < deadline and not seen:   # no further change is made meanwhile
        time.sleep(0.05)
        seen = list(sqlite3.connect(tmp_path / DB_NAME).execute("SELECT key, successes FROM cookies"))
    store.close()
    assert not refusals and seen == [("k1", 7)]
