"""The Genspark simulator, driven over real loopback HTTP (genspark-protocol.md §9)."""

from __future__ import annotations

import json
import re
import struct
import time
import zlib
from typing import Any

import httpx
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from genspark2api.simulator import (
    Scenario,
    Simulator,
    key_of_storage_url,
    scenario_for,
    serve_simulator,
)
from genspark2api.simulator.answers import find_tool_definitions
from genspark2api.simulator.media import solid_png
from genspark2api.simulator.streams import split_deltas

E5_LINE = (
    'data: {"id": "", "role": "assistant", "content": "You\'ve reached your free usage limit today", '
    '"action": {"type": "ACTION_QUOTA_EXCEEDED", "query_string": null, "update_flow_data": null, "label": null, '
    '"user_s_input": null, "action_params": null}, "recommend_actions": null, "is_prompt": true, '
    '"render_template": null, "session_state": {"consume_usage_quota_exceeded": true}, "message_type": null, '
    '"type": "message_result"}'
)


# --- fixtures and helpers ---------------------------------------------------------------------


@pytest.fixture
def sim() -> Simulator:
    return Simulator(task_poll_interval=0.01, answer_delay_slow=0.3)


@pytest.fixture
async def client(nursery: trio.Nursery, sim: Simulator):
    base_url = await nursery.start(serve_simulator, sim, "127.0.0.1", 0)
    async with httpx.AsyncClient(base_url=base_url, timeout=5) as http:
        yield http


def cookie(session_id: str) -> dict[str, str]:
    """The cookie plus the browser headers ask_proxy insists on (§12.5 E19c); copilot ignores them."""
    return {
        "Cookie": f"agree_terms=1; session_id={session_id}; from_auth=",
        "Origin": "https://www.genspark.ai",
        "Referer": "https://www.genspark.ai/agents?type=ai_chat",
    }


