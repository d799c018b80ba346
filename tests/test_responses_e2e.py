"""The Responses door end to end: the real `openai` SDK (and openai-agents) → live service → simulator.

Covers `responses.create` (whole and streamed), the `responses.stream` helper, `responses.parse`,
a function-tool round trip, threads continued by `previous_response_id` and by a client resending
its whole history with `store: false` (Codex), the stored-response routes, and the errors.
The simulator records what each upstream ask carried, so a test can see that a follow-up went to
the same project with only its new turn (genspark-protocol.md §12.3).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import openai
import pydantic
import pytest
import trio
from conftest import ServiceFactory

from genspark2api.simulator import Simulator

ASK = "/api/agent/ask_proxy"
MODEL = "claude-sonnet-4-6"
WEATHER_TOOL = {
    "type": "function", "name": "get_weather", "description": "Current weather in a city", "strict": False,
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
WEATHER_ASK = "Please use get_weather for Paris."


def asks(sim: Simulator) -> list[dict[str, Any]]:
    return [r.json for r in sim.requests_to(ASK)]


def contents(body: dict[str, Any]) -> list[str]:
    return [m["content"] if isinstance(m["content"], str) else json.dumps(m["content"]) for m in body["messages"]]


async def test_create_answers_whole_and_streamed(make_service: ServiceFactory) -> None:
    service = await make_service()
    client = service.openai()
    raw = await client.responses.with_raw_response.create(model=MODEL, input="Hello there", instructions="Be brief.")
    response = raw.parse()
    assert response.id.startswith("resp_") and raw.headers["x-request-id"] == response.id
    assert response.status == "completed" and response.model == MODEL and response.instructions == "Be brief."
    assert "Hello there" in response.output_text
    assert response.usage is not None and response.usage.output_tokens > 0
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens

    events = [e async for e in await client.responses.create(model=MODEL, input="Hello again", stream=True)]
    kinds = [e.type for e in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.completed"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    final = events[-1].response
    assert final.output_text == deltas and "Hello again" in deltas and final.usage.output_tokens > 0
    assert len({e.response.id for e in events if hasattr(e, "response")}) == 1


async def test_the_stream_helper_shows_reasoning_as_summary_items(make_service: ServiceFactory, sim: Simulator) -> None:
    service = await make_service()
    sim.options.readable_reasoning = True   # §12.4.4: ai_chat sends none by default
    async with service.openai().responses.stream(
        model="gpt-5.4-pro", input="Why is the sky blue?", reasoning={"effort": "high", "summary": "auto"},
    ) as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_response()
    assert "response.reasoning_summary_text.delta" in kinds and kinds[-1] == "response.completed"
    reasoning, message = final.output
    assert reasoning.type == "reasoning" and reasoning.summary[0].text
    assert message.type == "message" and "Why is the sky blue?" in final.output_text
    assert reasoning.summary[0].text not in final.output_text
    # Without a summary asked for, the reasoning is not shown at all.
    plain = await service.openai().responses.create(model="gpt-5.4-pro", input="Why is the sky blue?")
    assert [item.type for item in plain.output] == ["message"]


class Weather(pydantic.BaseModel):
    city: str
    degrees: int


async def test_parse_fills_a_pydantic_model(make_service: ServiceFactory) -> None:
    service = await make_service()
    parsed = await service.openai().responses.parse(model=MODEL, input="Weather in Paris as JSON.",
                                                    text_format=Weather)
    assert isinstance(parsed.output_parsed, Weather)


async def test_a_function_tool_round_trip_continues_the_thread(make_service: ServiceFactory, sim: Simulator) -> None:
    service = await make_service(cookies=["ok-a", "ok-b"])
    client = service.openai()
    first = await client.responses.create(model=MODEL, input=WEATHER_ASK, tools=[WEATHER_TOOL],
                                          instructions="You are a helpful assistant.")
    (call,) = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather" and call.call_id.startswith("call_") and call.id.startswith("fc_")
    assert json.loads(call.arguments)["city"]
    assert first.tools[0].name == "get_weather"
    second = await client.responses.create(
        model=MODEL, previous_response_id=first.id, tools=[WEATHER_TOOL], instructions="You are a helpful assistant.",
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "18 degrees and sunny"}],
    )
    assert "18 degrees and sunny" in second.output_text and second.previous_response_id == first.id
    one, two = asks(sim)
    assert one["project_id"] is None and two["project_id"] == next(iter(sim.projects))
    # Only the tool result went upstream the second time, into the same project.
    (sent,) = contents(two)
    assert "18 degrees and sunny" in sent and WEATHER_ASK not in sent
    assert len({r.session_id for r in sim.requests_to(ASK)}) == 1


@pytest.mark.parametrize("stream", [False, True])
async def test_previous_response_id_sends_only_the_new_turn_to_the_same_project(
    make_service: ServiceFactory, sim: Simulator, stream: bool
) -> None:
    service = await make_service(cookies=["ok-a", "ok-b", "ok-c"])
    client = service.openai()

    async def say(text: str, previous: str | None) -> str:
        kwargs: dict[str, Any] = {"previous_response_id": previous} if previous else {}
        if not stream:
            return (await client.responses.create(model=MODEL, input=text, instructions="Be brief.", **kwargs)).id
        events = [e async for e in await client.responses.create(
            model=MODEL, input=text, instructions="Be brief.", stream=True, **kwargs)]
        assert events[-1].type == "response.completed"
        return events[-1].response.id

    first = await say("My name is Alaq.", None)
    second = await say("What is my name?", first)
    await say("And spell it.", second)
    one, two, three = asks(sim)
    assert one["project_id"] is None and [m["role"] for m in one["messages"]] == ["system", "user"]
    (project,) = sim.projects.values()
    assert two["project_id"] == three["project_id"] == project.id
    assert contents(two) == ["What is my name?"] and contents(three) == ["And spell it."]
    assert len({r.session_id for r in sim.requests_to(ASK)}) == 1 and len(project.turns) == 3
    # The stored thread is the conversation: its input items list the new turn only.
    items = await client.responses.input_items.list(second)
    assert [item.content[0].text for item in items.data] == ["What is my name?"]


async def test_a_client_resending_its_history_with_store_false_continues_the_project_too(
    make_service: ServiceFactory, sim: Simulator
) -> None:
    """Codex's way: developer messages, store false, the whole history (reasoning items included)."""
    service = await make_service(cookies=["ok-a", "ok-b"])
    client = service.openai()
    history: list[dict[str, Any]] = [
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "You are Codex."}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Say hi."}]},
    ]
    extra = {"tools": [{"type": "web_search", "external_web_access": False},
                       {"type": "namespace", "name": "multi_agent_v1", "tools": []}],
             "store": False, "include": ["reasoning.encrypted_content"], "reasoning": {"summary": "auto"},
             "prompt_cache_key": "thread-1"}
    events = [e async for e in await client.responses.create(model=MODEL, input=history, stream=True, **extra)]
    first = events[-1].response
    history += [item.model_dump(exclude_none=True) for item in first.output]
    history.append({"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Again."}]})
    second = await client.responses.create(model=MODEL, input=history, **extra)
    assert second.status == "completed"
    one, two = asks(sim)
    (project,) = sim.projects
    assert one["project_id"] is None and two["project_id"] == project
    assert contents(two) == ["Again."]
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(first.id)   # store: false keeps nothing


