"""The simulator's ``/api/agent/ask_proxy`` and account calls (genspark-protocol.md §12), over loopback."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from genspark2api.simulator import Simulator, serve_simulator
from genspark2api.simulator import agent_streams as ags
from genspark2api.simulator import events as ev
from genspark2api.simulator.streams import Pause, PauseKind

ASK = "/api/agent/ask_proxy"
BROWSER = {"Origin": "https://www.genspark.ai", "Referer": "https://www.genspark.ai/agents?type=ai_chat"}
LIMIT_URL = "https://www.genspark.ai/helpcenter/membership-plans#usage"
E13 = f"AI Chat [5-hour limit]({LIMIT_URL}) reached."
E14 = f"AI Image [5-hour limit]({LIMIT_URL}) reached."


@pytest.fixture
def sim() -> Simulator:
    return Simulator(task_poll_interval=0.01, concurrency_penalty=0.3)


@pytest.fixture
async def client(nursery: trio.Nursery, sim: Simulator):
    base_url = await nursery.start(serve_simulator, sim, "127.0.0.1", 0)
    async with httpx.AsyncClient(base_url=base_url, timeout=5) as http:
        yield http


def headers(session: str | None = "demo") -> dict[str, str]:
    cookie = {"Cookie": f"session_id={session}; c1=x; c2=y"} if session else {}
    return {**BROWSER, **cookie}


def user_message(content: Any, message_id: str = "6f1c") -> dict[str, Any]:
    return {"role": "user", "id": message_id, "content": content, "pending": True, "sendStatus": "sending",
            "_deepDiveStateNegContent": content if isinstance(content, str) else ""}


def chat(text: str = "My name is Alaq.", model: str = "claude-4-5-haiku", project_id: str | None = None,
         last_seen: int = -1, **extra: Any) -> dict[str, Any]:
    """The UI-faithful first/follow-up body of §12.2.3 / §12.2.4."""
    messages = extra.pop("messages", [user_message(text)])
    return {"ai_chat_model": model, "ai_chat_enable_search": extra.pop("search", False),
            "ai_chat_disable_personalization": False, "use_moa_proxy": False, "moa_models": [], "writingContent": None,
            "sas_ask_origin": "typed", "type": "ai_chat", "project_id": project_id, "messages": messages,
            "user_s_input": text, "client_message_id": "6f1c", "g_recaptcha_token": "", "is_private": True,
            "push_token": "", "session_state": {"steps": [], "messages": messages},
            "last_seen_event_index": last_seen, "chat_session_id": None, **extra}


def image(prompt: str = "An orange cat", token: str | None = None, **params: Any) -> dict[str, Any]:
    """The §12.7.1 body (TT-3/TT-4)."""
    content = params.pop("content", prompt)  # a parts list for reference images (§12.7.5)
    model_params = {"type": "image", "model": "gpt-image-2", "aspect_ratio": "3:4", "auto_prompt": False, "style": "auto",
                    "image_size": "2k", "quality": "auto", "background_mode": True, "camera_control": None,
                    "generation_count": 1, **params}
    message = user_message(content) | {"thinking": False}
    return {"model_params": model_params, "writingContent": None, "sas_ask_origin": "typed",
            "type": "image_generation_agent", "project_id": None, "messages": [message], "user_s_input": prompt,
            "client_message_id": "9d2c", "g_recaptcha_token": token or "", "is_private": True, "push_token": "",
            "last_seen_event_index": -1, "chat_session_id": "a-random-uuid"}


def frames(raw: bytes) -> list[str]:
    """The JSON payloads of a strict SSE body: `data: <json>` frames, one blank line apart, no [DONE]."""
    text = raw.decode("ascii")  # ensure_ascii=True
    assert text.endswith("\n\n") and "[DONE]" not in text
    parts = text[:-2].split("\n\n")
    assert all(p.startswith("data: ") and "\n" not in p for p in parts), parts
    return [p[len("data: "):] for p in parts]


async def post(client: httpx.AsyncClient, body: Any, session: str | None = "demo", path: str = ASK):
    response = await client.post(path, json=body, headers=headers(session))
    evs = [json.loads(f) for f in frames(response.content)] if response.headers["content-type"].startswith("text/event") else []
    return response, evs


def types(evs: list[dict[str, Any]]) -> list[str]:
    return [e["type"] if "type" in e else "tasks" for e in evs]


def deltas(evs: list[dict[str, Any]], name: str = "content") -> str:
    return "".join(e["delta"] for e in evs if e.get("type") == "message_field_delta" and e["field_name"] == name)


def result(evs: list[dict[str, Any]]) -> dict[str, Any]:
    (found,) = [e for e in evs if e.get("type") == "message_result"]
    return found["message"]


def project_fields(evs: list[dict[str, Any]], name: str) -> list[Any]:
    return [e["field_value"] for e in evs if e.get("type") == "project_field" and e["field_name"] == name]


# --- the normal ai_chat stream (§12.4.2) --------------------------------------------------------


async def test_normal_stream_has_the_documented_keys_order_and_indexes(client, sim):
    response = await client.post(ASK, json=chat(), headers=headers())
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    payloads = frames(response.content)
    evs = [json.loads(p) for p in payloads]
    assert all(json.dumps(e) == p for e, p in zip(evs, payloads))  # Python json.dumps separators
    expected = {
        "project_start": ["id", "_event_index", "type"],
        "agent_notification": ["notification_type", "_event_index", "type"],
        "message_start": ["message_id", "_event_index", "type"],
        "message_field_delta": ["message_id", "field_name", "delta", "_event_index", "type"],
        "message_field": ["message_id", "field_name", "field_value", "_event_index", "type"],
        "message_result": ["type", "message", "_event_index"],
        "project_field": ["id", "field_name", "field_value", "_event_index", "type"],
    }
    assert all(list(e) == expected[e["type"]] for e in evs)
    kinds = types(evs)
    n_deltas = kinds.count("message_field_delta")
    assert n_deltas >= 3
    assert kinds == ["project_start", "agent_notification", "message_start", *["message_field_delta"] * n_deltas,
                     "message_field", "message_result", "project_field", "project_field"]
    assert [e["_event_index"] for e in evs] == list(range(len(evs)))
    assert evs[1]["notification_type"] == "keepalive"
    message = result(evs)
    text = "[simulated claude-4-5-haiku] You said: My name is Alaq."
    assert deltas(evs) == evs[-4]["field_value"] == message["content"] == text
    assert list(message) == ["id", "role", "content", "session_state"] and message["role"] == "assistant"
    state = message["session_state"]
    assert list(state) == ["_llm_model", "_llm_usage", "_finish_reason"]
    assert state["_llm_model"] == "claude-4-5-haiku" and state["_finish_reason"] == "stop"
    usage = state["_llm_usage"]
    assert list(usage) == ["prompt_tokens", "completion_tokens", "total_tokens"]
    assert usage["completion_tokens"] > 0 and usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert {e["message_id"] for e in evs if "message_id" in e} == {message["id"]}
    project_id = evs[0]["id"]
    assert evs[-2]["field_name"] == "name" and evs[-2]["field_value"] == "My name is Alaq."
    assert evs[-1] == {"id": project_id, "field_name": "status", "field_value": "FINISHED",
                       "_event_index": len(evs) - 1, "type": "project_field"}
    # what no source shows on ai_chat is gone
    assert not {"_updatetime", "session_state.models", "reasoning_content"} & {e.get("field_name") for e in evs}
    project = sim.projects[project_id]
    assert project.owner == "demo" and project.event_count == len(evs) and project.last_seen_event_indexes == [-1]


async def test_usage_is_deterministic(client):
    first = result((await post(client, chat("same words here")))[1])["session_state"]["_llm_usage"]
    second = result((await post(client, chat("same words here")))[1])["session_state"]["_llm_usage"]
    assert first == second


async def test_follow_up_continues_the_index_and_uses_the_history(client, sim):
    _, first = await post(client, chat())
    project_id, last = first[0]["id"], first[-1]["_event_index"]
    _, second = await post(client, chat("What is my name?", project_id=project_id, last_seen=last, messages=[
        user_message("What is my name?", "0b7e")]))
    assert second[0] == {"id": project_id, "_event_index": last + 1, "type": "project_start"}
    assert [e["_event_index"] for e in second] == list(range(last + 1, last + 1 + len(second)))
    assert project_fields(second, "name") == [] and project_fields(second, "status") == ["FINISHED"]
    content = result(second)["content"]
    assert "You said: What is my name? (turn 2 of this conversation)" in content
    assert "Earlier you said: My name is Alaq." in content
    project = sim.projects[project_id]
    assert project.last_seen_event_indexes == [-1, last]
    assert [user for user, _ in project.turns] == ["My name is Alaq.", "What is my name?"]
    assert result(second)["session_state"]["_llm_usage"]["prompt_tokens"] > result(first)["session_state"]["_llm_usage"]["prompt_tokens"]


async def test_sb_minimal_body_with_the_whole_history_is_a_new_project(client):
    body = {"ai_chat_model": "gpt-5.4", "ai_chat_enable_search": False, "ai_chat_disable_personalization": False,
            "use_moa_proxy": False, "moa_models": [], "writingContent": None, "sas_ask_origin": "typed",
            "type": "ai_chat", "is_private": True,
            "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
                         {"role": "assistant", "content": "hello"}, {"role": "user", "content": "and now?"}]}
    response, evs = await post(client, body)
    assert response.status_code == 200 and result(evs)["content"] == "[simulated gpt-5.4] You said: and now?"
    assert evs[0]["_event_index"] == 0


# --- gates (§12.5 E22, E19c, E20, E18) -----------------------------------------------------------


async def _without_user_agent(client: httpx.AsyncClient, body: Any, hdrs: dict[str, str]) -> httpx.Response:
    request = client.build_request("POST", ASK, json=body, headers=hdrs)
    del request.headers["user-agent"]
    return await client.send(request)


@pytest.mark.parametrize("body", [chat(), image(), {"type": "video_generation_agent", "messages": []}])
async def test_missing_user_agent_is_bad_request_cf_before_anything_else(client, body):
    for hdrs in (headers(), headers("rate-limited-1"), {}, headers(None)):
        response = await _without_user_agent(client, body, hdrs)
        assert (response.status_code, response.text) == (400, "bad request cf")
        assert response.headers["content-type"].startswith("text/plain")


async def test_missing_origin_or_referer_is_a_cloudflare_403(client, sim):
    for drop in ("Origin", "Referer"):
        hdrs = {k: v for k, v in headers().items() if k != drop}
        response = await client.post(ASK, json=chat(), headers=hdrs)
        assert response.status_code == 403 and response.headers["content-type"].startswith("text/html")
        assert "Attention Required! | Cloudflare" in response.text and response.headers["cf-ray"]
    sim.options.require_origin = False
    response = await client.post(ASK, json=chat(), headers={"Cookie": "session_id=demo"})
    assert response.status_code == 200


async def test_missing_session_is_not_login_and_edges_still_apply(client):
    response = await client.post(ASK, json=chat(), headers={**BROWSER, "Cookie": "c1=x; c2=y"})
    assert response.json() == {"status": -5, "message": "not login", "data": {}}  # c1/c2 alone do not work
    for session, status in (("rate-limited-1", 429), ("cf-challenge-1", 403), ("internal-error", 500)):
        assert (await client.post(ASK, json=chat(), headers=headers(session))).status_code == status


@pytest.mark.parametrize("bad", [
    {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function",
                                                          "function": {"name": "f", "arguments": "{}"}}]},
])
async def test_tool_protocol_messages_are_422(client, sim, bad):
    body = chat(messages=[user_message("weather?"), bad])
    response = await client.post(ASK, json=body, headers=headers())
    assert response.status_code == 422 and "tool" in response.json()["detail"]
    assert not sim.projects


async def test_unsupported_type_and_bad_bodies_are_400(client):
    response = await client.post(ASK, json={"type": "super_agent"}, headers=headers())
    assert response.status_code == 400 and "super_agent" in response.text
    response = await client.post(ASK, content=b"not json", headers=headers())
    assert response.status_code == 400


async def open_raw(client: httpx.AsyncClient, body: Any, session: str) -> trio.SocketStream:
    url = client.base_url
    stream = await trio.open_tcp_stream(url.host, url.port)
    payload = json.dumps(body).encode()
    head = (f"POST {ASK} HTTP/1.1\r\nHost: {url.host}:{url.port}\r\nContent-Type: application/json\r\n"
            f"User-Agent: Mozilla/5.0 sim-test\r\nOrigin: {BROWSER['Origin']}\r\nReferer: {BROWSER['Referer']}\r\n"
            f"Cookie: session_id={session}\r\nContent-Length: {len(payload)}\r\n\r\n")
    await stream.send_all(head.encode() + payload)
    received = b""
    with trio.fail_after(2):
        while b"data: " not in received:
            received += await stream.receive_some()
    assert received.startswith(b"HTTP/1.1 200")
    return stream


async def test_third_concurrent_chat_is_429_then_the_account_cools_down(client, sim):
    sim.answer_delay = 0.5  # keeps the first two answers in flight
    first, second = await open_raw(client, chat("a b c d"), "busy"), await open_raw(client, chat("a b c d"), "busy")
    try:
        third = await client.post(ASK, json=chat(), headers=headers("busy"))
        assert (third.status_code, third.text) == (429, "Too Many Requests")
        assert "retry-after" not in third.headers
        sim.answer_delay = 0.0
        assert (await client.post(ASK, json=chat(), headers=headers("other"))).status_code == 200  # per account
        token = (await client.get("/genspark")).json()["token"]
        assert (await client.post(ASK, json=image(token=token), headers=headers("busy"))).status_code == 200
    finally:
        await first.aclose()
        await second.aclose()
    with trio.fail_after(2):
        while sim.ledger.in_flight.get("busy"):
            await trio.sleep(0.01)
    assert (await client.post(ASK, json=chat(), headers=headers("busy"))).status_code == 429  # the penalty
    await trio.sleep(0.35)
    assert (await client.post(ASK, json=chat(), headers=headers("busy"))).status_code == 200


async def test_rate_per_minute_gate(client, sim):
    sim.options.rate_per_minute = 6
    statuses = [(await client.post(ASK, json=chat(), headers=headers("rate"))).status_code for _ in range(7)]
    assert statuses == [200] * 6 + [429]
    sim.options.rate_per_minute = None
    assert (await client.post(ASK, json=chat(), headers=headers("rate"))).status_code == 200


# --- projects (§12.3, E21) ---------------------------------------------------------------------


async def test_unknown_deleted_and_foreign_projects(client, sim):
    response = await client.post(ASK, json=chat(project_id="995fb522-8f24-4555-8c79-195a2f39b502"), headers=headers())
    assert (response.status_code, response.text) == (500, "Internal Server Error")
    assert response.headers["content-type"].startswith("text/plain")
    _, evs = await post(client, chat())
    project_id = evs[0]["id"]
    foreign = await client.post(ASK, json=chat(project_id=project_id), headers=headers("intruder"))
    assert (foreign.status_code, foreign.text) == (500, "Internal Server Error")
    sim.options.foreign_project = "403"
    foreign = await client.post(ASK, json=chat(project_id=project_id), headers=headers("intruder"))
    assert foreign.status_code == 403 and "cloudflare" not in foreign.text.lower()
    sim.options.foreign_project = "empty"
    _, evs = await post(client, chat(project_id=project_id), "intruder")
    assert result(evs)["content"] == "" and deltas(evs) == "" and project_fields(evs, "status") == ["FINISHED"]
    assert len(sim.projects[project_id].turns) == 1  # the owner's history is untouched
    deleted = await client.get("/api/project/delete", params={"project_id": project_id}, headers=headers())
    assert deleted.json()["status"] == 0
    again = await client.post(ASK, json=chat(project_id=project_id), headers=headers())
    assert again.status_code == 500


async def test_adopting_unknown_projects_is_a_switch(client, sim):
    sim.options.adopt_unknown_projects = True
    response, evs = await post(client, chat(project_id="fixed-project-1"))
    assert response.status_code == 200 and evs[0]["id"] == "fixed-project-1"
    assert sim.projects["fixed-project-1"].owner == "demo"


@pytest.mark.parametrize("mode", ["blank", "refusal"])
async def test_history_resent_into_an_existing_project(client, sim, mode):
    sim.options.resent_history = mode
    _, evs = await post(client, chat("first"))
    project_id = evs[0]["id"]
    history = [user_message("first"), {"role": "assistant", "content": "ok"}, user_message("second")]
    _, evs = await post(client, chat("second", project_id=project_id, messages=history))
    content = result(evs)["content"]
    assert project_fields(evs, "status") == ["FINISHED"]
    if mode == "blank":
        assert content == "" and deltas(evs) == ""
    else:
        assert "I don't have tools" in content and deltas(evs) == content
    assert len(sim.projects[project_id].turns) == 1


# --- served model, MoA, search, reasoning (§12.8.3, §12.2.5, §12.4.3, §12.4.4) --------------------


@pytest.mark.parametrize(("requested", "served"), [
    ("claude-opus-5-5", "claude-opus-5-5"),
    ("deepseek-v4-pro", "deepseek-v4-pro"),
    ("claude-opus-4-8", "claude-opus-4-8-extended-cache"),
    ("claude-opus-4-7", "claude-opus-4-7-extended-cache"),
    ("gpt-5.5", "gpt-5.5-2026-04-23"),
    ("gpt-5.5-pro", "gpt-5.5-pro-2026-04-23"),
    ("claude-opus-5.5", "claude-sonnet-4-5-20250929"),
    ("deep-seek-v4-pro", "claude-sonnet-4-5-20250929"),  # §12.8.6: the blanket rewrite's output
    ("gpt-5.1-low,claude-sonnet-4-6", "claude-sonnet-4-5-20250929"),  # SW's comma-joined MoA
])
async def test_served_model(client, requested, served):
    response, evs = await post(client, chat("hi", requested))
    message = result(evs)
    assert response.status_code == 200 and message["session_state"]["_llm_model"] == served
    assert message["content"].startswith(f"[simulated {served}] ")


async def test_degraded_cookie_is_served_by_another_model(client):
    message = result((await post(client, chat("hi", "claude-opus-5-5"), "degraded-1"))[1])
    assert message["session_state"]["_llm_model"] == "gpt-5.4-nano"
    assert message["content"].startswith("[simulated gpt-5.4-nano]")


async def test_mixture_of_agents(client):
    members = ["gpt-5.1-low", "claude-sonnet-4-6", "gemini-3.1-pro-preview"]
    moa = {"use_moa_proxy": True, "moa_models": members, "models": members}
    _, evs = await post(client, chat("compare", members[0], **moa))
    assert types(evs).count("message_result") == 1 and project_fields(evs, "status") == ["FINISHED"]
    message = result(evs)
    assert message["session_state"]["_llm_model"] == "gpt-5.1-low"
    assert message["content"].startswith("[simulated MoA of gpt-5.1-low+claude-sonnet-4-6+gemini-3.1-pro-preview]")
    without_models = {"use_moa_proxy": True, "moa_models": members}
    for body in (chat("compare", members[0], **without_models), chat("compare", members[1], **moa)):
        message = result((await post(client, body))[1])
        assert message["content"].startswith(f"[simulated {body['ai_chat_model']}] ")


async def test_search_variants(client, sim):
    question = "latest python release"
    preamble = f'I\'ll search for "{question}".\n{{"queries": ["{question}"]}}\n'
    _, evs = await post(client, chat(question, search=True))
    answer = result(evs)["content"]
    assert deltas(evs) == preamble + answer and answer == "[simulated claude-4-5-haiku] You said: latest python release"
    assert "[1](" not in answer and "search_status_top_bar_data" not in json.dumps(evs)
    sim.options.search_variant = "field"
    _, evs = await post(client, chat(question, search=True))
    assert deltas(evs) == result(evs)["content"] == answer
    assert deltas(evs, "session_state.search_queries") == preamble


async def test_readable_reasoning_only_behind_the_option(client, sim):
    _, evs = await post(client, chat("why", "gpt-5.4-pro"))
    assert deltas(evs, "reasoning_content") == ""
    sim.options.readable_reasoning = True
    _, evs = await post(client, chat("why", "gpt-5.4-pro"))
    assert deltas(evs, "reasoning_content").startswith("Simulated reasoning")
    assert "Simulated reasoning" not in result(evs)["content"]


async def test_keepalives_during_a_slow_answer(client, sim):
    sim.answer_delay, sim.heartbeat_interval = 0.05, 0.02
    _, evs = await post(client, chat("one two three four"))
    assert types(evs).count("agent_notification") > 3
    assert [e["_event_index"] for e in evs] == list(range(len(evs))) and evs[-1]["field_value"] == "FINISHED"
    assert deltas(evs) == result(evs)["content"]


# --- in-band signals (§12.5) ----------------------------------------------------------------------


@pytest.mark.parametrize(("session", "text", "with_model"), [
    ("chat-5h-limit-1", E13, False),
    ("approaching-limit", "Approaching 5-hour limit.", False),
    ("placeholder-1", "Sorry, I couldn't produce a response this turn.", True),
    ("credits-gone", "您的积分已用完", False),
    ("throttle-text-2", "You are sending messages too quickly. Rate limit reached, please slow down.", False),
    ("declined", "The model declined to answer this request.", True),
])
async def test_in_band_signal_texts(client, session, text, with_model):
    response, evs = await post(client, chat("hi", "gpt-5.5"), session)
    assert response.status_code == 200
    assert types(evs) == ["project_start", "message_start", "message_field_delta", "message_result", "project_field"]
    message = result(evs)
    assert message["id"] and deltas(evs) == message["content"] == text
    assert message["session_state"] == ({"_llm_model": "gpt-5.5-2026-04-23"} if with_model else {})
    assert "Resets" not in text and [e["_event_index"] for e in evs] == [0, 1, 2, 3, 4]


async def test_credits_text_goes_out_escaped(client):
    response = await client.post(ASK, json=chat(), headers=headers("credits-gone"))
    assert b"\\u60a8\\u7684\\u79ef\\u5206\\u5df2\\u7528\\u5b8c" in response.content


async def test_chat_limit_with_a_fixed_reset(client, sim):
    resets = []
    for _ in range(2):
        _, evs = await post(client, chat(), "chat-5h-limit-reset-1")
        assert types(evs) == ["project_start", "message_start", "message_field", "message_field_delta",
                              "message_result", "project_field"]
        (limit,) = [e["field_value"] for e in evs if e.get("field_name") == "session_state.session_limit_message"]
        assert limit == deltas(evs) == result(evs)["content"]
        resets.append(int(re.fullmatch(re.escape(E13) + r" Resets \{time:(\d+)\}", limit).group(1)))
    assert resets[0] == resets[1] and abs(resets[0] - (time.time() + 3 * 3600)) < 60


async def test_placeholder_on_every_third_ask(client):
    contents = [result((await post(client, chat("q"), "placeholder-sometimes-1"))[1])["content"] for _ in range(6)]
    placeholder = "Sorry, I couldn't produce a response this turn."
    assert [c == placeholder for c in contents] == [False, False, True, False, False, True]


async def test_cut_streams(client, sim):
    _, evs = await post(client, chat("one two three four five six"), "cut-before-finished")
    assert evs[-1]["type"] == "message_result" and not project_fields(evs, "status")
    assert result(evs)["content"].endswith("one two three four five six")
    _, evs = await post(client, chat("one two three four five six"), "cut-stream")
    assert evs[-1]["type"] == "message_field_delta" and "message_result" not in types(evs)
    assert sim.stream_closures[-1].completed  # the server ended the body, the client did not leave


async def test_older_abnormal_streams_still_work_on_ask_proxy(client):
    _, evs = await post(client, chat(), "error-event-1")
    assert evs[-1]["type"] == "error" and "too quickly" in evs[-1]["message"]
    _, evs = await post(client, chat(), "empty-answer")
    assert result(evs)["content"] == "" and project_fields(evs, "status") == ["FINISHED"]


async def test_quota_model_walls_chat_and_images_with_one_fixed_reset(client, sim):
    sim.options.five_hour_budget = 2
    sim.options.image_captcha_strict = False
    started = time.time()
    assert result((await post(client, chat(), "quota"))[1])["content"].startswith("[simulated")
    _, evs = await post(client, image(), "quota")
    assert project_fields(evs, "image_generation_agent.results")  # the second ask of the window
    texts = [result((await post(client, chat(), "quota"))[1])["content"] for _ in range(2)]
    _, evs = await post(client, image(), "quota")
    assert project_fields(evs, "image_generation_agent.results") == [[]]
    texts.append(result(evs)["content"])
    resets = {int(re.search(r"\{time:(\d+)\}", t).group(1)) for t in texts}
    assert len(resets) == 1 and abs(resets.pop() - (started + 5 * 3600)) < 60
    assert texts[0].startswith(E13) and texts[2].startswith(E14)
    assert result((await post(client, chat(), "other-account"))[1])["content"].startswith("[simulated")


async def test_credits_count_down_to_e16(client, sim):
    async def remaining(session: str) -> int:
        return (await client.get("/api/credit_audit/billing_cycle", headers=headers(session))).json()["data"]["remaining"]

    assert await remaining("c") == 100  # unlimited
    sim.options.credits = 2
    assert await remaining("c") == 2
    await post(client, chat(), "c")
    assert await remaining("c") == 1
    await post(client, chat(), "c")
    assert await remaining("c") == 0
    assert result((await post(client, chat(), "c"))[1])["content"] == "您的积分已用完"
    assert await remaining("c") == 0


# --- account probes (§12.9.4, E24) ------------------------------------------------------------------


async def test_account_endpoints(client):
    user = (await client.get("/api/user", headers=headers("alice"))).json()
    assert user["status"] == 0 and user["data"]["cogen"]["email"] == "alice@sim.example"
    assert user["data"]["cogen"]["plan"] == "free" and user["data"]["cogen"]["name"]
    login = (await client.get("/api/is_login", headers=headers("alice"))).json()["data"]
    assert login["is_login"] is True and login["cogen_email"] == "alice@sim.example" and login["cogen_id"]
    for session in ("anonymous-1", "not-login", None):
        response = await client.get("/api/user", headers=headers(session))
        assert response.status_code == 200 and response.json() == {"status": -5, "message": "user not found"}
        assert (await client.get("/api/is_login", headers=headers(session))).json()["data"]["is_login"] is False
    response = await client.post(ASK, json=chat(), headers=headers("anonymous-1"))
    assert response.json() == {"status": -5, "message": "not login", "data": {}}


async def test_my_projects_lists_only_the_accounts_own(client):
    _, evs = await post(client, chat("alpha question"), "alice")
    await post(client, chat("bob's"), "bob")
    listed = (await client.get("/api/project/my", params={"from": "agents"}, headers=headers("alice"))).json()
    (project,) = listed["data"]["projects"]
    assert project["id"] == evs[0]["id"] and project["name"] == "alpha question"
    assert project["type"] == "ai_chat" and project["status"] == "FINISHED" and project["chat_model"] == "claude-4-5-haiku"
    assert datetime.fromisoformat(project["ctime"]).year >= 2026


# --- image agent (§12.7) ---------------------------------------------------------------------------


async def token(client: httpx.AsyncClient) -> str:
    return (await client.get("/genspark", headers=headers())).json()["token"]


async def test_image_agent_coerces_then_polls_and_serves_files(client, sim):
    body = image("two cats", await token(client), model="gpt-image-99", image_size="8k", generation_count=2)
    _, evs = await post(client, body)
    assert types(evs) == ["project_start", "message_start", "project_field", "message_result", "project_field"]
    assert [e["_event_index"] for e in evs] == [0, 1, 2, 3, 4] and evs[-1]["field_value"] == "FINISHED"
    (items,) = project_fields(evs, "image_generation_agent.results")
    assert len(items) == 2
    for item in items:
        assert list(item) == ["task_id", "status", "model", "image_size", "prompt", "image_urls", "image_urls_nowatermark"]
        assert (item["status"], item["model"], item["image_size"], item["prompt"]) == ("PICKED", "gpt-image-2", "4k", "two cats")
        assert item["image_urls"] == item["image_urls_nowatermark"] == []
    assert list(evs[3]["message"]) == ["id", "role", "content"]
    task_ids = [item["task_id"] for item in items]
    poll = await client.post("/api/ig_tasks_status", json={"task_ids": [*task_ids, "nope"]}, headers=headers())
    lines = [json.loads(f) for f in frames(poll.content)]
    assert lines[0]["tasks"]["nope"] == {"status": -2, "message": "task not found"}
    assert all(line["tasks"][t] == {"status": "PICKED"} for line in lines[:-1] for t in task_ids)
    final = lines[-1]
    assert list(final) == ["type", "final_status"] and final["type"] == "TASKS_STATUS_COMPLETE"
    assert final["final_status"]["nope"]["status"] == -2
    urls = []
    for task_id in task_ids:
        entry = final["final_status"][task_id]
        assert entry["status"] == "SUCCESS" and entry["image_urls"] != entry["image_urls_nowatermark"]
        urls += entry["image_urls"] + entry["image_urls_nowatermark"]
    base = str(client.base_url).rstrip("/")
    assert {u.startswith("/api/files/s/") for u in urls} == {True, False}  # every 2nd task is relative
    for url in urls:
        path = url.removeprefix(base)
        assert re.fullmatch(r"/api/files/s/[A-Za-z0-9]{8}", path)
        assert (await client.get(path)).status_code == 403  # no cookie
        download = await client.get(path, params={"cache_control": "3600"}, headers=headers())
        assert download.status_code == 200 and download.content.startswith(b"\x89PNG\r\n\x1a\n")
    assert sim.downloads[0].cookie_sent is False and sim.downloads[-1].found
    assert (await client.get("/api/files/s/AAAAAAAA", headers=headers())).status_code == 404


async def test_image_agent_inline_failure_and_task_detail(client):
    _, evs = await post(client, image("inline fail-one pair", await token(client), generation_count=2, model="nano-banana-pro"))
    good, bad = project_fields(evs, "image_generation_agent.results")[0]
    assert good["status"] == "SUCCESS" and good["model"] == "nano-banana-pro" and good["image_urls_nowatermark"]
    assert bad["status"] == -1 and bad["failure_reason"] and bad["image_urls"] == []
    _, evs = await post(client, image("a dog", await token(client), aspect_ratio="3:4", image_size="2k"))
    (item,) = project_fields(evs, "image_generation_agent.results")[0]
    detail = lambda: client.get("/api/spark/image_generation_task_detail", params={"task_id": item["task_id"]}, headers=headers())  # noqa: E731
    first, second = (await detail()).json(), (await detail()).json()
    assert first["status"] == 0 and first["data"]["status"] == "PICKED"
    assert second["data"]["status"] == "SUCCESS" and second["data"]["image_urls_nowatermark"]
    assert second["data"]["image_ratios"] == ["1536/2048"] and second["data"]["generation_options"] == {"width": 1536, "height": 2048}
    unknown = await client.get("/api/spark/image_generation_task_detail", params={"task_id": "x"}, headers=headers())
    assert unknown.json()["status"] == -2


async def test_image_agent_poll_reports_failures(client, sim):
    sim.options.image_captcha_strict = False
    _, evs = await post(client, image("fail-all"))
    (item,) = project_fields(evs, "image_generation_agent.results")[0]
    poll = await client.post("/api/ig_tasks_status", json={"task_ids": [item["task_id"]]}, headers=headers())
    entry = json.loads(frames(poll.content)[-1])["final_status"][item["task_id"]]
    assert entry["status"] == -1 and entry["failure_reason"]


async def test_recaptcha_soft_block_rolls_while_a_real_wall_stays(client, sim):
    clock = {"now": datetime(2026, 9, 29, 12, 0, tzinfo=UTC)}
    sim.backend.agent.clock = lambda: clock["now"]
    epoch = int(clock["now"].timestamp())

    async def limit(session: str, body: dict[str, Any]) -> str:
        _, evs = await post(client, body, session)
        assert project_fields(evs, "image_generation_agent.results") == [[]]
        (text,) = [e["field_value"] for e in evs if e.get("field_name") == "session_state.session_limit_message"]
        assert result(evs)["content"] == text and text.startswith(E14 + " Resets {time:")
        return text

    assert await limit("demo", image()) == E14 + f" Resets {{time:{epoch + 5400}}}"  # missing token
    clock["now"] = datetime(2026, 9, 29, 12, 1, tzinfo=UTC)
    assert await limit("demo", image()) == E14 + f" Resets {{time:{epoch + 60 + 5400}}}"  # it moves
    used = await token(client)
    assert (await post(client, image(token=used)))[1][2]["field_name"] == "image_generation_agent.results"
    await limit("demo", image(token=used))  # single use
    expired = await token(client)
    sim.issued_tokens[expired] -= 121
    await limit("demo", image(token=expired))
    await limit("demo", image(token="made-up"))
    assert not [t for t in sim.tasks.values() if t.prompt != "An orange cat"] and len(sim.tasks) == 1
    walls = {await limit("image-5h-limit-1", image(token=await token(client))) for _ in range(2)}
    assert walls == {E14 + f" Resets {{time:{sim.backend.agent.fixed_reset}}}"}
    sim.options.image_captcha_strict = False
    _, evs = await post(client, image())
    assert project_fields(evs, "image_generation_agent.results")[0]


async def test_image_agent_credit_and_approaching_signals(client):
    _, evs = await post(client, image(token=await token(client)), "credits-gone")
    assert result(evs)["content"] == "You've used all your credits for this Genspark account."
    assert project_fields(evs, "image_generation_agent.results") == [[]]
    _, evs = await post(client, image(token=await token(client)), "approaching-limit-1")
    assert [e["field_value"] for e in evs if e.get("field_name") == "session_state.session_limit_message"] == [
        "Approaching 5-hour limit."]


async def test_images_are_not_concurrency_limited_but_tool_messages_are_refused(client, sim):
    sim.options.image_captcha_strict = False
    body = image()
    body["messages"].append({"role": "tool", "content": "x"})
    assert (await client.post(ASK, json=body, headers=headers())).status_code == 422


async def test_reference_images_are_acknowledged(client, sim):
    sim.options.image_captcha_strict = False
    part = {"type": "image_url", "text": None,
            "image_url": {"url": "data:image/png;base64," + "iVBORw0KGgo=" * 1000, "image_id": None, "public_url": None,
                          "mime_type": "image/png", "detail": None, "size_bytes": 8000},
            "private_file": None, "file": None, "input_audio": None, "hide_in_ui": False,
            "render_template": None, "render_data": None}
    text = "2 reference images attached, generate with reference to them: a castle"
    _, evs = await post(client, image(text, content=[part, part, {"type": "text", "text": text}]))
    assert "2 reference images" in result(evs)["content"]
    (item,) = project_fields(evs, "image_generation_agent.results")[0]
    assert sim.tasks[item["task_id"]].references == 2 and item["prompt"] == text


# --- video agent (§12.7.6 [I]) --------------------------------------------------------------------


async def test_video_agent_and_polling(client):
    body = {"models": ["gpt-4.1"], "type": "video_generation_agent", "project_id": None,
            "model_params": {"type": "video", "model": "kling/v3", "aspect_ratio": "9:16", "duration": "5",
                             "tier": "standard", "video_size": "auto", "generation_count": 1},
            "messages": [{"role": "user", "content": "a river at dawn"}]}
    _, evs = await post(client, body)
    (items,) = project_fields(evs, "video_generation_agent.results")
    (item,) = items
    assert list(item) == ["task_id", "status", "model", "video_url", "video_urls", "duration"]
    assert (item["status"], item["model"], item["duration"], item["video_urls"]) == ("PICKED", "kling/v3", "5", [])
    poll = await client.post("/api/vg_tasks_status", json={"task_ids": [item["task_id"]]}, headers=headers())
    final = json.loads(frames(poll.content)[-1])
    (url,) = final["final_status"][item["task_id"]]["video_urls"]
    path = "/api/files/s/" + url.rsplit("/", 1)[1]
    assert (await client.get(path)).status_code == 403
    download = await client.get(path, headers=headers())
    assert download.headers["content-type"] == "video/mp4" and download.content[4:8] == b"ftyp"


# --- uploads (§12.7.5) -----------------------------------------------------------------------------


async def test_upload_url_then_put_then_file(client, sim):
    slot = (await client.get("/api/files/get_upload_url", params={"content_type": "image/png", "name": "a.png"},
                             headers=headers())).json()
    assert slot["status"] == 0 and set(slot["data"]) == {"upload_url", "file_wrapper_url"}
    upload_url, wrapper = slot["data"]["upload_url"], slot["data"]["file_wrapper_url"]
    assert (await client.put(upload_url, content=b"png bytes")).status_code == 400  # no x-ms-blob-type
    assert (await client.put(upload_url, content=b"png bytes", headers={"x-ms-blob-type": "BlockBlob"})).status_code == 201
    assert (await client.get(wrapper)).status_code == 403
    assert (await client.get(wrapper, headers=headers())).content == b"png bytes"
    assert (await client.get("/api/files/get_upload_url", headers=headers("not-login"))).json()["status"] == -5


# --- pure pieces ------------------------------------------------------------------------------------


@given(st.lists(st.sampled_from(["pause", "event", "result"]), max_size=30), st.integers(0, 100),
       st.floats(0, 1), st.floats(0.01, 1))
def test_keepalives_then_numbering(shape, first, delay, interval):
    script = [Pause(PauseKind.DELTA) if s == "pause" else
              ev.g2_message_result("m", "x") if s == "result" else ev.message_start("m") for s in shape]
    steps, following = ags.numbered(ags.with_keepalives(script, delay, interval), first)
    sent = [s for s in steps if not isinstance(s, Pause)]
    assert [e["_event_index"] for e in sent] == list(range(first, following))
    assert all(list(e)[-1] == ("_event_index" if e["type"] == "message_result" else "type") for e in sent)
    slept = sum(s.seconds for s in steps if isinstance(s, Pause))
    assert slept == pytest.approx(delay * shape.count("pause"))