def chat_body(text: str = "Hi!", models: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    messages = extra.pop("messages", [{"role": "user", "content": text, "is_prompt": False, "session_state": None}])
    return {
        "action_params": {},
        "current_query_string": extra.pop("query", "type=COPILOT_MOA_CHAT"),
        "extra_data": {
            "models": models or ["claude-sonnet-4-5"],
            "request_web_knowledge": extra.pop("search", False),
            "run_with_another_model": False,
            "writingContent": None,
        },
        "messages": messages,
        "type": "COPILOT_MOA_CHAT",
        **extra,
    }


def image_body(prompt: str, *, count: int | None = None, kind: str = "IMAGE", **extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = {"model": "flux" if kind == "IMAGE" else "kling/v1.6/standard"}
    if count is not None:
        config["generation_count"] = count
    return {
        "action_params": {},
        "current_query_string": f"type=COPILOT_MOA_{kind}",
        "extra_data": {"model_configs": [config]},
        "messages": [{"role": "user", "content": prompt}],
        "type": f"COPILOT_MOA_{kind}",
        "user_s_input": prompt,
        **extra,
    }


def events(body: str) -> list[dict[str, Any]]:
    """Parse an upstream SSE body strictly: only `data: <json>` frames separated by blank lines."""
    assert body.endswith("\n\n")
    frames = body[:-2].split("\n\n")
    assert all(frame.startswith("data: ") and "\n" not in frame for frame in frames), frames
    return [json.loads(frame[len("data: ") :]) for frame in frames]


def field_deltas(evs: list[dict[str, Any]], name: str) -> list[str]:
    return [e["delta"] for e in evs if e["type"] == "message_field_delta" and e["field_name"] == name]


def fields(evs: list[dict[str, Any]], name: str) -> list[Any]:
    return [e["field_value"] for e in evs if e["type"] == "message_field" and e["field_name"] == name]


async def ask(client: httpx.AsyncClient, body: Any, session: str = "demo", path: str = "/api/copilot/ask"):
    response = await client.post(path, json=body, headers=cookie(session))
    return response, (events(response.text) if response.headers["content-type"].startswith("text/event") else [])


# --- G1 chat -----------------------------------------------------------------------------------


async def test_chat_stream_bytes_follow_python_json_dumps(client, sim):
    response = await client.post("/api/copilot/ask", json=chat_body("Hi there, caf\u00e9!"), headers=cookie("demo"))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    raw = response.content
    assert b"[DONE]" not in raw and raw.isascii()  # ensure_ascii=True
    for frame in raw.decode()[:-2].split("\n\n"):
        payload = frame.removeprefix("data: ")
        parsed = json.loads(payload)
        assert json.dumps(parsed) == payload  # ", " and ": " separators, nothing else
        keys = list(parsed)
        assert keys[0] in ("id", "message_id") and keys[-1] == "type"
    evs = events(raw.decode())
    assert evs[0]["type"] == "project_start" and evs[-1]["type"] == "message_result"
    result = evs[-1]
    answer_deltas = field_deltas(evs, "session_state.answer")
    assert len(answer_deltas) >= 3
    assert "".join(answer_deltas) == result["content"] == "[simulated claude-sonnet-4-5] You said: Hi there, caf\u00e9!"
    message_ids = {e["message_id"] for e in evs if "message_id" in e}
    assert message_ids == {result["id"]}
    assert fields(evs, "session_state.models") == [["claude-sonnet-4-5"]]
    assert len(fields(evs, "_updatetime")) == 1
    assert fields(evs, "session_state.answer_is_finished") == [True]
    assert result["session_state"] == {
        "models": ["claude-sonnet-4-5"], "layers": 0, "answer": result["content"], "answer_is_finished": True,
    }
    assert [result[k] for k in ("tool_calls", "tool_call_id", "thinking_blocks")] == [None, None, None]
    assert sim.stream_closures[-1].completed and sim.stream_closures[-1].session_id == "demo"


async def test_project_continuation_has_memory(client, sim):
    _, first = await ask(client, chat_body("first question"))
    project_id = first[0]["id"]
    _, second = await ask(client, chat_body("second question", query=f"id={project_id}&type=COPILOT_MOA_CHAT"))
    assert second[0] == {"id": project_id, "type": "project_start"}
    assert second[-1]["content"].endswith("You said: second question (turn 2 of this conversation)")
    assert not [e for e in second if e["type"] == "project_field"]  # only new projects get a title
    project = sim.projects[project_id]
    assert project.session_id == "demo" and project.model == "claude-sonnet-4-5"
    assert [user for user, _ in project.turns] == ["first question", "second question"]


async def test_reasoning_model_thinks_before_answering(client):
    _, evs = await ask(client, chat_body("Is 1001 prime?", ["claude-3-7-sonnet-thinking"]))
    names = [e["field_name"] for e in evs if "field_name" in e]
    started = names.index("session_state.answerthink_is_started")
    finished = names.index("session_state.answerthink_is_finished")
    assert started < finished < names.index("session_state.answer")
    thinking = field_deltas(evs, "session_state.answerthink")
    assert len(thinking) >= 2
    assert fields(evs, "session_state.answerthink_is_started") == [True]
    assert "".join(thinking) not in evs[-1]["content"]


async def test_search_answer_cites_and_adds_side_fields(client):
    _, evs = await ask(client, chat_body("latest python release", ["gpt-4.1"], search=True))
    assert fields(evs, "session_state.thinking")
    (top_bar,) = fields(evs, "session_state.search_status_top_bar_data")
    assert top_bar["status"] == "finished" and 2 <= len(top_bar["search_results"]) <= 3
    assert all(r["link"].startswith("https://example.org/") and r["title"] and r["snippet"] for r in top_bar["search_results"])
    answer = "".join(field_deltas(evs, "session_state.answer"))
    assert answer == evs[-1]["content"]
    assert f"[1]({top_bar['search_results'][0]['link']})" in answer
    names = [e.get("field_name") for e in evs]
    assert names.index("session_state.streaming_markmap") > max(i for i, n in enumerate(names) if n == "session_state.answer")
    assert field_deltas(evs, "session_state.streaming_detail_answer[0]")
    assert "# " not in evs[-1]["content"]  # markmap text must not be part of the answer


async def test_o1_search_puts_detail_answer_json_in_content(client):
    _, evs = await ask(client, chat_body("what is new", ["o1"], search=True))
    assert not [e for e in evs if e["type"] == "message_field_delta"]
    detail = json.loads(evs[-1]["content"])
    assert detail["detailAnswer"].startswith("[simulated o1] You said: what is new [1](https://example.org/")


async def test_o1_without_search_sends_the_answer_whole(client):
    _, evs = await ask(client, chat_body("hello", ["o1"]))
    assert fields(evs, "session_state.answer") == [evs[-1]["content"]]
    assert not field_deltas(evs, "session_state.answer")


async def test_mixture_of_agents_drafts_each_model(client):
    models = ["gpt-5.1-low", "claude-sonnet-4-5", "gemini-3-pro-preview"]
    _, evs = await ask(client, chat_body("compare", models))
    assert fields(evs, "session_state.models") == [models]
    for index, model in enumerate(models):
        assert "".join(field_deltas(evs, f"session_state.layer_0_answer_{index}")).startswith(f"[simulated {model} draft]")
    assert evs[-1]["content"].startswith("[simulated mixture-of-agents: gpt-5.1-low, claude-sonnet-4-5, gemini-3-pro-preview]")
    assert evs[-1]["session_state"]["layers"] == 1


TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}, "metric": {"type": "boolean"}}}}},
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}}}},
]
TOOL_PROMPT = (
    "You can call external tools. Tools:\n" + json.dumps(TOOLS)
    + '\nReply only with <tool_call>{"name":"tool_name","arguments":{…}}</tool_call> blocks.'
)


