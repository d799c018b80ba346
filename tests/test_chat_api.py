"""Chat completions end to end: the openai SDK → live service → live simulator, both protocols."""

from __future__ import annotations

import json

import openai
import pytest
import trio
from conftest import Service, ServiceFactory, sse_frames

PROTOCOLS = ["ai_chat", "copilot"]
CHAT_PATH = {"ai_chat": "/api/agent/ask_proxy", "copilot": "/api/copilot/ask"}


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_non_stream_answer_and_usage(make_service: ServiceFactory, sim, protocol: str) -> None:
    service = await make_service(GENSPARK_CHAT_PROTOCOL=protocol)
    client = service.openai()
    result = await client.chat.completions.create(
        model="claude-sonnet-4-6", messages=[{"role": "user", "content": "Hello there"}]
    )
    assert result.object == "chat.completion" and result.model == "claude-sonnet-4-6"
    assert result.id.startswith("chatcmpl-")
    choice = result.choices[0]
    assert choice.finish_reason == "stop" and choice.index == 0
    assert choice.message.role == "assistant"
    assert choice.message.content.startswith("[simulated claude-sonnet-4-6] You said: Hello there")
    assert result.usage.prompt_tokens > 3 and result.usage.completion_tokens > 3
    assert result.usage.total_tokens == result.usage.prompt_tokens + result.usage.completion_tokens
    assert len(sim.requests_to(CHAT_PATH[protocol])) == 1


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_stream_answer(make_service: ServiceFactory, protocol: str) -> None:
    service = await make_service(GENSPARK_CHAT_PROTOCOL=protocol)
    client = service.openai()
    stream = await client.chat.completions.create(
        model="gpt-5.4", messages=[{"role": "user", "content": "Stream please"}], stream=True
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("[simulated gpt-5.4] You said: Stream please")
    assert [c.choices[0].finish_reason for c in chunks].count("stop") == 1
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert len({(c.id, c.created, c.model) for c in chunks}) == 1


async def test_sync_client_in_a_thread(service: Service) -> None:
    def call() -> str:
        client = openai.OpenAI(base_url=service.base, api_key="x", max_retries=0)
        answer = client.chat.completions.create(model="gpt-5.4", messages=[{"role": "user", "content": "sync"}])
        streamed = client.chat.completions.create(
            model="gpt-5.4", messages=[{"role": "user", "content": "sync"}], stream=True
        )
        return answer.choices[0].message.content + "|" + "".join(
            c.choices[0].delta.content or "" for c in streamed if c.choices
        )

    whole, streamed = (await trio.to_thread.run_sync(call)).split("|")
    assert whole == streamed and "You said: sync" in whole


async def test_models_list_and_retrieve(service: Service) -> None:
    client = service.openai()
    models = await client.models.list()
    ids = [m.id for m in models.data]
    assert "claude-sonnet-4-6" in ids and "claude-sonnet-4-6-search" in ids
    assert "nano-banana-pro" in ids and "sora-2" in ids
    assert all(m.object == "model" and m.owned_by and m.created == models.data[0].created for m in models.data)
    one = await client.models.retrieve("gemini/veo3.1")
    assert one.id == "gemini/veo3.1" and one.created == models.data[0].created
    with pytest.raises(openai.NotFoundError) as info:
        await client.models.retrieve("no-such-model")
    assert info.value.body["code"] == "model_not_found"


async def test_stream_bytes_follow_the_openai_wire(service: Service) -> None:
    async with service.http() as http:
        response = await http.post(
            "/v1/chat/completions",
            json={"model": "gpt-5.4", "stream": True, "stream_options": {"include_usage": True},
                  "messages": [{"role": "user", "content": "bytes"}]},
        )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache" and response.headers["x-accel-buffering"] == "no"
    frames = sse_frames(response.content)
    assert frames[-1] == b"data: [DONE]"
    assert all(f.startswith(b"data: {") for f in frames[:-1])
    assert not any(line.startswith((b"event:", b"id:")) for f in frames for line in f.split(b"\n"))
    chunks = [json.loads(f[6:]) for f in frames[:-1]]
    assert all(b"\n" not in f for f in frames)
    assert list(chunks[0]) == ["object", "id", "created", "model", "choices"]
    assert chunks[0]["choices"] == [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]
    assert {(c["id"], c["created"], c["model"], c["object"]) for c in chunks} == {
        (chunks[0]["id"], chunks[0]["created"], "gpt-5.4", "chat.completion.chunk")
    }
    finals = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"] is not None]
    assert len(finals) == 1 and finals[0]["choices"][0]["finish_reason"] == "stop"
    usage = chunks[-1]
    assert usage["choices"] == [] and usage["usage"]["total_tokens"] > 0
    assert all("usage" not in c for c in chunks[:-1])
    assert chunks[-2] is finals[0]


async def test_no_usage_chunk_without_include_usage(service: Service) -> None:
    async with service.http() as http:
        response = await http.post(
            "/v1/chat/completions",
            json={"model": "gpt-5.4", "stream": True, "messages": [{"role": "user", "content": "x"}]},
        )
    chunks = [json.loads(f[6:]) for f in sse_frames(response.content)[:-1]]
    assert all(c["choices"] for c in chunks)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_full_history_goes_upstream(make_service: ServiceFactory, sim, protocol: str) -> None:
    service = await make_service(GENSPARK_CHAT_PROTOCOL=protocol)
    messages = [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "First question"}]},
        {"role": "assistant", "content": "First answer", "reasoning_content": "ignored"},
        {"role": "user", "content": "Second question"},
    ]
    await service.openai().chat.completions.create(model="gpt-5.4", messages=messages)
    sent = sim.requests_to(CHAT_PATH[protocol])[-1].json["messages"]
    assert [(m["role"], m["content"]) for m in sent] == [
        ("system", "Be brief."), ("user", "First question"), ("assistant", "First answer"), ("user", "Second question"),
    ]