async def test_an_answer_of_text_a_call_and_more_text_is_one_turn_when_sent_back(
    make_service: ServiceFactory, sim: Simulator
) -> None:
    """Text and a call: output items of one answer; resent, they continue its project."""
    service = await make_service()
    client = service.openai()
    history: list[dict[str, Any]] = [{"role": "user", "content": "Use get_weather for Paris, in prose."}]
    first = await client.responses.create(model=MODEL, input=history, tools=[WEATHER_TOOL], store=False)
    kinds = [item.type for item in first.output]
    assert kinds[:2] == ["message", "function_call"] and first.output[0].content[0].text
    call = first.output[1]
    history += [item.model_dump(exclude_none=True) for item in first.output]
    history.append({"type": "function_call_output", "call_id": call.call_id, "output": "18 degrees and sunny"})
    second = await client.responses.create(model=MODEL, input=history, tools=[WEATHER_TOOL], store=False)
    assert "18 degrees and sunny" in second.output_text
    _, two = asks(sim)
    (project,) = sim.projects
    assert two["project_id"] == project and len(contents(two)) == 1


async def test_retrieve_list_input_items_and_delete(make_service: ServiceFactory) -> None:
    service = await make_service()
    client = service.openai()
    created = await client.responses.create(model=MODEL, metadata={"run": "7"}, input=[
        {"role": "user", "content": "first"},
        {"role": "user", "content": [{"type": "input_text", "text": "second"}]},
        {"role": "user", "content": "third"},
    ])
    got = await client.responses.retrieve(created.id)
    assert got.id == created.id and got.output_text == created.output_text and got.metadata == {"run": "7"}
    page = await client.responses.input_items.list(created.id)
    assert [item.content[0].text for item in page.data] == ["third", "second", "first"]   # newest first
    assert page.first_id == page.data[0].id and page.last_id == page.data[-1].id and not page.has_more
    asc = await client.responses.input_items.list(created.id, order="asc", limit=2)
    assert [item.content[0].text for item in asc.data] == ["first", "second"] and asc.has_more
    rest = await client.responses.input_items.list(created.id, order="asc", after=asc.last_id)
    assert [item.content[0].text for item in rest.data] == ["third"] and not rest.has_more
    async with service.http() as http:
        bad_limit = await http.get(f"{service.base}/responses/{got.id}/input_items", params={"limit": "0"})
        assert bad_limit.status_code == 400 and bad_limit.json()["error"]["param"] == "limit"
        bad_after = await http.get(f"{service.base}/responses/{got.id}/input_items", params={"after": "msg_x"})
        assert bad_after.status_code == 400 and bad_after.json()["error"]["param"] == "after"
        deleted = await http.delete(f"{service.base}/responses/{created.id}")
        assert deleted.json() == {"id": created.id, "object": "response", "deleted": True}
        again = await http.delete(f"{service.base}/responses/{created.id}")
        assert again.status_code == 404 and again.json()["error"]["code"] == "response_not_found"
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(created.id)