def tool_messages(*turns: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"role": "system", "content": TOOL_PROMPT}, *turns]


async def test_tool_call_answer_splits_the_tag(client):
    _, evs = await ask(client, chat_body(messages=tool_messages({"role": "user", "content": "weather in Paris?"})))
    content = evs[-1]["content"]
    assert content == '<tool_call>{"name": "get_weather", "arguments": {"city": "sim", "days": 1, "metric": true}}</tool_call>'
    pieces = field_deltas(evs, "session_state.answer")
    assert "<tool_" in pieces and any(p.startswith("call>{") for p in pieces)
    assert "".join(pieces) == content


async def test_parallel_and_malformed_tool_calls(client):
    _, evs = await ask(client, chat_body(messages=tool_messages({"role": "user", "content": "weather and time, in parallel"})))
    calls = re.findall(r"<tool_call>(.*?)</tool_call>", evs[-1]["content"])
    assert [json.loads(c)["name"] for c in calls] == ["get_weather", "get_time"]
    _, evs = await ask(client, chat_body(messages=tool_messages({"role": "user", "content": "send malformed weather json"})))
    assert evs[-1]["content"] == '<tool_call>{"name": broken json</tool_call>'


async def test_tool_result_is_answered_in_prose(client):
    history = tool_messages(
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": "Assistant tool calls:\n[...]"},
        {"role": "user", "content": "Tool result (tool_call_id=call_1):\n{\"temp\": 21}"},
    )
    _, evs = await ask(client, chat_body(messages=history))
    assert "<tool_call>" not in evs[-1]["content"] and '{"temp": 21}' in evs[-1]["content"]
    history[-1] = {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}
    _, evs = await ask(client, chat_body(messages=history))
    assert evs[-1]["content"].endswith("The tool returned: sunny")


# --- images, videos, polling, files -------------------------------------------------------------


async def test_image_generation_poll_and_download(client, sim):
    response = await client.post("/api/copilot/ask", json=image_body("an apple", count=2), headers=cookie("demo"))
    evs = events(response.text)
    assert [e["type"] for e in evs] == ["project_start", "project_field", "message_field", "message_result"]
    generated = json.loads(evs[-1]["content"])["generated_images"]
    assert [g["status"] for g in generated] == ["PENDING", "PENDING"] and generated[0]["model"] == "flux"
    task_ids = [g["task_id"] for g in generated]
    poll = await client.post("/api/ig_tasks_status", json={"task_ids": task_ids}, headers=cookie("demo"))
    updates = events(poll.text)
    assert {u["type"] for u in updates[:-1]} == {"TASKS_STATUS_UPDATE"}
    assert all(0 <= u["progress"] <= 100 and u["status"] == "PROCESSING" for u in updates[:-1])
    final = updates[-1]
    assert final["type"] == "TASKS_STATUS_COMPLETE" and set(final["final_status"]) == set(task_ids)
    images = []
    for task_id in task_ids:
        status = final["final_status"][task_id]
        assert status["status"] == "SUCCESS" and status["image_urls"] == status["image_urls_nowatermark"]
        assert status["image_urls"][0] == str(client.base_url).rstrip("/") + f"/sim-files/{task_id}.png"
        download = await client.get(status["image_urls"][0])
        assert download.headers["content-type"] == "image/png"
        assert download.content.startswith(b"\x89PNG\r\n\x1a\n")
        images.append(download.content)
    assert images[0] != images[1]
    assert sim.downloads[-1].cookie_sent is False and sim.downloads[-1].found
    assert sim.stream_closures[-1].path == "/api/ig_tasks_status" and sim.stream_closures[-1].completed