@pytest.mark.parametrize(
    ("model", "upstream", "search"),
    [
        ("claude-sonnet-4-6-search", ["claude-sonnet-4-6"], True),
        ("deepseek-v4-pro", ["deepseek-v4-pro"], False),   # §12.8.6: no deepseek→deep-seek rewrite
        ("moa-classic", ["gpt-5.1-low", "claude-sonnet-4-6", "gemini-3.1-pro-preview"], False),
    ],
)
async def test_model_routing_reaches_upstream(make_service: ServiceFactory, sim, model: str, upstream: list[str], search: bool) -> None:
    service = await make_service(GENSPARK_CHAT_PROTOCOL="copilot")
    result = await service.openai().chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    assert result.model == model
    extra = sim.requests_to("/api/copilot/ask")[-1].json["extra_data"]
    assert extra["models"] == upstream and extra["request_web_knowledge"] is search


async def test_unknown_models_are_404_with_a_suggestion(make_service: ServiceFactory, sim) -> None:
    """§12.8.6: upstream would silently serve an unknown id with another model, so we refuse it."""
    service = await make_service()
    with pytest.raises(openai.NotFoundError) as typo:
        await service.openai().chat.completions.create(model="claude-sonet-4-6", messages=[{"role": "user", "content": "hi"}])
    assert typo.value.body["code"] == "model_not_found" and "Did you mean 'claude-sonnet-4-6'" in typo.value.body["message"]
    with pytest.raises(openai.NotFoundError):
        await service.openai().chat.completions.create(model="some-unknown-model", messages=[{"role": "user", "content": "hi"}])
    assert sim.requests_to("/api/agent/ask_proxy") == []
    moa = await make_service(UNKNOWN_MODEL_MOA="1")
    await moa.openai().chat.completions.create(model="some-unknown-model", messages=[{"role": "user", "content": "hi"}])
    body = sim.requests_to("/api/agent/ask_proxy")[-1].json
    assert body["use_moa_proxy"] is True and body["ai_chat_model"] == body["models"][0] == "gpt-5.1-low"


async def test_ai_chat_body_shape(make_service: ServiceFactory, sim) -> None:
    """The §12.2.3 UI body and the §12.2.1 headers on a new thread."""
    service = await make_service(UPSTREAM_TIMEZONE="Asia/Shanghai")
    await service.openai().chat.completions.create(model="claude-sonnet-4-6-search", messages=[{"role": "user", "content": "q"}])
    request = sim.requests_to("/api/agent/ask_proxy")[-1]
    body = request.json
    assert body["type"] == "ai_chat" and body["ai_chat_model"] == "claude-sonnet-4-6"
    assert body["ai_chat_enable_search"] is True and body["user_s_input"] == "q"
    assert body["project_id"] is None and body["last_seen_event_index"] == -1 and body["chat_session_id"] is None
    assert body["sas_ask_origin"] == "typed" and body["use_moa_proxy"] is False and body["moa_models"] == []
    (message,) = body["messages"]
    assert message["pending"] is True and message["_deepDiveStateNegContent"] == "q"
    assert body["client_message_id"] == message["id"]
    headers = request.headers
    assert headers["referer"].endswith("/agents?type=ai_chat") and headers["origin"] == service.runtime.settings.base_url
    assert headers["x-timezone"] == "Asia/Shanghai" and "Chrome/" in headers["user-agent"]
    trace = headers["traceparent"].split("-")
    assert headers["request-id"] == f"|{trace[1]}.{trace[2]}" and len(trace[1]) == 32
    assert request.session_id == "ok-1"


async def test_answered_model_is_reported_in_a_header(make_service: ServiceFactory) -> None:
    service = await make_service(cookies=["degraded-1"], GENSPARK_CHAT_PROTOCOL="copilot")
    async with service.http() as http:
        response = await http.post("/v1/chat/completions", json={"model": "claude-opus-4-6", "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 200
    assert response.headers["x-genspark-model"] != "claude-opus-4-6"
    assert response.headers["x-request-id"] == response.json()["id"]