async def test_a_stored_response_expires(make_service: ServiceFactory) -> None:
    service = await make_service(RESPONSES_STORE_TTL="1")
    client = service.openai()
    created = await client.responses.create(model=MODEL, input="hi")
    assert (await client.responses.retrieve(created.id)).id == created.id
    await trio.sleep(1.1)
    with pytest.raises(openai.NotFoundError) as info:
        await client.responses.create(model=MODEL, input="again", previous_response_id=created.id)
    assert info.value.body["code"] == "previous_response_not_found"
    assert info.value.body["param"] == "previous_response_id"


async def test_errors_in_openai_shape(make_service: ServiceFactory, sim: Simulator) -> None:
    service = await make_service()
    client = service.openai()
    with pytest.raises(openai.NotFoundError) as info:
        await client.responses.create(model=MODEL, input="x", previous_response_id="resp_nope")
    assert info.value.body["code"] == "previous_response_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        await client.responses.create(model=MODEL, input=[{"role": "user", "content": [
            {"type": "input_image", "file_id": "file-abc"}]}])
    assert bad.value.body["param"] == "input[0].content[0].file_id"
    with pytest.raises(openai.BadRequestError) as image:
        await client.responses.create(model="gpt-image-2", input="a cat")
    assert image.value.body["param"] == "model" and "images/generations" in image.value.body["message"]
    async with service.http() as http:
        for body in (b"", b"{", b"[]", b'{"model": 5, "input": "x"}'):
            response = await http.post(f"{service.base}/responses", content=body,
                                       headers={"Content-Type": "application/json"})
            assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_request_error"
        missing = await http.get(f"{service.base}/responses/resp_nope/input_items")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "response_not_found"
    assert asks(sim) == []   # nothing bad went upstream