async def test_image_count_from_prompt_and_fail_one(client):
    _, evs = await ask(client, image_body("three cats n=3 fail-one"))
    task_ids = [g["task_id"] for g in json.loads(evs[-1]["content"])["generated_images"]]
    assert len(task_ids) == 3
    _, updates = await ask(client, {"task_ids": task_ids + ["nope"]}, path="/api/ig_tasks_status")
    final = updates[-1]["final_status"]
    assert [final[t]["status"] for t in task_ids] == ["SUCCESS", "SUCCESS", "FAILURE"]
    assert final[task_ids[-1]]["image_urls"] == [] and final["nope"]["status"] == "NOT_FOUND"
    assert (await client.get(f"/sim-files/{task_ids[-1]}.png")).status_code == 404


async def test_video_generation_and_poll(client):
    _, evs = await ask(client, image_body("a river", kind="VIDEO"))
    (video,) = json.loads(evs[-1]["content"])["generated_videos"]
    _, updates = await ask(client, {"task_ids": [video["task_id"]]}, path="/api/vg_tasks_status")
    url = updates[-1]["final_status"][video["task_id"]]["video_urls"][0]
    download = await client.get(url)
    assert download.headers["content-type"] == "video/mp4" and download.content[4:8] == b"ftyp"
    assert struct.unpack(">I", download.content[:4])[0] == 32
    _, wrong_kind = await ask(client, {"task_ids": [video["task_id"]]}, path="/api/ig_tasks_status")
    assert wrong_kind[-1]["final_status"][video["task_id"]]["status"] == "NOT_FOUND"


async def test_legacy_task_status(client):
    _, evs = await ask(client, image_body("legacy"))
    task_id = json.loads(evs[-1]["content"])["generated_images"][0]["task_id"]
    first = (await client.get("/api/spark/image_generation_task_status", params={"task_id": task_id}, headers=cookie("d"))).json()
    second = (await client.get("/api/spark/image_generation_task_status", params={"task_id": task_id}, headers=cookie("d"))).json()
    assert first["data"]["status"] == "PENDING" and first["data"]["image_urls"] == []
    assert second["data"]["status"] == "SUCCESS" and second["data"]["image_urls_nowatermark"][0].endswith(f"{task_id}.png")


async def test_never_task_polls_until_the_client_leaves(client, sim):
    _, evs = await ask(client, image_body("never finishes"))
    task_id = json.loads(evs[-1]["content"])["generated_images"][0]["task_id"]
    async with await open_stream(client, "/api/ig_tasks_status", {"task_ids": [task_id]}, "demo") as stream:
        progress = await read_events(stream, 6)
    left_at = trio.current_time()
    assert all(p["type"] == "TASKS_STATUS_UPDATE" for p in progress)
    await _wait_for_closure(sim, "/api/ig_tasks_status")
    closure = sim.stream_closures[-1]
    assert not closure.completed and closure.closed_at - left_at < 1


async def open_stream(client: httpx.AsyncClient, path: str, body: Any, session: str) -> trio.SocketStream:
    """POST over a bare socket, so a test can drop the connection exactly when it wants to."""
    url = client.base_url
    stream = await trio.open_tcp_stream(url.host, url.port)
    payload = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {url.host}:{url.port}\r\nContent-Type: application/json\r\n"
        f"Cookie: session_id={session}\r\nContent-Length: {len(payload)}\r\n\r\n"
    )
    await stream.send_all(head.encode() + payload)
    return stream


async def read_events(stream: trio.SocketStream, count: int) -> list[dict[str, Any]]:
    """The first ``count`` SSE events; every event is one chunk, so chunk framing never splits one."""
    received = b""
    while len(found := re.findall(rb"data: ([^\n]*)\n\n", received)) < count:
        data = await stream.receive_some()
        assert data, "server closed the stream early"
        received += data
    return [json.loads(frame) for frame in found[:count]]


