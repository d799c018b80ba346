"""The Anthropic Messages door end to end: the real `anthropic` SDK → live service → live simulator.

The simulated model answers "[simulated <model>] You said: <text>", thinks for "-pro" models
(with `readable_reasoning`), calls a tool the question names, and quotes a tool result once one
follows (simulator/answers.py).
"""

from __future__ import annotations

import json
import re
import time
import uuid

import anthropic
import pytest
import trio
from conftest import FakeClock, Service, ServiceFactory, sse_frames, start_service

from genspark2api.api.messages_wire import thinking_signature

MODEL = "claude-sonnet-4-5-20250929"      # served by claude-sonnet-4-5
SERVED = "claude-sonnet-4-5"
REASONING_MODEL = "gpt-5.4-pro"           # the simulator thinks for any "-pro" model
WEATHER = {"name": "get_weather", "description": "Current weather in a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
ASK_WEATHER = "Use get_weather for Paris, please."


def client(service: Service, **kwargs: object) -> anthropic.AsyncAnthropic:
    options: dict[str, object] = {"api_key": "test-key", "max_retries": 0, "timeout": 30} | kwargs
    return anthropic.AsyncAnthropic(base_url=service.url, **options)  # type: ignore[arg-type]


def said(text: str, model: str = SERVED) -> str:
    return f"[simulated {model}] You said: {text}"


def upstream_texts(sim) -> list[str]:
    """Every message text of every upstream chat call (to see what was sent)."""
    bodies = [r.json for r in sim.requests if r.path == "/api/agent/ask_proxy"]
    return [json.dumps(m.get("content")) for b in bodies for m in b["messages"]]


# ------------------------------------------------------------------------------ answers


async def test_create_and_stream(make_service: ServiceFactory) -> None:
    service = await make_service()
    api = client(service)
    message = await api.messages.create(model=MODEL, max_tokens=200, messages=[{"role": "user", "content": "Hello there"}])
    assert message.type == "message" and message.role == "assistant" and message.model == MODEL
    assert message.id.startswith("msg_") and message.stop_reason == "end_turn" and message.stop_sequence is None
    assert [(b.type, b.text) for b in message.content] == [("text", said("Hello there"))]
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    assert message.usage.cache_read_input_tokens == 0 and message.usage.cache_creation_input_tokens == 0

    async with api.messages.stream(model="claude-opus-4-6", max_tokens=200,
                                   messages=[{"role": "user", "content": "Hello again"}]) as stream:
        pieces = [text async for text in stream.text_stream]
        final = await stream.get_final_message()
    assert len(pieces) > 1 and "".join(pieces) == said("Hello again", "claude-opus-4-6")
    assert [b.text for b in final.content] == ["".join(pieces)] and final.stop_reason == "end_turn"
    assert final.model == "claude-opus-4-6" and final.usage.output_tokens > 0

    # The beta surface (Claude Code's): /v1/messages?beta=true with anthropic-beta headers.
    beta = await api.beta.messages.create(model=MODEL, max_tokens=100, betas=["interleaved-thinking-2025-05-14"],
                                          messages=[{"role": "user", "content": "Hello beta"}])
    assert beta.content[0].text == said("Hello beta")


async def test_a_stream_byte_for_byte(make_service: ServiceFactory) -> None:
    service = await make_service(STREAM_COALESCE_SECONDS="0")
    async with service.http() as http:
        response = await http.post("/v1/messages?beta=true", headers={"x-api-key": "k", "anthropic-version": "2023-06-01"},
                                   json={"model": MODEL, "max_tokens": 100, "stream": True,
                                         "messages": [{"role": "user", "content": "Hello there"}]})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    body = response.content.decode()
    ids = re.findall(r'"id":"(msg_[0-9a-f]{32})"', body)
    prompt = re.findall(r'"input_tokens":(\d+)', body)
    output = re.findall(r'"output_tokens":(\d+)', body)
    assert len(ids) == 1 and len(prompt) == 2 and len(output) == 2 and int(output[1]) > 0
    start = {"type": "message_start", "message": {
        "type": "message", "id": ids[0], "role": "assistant", "model": MODEL, "content": [], "stop_reason": None,
        "stop_sequence": None, "usage": {"input_tokens": int(prompt[0]), "cache_creation_input_tokens": 0,
                                         "cache_read_input_tokens": 0, "output_tokens": 0}}}

    def ev(name: str, data: object) -> str:
        return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"

    deltas = [f"[simulated {SERVED}] ", "You said: ", "Hello there"]
    assert body == (
        ev("message_start", start) + ev("ping", {"type": "ping"})
        + ev("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
        + "".join(ev("content_block_delta", {"type": "content_block_delta", "index": 0,
                                             "delta": {"type": "text_delta", "text": d}}) for d in deltas)
        + ev("content_block_stop", {"type": "content_block_stop", "index": 0})
        + ev("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                               "usage": {"input_tokens": int(prompt[1]), "output_tokens": int(output[1])}})
        + ev("message_stop", {"type": "message_stop"})
    )


@pytest.mark.parametrize("stream", [False, True])
async def test_thinking_blocks(make_service: ServiceFactory, sim, stream: bool) -> None:
    service = await make_service()
    sim.options.readable_reasoning = True
    question = "Is 1001 prime"
    thought = f"Simulated reasoning: the question has {len(question.split())} words. Echo it back faithfully."
    api = client(service)
    kwargs = {"model": REASONING_MODEL, "max_tokens": 500, "messages": [{"role": "user", "content": question}]}
    if stream:
        async with api.messages.stream(**kwargs, thinking={"type": "enabled", "budget_tokens": 1024}) as events:
            kinds = [e.type async for e in events]
            message = await events.get_final_message()
        assert "thinking" in kinds and "signature" in kinds   # the SDK's thinking and signature events
    else:
        message = await api.messages.create(**kwargs, thinking={"type": "enabled", "budget_tokens": 1024})
    assert [b.type for b in message.content] == ["thinking", "text"]
    assert message.content[0].thinking == thought and message.content[0].signature == thinking_signature(thought)
    assert message.content[1].text == said(question, REASONING_MODEL)
    # The thinking block sent back in the history is accepted, not sent, and the follow-up continues
    # the same Genspark thread (the binding never saw the thinking either).
    history = [*kwargs["messages"], {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in message.content]},
               {"role": "user", "content": "And 1003"}]
    follow = await api.messages.create(**{**kwargs, "messages": history}, thinking={"type": "enabled", "budget_tokens": 1024})
    assert follow.content[-1].text.startswith(said("And 1003", REASONING_MODEL) + " (turn 2 of this conversation)")
    (project,) = sim.projects
    assert len(sim.projects[project].turns) == 2 and "Simulated reasoning" not in "".join(upstream_texts(sim))

    # Without `thinking`, no thinking block, and the reasoning is not in the text either.
    plain = await api.messages.create(**kwargs)
    assert [(b.type, b.text) for b in plain.content] == [("text", said(question, REASONING_MODEL))]


@pytest.mark.parametrize("stream", [False, True])
async def test_stop_sequence_and_max_tokens(make_service: ServiceFactory, stream: bool) -> None:
    service = await make_service()
    api = client(service)

    async def ask(**kwargs: object) -> anthropic.types.Message:
        if not stream:
            return await api.messages.create(model=MODEL, **kwargs)  # type: ignore[arg-type]
        async with api.messages.stream(model=MODEL, **kwargs) as events:  # type: ignore[arg-type]
            return await events.get_final_message()

    question = "Tell me a long story about a dragon and a knight"
    stopped = await ask(max_tokens=200, stop_sequences=["never", "You sa"], messages=[{"role": "user", "content": question}])
    assert (stopped.stop_reason, stopped.stop_sequence) == ("stop_sequence", "You sa")
    assert [b.text for b in stopped.content] == [f"[simulated {SERVED}] "]
    cut = await ask(max_tokens=5, messages=[{"role": "user", "content": question}])
    assert cut.stop_reason == "max_tokens" and cut.stop_sequence is None
    text = cut.content[0].text
    assert text and said(question).startswith(text) and text != said(question)
    assert 0 < cut.usage.output_tokens <= 5


# ------------------------------------------------------------------------------ tools


@pytest.mark.parametrize("stream", [False, True])
async def test_a_tool_use_round_trip(make_service: ServiceFactory, sim, stream: bool) -> None:
    service = await make_service()
    api = client(service)
    tools = [WEATHER, {"type": "bash_20250124", "name": "bash"}]   # a server tool nothing runs: ignored
    history: list[dict] = [{"role": "user", "content": ASK_WEATHER}]

    async def ask() -> anthropic.types.Message:
        if not stream:
            return await api.messages.create(model=MODEL, max_tokens=300, tools=tools, messages=history)
        async with api.messages.stream(model=MODEL, max_tokens=300, tools=tools, messages=history) as events:
            return await events.get_final_message()

    first = await ask()
    assert first.stop_reason == "tool_use"
    (use,) = [b for b in first.content if b.type == "tool_use"]
    assert use.name == "get_weather" and use.id.startswith("toolu_") and isinstance(use.input, dict)
    assert set(use.input) == {"city"}
    instruction = "\n".join(upstream_texts(sim))
    assert "get_weather" in instruction and "bash" not in instruction

    history += [{"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                              "content": [{"type": "text", "text": "18 degrees and sunny"}]}]}]
    second = await ask()
    assert second.stop_reason == "end_turn" and [b.type for b in second.content] == ["text"]
    assert "18 degrees and sunny" in second.content[0].text
    # The follow-up told upstream the result, introduced as the instruction promised.
    assert any("Tool result for get_weather" in t and "18 degrees and sunny" in t for t in upstream_texts(sim))
    # ... and continued the Genspark thread of the call: the toolu_ ids and the input object sent
    # back bind to what the answer was remembered as (one project, two turns).
    (project,) = sim.projects
    assert len(sim.projects[project].turns) == 2


async def test_the_web_search_server_tool_is_genspark_search(make_service: ServiceFactory, sim) -> None:
    service = await make_service(GENSPARK_CHAT_PROTOCOL="copilot")
    question = "Latest Python release"
    message = await client(service).messages.create(
        model=MODEL, max_tokens=500, messages=[{"role": "user", "content": question}],
        tools=[{"type": "web_search_20250305", "name": "web_search", "max_uses": 2}])
    (body,) = [r.json for r in sim.requests if r.path == "/api/copilot/ask"]
    assert body["extra_data"]["request_web_knowledge"] is True
    assert message.stop_reason == "end_turn" and [b.type for b in message.content] == ["text"]
    assert "**Sources**" in message.content[0].text   # SEARCH_SOURCES: the list ends the text


async def test_count_tokens_is_the_prompt_estimate(make_service: ServiceFactory) -> None:
    service = await make_service()
    api = client(service)
    messages = [{"role": "user", "content": "How many tokens is this?"}]
    bare = await api.messages.count_tokens(model=MODEL, messages=messages)
    with_system = await api.messages.count_tokens(model=MODEL, messages=messages, system="You are terse and exact.")
    with_tools = await api.messages.count_tokens(model=MODEL, messages=messages, tools=[WEATHER])
    assert 0 < bare.input_tokens < with_system.input_tokens < with_tools.input_tokens
    # The same number the answer starts with (message_start's usage is the prompt estimate).
    async with api.messages.stream(model=MODEL, max_tokens=50, messages=messages, tools=[WEATHER]) as events:
        async for event in events:
            if event.type == "message_start":
                assert event.message.usage.input_tokens == with_tools.input_tokens
                break


async def test_models_in_anthropics_shape(make_service: ServiceFactory) -> None:
    service = await make_service()
    api = client(service)
    page = await api.models.list(limit=5)
    assert len(page.data) == 5 and page.has_more and page.first_id == page.data[0].id and page.last_id == page.data[-1].id
    assert all(m.type == "model" and m.display_name == m.id and m.created_at.year == 2026 for m in page.data)
    ids = [m.id async for m in api.models.list(limit=50)]   # the SDK pages on with after_id
    assert len(ids) == len(set(ids)) > 50 and "claude-opus-4-8" in ids and "gpt-image-2" not in ids
    one = await api.models.retrieve(MODEL)   # a dated name is served, so it exists
    assert one.id == MODEL
    async with service.http() as http:
        openai_shape = (await http.get("/v1/models")).json()
    assert openai_shape["object"] == "list" and openai_shape["data"][0]["object"] == "model"


# ------------------------------------------------------------------------------ errors


async def test_errors_in_anthropics_shape(make_service: ServiceFactory, sim) -> None:
    service = await make_service(API_SECRET="right-key", MAX_REQUEST_BYTES="4096")
    async with service.http() as http:
        too_large = await http.post("/v1/messages", headers={"x-api-key": "right-key"}, content=b"{" + b" " * 8000 + b"}")
        missing = await http.post("/v1/messages", headers={"x-api-key": "right-key"},
                                  json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
        unknown_path = await http.post("/v1/messages/batches", headers={"x-api-key": "right-key"}, json={})
        not_json = await http.post("/v1/messages", headers={"x-api-key": "right-key"}, content=b"{nope")
    assert missing.status_code == 400
    body = missing.json()
    assert body["type"] == "error" and body["request_id"].startswith("req_")
    assert body["error"] == {"type": "invalid_request_error", "message": "max_tokens: Field required"}
    assert missing.headers["request-id"] == body["request_id"]
    assert unknown_path.status_code == 404 and unknown_path.json()["error"]["type"] == "not_found_error"
    assert not_json.status_code == 400 and not_json.json()["error"]["type"] == "invalid_request_error"
    assert too_large.status_code == 413 and too_large.json()["error"]["type"] == "request_too_large"

    with pytest.raises(anthropic.AuthenticationError) as bad_key:
        await client(service, api_key="wrong-key").messages.create(
            model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert bad_key.value.body["error"]["type"] == "authentication_error" and "x-api-key" in bad_key.value.message
    # The key as Bearer (the SDK's auth_token) works as well as x-api-key.
    bearer = anthropic.AsyncAnthropic(base_url=service.url, auth_token="right-key", max_retries=0)
    assert (await bearer.messages.create(model=MODEL, max_tokens=50, messages=[
        {"role": "user", "content": "hi"}])).content[0].text == said("hi")

    api = client(service, api_key="right-key")
    with pytest.raises(anthropic.NotFoundError) as unknown:
        await api.messages.create(model="claude-sonet-4-5", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert unknown.value.body["error"]["type"] == "not_found_error" and "claude-sonnet-4-5" in unknown.value.message
    with pytest.raises(anthropic.BadRequestError) as block:
        await api.messages.create(model=MODEL, max_tokens=10, messages=[
            {"role": "user", "content": [{"type": "hologram", "data": "x"}]}])
    assert "messages[0].content[0].type" in block.value.message
    # The chat door keeps OpenAI's shape.
    async with service.http() as http:
        chat = await http.post("/v1/chat/completions", headers={"x-api-key": "wrong"}, json={})
    assert chat.status_code == 401 and set(chat.json()) == {"error"}
    assert not [r for r in sim.requests if r.path == "/api/agent/ask_proxy" and "hologram" in json.dumps(r.json)]


def cookie(scenario: str) -> str:
    return f"{scenario}-{uuid.uuid4().hex}"


async def test_a_cooling_pool_is_429_with_retry_after(nursery: trio.Nursery, sim) -> None:
    env = {"GENSPARK_BASE_URL": sim.url, "GS_COOKIE": cookie("rate-limited"), "REQUEST_RATE_LIMIT": "0",
           "RATE_LIMIT_COOKIE_LOCK_DURATION": "100"}
    service = await start_service(nursery, env, clock=FakeClock(time.time()))
    for stream in (False, True):
        with pytest.raises(anthropic.RateLimitError) as info:
            if stream:
                async with client(service).messages.stream(model=MODEL, max_tokens=10,
                                                           messages=[{"role": "user", "content": "hi"}]) as events:
                    await events.get_final_message()
            else:
                await client(service).messages.create(model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "hi"}])
        assert info.value.status_code == 429 and info.value.body["error"]["type"] == "rate_limit_error"
        assert 90 <= int(info.value.response.headers["retry-after"]) <= 100


async def test_a_busy_pool_is_529_overloaded(make_service: ServiceFactory, sim) -> None:
    sim.answer_delay = 0.1   # the first answer holds the only slot for a second or so
    service = await make_service(COOKIE_MAX_IN_FLIGHT="1", POOL_WAIT_SECONDS="0.3")
    api = client(service)
    first: list[anthropic.types.Message] = []

    async def hold() -> None:
        first.append(await api.messages.create(model=MODEL, max_tokens=500,
                                               messages=[{"role": "user", "content": "a long question " * 5}]))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(hold)
        await trio.sleep(0.15)
        with pytest.raises(anthropic.OverloadedError) as info:
            await api.messages.create(model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "second"}])
    assert info.value.status_code == 529 and info.value.body["error"]["type"] == "overloaded_error"
    assert info.value.response.headers["retry-after"]
    assert first and first[0].stop_reason == "end_turn"


async def test_a_failure_after_the_first_byte_is_an_error_event(make_service: ServiceFactory) -> None:
    service = await make_service([cookie("cut-stream")], NETWORK_COOLDOWN_SECONDS="7")
    async with service.http() as http:
        response = await http.post("/v1/messages", json={
            "model": MODEL, "max_tokens": 100, "stream": True, "messages": [{"role": "user", "content": "hello"}]})
    assert response.status_code == 200
    frames = sse_frames(response.content)
    assert frames[0].startswith(b"event: message_start\n") and b"text_delta" in response.content
    name, data = frames[-1].split(b"\n")
    assert name == b"event: error"
    error = json.loads(data.removeprefix(b"data: "))
    assert error["type"] == "error" and error["error"]["type"] == "api_error" and error["error"]["message"]
    assert b"message_stop" not in response.content
    with pytest.raises(anthropic.APIStatusError):   # the SDK raises on the error event
        async with client(service).messages.stream(model=MODEL, max_tokens=100,
                                                   messages=[{"role": "user", "content": "hello"}]) as events:
            await events.get_final_message()