@pytest.mark.parametrize("stream", [False, True])
async def test_a_failure_before_the_first_byte_is_a_json_error_with_its_status(
    make_service: ServiceFactory, stream: bool
) -> None:
    service = await make_service(cookies=["chat-5h-limit-1"])
    with pytest.raises(openai.RateLimitError) as info:
        await service.openai().responses.create(model=MODEL, input="Hi", stream=stream)
    assert info.value.status_code == 429 and info.value.body["code"] == "accounts_cooling"


async def test_a_failure_after_the_first_byte_is_response_failed_then_the_end(make_service: ServiceFactory) -> None:
    service = await make_service(cookies=["cut-stream-1"], GENSPARK_CHAT_PROTOCOL="copilot")
    async with service.http() as http:
        response = await http.post(f"{service.base}/responses", json={"model": MODEL, "input": "Hi", "stream": True})
    assert response.status_code == 200
    blocks = response.content.split(b"\n\n")
    assert blocks[-1] == b""
    events = [json.loads(block.split(b"\ndata: ", 1)[1]) for block in blocks[:-1]]
    assert [e["type"] for e in events][-1] == "response.failed"
    assert any(e["type"] == "response.output_text.delta" for e in events)   # it failed after text went out
    failed = events[-1]["response"]
    assert failed["status"] == "failed" and failed["error"]["code"] == "server_error"
    assert "upstream_truncated" in failed["error"]["message"]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))


def _run_agent(base_url: str) -> tuple[str, list[str]]:
    """openai-agents is asyncio-only: it runs in a worker thread on its own loop, over real HTTP."""
    from agents import (
        Agent,
        OpenAIResponsesModel,
        Runner,
        function_tool,
        set_tracing_disabled,
    )

    set_tracing_disabled(True)
    cities: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """Current weather in a city."""
        cities.append(city)
        return "18 degrees and sunny"

    async def main() -> str:
        client = openai.AsyncOpenAI(base_url=base_url, api_key="test-key", max_retries=0, timeout=30)
        agent = Agent(name="weather", instructions="Answer in one sentence.", tools=[get_weather],
                      model=OpenAIResponsesModel(model=MODEL, openai_client=client))
        result = await Runner.run(agent, WEATHER_ASK, max_turns=4)
        await client.close()
        return str(result.final_output)

    return asyncio.run(main()), cities


async def test_openai_agents_runs_a_function_tool(make_service: ServiceFactory, sim: Simulator) -> None:
    service = await make_service()
    final, cities = await trio.to_thread.run_sync(_run_agent, service.base)
    assert cities and "18 degrees and sunny" in final
    # The agent resends the whole history; the second ask continues the first one's project.
    one, two = asks(sim)
    (project,) = sim.projects
    assert one["project_id"] is None and two["project_id"] == project
    assert "18 degrees and sunny" in contents(two)[0] and WEATHER_ASK not in contents(two)[0]


async def test_the_door_lives_under_the_route_prefix_behind_the_api_key(make_service: ServiceFactory) -> None:
    service = await make_service(ROUTE_PREFIX="hf", API_SECRET="sk-right")
    assert service.base.endswith("/hf/v1")
    with pytest.raises(openai.AuthenticationError) as info:
        await service.openai(api_key="sk-wrong").responses.create(model=MODEL, input="hi")
    assert info.value.body["code"] == "invalid_api_key"
    created = await service.openai(api_key="sk-right").responses.create(model=MODEL, input="hi")
    assert (await service.openai(api_key="sk-right").responses.retrieve(created.id)).id == created.id


async def test_a_stored_response_is_only_its_own_keys(make_service) -> None:
    service = await make_service(API_SECRET="alice:sk-alice-0001,bob:sk-bob-0002")
    alice, bob = service.openai(api_key="sk-alice-0001"), service.openai(api_key="sk-bob-0002")
    response = await alice.responses.create(model="gpt-5.4", input="a secret of alice")
    assert (await alice.responses.retrieve(response.id)).id == response.id
    for attempt in (bob.responses.retrieve(response.id), bob.responses.delete(response.id),
                    bob.responses.create(model="gpt-5.4", input="go on", previous_response_id=response.id)):
        with pytest.raises(openai.NotFoundError):
            await attempt
    assert (await alice.responses.retrieve(response.id)).id == response.id   # bob's delete did nothing