async def _wait_for_closure(sim: Simulator, path: str) -> None:
    with trio.fail_after(1):
        while not [c for c in sim.stream_closures if c.path == path and not c.completed]:
            await trio.sleep(0.01)


# --- abnormal conditions ----------------------------------------------------------------------


EDGE_CASES = [
    ("rate-limited-2", 429, "text/plain", "Rate limit exceeded cf1"),
    ("not-login", 200, "application/json", '{"status":-5,"message":"not login","data":{}}'),
    ("cf-challenge", 403, "text/html", "window._cf_chl_opt"),
    ("cf-block", 403, "text/html", '<h1 data-translate="block_headline">Sorry, you have been blocked</h1>'),
    ("internal-error", 500, "text/plain", "Internal Server Error"),
    ("service-unavailable", 503, "text/html", '<div class="tt">Service Unavailable</div>'),
]


@pytest.mark.parametrize(("session", "status", "content_type", "marker"), EDGE_CASES)
@pytest.mark.parametrize("path", ["/api/copilot/ask", "/api/agent/ask_proxy"])
async def test_edge_scenarios(client, path, session, status, content_type, marker):
    body = chat_body() if path.endswith("ask") else {"type": "ai_chat", "ai_chat_model": "gpt-5.4", "messages": []}
    response = await client.post(path, json=body, headers=cookie(session))
    assert response.status_code == status
    assert response.headers["content-type"].startswith(content_type)
    assert marker in response.text
    if status in (429, 500) or session == "not-login":
        assert response.text == marker


async def test_html_pages_are_single_line_where_detectors_need_it(client):
    challenge = (await client.post("/api/copilot/ask", json=chat_body(), headers=cookie("cf-challenge-1"))).text
    assert re.match(r"^<!DOCTYPE html><html.*?><head>.*?</head><body.*?>.*?</body></html>$", challenge)
    assert "<title>Just a moment...</title>" in challenge
    page = (await client.post("/api/copilot/ask", json=chat_body(), headers=cookie("service-unavailable"))).text
    assert re.match(r"^<!doctype html><html.*?><head>.*?</head><body.*?>.*?</body></html>", page)
    assert "<title>Genspark</title>" in page and "genspark_logo.png" in page


async def test_missing_cookie(client):
    response = await client.post("/api/copilot/ask", json=chat_body())
    assert response.json() == {"status": -5, "message": "not login", "data": {}}
    browser = {"Origin": "https://www.genspark.ai", "Referer": "https://www.genspark.ai/"}
    response = await client.post("/api/agent/ask_proxy", json={"type": "ai_chat", "ai_chat_model": "x"}, headers=browser)
    assert response.json() == {"status": -5, "message": "not login", "data": {}}  # §12.5: no longer E22


@pytest.mark.parametrize("body", [b"null", b"not json", b"[1, 2]"])
async def test_bad_bodies_are_400(client, body):
    response = await client.post("/api/copilot/ask", content=body, headers=cookie("demo"))
    assert response.status_code == 400 and response.headers["content-type"].startswith("text/plain")


async def test_free_limit_is_the_exact_e5_line(client):
    response = await client.post("/api/copilot/ask", json=chat_body(), headers=cookie("free-limit-3"))
    frames = response.text[:-2].split("\n\n")
    assert json.loads(frames[0][6:])["type"] == "project_start" and frames[1] == E5_LINE


async def test_session_limit_carries_a_reset_time(client):
    _, evs = await ask(client, chat_body(), "session-limit")
    result = evs[-1]
    assert result["action"]["type"] == "ACTION_SESSION_LIMIT"
    assert result["session_state"] == {"session_limit_exceeded": True}
    reset = int(re.search(r"\{time:(\d+)\}", result["content"]).group(1))
    assert 7000 < reset - time.time() < 7400


async def test_overloaded_on_image_and_chat(client):
    for body in (image_body("x"), chat_body()):
        _, evs = await ask(client, body, "overloaded")
        assert [e["type"] for e in evs] == ["message_field", "message_result"]
        assert evs[0]["field_name"] == "_updatetime"
        assert evs[-1]["id"] == "" and evs[-1]["content"] == "Server overloaded, please try again later."
        assert list(evs[-1])[-4:] == ["tool_calls", "tool_call_id", "thinking_blocks", "type"]


