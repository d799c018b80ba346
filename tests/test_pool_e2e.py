"""The cookie pool end to end: the service against the simulator, cookies selecting conditions.

Each cookie's session id starts with a simulator scenario (scenarios.py) and ends in a long
random tail, so a leak of a whole cookie into logs, errors or `/v1/pool` is easy to spot.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import trio
from conftest import FakeClock, Service, free_port, sse_frames, start_service

from genspark2api.pool.cookies import cookie_key, normalize_cookie_entry
from genspark2api.redact import mask_cookie
from genspark2api.simulator import Simulator

MODEL = "gpt-5.4"
CHAT_PATHS = ("/api/copilot/ask", "/api/agent/ask_proxy")
# Words and statuses that make one-api / new-api disable a whole channel (openai-compat.md §2.5 #21).
CHANNEL_KILLERS = ("quota", "credit", "balance", "permission denied", "api key not valid", "insufficient")
CHANNEL_KILLER_TYPES = ("insufficient_quota", "authentication_error", "permission_error")


def cookie(prefix: str) -> str:
    """A session id selecting the simulator scenario `prefix`, long and unmistakable."""
    return f"{prefix}-{uuid.uuid4().hex}{uuid.uuid4().hex}"


def key_of(value: str) -> str:
    return cookie_key(normalize_cookie_entry(value) or "")


def chat_calls(sim: Simulator) -> list[str | None]:
    """The session ids of the upstream chat calls, in order."""
    return [r.session_id for r in sim.requests if r.path in CHAT_PATHS]


def chat_bodies(sim: Simulator) -> list[dict]:
    return [r.json for r in sim.requests if r.path in CHAT_PATHS]


def project_of(body: dict) -> str | None:
    """The project a chat call continues: `current_query_string` id=… (copilot), `project_id` (ai_chat)."""
    if "current_query_string" in body:
        return parse_qs(body["current_query_string"]).get("id", [None])[0]
    return body.get("project_id")


async def wait_for(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.01)


@dataclass
class Reply:
    status: int
    headers: httpx.Headers
    text: str = ""
    error: dict | None = None
    after_answer: bool = False   # the error came as an event inside a 200 stream
    chunks: list[dict] = field(default_factory=list)


async def ask(
    service: Service, *, stream: bool = False, messages: list[dict] | None = None, question: str = "hello"
) -> Reply:
    body = {"model": MODEL, "messages": messages or [{"role": "user", "content": question}], "stream": stream}
    async with service.http() as http:
        response = await http.post(f"{service.settings.route_prefix}/v1/chat/completions", json=body)
    if response.status_code != 200:
        return Reply(response.status_code, response.headers, error=response.json()["error"])
    if not stream:
        return Reply(200, response.headers, text=response.json()["choices"][0]["message"]["content"])
    frames = sse_frames(response.content)
    assert frames[-1] == b"data: [DONE]"
    reply = Reply(200, response.headers)
    for frame in frames[:-1]:
        if frame.startswith(b":"):
            continue
        doc = json.loads(frame.removeprefix(b"data: "))
        if "error" in doc:
            reply.error, reply.after_answer = doc["error"], True
        else:
            reply.chunks.append(doc)
            reply.text += "".join(c["delta"].get("content") or "" for c in doc["choices"])
    return reply


def answered(reply: Reply) -> bool:
    return reply.status == 200 and reply.error is None and "You said" in reply.text


def assert_neutral(reply: Reply) -> None:
    """An error an aggregator in front of us will retry, not take as a dead channel."""
    assert reply.error is not None
    assert reply.status not in (401, 403)
    assert set(reply.error) == {"message", "type", "param", "code"}
    assert reply.error["type"] not in CHANNEL_KILLER_TYPES and reply.error["code"]
    message = reply.error["message"].lower()
    assert not [word for word in CHANNEL_KILLERS if word in message], message


async def pool_rows(service: Service) -> dict[str, dict]:
    """GET /v1/pool, by cookie key; asserts that no whole cookie is in it."""
    async with service.http() as http:
        response = await http.get("/v1/pool")
    assert response.status_code == 200
    service.pool_text = response.text  # type: ignore[attr-defined]
    for value in service.secrets:  # type: ignore[attr-defined]
        assert value not in response.text
    return {row["key"]: row for row in response.json()["data"]}


async def serve(
    nursery: trio.Nursery, sim: Simulator, cookies: list[str], runtime_kwargs: dict | None = None, **env: str
) -> Service:
    full = {"GENSPARK_BASE_URL": sim.url, "GS_COOKIE": ",".join(cookies), "REQUEST_RATE_LIMIT": "0"}  # type: ignore[attr-defined]
    full.update(env)
    service = await start_service(nursery, full, **(runtime_kwargs or {}))
    service.secrets = list(cookies)  # type: ignore[attr-defined]
    return service


class Tamper(httpx.AsyncBaseTransport):
    """The real transport, with a hook that may rewrite or delay a request on its way upstream."""

    def __init__(self, hook: Callable[[httpx.Request], Awaitable[httpx.Request]]) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.hook = hook

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.inner.handle_async_request(await self.hook(request))

    async def aclose(self) -> None:
        await self.inner.aclose()


def with_json(request: httpx.Request, body: dict) -> httpx.Request:
    headers = [(k, v) for k, v in request.headers.multi_items() if k.lower() != "content-length"]
    return httpx.Request(
        request.method, request.url, headers=headers, content=json.dumps(body).encode(), extensions=request.extensions
    )


# ------------------------------------------------------------------------------ one bad cookie


BASE_ENV = {"RATE_LIMIT_COOKIE_LOCK_DURATION": "321", "NETWORK_COOLDOWN_SECONDS": "7", "UPSTREAM_IDLE_TIMEOUT": "1.5"}  # only `stall` should hit it, even on a loaded machine

# (scenario, protocol, state, reason, cooldown in seconds or None when dead): genspark-protocol.md §4.1.
SIGNALS = [
    ("rate-limited", "ai_chat", "cooling", "upstream_rate_limited", 321),           # E3
    ("rate-limited", "copilot", "cooling", "upstream_rate_limited", 321),           # E3
    ("error-event", "ai_chat", "cooling", "upstream_rate_limited", 321),            # E12 throttle text
    ("free-limit", "ai_chat", "cooling", "upstream_account_exhausted", 86400),      # E5: no reset given
    ("free-limit", "copilot", "cooling", "upstream_account_exhausted", 86400),
    ("free-limit-reset", "ai_chat", "cooling", "upstream_account_exhausted", 10800),  # E5 + {time:now+3h}
    ("free-limit-reset", "copilot", "cooling", "upstream_account_exhausted", 10800),
    ("session-limit", "copilot", "cooling", "upstream_session_limit", 7200),        # E9: {time:now+2h}
    ("session-limit", "ai_chat", "cooling", "upstream_session_limit", 7200),
    ("not-login", "ai_chat", "dead", "upstream_not_logged_in", None),               # E4
    ("not-login", "copilot", "dead", "upstream_not_logged_in", None),
    # §12.5 E22: a missing User-Agent, not a dead session (supersedes §4.1 E11): a short rest only.
    ("bad-request-cf", "ai_chat", "cooling", "upstream_missing_user_agent", 7),
    # §12.5 in-band signals: HTTP 200 answers with a message id whose text is the signal.
    ("chat-5h-limit", "ai_chat", "cooling", "upstream_5h_limit", 1800),            # E13, no reset
    ("chat-5h-limit-reset", "ai_chat", "cooling", "upstream_5h_limit", 10800),     # E13 + fixed Resets
    ("approaching-limit", "ai_chat", "cooling", "upstream_5h_limit", 1800),        # E14a
    ("placeholder", "ai_chat", "cooling", "upstream_placeholder", 60),             # E15
    ("credits-gone", "ai_chat", "cooling", "upstream_credits_exhausted", 86400),   # E16
    ("throttle-text", "ai_chat", "cooling", "upstream_placeholder", 60),           # E17: a looser match
    ("cf-challenge", "ai_chat", "cooling", "upstream_cloudflare_challenge", 7),     # E1: network class
    ("cf-block", "ai_chat", "cooling", "upstream_cloudflare_block", 7),             # E2: network class
    ("cf-block", "copilot", "cooling", "upstream_cloudflare_block", 7),
    ("empty-answer", "ai_chat", "cooling", "upstream_empty_answer", 7),
    ("empty-answer", "copilot", "cooling", "upstream_empty_answer", 7),
    ("stall", "ai_chat", "cooling", "upstream_timeout", 7),                         # UPSTREAM_IDLE_TIMEOUT
    ("overloaded", "copilot", "cooling", "upstream_overloaded", 60),                # E6: a failed captcha
]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize(("scenario", "protocol", "state", "reason", "cooldown"), SIGNALS)
async def test_a_bad_cookie_beside_a_healthy_one(
    nursery: trio.Nursery, sim: Simulator, scenario: str, protocol: str, state: str, reason: str,
    cooldown: float | None, stream: bool,
) -> None:
    bad, good = cookie(scenario), cookie("ok")
    service = await serve(nursery, sim, [bad, good], GENSPARK_CHAT_PROTOCOL=protocol, **BASE_ENV)
    started = time.time()
    for _ in range(3):
        reply = await ask(service, stream=stream)
        assert answered(reply), reply
    # The bad cookie was tried exactly once, first (configuration order), then left alone.
    assert chat_calls(sim) == [bad, good, good, good]
    rows = await pool_rows(service)
    row = rows[key_of(bad)]
    assert (row["state"], row["reason"]) == (state, reason)
    assert row["failures"] == row["consecutive_failures"] == 1 and row["last_error"]
    assert row["cookie"] == mask_cookie("session_id=" + bad)
    if cooldown is None:
        assert row["until"] is None
    else:
        assert started + cooldown - 5 <= row["until"] <= time.time() + cooldown + 5
    healthy = rows[key_of(good)]
    assert (healthy["state"], healthy["successes"], healthy["failures"]) == ("healthy", 3, 0)


@pytest.mark.parametrize("protocol", ["ai_chat", "copilot"])
async def test_a_cut_stream_fails_over_when_nothing_was_sent_yet(nursery: trio.Nursery, sim: Simulator, protocol: str) -> None:
    bad, good = cookie("cut-stream"), cookie("ok")
    service = await serve(nursery, sim, [bad, good], GENSPARK_CHAT_PROTOCOL=protocol, **BASE_ENV)
    # Non-stream: the client has seen nothing, so the broken answer is replaced by a whole one.
    reply = await ask(service)
    assert answered(reply) and chat_calls(sim) == [bad, good]
    row = (await pool_rows(service))[key_of(bad)]
    assert (row["state"], row["reason"]) == ("cooling", "upstream_truncated")
    assert row["until"] <= time.time() + 7 + 1

    # Stream: the first words were already sent; the client gets an error event, the cookie a
    # short cooldown, and the next request another cookie.
    bad2 = cookie("cut-stream")
    sim.reset()
    service = await serve(nursery, sim, [bad2, good], GENSPARK_CHAT_PROTOCOL=protocol, **BASE_ENV)
    reply = await ask(service, stream=True)
    assert reply.after_answer and reply.error["code"] == "upstream_truncated" and reply.text
    assert answered(await ask(service, stream=True))
    assert chat_calls(sim) == [bad2, good]


# ------------------------------------------------------------------------------ nobody to blame


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize(
    ("scenario", "protocol", "code", "hint"),
    [
        ("service-unavailable", "ai_chat", "upstream_unavailable", "try again later"),   # E8
        ("internal-error", "copilot", "upstream_internal_error", "try again later"),     # E7
        ("retired", "copilot", "upstream_retired", "GENSPARK_CHAT_PROTOCOL"),            # E10
    ],
)
async def test_upstream_wide_failures_blame_no_cookie(
    nursery: trio.Nursery, sim: Simulator, scenario: str, protocol: str, code: str, hint: str, stream: bool
) -> None:
    bad, good = cookie(scenario), cookie("ok")
    service = await serve(nursery, sim, [bad, good], GENSPARK_CHAT_PROTOCOL=protocol)
    reply = await ask(service, stream=stream)
    assert (reply.status, reply.error["code"], reply.after_answer) == (503, code, False)
    assert hint in reply.error["message"]  # what it means and what the operator can do
    if scenario != "retired":
        assert "No cookie is to blame" in reply.error["message"]
    assert_neutral(reply)
    assert chat_calls(sim) == [bad]  # Genspark itself is down: another cookie would not help
    rows = await pool_rows(service)
    assert all((r["state"], r["failures"]) == ("healthy", 0) for r in rows.values())


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_a_request_scoped_upstream_4xx_penalises_no_cookie(nursery: trio.Nursery, sim: Simulator, stream: bool) -> None:
    async def unsupported(request: httpx.Request) -> httpx.Request:
        # Upstream refuses the body itself (the simulator answers 400 "unsupported type").
        if request.url.path in CHAT_PATHS:
            return with_json(request, {**json.loads(request.content), "type": "no_such_type"})
        return request

    first, second = cookie("ok"), cookie("ok")
    service = await serve(nursery, sim, [first, second], {"transport": Tamper(unsupported)})
    reply = await ask(service, stream=stream)
    assert (reply.status, reply.error["type"], reply.error["code"]) == (400, "invalid_request_error", "upstream_bad_request")
    assert "unsupported type" in reply.error["message"]
    assert chat_calls(sim) == [first]
    rows = await pool_rows(service)
    assert all((r["state"], r["failures"]) == ("healthy", 0) for r in rows.values())


async def test_a_success_resets_the_failure_count(nursery: trio.Nursery, sim: Simulator) -> None:
    clock = FakeClock(time.time())
    only = cookie("ok")
    service = await serve(
        nursery, sim, [only], {"clock": clock}, UPSTREAM_IDLE_TIMEOUT="0.2", NETWORK_COOLDOWN_SECONDS="7"
    )
    sim.answer_delay, sim.heartbeat_interval = 0.5, 0.0  # silent longer than the idle timeout
    reply = await ask(service)
    assert (reply.status, reply.error["code"]) == (429, "accounts_cooling")
    row = (await pool_rows(service))[key_of(only)]
    assert (row["state"], row["reason"], row["consecutive_failures"]) == ("cooling", "upstream_timeout", 1)
    clock.advance(8)
    sim.answer_delay = 0.0
    assert answered(await ask(service))
    row = (await pool_rows(service))[key_of(only)]
    assert (row["state"], row["consecutive_failures"], row["failures"], row["successes"]) == ("healthy", 0, 1, 1)


# ------------------------------------------------------------------------------ nothing usable


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_all_cooling_is_429_with_the_earliest_recovery(nursery: trio.Nursery, sim: Simulator, stream: bool) -> None:
    clock = FakeClock(time.time())
    limited, session = cookie("rate-limited"), cookie("session-limit")  # 100 s vs upstream's 2 h
    service = await serve(nursery, sim, [limited, session], {"clock": clock}, RATE_LIMIT_COOKIE_LOCK_DURATION="100")
    reply = await ask(service, stream=stream)
    assert (reply.status, reply.error["code"], reply.error["type"]) == (429, "accounts_cooling", "upstream_error")
    assert reply.headers["retry-after"] == "100" and reply.headers["content-type"] == "application/json"
    assert "100 s" in reply.error["message"]
    assert_neutral(reply)
    clock.advance(40)
    reply = await ask(service, stream=stream)  # nothing is tried while everything cools
    assert (reply.status, reply.headers["retry-after"]) == (429, "60")
    assert_neutral(reply)
    assert chat_calls(sim) == [limited, session]
    clock.advance(60)
    sim.reset()
    reply = await ask(service, stream=stream)  # the rate limit is over: the cookie is tried again
    assert chat_calls(sim) == [limited]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_none_alive_is_503(nursery: trio.Nursery, sim: Simulator, stream: bool) -> None:
    gone, rejected = cookie("not-login"), cookie("not-login")
    service = await serve(nursery, sim, [gone, rejected])
    for _ in range(2):
        reply = await ask(service, stream=stream)
        assert (reply.status, reply.error["code"]) == (503, "no_usable_account")
        assert "retry-after" not in reply.headers and "GS_COOKIE" in reply.error["message"]
        assert_neutral(reply)
    assert chat_calls(sim) == [gone, rejected]


async def test_dead_cookies_are_never_resurrected(nursery: trio.Nursery, sim: Simulator) -> None:
    clock = FakeClock(time.time())
    gone, rejected, good = cookie("not-login"), cookie("not-login"), cookie("ok")
    service = await serve(nursery, sim, [gone, rejected, good], {"clock": clock})
    assert answered(await ask(service))
    for _ in range(3):
        clock.advance(3 * 86400.0)
        service.runtime.reload_cookies("test")  # the same entries: still dead
        assert answered(await ask(service))
    assert Counter(chat_calls(sim)) == {gone: 1, rejected: 1, good: 4}
    rows = await pool_rows(service)
    assert rows[key_of(gone)]["state"] == rows[key_of(rejected)]["state"] == "dead"


async def test_max_attempts_one_returns_the_first_error(nursery: trio.Nursery, sim: Simulator) -> None:
    bad, good = cookie("not-login"), cookie("ok")
    service = await serve(nursery, sim, [bad, good], MAX_ATTEMPTS="1")
    reply = await ask(service)
    assert (reply.status, reply.error["code"]) == (502, "upstream_not_logged_in")
    assert_neutral(reply)
    assert chat_calls(sim) == [bad]
    bad2 = cookie("rate-limited")
    service = await serve(nursery, sim, [bad2, good], MAX_ATTEMPTS="1")
    reply = await ask(service, stream=True)
    assert (reply.status, reply.error["code"], reply.after_answer) == (502, "upstream_rate_limited", False)
    assert chat_calls(sim) == [bad, bad2]


# ------------------------------------------------------------------------------ load and hedging


async def burst(service: Service, n: int) -> list[Reply]:
    replies: list[Reply] = []

    async def one(i: int) -> None:
        replies.append(await ask(service, stream=bool(i % 2), question=f"question {i}"))

    async with trio.open_nursery() as nursery:
        for i in range(n):
            nursery.start_soon(one, i)
    return replies


async def test_fifty_concurrent_requests_spread_over_three_cookies(nursery: trio.Nursery, sim: Simulator) -> None:
    sim.answer_delay = 0.03
    cookies = [cookie("ok") for _ in range(3)]
    service = await serve(nursery, sim, cookies)
    replies = await burst(service, 50)
    assert all(answered(r) for r in replies)
    counts = Counter(chat_calls(sim))
    assert sum(counts.values()) == 50 and all(counts[c] >= 10 for c in cookies), counts


async def test_fifty_concurrent_requests_with_a_rate_limited_cookie(nursery: trio.Nursery, sim: Simulator) -> None:
    sim.answer_delay = 0.03
    cookies = [cookie("ok") for _ in range(3)]
    limited = cookie("rate-limited")
    service = await serve(nursery, sim, [limited, *cookies])
    replies = await burst(service, 50)
    assert all(answered(r) for r in replies)
    counts = Counter(chat_calls(sim))
    assert sum(counts[c] for c in cookies) == 50 and all(counts[c] >= 10 for c in cookies), counts
    # Requests that started together may each meet the limit once; after that nobody does.
    before = counts[limited]
    for _ in range(3):
        assert answered(await ask(service))
    assert Counter(chat_calls(sim))[limited] == before
    assert (await pool_rows(service))[key_of(limited)]["state"] == "cooling"


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_hedged_attempt_wins_and_closes_the_slow_one(nursery: trio.Nursery, sim: Simulator, stream: bool) -> None:
    sim.answer_delay_slow = 3.0
    slow, quick = cookie("slow-first-byte"), cookie("ok")
    service = await serve(nursery, sim, [slow, quick], HEDGE_AFTER_SECONDS="0.2")
    started = trio.current_time()
    reply = await ask(service, stream=stream)
    won = trio.current_time()
    assert answered(reply) and won - started < 1.5
    assert chat_calls(sim) == [slow, quick]  # fresh pool: configuration order picks the slow one first
    await wait_for(lambda: any(c.session_id == slow for c in sim.stream_closures), timeout=1.0)
    closure = next(c for c in sim.stream_closures if c.session_id == slow)
    assert closure.completed is False and closure.closed_at - won < 1.0
    rows = await pool_rows(service)
    # Silent until hedged, then beaten: a stall against the slow cookie (issue #10 item 6), no credit.
    assert (rows[key_of(slow)]["state"], rows[key_of(slow)]["reason"], rows[key_of(slow)]["failures"]) == (
        "cooling", "upstream_stalled", 1)
    assert rows[key_of(slow)]["successes"] == 0
    assert rows[key_of(slow)]["in_flight"] == 0 and rows[key_of(quick)]["successes"] == 1


async def test_an_in_band_error_at_the_start_of_a_stream_fails_over_cleanly(nursery: trio.Nursery, sim: Simulator) -> None:
    # free-limit: HTTP 200, project_start, then the quota result (§3.4.6): held, never sent.
    limited, good = cookie("free-limit"), cookie("ok")
    service = await serve(nursery, sim, [limited, good], GENSPARK_CHAT_PROTOCOL="copilot")
    reply = await ask(service, stream=True)
    assert answered(reply) and not reply.after_answer
    assert chat_calls(sim) == [limited, good]
    assert reply.chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert [c["choices"][0]["finish_reason"] for c in reply.chunks if c["choices"]][-1] == "stop"
    assert len({c["id"] for c in reply.chunks}) == 1


# ------------------------------------------------------------------------------ conversations


def turn(question: str, answer: str | None = None, earlier: list[dict] | None = None) -> list[dict]:
    messages = list(earlier or [])
    if answer is not None:
        messages.append({"role": "assistant", "content": answer})
    messages.append({"role": "user", "content": question})
    return messages


@pytest.mark.parametrize(("protocol", "stream"), [("ai_chat", False), ("copilot", False), ("ai_chat", True), ("copilot", True)])
async def test_a_follow_up_lands_on_the_same_project(nursery: trio.Nursery, sim: Simulator, protocol: str, stream: bool) -> None:
    cookies = [cookie("ok") for _ in range(3)]
    service = await serve(nursery, sim, cookies, GENSPARK_CHAT_PROTOCOL=protocol)
    first = turn("What is a cookie pool?")
    reply1 = await ask(service, stream=stream, messages=first)
    assert project_of(chat_bodies(sim)[0]) is None
    (project_id,) = sim.projects
    other = await ask(service, stream=stream, question="An unrelated new conversation")  # moves the LRU on
    assert answered(other)
    follow_up = turn("And why bind turns?", reply1.text, first)
    assert answered(await ask(service, stream=stream, messages=follow_up))
    calls, bodies = chat_calls(sim), chat_bodies(sim)
    assert calls[2] == calls[0] and calls[1] != calls[0]
    assert project_of(bodies[1]) is None and project_of(bodies[2]) == project_id
    assert len(sim.projects[project_id].turns) == 2
    assert len(sim.projects) == 2  # the new conversation got a project of its own


async def test_model_chat_map_pins_a_model_to_a_project(nursery: trio.Nursery, sim: Simulator) -> None:
    # §12.3: a project belongs to one account, so a pinned project makes sense with one cookie; the
    # simulator adopts the unknown id as the old habit did (its default is the real site's 500).
    sim.options.adopt_unknown_projects = True
    service = await serve(nursery, sim, [cookie("ok")], MODEL_CHAT_MAP=f"{MODEL}=pinned-project-1", AUTO_DEL_CHAT="1")
    assert answered(await ask(service, question="one"))
    assert answered(await ask(service, stream=True, question="two, a different conversation"))
    assert [project_of(b) for b in chat_bodies(sim)] == ["pinned-project-1"] * 2
    assert len(sim.projects["pinned-project-1"].turns) == 2
    await trio.sleep(0.1)
    assert sim.deleted_projects == []  # a pinned project is never deleted


async def test_binding_off_gives_every_turn_a_new_project(nursery: trio.Nursery, sim: Simulator) -> None:
    service = await serve(nursery, sim, [cookie("ok")], AUTO_MODEL_CHAT_MAP_TYPE="0")
    first = turn("Hello there")
    reply = await ask(service, messages=first)
    assert answered(await ask(service, messages=turn("Again", reply.text, first)))
    assert [project_of(b) for b in chat_bodies(sim)] == [None, None]
    assert len(sim.projects) == 2 and all(len(p.turns) == 1 for p in sim.projects.values())


async def test_auto_del_chat_deletes_in_the_background(nursery: trio.Nursery, sim: Simulator) -> None:
    async def slow_delete(request: httpx.Request) -> httpx.Request:
        if request.url.path == "/api/project/delete":
            await trio.sleep(0.6)
        return request

    owner = cookie("ok")
    service = await serve(
        nursery, sim, [owner], {"transport": Tamper(slow_delete)}, AUTO_DEL_CHAT="1", AUTO_MODEL_CHAT_MAP_TYPE="0"
    )
    for stream in (False, True):
        started = trio.current_time()
        assert answered(await ask(service, stream=stream))
        assert trio.current_time() - started < 0.5  # the response never waits for the delete
    assert sim.deleted_projects == []
    projects = list(sim.projects)
    await wait_for(lambda: len(sim.deleted_projects) == 2)
    assert sorted(sim.deleted_projects) == sorted(projects)
    assert [r.session_id for r in sim.requests_to("/api/project/delete")] == [owner, owner]


@pytest.mark.parametrize("binding", ["0", "1"])
async def test_auto_del_chat_deletes_a_failed_attempts_orphan_project(nursery: trio.Nursery, sim: Simulator, binding: str) -> None:
    limited, good = cookie("free-limit"), cookie("ok")
    service = await serve(nursery, sim, [limited, good], AUTO_DEL_CHAT="1", AUTO_MODEL_CHAT_MAP_TYPE=binding)
    assert answered(await ask(service))
    expected = [limited] if binding == "1" else [limited, good]  # a bound project is kept
    await wait_for(lambda: len(sim.deleted_projects) == len(expected))
    await trio.sleep(0.05)
    deletes = sim.requests_to("/api/project/delete")
    assert sorted(r.session_id for r in deletes) == sorted(expected)  # each with the cookie that owns it
    assert len(set(sim.deleted_projects)) == len(expected)
    kept = [p for p in sim.projects.values() if p.session_id == good]
    assert len(kept) == (1 if binding == "1" else 0) and not any(p.session_id == limited for p in sim.projects.values())


# ------------------------------------------------------------------------------ GS_COOKIE_FILE


async def test_cookie_file_comments_duplicates_and_reload(nursery: trio.Nursery, sim: Simulator, tmp_path: Path) -> None:
    a, b, c, d, e = (cookie("ok") for _ in range(5))
    path = tmp_path / "cookies.txt"
    path.write_text(
        f"# the team's accounts\n{a}\n\n   session_id={a}   \n# {e} is commented out\n"
        f"agree_terms=1; session_id={b}; from_auth=\n{b}\n{c}\n",
        encoding="utf-8",
    )
    service = await serve(nursery, sim, [d, a], GS_COOKIE_FILE=str(path))
    service.secrets += [b, c, e]  # type: ignore[attr-defined]
    rows = await pool_rows(service)
    assert set(rows) == {key_of(x) for x in (a, b, c, d)}  # duplicates collapse by account
    for _ in range(4):
        assert answered(await ask(service))
    assert set(chat_calls(sim)) == {a, b, c, d}

    # Edit: b goes, e comes; a keeps its counters. The same code path as SIGHUP (cli.wait_for_signals).
    path.write_text(f"{a}\n{c}\n{e}\n", encoding="utf-8")
    service.runtime.reload_cookies("SIGHUP")
    rows = await pool_rows(service)
    assert set(rows) == {key_of(x) for x in (a, c, d, e)}
    assert rows[key_of(a)]["successes"] == 1 and rows[key_of(e)]["successes"] == 0
    sim.reset()
    for _ in range(4):
        assert answered(await ask(service))
    assert set(chat_calls(sim)) == {a, c, d, e}

    # A missing or garbled file leaves the pool as it was.
    path.write_bytes(b"\xff\xfe not utf-8\n")
    service.runtime.reload_cookies("SIGHUP")
    path.unlink()
    service.runtime.reload_cookies("SIGHUP")
    assert set(await pool_rows(service)) == {key_of(x) for x in (a, c, d, e)}


async def test_the_file_watcher_reloads_without_a_signal(
    nursery: trio.Nursery, sim: Simulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="genspark2api")
    a, b = cookie("ok"), cookie("ok")
    path = tmp_path / "cookies.txt"
    path.write_text(f"{a}\n", encoding="utf-8")
    service = await serve(nursery, sim, [], GS_COOKIE_FILE=str(path))
    service.secrets += [b]  # type: ignore[attr-defined]
    nursery.start_soon(service.runtime.watch_cookie_file, 0.02)
    path.write_text(f"{a}\n{b}\n", encoding="utf-8")
    await wait_for(lambda: len(service.runtime.pool) == 2)
    assert set(await pool_rows(service)) == {key_of(a), key_of(b)}
    # A SIGHUP reload is not repeated by the watcher on its next look at the file.
    path.write_text(f"{b}\n", encoding="utf-8")
    service.runtime.reload_cookies("SIGHUP")
    await trio.sleep(0.1)
    reloads = [r.getMessage() for r in caplog.records if r.getMessage().startswith("cookie reload")]
    assert len(reloads) == 2 and "(file changed)" in reloads[0] and "(SIGHUP)" in reloads[1]
    assert len(service.runtime.pool) == 1
    # A half-written, garbled file is logged and skipped; the watcher lives on.
    path.write_bytes(b"\xff\xfe")
    await wait_for(lambda: any("failed, pool unchanged" in r.getMessage() for r in caplog.records))
    path.write_text(f"{a}\n", encoding="utf-8")
    await wait_for(lambda: {status.key for status in service.runtime.pool.snapshot()} == {key_of(a)})


def test_an_unreadable_cookie_file_stops_the_start(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from genspark2api.cli import main

    missing = tmp_path / "missing.txt"
    assert main([], {"GS_COOKIE_FILE": str(missing)}) == 2
    assert f"GS_COOKIE_FILE='{missing}' cannot be read" in capsys.readouterr().err


@asynccontextmanager
async def service_process(sim: Simulator, log_path: Path, **env: str) -> AsyncIterator[tuple[trio.Process, httpx.AsyncClient]]:
    """`python -m genspark2api` as a real process against the simulator, ready to serve; killed at the end."""
    port = free_port()
    full = {
        **{k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TIKTOKEN_CACHE_DIR", "XDG_DATA_HOME")},
        "GENSPARK_BASE_URL": sim.url, "HOST": "127.0.0.1", "PORT": str(port),  # type: ignore[attr-defined]
        "REQUEST_RATE_LIMIT": "0", "PYTHONUNBUFFERED": "1", **env,
    }
    with log_path.open("wb") as log_file:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "genspark2api"], env=full, stdout=log_file, stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parent.parent,
        )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=15) as http:
            with trio.fail_after(15):
                while True:
                    try:
                        if (await http.get("/healthz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    await trio.sleep(0.05)
            yield process, http
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_the_real_process_sighup_watcher_and_sigterm(sim: Simulator, tmp_path: Path) -> None:
    a, b = cookie("ok"), cookie("ok")
    path = tmp_path / "cookies.txt"
    path.write_text(f"# one account\n{a}\n", encoding="utf-8")
    log_path = tmp_path / "service.log"
    async with service_process(sim, log_path, GS_COOKIE_FILE=str(path)) as (process, http):

        async def pool_keys() -> set[str]:
            return {row["key"] for row in (await http.get("/v1/pool")).json()["data"]}

        assert await pool_keys() == {key_of(a)}
        response = await http.post("/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
        assert response.status_code == 200 and chat_calls(sim) == [a]

        path.write_text(f"{a}\n{b}\n", encoding="utf-8")
        process.send_signal(signal.SIGHUP)
        with trio.fail_after(3):
            while await pool_keys() != {key_of(a), key_of(b)}:
                await trio.sleep(0.05)
        assert "cookie reload (SIGHUP): 1 added, 0 removed" in log_path.read_text()

        path.write_text(f"{b}\n", encoding="utf-8")  # no signal: the watcher notices (2 s period)
        with trio.fail_after(5):
            while await pool_keys() != {key_of(b)}:
                await trio.sleep(0.05)
        assert "cookie reload (file changed): 0 added, 1 removed" in log_path.read_text()

        await http.aclose()  # an idle keep-alive connection would hold hypercorn's graceful wait
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(5):
            code = await process.wait()
        assert code == 0, log_path.read_text()
    output = log_path.read_text()
    assert a not in output and b not in output  # the start-up summary and reloads log masked cookies only
    assert mask_cookie("session_id=" + a) in output


# ------------------------------------------------------------------------------ reCAPTCHA service


@pytest.mark.parametrize("protocol", ["ai_chat", "copilot"])
async def test_every_attempt_fetches_a_token_with_its_own_cookie(nursery: trio.Nursery, sim: Simulator, protocol: str) -> None:
    first, second = cookie("needs-captcha"), cookie("needs-captcha")
    service = await serve(nursery, sim, [first, second], RECAPTCHA_PROXY_URL=sim.url, GENSPARK_CHAT_PROTOCOL=protocol)  # type: ignore[attr-defined]
    for stream in (False, True):
        reply = await ask(service, stream=stream, question=f"captcha {stream}")
        assert answered(reply) and "gpt-4o-mini" not in reply.text  # a valid token: not degraded
    assert [r.session_id for r in sim.requests_to("/genspark")] == chat_calls(sim) == [first, second]
    tokens = [b["g_recaptcha_token"] for b in chat_bodies(sim)]
    assert len(set(tokens)) == 2 and all(t.startswith("sim-token-") for t in tokens)


async def test_a_failing_token_service_moves_to_another_cookie(nursery: trio.Nursery, sim: Simulator) -> None:
    failing, good = cookie("captcha-fail"), cookie("ok")
    service = await serve(nursery, sim, [failing, good], RECAPTCHA_PROXY_URL=sim.url, GENSPARK_CHAT_PROTOCOL="copilot")  # type: ignore[attr-defined]
    assert answered(await ask(service))
    assert [r.session_id for r in sim.requests_to("/genspark")] == [failing, good]
    assert chat_calls(sim) == [good]  # no body at all was sent for the failing cookie, never `null`
    assert all(r.json is not None and r.body.strip() != b"null" for r in sim.requests if r.path in CHAT_PATHS)
    row = (await pool_rows(service))[key_of(failing)]
    assert (row["state"], row["reason"]) == ("cooling", "recaptcha_failed")
    assert "RECAPTCHA_PROXY_URL" in row["last_error"] and "Failed to retrieve token" in row["last_error"]

    alone = await serve(nursery, sim, [cookie("captcha-fail")], RECAPTCHA_PROXY_URL=sim.url)  # type: ignore[attr-defined]
    reply = await ask(alone, stream=True)
    assert reply.status == 429 and "RECAPTCHA_PROXY_URL" in reply.error["message"]
    assert_neutral(reply)


# ------------------------------------------------------------------------------ PROXY_URL


class _Pipe:
    @staticmethod
    async def both_ways(a: trio.SocketStream, b: trio.SocketStream, first: bytes = b"") -> None:
        async def copy(src: trio.SocketStream, dst: trio.SocketStream, cancel: trio.CancelScope) -> None:
            try:
                async for data in src:
                    await dst.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            cancel.cancel()  # either side hanging up ends the tunnel (and tells the other side)

        async with a, b:
            if first:
                await b.send_all(first)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(copy, a, b, nursery.cancel_scope)
                nursery.start_soon(copy, b, a, nursery.cancel_scope)


class LoopbackProxy:
    """A tiny proxy on 127.0.0.1 that sends every connection for `route`'s host to the simulator.

    `kind="http"`: a forward proxy for absolute-URI requests (one request per connection);
    `kind="socks5"`: CONNECT only, no authentication. `seen` records what was asked for.
    """

    def __init__(self, kind: str, host: str, target: tuple[str, int]) -> None:
        self.kind, self.host, self.target = kind, host, target
        self.seen: list[str] = []

    async def serve(self, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(self.socks5 if self.kind == "socks5" else self.http, listeners)

    def route(self, host: str, port: int) -> tuple[str, int]:
        assert host == self.host, host  # only the configured upstream may go through
        return self.target

    async def http(self, client: trio.SocketStream) -> None:
        data = b""
        async for chunk in client:
            data += chunk
            if b"\r\n\r\n" in data:
                break
        head, _, rest = data.partition(b"\r\n\r\n")
        request_line, *headers = head.split(b"\r\n")
        method, target, version = request_line.split(b" ")
        url = urlsplit(target.decode())
        self.seen.append(f"{method.decode()} {target.decode()}")
        keep = [h for h in headers if not h.lower().startswith((b"connection:", b"proxy-connection:", b"keep-alive:"))]
        path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        forwarded = b"\r\n".join([b" ".join([method, path.encode(), version]), *keep, b"Connection: close", b"", b""])
        upstream = await trio.open_tcp_stream(*self.route(url.hostname or "", url.port or 80))
        await _Pipe.both_ways(client, upstream, forwarded + rest)

    async def socks5(self, client: trio.SocketStream) -> None:
        buffer = bytearray()

        async def take(n: int) -> bytes:
            while len(buffer) < n:
                chunk = await client.receive_some()
                if not chunk:
                    raise EOFError
                buffer.extend(chunk)
            out = bytes(buffer[:n])
            del buffer[:n]
            return out

        version, methods = await take(2)
        assert version == 5 and 0 in await take(methods)
        await client.send_all(b"\x05\x00")
        version, command, _, address_type = await take(4)
        assert (version, command) == (5, 1)
        if address_type == 3:
            host = (await take((await take(1))[0])).decode()
        elif address_type == 1:
            host = socket.inet_ntoa(await take(4))
        else:
            host = socket.inet_ntop(socket.AF_INET6, await take(16))
        port = int.from_bytes(await take(2), "big")
        self.seen.append(f"CONNECT {host}:{port}")
        upstream = await trio.open_tcp_stream(*self.route(host, port))
        await client.send_all(b"\x05\x00\x00\x01\x00\x00\x00\x00\x00\x00")
        await _Pipe.both_ways(client, upstream, bytes(buffer))


@pytest.mark.parametrize("scheme", ["http", "socks5", "socks5h"])
async def test_proxy_url_routes_every_upstream_call(nursery: trio.Nursery, sim: Simulator, scheme: str) -> None:
    # The upstream host exists only for the proxy: a call that bypassed it could not connect.
    sim_address = urlsplit(sim.url)  # type: ignore[attr-defined]
    upstream = f"http://genspark.invalid:{free_port()}"
    proxy = LoopbackProxy("http" if scheme == "http" else "socks5", "genspark.invalid",
                          (sim_address.hostname or "", sim_address.port or 80))
    proxy_port = await nursery.start(proxy.serve)
    owner = cookie("ok")
    service = await serve(
        nursery, sim, [owner], GENSPARK_BASE_URL=upstream, PROXY_URL=f"{scheme}://127.0.0.1:{proxy_port}",
        AUTO_DEL_CHAT="1", AUTO_MODEL_CHAT_MAP_TYPE="0",
    )
    assert answered(await ask(service))
    assert answered(await ask(service, stream=True))
    await wait_for(lambda: len(sim.deleted_projects) == 2)
    paths = [r.path for r in sim.requests]
    assert paths.count("/api/agent/ask_proxy") == 2 and paths.count("/api/project/delete") == 2
    if scheme == "http":
        assert len(proxy.seen) == len(sim.requests) == 4
        assert all(line.split(" ")[1].startswith(upstream + "/api/") for line in proxy.seen)
    else:
        assert proxy.seen and all(line == f"CONNECT {urlsplit(upstream).netloc}" for line in proxy.seen)


async def test_the_standard_proxy_variables_still_route_upstream_calls(
    nursery: trio.Nursery, sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # httpx honoured HTTP(S)_PROXY itself while it built the transports; since the service builds
    # them (the chat stream talks to its transport directly), it reads the variables itself.
    sim_address = urlsplit(sim.url)  # type: ignore[attr-defined]
    upstream = f"http://genspark.invalid:{free_port()}"
    proxy = LoopbackProxy("http", "genspark.invalid", (sim_address.hostname or "", sim_address.port or 80))
    proxy_port = await nursery.start(proxy.serve)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy_port}")
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")   # the test's own client talks to the service directly
    service = await serve(nursery, sim, [cookie("ok")], GENSPARK_BASE_URL=upstream, AUTO_DEL_CHAT="0")
    assert answered(await ask(service))
    assert answered(await ask(service, stream=True))
    assert len(proxy.seen) == 2 and all(line.split(" ")[1].startswith(upstream + "/api/") for line in proxy.seen)
    # NO_PROXY naming the upstream host wins, as it did with httpx.
    from genspark2api.upstream.client import environment_proxy
    monkeypatch.setenv("NO_PROXY", "genspark.invalid")
    assert environment_proxy(upstream) is None


# ------------------------------------------------------------------------------ logs


async def test_no_log_line_holds_a_whole_cookie(nursery: trio.Nursery, sim: Simulator, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    cookies = [cookie("rate-limited"), cookie("not-login"), cookie("cut-stream"), cookie("captcha-fail"), cookie("ok")]
    service = await serve(
        nursery, sim, cookies, DEBUG="1", RECAPTCHA_PROXY_URL=sim.url, AUTO_DEL_CHAT="1", AUTO_MODEL_CHAT_MAP_TYPE="0",  # type: ignore[attr-defined]
    )
    for stream in (False, True, False, True):
        await ask(service, stream=stream)
    service.runtime.reload_cookies("test")
    await pool_rows(service)
    async with service.http() as http:
        page = (await http.get("/")).text
    assert all(value not in page for value in cookies) and mask_cookie("session_id=" + cookies[-1]) in page
    text = caplog.text + "\n".join(str(r.args) for r in caplog.records)
    assert "attempt on" in text and "upstream event on" in text  # failures and events were logged
    for value in cookies:
        assert value not in text
        assert value[-40:] not in text
    assert mask_cookie("session_id=" + cookies[0]) in text


async def test_the_pool_endpoint_needs_the_api_key(nursery: trio.Nursery, sim: Simulator) -> None:
    service = await serve(nursery, sim, [cookie("ok")], API_SECRET="sk-pool-test")
    async with service.http() as http:
        assert (await http.get("/v1/pool")).status_code == 401
        response = await http.get("/v1/pool", headers={"Authorization": "Bearer sk-pool-test"})
    assert response.status_code == 200 and response.json()["object"] == "pool"
    (row,) = response.json()["data"]
    assert set(row) == {
        "cookie", "key", "state", "reason", "until", "in_flight", "successes", "failures",
        "consecutive_failures", "last_used", "last_error", "substitutions",
    }


async def test_sigterm_ends_streams_in_flight_with_an_error_event(sim: Simulator, tmp_path: Path) -> None:
    """A stream still running at SIGTERM ends with an error event and [DONE], then the process exits 0."""
    sim.answer_delay = 1.0  # a long answer: one delta a second
    log_path = tmp_path / "service.log"
    async with service_process(sim, log_path, GS_COOKIE=cookie("ok"), STREAM_KEEPALIVE_SECONDS="0.5") as (process, http):
        body = {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "a long answer " * 20}]}
        lines: list[str] = []
        with trio.fail_after(12):
            async with http.stream("POST", "/v1/chat/completions", json=body) as response:
                async for line in response.aiter_lines():
                    lines.append(line)
                    if '"content":"[' in line:
                        process.send_signal(signal.SIGTERM)
        assert "data: [DONE]" in lines[-2:], lines[-4:]
        errors = [json.loads(line[6:]) for line in lines if line.startswith('data: {"error"')]
        assert errors and errors[0]["error"]["code"] == "service_shutting_down"
        with trio.fail_after(8):
            code = await process.wait()
        assert code == 0, log_path.read_text()
