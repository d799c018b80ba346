"""DATA_DIR across restarts of the real process (`python -m genspark2api`, stopped with SIGTERM and
started again) against the in-process simulator, which outlives both runs and records what each
sent. The store's parts in process are test_store.py."""

from __future__ import annotations

import logging
import signal
import sqlite3
import time
from pathlib import Path

import httpx
import pytest
import trio
from conftest import ServiceFactory
from test_pool_e2e import (
    MODEL,
    chat_bodies,
    chat_calls,
    cookie,
    key_of,
    project_of,
    service_process,
)

from genspark2api.cli import main
from genspark2api.pool.store import DB_NAME, StoreError
from genspark2api.simulator import Simulator

VIDEO_ASK = "/api/agent/ask_proxy"
VIDEO_POLL = "/api/vg_tasks_status"


async def stop(process: trio.Process, http: httpx.AsyncClient) -> None:
    """SIGTERM, as a container runtime sends it; the process must end cleanly by itself."""
    await http.aclose()  # an idle keep-alive connection would hold hypercorn's graceful wait
    process.send_signal(signal.SIGTERM)
    with trio.fail_after(10):
        assert await process.wait() == 0


async def pool_rows(http: httpx.AsyncClient) -> dict[str, dict]:
    return {row["key"]: row for row in (await http.get("/v1/pool")).json()["data"]}


def chat(*messages: tuple[str, str]) -> dict:
    return {"model": MODEL, "messages": [{"role": role, "content": text} for role, text in messages]}


async def test_dead_and_cooling_cookies_survive_a_restart(sim: Simulator, tmp_path: Path) -> None:
    dead, cooling, ok, new = cookie("not-login"), cookie("rate-limited"), cookie("ok"), cookie("ok")
    data = tmp_path / "data"
    env = {"GS_COOKIE": f"{dead},{cooling},{ok}", "DATA_DIR": str(data)}
    async with service_process(sim, tmp_path / "first.log", **env) as (process, http):
        # One request walks the pool in order: the first cookie dies, the second cools, the third answers.
        assert (await http.post("/v1/chat/completions", json=chat(("user", "hi")))).status_code == 200
        before = await pool_rows(http)
        assert [before[key_of(c)]["state"] for c in (dead, cooling, ok)] == ["dead", "cooling", "healthy"]
        await stop(process, http)

    calls_before = len(chat_calls(sim))
    env["GS_COOKIE"] += f",{new}"   # a cookie added while the service was down joins healthy
    async with service_process(sim, tmp_path / "second.log", **env) as (process, http):
        after = await pool_rows(http)
        for c in (dead, cooling, ok):
            for field in ("state", "reason", "until", "successes", "failures", "last_error"):
                assert after[key_of(c)][field] == before[key_of(c)][field], (field, after[key_of(c)])
        assert after[key_of(new)]["state"] == "healthy" and after[key_of(new)]["successes"] == 0
        # Neither the dead nor the cooling cookie is tried again.
        for text in ("again", "and again"):
            assert (await http.post("/v1/chat/completions", json=chat(("user", text)))).status_code == 200
        assert sorted(chat_calls(sim)[calls_before:]) == sorted([ok, new])
        await stop(process, http)
    assert "3 of 4 cookie(s) restored (2 healthy, 1 cooling, 1 dead)" in (tmp_path / "second.log").read_text()
    with sqlite3.connect(data / DB_NAME) as db:
        assert {k for (k,) in db.execute("SELECT key FROM cookies")} == {key_of(c) for c in (dead, cooling, ok, new)}
        dumped = "\n".join(db.iterdump())
    assert all(c.split("-", 1)[1] not in dumped for c in (dead, cooling, ok, new))   # no cookie text at rest