async def test_retired_cut_empty_and_degraded(client, sim):
    _, evs = await ask(client, chat_body(), "retired")
    assert "this feature has been retired" in evs[-1]["content"].lower() and "ai chat" in evs[-1]["content"].lower()
    _, evs = await ask(client, chat_body("one two three four five six"), "cut-stream")
    assert evs[-1]["type"] == "message_field_delta" and len(field_deltas(evs, "session_state.answer")) == 2
    assert sim.stream_closures[-1].completed
    _, evs = await ask(client, chat_body(), "empty-answer")
    assert [e["type"] for e in evs] == ["project_start", "message_result"] and evs[-1]["content"] == ""
    _, evs = await ask(client, chat_body(models=["claude-opus-4-6"]), "degraded")
    assert fields(evs, "session_state.models") == [["gpt-4o-mini"]]
    _, evs = await ask(client, chat_body(), "bad-request-cf")  # only ask_proxy cares
    assert evs[-1]["content"].startswith("[simulated claude-sonnet-4-5]")


async def test_stall_goes_silent_until_the_client_leaves(client, sim):
    async with await open_stream(client, "/api/copilot/ask", chat_body(), "stall") as stream:
        (first,) = await read_events(stream, 1)
        assert first["type"] == "project_start"
        with trio.move_on_after(0.3) as silence:
            extra = await stream.receive_some()
        assert silence.cancelled_caught, f"a stalled stream sends nothing more (nor closes), got {extra!r}"
        assert not sim.stream_closures
    await _wait_for_closure(sim, "/api/copilot/ask")


async def test_slow_first_byte_delays_headers_and_can_be_abandoned(client, sim):
    started = trio.current_time()
    response = await client.post("/api/copilot/ask", json=chat_body(), headers=cookie("slow-first-byte"))
    assert trio.current_time() - started >= 0.3 and response.status_code == 200
    with pytest.raises(httpx.ReadTimeout):
        await client.post("/api/copilot/ask", json=chat_body(), headers=cookie("slow-first-byte-2"), timeout=0.1)
    await _wait_for_closure(sim, "/api/copilot/ask")


async def test_disconnect_mid_answer_is_recorded(client, sim):
    sim.answer_delay = 0.2
    async with await open_stream(client, "/api/copilot/ask", chat_body("a b c d e f g h"), "demo") as stream:
        assert len(await read_events(stream, 3)) == 3
        assert not sim.stream_closures
    left_at = trio.current_time()
    await _wait_for_closure(sim, "/api/copilot/ask")
    assert sim.stream_closures[-1].closed_at - left_at < 1


async def test_heartbeats_during_a_slow_answer(client, sim):
    sim.answer_delay, sim.heartbeat_interval = 0.05, 0.02
    _, evs = await ask(client, chat_body("one two three four"))
    assert len(fields(evs, "_updatetime")) > 3
    assert "".join(field_deltas(evs, "session_state.answer")) == evs[-1]["content"]


# --- reCAPTCHA ----------------------------------------------------------------------------------


async def test_recaptcha_service_and_needs_captcha(client):
    ok = await client.get("/genspark", headers=cookie("demo"))
    assert ok.json() == {"code": 200, "message": "Token retrieved successfully", "token": "sim-token-1"}
    failed = await client.get("/genspark", headers=cookie("captcha-fail-1"))
    assert failed.status_code == 200 and failed.json() == {"code": 500, "message": "Failed to retrieve token"}
    _, evs = await ask(client, image_body("x"), "needs-captcha-1")
    assert evs[-1]["content"] == "Server overloaded, please try again later."
    token = (await client.get("/genspark", headers=cookie("needs-captcha-1"))).json()["token"]
    _, evs = await ask(client, image_body("x", g_recaptcha_token=token), "needs-captcha-1")
    assert "generated_images" in evs[-1]["content"]
    _, evs = await ask(client, chat_body(g_recaptcha_token=token), "needs-captcha-1")  # tokens are single-use
    assert fields(evs, "session_state.models") == [["gpt-4o-mini"]]


# --- uploads, deletion, recording ---------------------------------------------------------------


async def test_upload_then_reference_in_chat(client, sim):
    slot = (await client.get("/api/get_upload_personal_image_url", headers=cookie("demo"))).json()
    assert slot["status"] == 0
    upload_url, storage_url = slot["data"]["upload_image_url"], slot["data"]["private_storage_url"]
    assert (await client.put(upload_url, content=b"%PDF-1.4 data")).status_code == 400
    put = await client.put(upload_url, content=b"%PDF-1.4 data", headers={"x-ms-blob-type": "BlockBlob"})
    assert put.status_code == 201 and put.content == b""
    key = key_of_storage_url(storage_url)
    assert sim.uploads[key] == b"%PDF-1.4 data"
    assert sim.requests[-1].headers["x-ms-blob-type"] == "BlockBlob" and sim.requests[-1].session_id is None
    part = {"type": "private_file", "private_file": {"name": "file", "type": "application/pdf", "size": 13, "ext": "pdf",
                                                     "private_storage_url": storage_url}}
    content = [part, {"type": "text", "text": "summarise"}]
    _, evs = await ask(client, chat_body(messages=[{"role": "user", "content": content}]))
    assert "file file (13 bytes uploaded)" in evs[-1]["content"]
    not_login = await client.get("/api/get_upload_personal_image_url", headers=cookie("not-login"))
    assert not_login.json()["status"] == -5


async def test_delete_project_and_request_recording(client, sim):
    _, evs = await ask(client, chat_body())
    project_id = evs[0]["id"]
    response = await client.get("/api/project/delete", params={"project_id": project_id}, headers=cookie("demo"))
    assert response.json() == {"status": 0, "message": "success"}
    assert sim.deleted_projects == [project_id] and project_id not in sim.projects
    (recorded,) = sim.requests_to("/api/copilot/ask")
    assert recorded.method == "POST" and recorded.session_id == "demo"
    assert recorded.json["extra_data"]["models"] == ["claude-sonnet-4-5"] and "cookie" in recorded.headers
    assert sim.requests_to("/api/project/delete")[0].query == {"project_id": project_id}
    sim.reset()
    assert not sim.requests and not sim.projects and not sim.deleted_projects


# --- G2 ai_chat ---------------------------------------------------------------------------------


def agent_body(text: str, model: str = "claude-sonnet-4-6", **extra: Any) -> dict[str, Any]:
    return {
        "type": "ai_chat", "ai_chat_model": model, "ai_chat_enable_search": extra.pop("search", False),
        "ai_chat_disable_personalization": False, "use_moa_proxy": False, "moa_models": [], "writingContent": None,
        "project_id": extra.pop("project_id", None), "messages": [{"role": "user", "id": "u1", "content": text}],
        "user_s_input": text, "is_private": True, "push_token": "", "g_recaptcha_token": "", **extra,
    }


# --- scenarios added for service gaps -------------------------------------------------------------


@pytest.mark.parametrize(
    ("session", "scenario"),
    [
        ("bad-request", Scenario.BAD_REQUEST),
        ("bad-request-1", Scenario.BAD_REQUEST),
        ("bad-request-cf3a9", Scenario.BAD_REQUEST),  # a hex tail starting "cf" is not "-cf"
        ("bad-request-cf", Scenario.BAD_REQUEST_CF),
        ("bad-request-cf-3a9", Scenario.BAD_REQUEST_CF),
        ("free-limit-2", Scenario.FREE_LIMIT),
        ("free-limit-reset-2", Scenario.FREE_LIMIT_RESET),
        ("flaky_1", Scenario.FLAKY),
        ("stall1", Scenario.NORMAL),
        ("okay", Scenario.NORMAL),
    ],
)
def test_scenario_prefixes_are_whole_words(session, scenario):
    assert scenario_for(session) is scenario