async def test_a_binding_and_a_video_job_in_progress_survive(sim: Simulator, tmp_path: Path) -> None:
    first, second = cookie("ok"), cookie("ok")
    env = {"GS_COOKIE": f"{first},{second}", "DATA_DIR": str(tmp_path / "data"), "MEDIA_URLS": "upstream"}
    turn = [("user", "Remember the word apricot.")]
    async with service_process(sim, tmp_path / "first.log", **env) as (process, http):
        answer = (await http.post("/v1/chat/completions", json=chat(*turn))).json()["choices"][0]["message"]["content"]
        (owner,) = chat_calls(sim)
        project = next(p.id for p in sim.projects.values() if p.session_id == owner)

        # A video whose task polling takes long: the service is stopped while it runs.
        sim.task_poll_interval = 30.0
        job = (await http.post("/v1/videos", json={"model": "sora-2", "prompt": "a slow sunrise"})).json()
        with trio.fail_after(5):
            while not sim.requests_to(VIDEO_POLL):
                await trio.sleep(0.05)
        assert (await http.get(f"/v1/videos/{job['id']}")).json()["status"] == "in_progress"
        await stop(process, http)
    video_owner = sim.requests_to(VIDEO_POLL)[0].session_id
    polls, asks = len(sim.requests_to(VIDEO_POLL)), len(sim.requests_to(VIDEO_ASK))

    sim.task_poll_interval = 0.05
    async with service_process(sim, tmp_path / "second.log", **env) as (process, http):
        # The follow-up continues the same project on the same cookie.
        follow_up = chat(*turn, ("assistant", answer), ("user", "Which word?"))
        assert (await http.post("/v1/chat/completions", json=follow_up)).status_code == 200
        assert chat_calls(sim)[-1] == owner and project_of(chat_bodies(sim)[-1]) == project

        # The job resumes polling its tasks on the cookie that owns them, and completes.
        with trio.fail_after(10):
            while (state := (await http.get(f"/v1/videos/{job['id']}")).json())["status"] not in ("completed", "failed"):
                await trio.sleep(0.1)
        assert state["status"] == "completed" and state["progress"] == 100, state
        resumed = sim.requests_to(VIDEO_POLL)[polls:]
        assert resumed and {r.session_id for r in resumed} == {video_owner}
        assert len(sim.requests_to(VIDEO_ASK)) == asks + 1   # the chat follow-up only: no second submission
        content = await http.get(f"/v1/videos/{job['id']}/content")
        assert content.status_code == 200 and content.content[4:8] == b"ftyp"
        await stop(process, http)
    assert "resumed 1 video job(s)" in (tmp_path / "second.log").read_text()


def test_a_corrupt_database_stops_the_start_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / DB_NAME).write_bytes(b"\x00garbage, not SQLite\x00" * 200)
    # main() is what `python genspark2api.py` exits with (raise SystemExit(main())).
    assert main([], {"GS_COOKIE": "ok-1", "HOST": "127.0.0.1", "PORT": "0", "DATA_DIR": str(tmp_path)}) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert f"genspark2api: the state database {tmp_path / DB_NAME} cannot be used: file is not a database" in err
    assert "DATA_DIR_FALLBACK=memory" in err


async def test_the_memory_fallback_starts_and_says_so(make_service: ServiceFactory, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / DB_NAME).write_bytes(b"\x00garbage, not SQLite\x00" * 200)
    with caplog.at_level(logging.WARNING, logger="genspark2api.store"):
        service = await make_service(DATA_DIR=str(tmp_path), DATA_DIR_FALLBACK="memory")
    assert "RUNNING WITH MEMORY-ONLY STATE" in caplog.text and "file is not a database" in caplog.text
    assert not service.runtime.store.persistent
    service.runtime.responses.put("resp_1", b"{}", time.time() + 60)   # stored responses work memory-only
    assert await service.runtime.responses.get("resp_1") == b"{}"
    response = await service.openai().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert response.choices[0].message.content
    assert (tmp_path / DB_NAME).read_bytes().startswith(b"\x00garbage")   # left alone for the operator
    with pytest.raises(StoreError, match="file is not a database"):   # without the fallback: no start
        await make_service(DATA_DIR=str(tmp_path))