async def test_free_limit_reset_marks_the_reset_time(client):
    for body, path in ((chat_body(), "/api/copilot/ask"), (agent_body("x"), "/api/agent/ask_proxy")):
        _, evs = await ask(client, body, "free-limit-reset-1", path=path)
        if path.endswith("ask_proxy"):  # §12.4.1: the older shapes get `_event_index` there
            assert [e.pop("_event_index") for e in evs] == [0, 1]
        assert [e["type"] for e in evs] == ["project_start", "message_result"]
        result = evs[-1]
        assert result["action"]["type"] == "ACTION_QUOTA_EXCEEDED" and result["id"] == ""
        assert result["session_state"] == {"consume_usage_quota_exceeded": True}
        assert result["content"].startswith("You've reached your free usage limit today")
        reset = int(re.search(r"\{time:(\d+)\}", result["content"]).group(1))
        assert 3 * 3600 - 60 < reset - time.time() < 3 * 3600 + 60
        assert list(result) == list(json.loads(E5_LINE[6:]))  # the E5 keys, in the E5 order


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/copilot/ask", chat_body()),
        ("/api/copilot/ask", image_body("x")),
        ("/api/copilot/ask", image_body("x", kind="VIDEO")),
        ("/api/agent/ask_proxy", agent_body("x")),
    ],
)
async def test_bad_request_is_a_json_400(client, sim, path, body):
    response = await client.post(path, json=body, headers=cookie("bad-request-1"))
    assert response.status_code == 400 and response.headers["content-type"] == "application/json"
    assert response.json() == {"status": 400, "message": "invalid request: messages"}
    assert not sim.projects and not sim.tasks


async def test_bad_request_leaves_account_calls_alone(client):
    response = await client.get("/api/get_upload_personal_image_url", headers=cookie("bad-request-1"))
    assert response.json()["status"] == 0


async def test_flaky_fails_once_per_session_id(client, sim):
    for session in ("flaky-1", "flaky-2"):
        response = await client.post("/api/copilot/ask", json=chat_body(), headers=cookie(session))
        assert (response.status_code, response.text) == (429, "Rate limit exceeded cf1")
    for path, body in (("/api/copilot/ask", chat_body()), ("/api/agent/ask_proxy", agent_body("x"))):
        response, evs = await ask(client, body, "flaky-1", path=path)
        assert response.status_code == 200 and "message_result" in [e["type"] for e in evs]
    sim.reset()  # a reset simulator has forgotten who already failed
    response = await client.post("/api/agent/ask_proxy", json=agent_body("x"), headers=cookie("flaky-1"))
    assert response.status_code == 429


async def test_tool_call_with_prose_and_an_unoffered_tool(client):
    _, evs = await ask(client, chat_body(messages=tool_messages({"role": "user", "content": "the weather, explained in prose"})))
    content = evs[-1]["content"]
    before, block, after = content.split("\n")
    assert before == "Let me look that up for you." and after == "I will answer as soon as the tool replies."
    assert json.loads(block.removeprefix("<tool_call>").removesuffix("</tool_call>"))["name"] == "get_weather"
    _, evs = await ask(client, chat_body(messages=tool_messages({"role": "user", "content": "call an unknown weather tool"})))
    assert evs[-1]["content"] == '<tool_call>{"name": "sim_unoffered_tool", "arguments": {}}</tool_call>'


# --- pure pieces ----------------------------------------------------------------------------------


@given(st.lists(st.sampled_from([*"ab <>_/{}\n", "<tool_call>", "</tool_call>", "<tool_"]), max_size=40).map("".join))
def test_split_deltas_reassembles(text):
    pieces = split_deltas(text)
    assert "".join(pieces) == text and all(pieces)
    assert not any("<tool_call>" in piece or "</tool_call>" in piece for piece in pieces)


def test_png_chunks_are_valid():
    png = solid_png((1, 2, 3))
    offset, kinds = 8, []
    while offset < len(png):
        (length,) = struct.unpack(">I", png[offset : offset + 4])
        kind, data = png[offset + 4 : offset + 8], png[offset + 8 : offset + 8 + length]
        assert struct.unpack(">I", png[offset + 8 + length : offset + 12 + length])[0] == zlib.crc32(kind + data)
        kinds.append(kind)
        offset += 12 + length
    assert kinds == [b"IHDR", b"IDAT", b"IEND"]
    assert zlib.decompress(png[41:-12])[:4] == b"\x00\x01\x02\x03"


def test_tool_definitions_skip_example_calls():
    text = 'Example: <tool_call>{"name": "x", "arguments": {}}</tool_call> Tools: [{"name": "real", "parameters": {}}]'
    assert [t["name"] for t in find_tool_definitions(text)] == ["real"]
