"""Structured outputs end to end (issue #11): the real `openai` SDK and LangChain → live service →
live simulator.

The simulator answers a request that carries our structured instruction with a minimal instance
of the schema it was shown (simulator/structured.py); cookie scenarios make it answer in a fence,
broken or misfitting JSON first (the repair turn goes to the same project and fixes it), or never
right (the `structured_output_failed` error).
"""

from __future__ import annotations

import json
from enum import Enum
from typing import Any

import httpx
import openai
import pydantic
import pytest
import trio
from conftest import ServiceFactory, sse_frames

from genspark2api.simulator import Simulator

ASK = "/api/agent/ask_proxy"
MODEL = "claude-4-5-haiku"
MARKER = "Structured output:"


class Colour(str, Enum):
    red = "red"
    green = "green"


class Address(pydantic.BaseModel):
    city: str
    postcode: str = pydantic.Field(min_length=5)


class Person(pydantic.BaseModel):
    name: str
    age: int = pydantic.Field(ge=18)
    colour: Colour
    address: Address
    tags: list[str]
    nickname: str | None


def asks(sim: Simulator) -> list[Any]:
    return sim.requests_to(ASK)


def structured_instruction(body: dict[str, Any]) -> str:
    (text,) = [m["content"] for m in body["messages"] if m["role"] == "system" and MARKER in m["content"]]
    return text


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}]


async def test_parse_with_a_pydantic_model_gets_a_validated_instance(
    make_service: ServiceFactory, sim: Simulator
) -> None:
    client = (await make_service()).openai()
    completion = await client.chat.completions.parse(model=MODEL, messages=ask("Describe a person."),
                                                     response_format=Person)
    message = completion.choices[0].message
    person = message.parsed
    assert isinstance(person, Person) and completion.choices[0].finish_reason == "stop"
    assert person.colour is Colour.red and person.age == 18 and len(person.address.postcode) >= 5
    assert json.loads(message.content) == person.model_dump(mode="json")
    # The schema went upstream as one compact system turn after the client's, named.
    (body,) = [r.json for r in asks(sim)]
    instruction = structured_instruction(body)
    assert [m["role"] for m in body["messages"]] == ["system", "system", "user"]
    first_line, schema_line = instruction.splitlines()
    assert '"Person"' in first_line
    assert json.loads(schema_line)["required"] == list(Person.model_fields)   # the SDK's strict schema


async def test_stream_with_a_pydantic_model_arrives_after_validation(
    make_service: ServiceFactory, sim: Simulator
) -> None:
    client = (await make_service(cookies=["json-fenced-1"])).openai()
    async with client.chat.completions.stream(model=MODEL, messages=ask("Describe a person."),
                                              response_format=Person) as stream:
        events = [event async for event in stream]
        final = await stream.get_final_completion()
    person = final.choices[0].message.parsed
    assert isinstance(person, Person)
    # The fence and the sentences around it never reach the client: the content is the JSON alone.
    content = "".join(e.delta for e in events if e.type == "content.delta")
    assert content == final.choices[0].message.content and content.startswith("{") and "```" not in content


async def test_json_object_returns_a_json_object(make_service: ServiceFactory, sim: Simulator) -> None:
    client = (await make_service()).openai()
    completion = await client.chat.completions.create(
        model=MODEL, messages=ask("Say hello in JSON."), response_format={"type": "json_object"})
    content = completion.choices[0].message.content
    assert json.loads(content) == {"answer": f"[simulated {MODEL}] You said: Say hello in JSON."}
    assert "Structured output: answer with one JSON object" in structured_instruction(asks(sim)[0].json)


async def test_text_format_is_no_format(make_service: ServiceFactory, sim: Simulator) -> None:
    client = (await make_service()).openai()
    completion = await client.chat.completions.create(
        model=MODEL, messages=ask("Hello"), response_format={"type": "text"})
    assert completion.choices[0].message.content.startswith("[simulated")
    assert all(MARKER not in m["content"] for m in asks(sim)[0].json["messages"])


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("scenario", ["json-broken-first", "json-misfit-first"])
async def test_a_bad_first_answer_is_repaired_on_the_same_thread_with_only_the_new_turn(
    make_service: ServiceFactory, sim: Simulator, scenario: str, stream: bool
) -> None:
    client = (await make_service(cookies=[f"{scenario}-1", "ok-2", "ok-3"])).openai()
    if stream:
        async with client.chat.completions.stream(model=MODEL, messages=ask("Describe a person."),
                                                  response_format=Person,
                                                  stream_options={"include_usage": True}) as events:
            completion = await events.get_final_completion()
    else:
        completion = await client.chat.completions.parse(model=MODEL, messages=ask("Describe a person."),
                                                         response_format=Person)
    assert isinstance(completion.choices[0].message.parsed, Person)
    first, repair = asks(sim)
    (project,) = sim.projects.values()
    assert first.session_id == repair.session_id == project.owner
    assert first.json["project_id"] is None and repair.json["project_id"] == project.id
    # Only the new turn: the user turn naming the problem (the project holds the rest, §12.3).
    (turn,) = repair.json["messages"]
    assert turn["role"] == "user" and turn["content"].startswith("Your previous answer cannot be used: ")
    problem = "malformed" if scenario == "json-broken-first" else "'name' is a required property"
    assert problem in turn["content"]
    # Both asks are counted: what the repair cost is not hidden.
    usage = completion.usage
    assert usage is not None and usage.prompt_tokens > 1600   # two asks of 800+ prompt tokens each


async def test_the_next_turn_continues_the_project_from_the_clean_json(
    make_service: ServiceFactory, sim: Simulator
) -> None:
    """The binding is moved to the JSON the client saw, not the fenced text the model wrote."""
    client = (await make_service(cookies=["json-fenced-1"])).openai()
    messages = ask("Describe a person.")
    first = await client.chat.completions.parse(model=MODEL, messages=messages, response_format=Person)
    messages += [{"role": "assistant", "content": first.choices[0].message.content},
                 {"role": "user", "content": "Another one."}]
    second = await client.chat.completions.parse(model=MODEL, messages=messages, response_format=Person)
    assert isinstance(second.choices[0].message.parsed, Person)
    (project,) = sim.projects.values()
    body = asks(sim)[1].json
    assert body["project_id"] == project.id and [m["content"] for m in body["messages"]] == ["Another one."]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("scenario", "problem"), [
    ("json-prose", "it contains no JSON object"),
    ("json-misfit", "its JSON does not fit the schema: 'name' is a required property"),
])
async def test_an_answer_that_never_fits_is_a_structured_output_failed_error(
    make_service: ServiceFactory, sim: Simulator, scenario: str, problem: str, stream: bool
) -> None:
    service = await make_service(cookies=[f"{scenario}-1"])
    client = service.openai()
    with pytest.raises(openai.InternalServerError) as caught:
        if stream:
            async with client.chat.completions.stream(model=MODEL, messages=ask("Describe a person."),
                                                      response_format=Person) as events:
                await events.get_final_completion()
        else:
            await client.chat.completions.parse(model=MODEL, messages=ask("Describe a person."), response_format=Person)
    response = caught.value.response
    assert response.status_code == 502 and response.headers["x-should-retry"] == "false"
    error = response.json()["error"]
    assert error["code"] == "structured_output_failed" and error["param"] == "response_format"
    assert problem in error["message"] and "repair" in error["message"]
    assert len(asks(sim)) == 2   # the answer and one repair, no more
    pool = (await client.get("/pool", cast_to=object))["data"]
    assert pool[0]["state"] == "healthy" and pool[0]["failures"] == 0   # not the cookie's fault


async def test_a_late_structured_stream_sends_keepalives_then_the_answer_or_an_error_frame(
    make_service: ServiceFactory, sim: Simulator
) -> None:
    """Past FIRST_BYTE_HOLD_SECONDS the stream is committed: keep-alives while the answer is
    checked, then the whole answer as ordinary chunks, byte for byte; a failure is an error frame."""
    sim.answer_delay = 0.01
    env = {"FIRST_BYTE_HOLD_SECONDS": "0", "STREAM_KEEPALIVE_SECONDS": "0.01", "STREAM_COALESCE_SECONDS": "0"}
    body = {"model": MODEL, "stream": True, "messages": ask("Say hello in JSON."),
            "response_format": {"type": "json_object"}}
    good, prose = await make_service(**env), await make_service(cookies=["json-prose-1"], **env)
    async with httpx.AsyncClient(timeout=30) as http:
        ok = await http.post(f"{good.base}/chat/completions", json=body)
        failed = await http.post(f"{prose.base}/chat/completions", json=body)
    assert ok.status_code == failed.status_code == 200
    frames = sse_frames(ok.content)
    keepalives = [f for f in frames if f == b": keep-alive"]
    chunks = [json.loads(f.removeprefix(b"data: ")) for f in frames if f.startswith(b"data: {")]
    assert keepalives and frames[-1] == b"data: [DONE]"
    assert [c["choices"][0]["delta"] for c in chunks] == [
        {"role": "assistant", "content": ""},
        {"content": json.dumps({"answer": f"[simulated {MODEL}] You said: Say hello in JSON."})},
        {},
    ]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    error = json.loads(sse_frames(failed.content)[-2].removeprefix(b"data: "))["error"]
    assert error["code"] == "structured_output_failed"


async def test_a_tool_call_is_not_checked_and_the_answer_after_the_result_is(
    make_service: ServiceFactory, sim: Simulator
) -> None:
    tools = [{"type": "function", "function": {
        "name": "get_weather", "description": "Current weather in a city", "strict": True,
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                       "additionalProperties": False}}}]
    client = (await make_service()).openai()
    messages: list[dict[str, Any]] = ask("Use get_weather for Paris, then describe a person.")
    first = await client.chat.completions.parse(model=MODEL, messages=messages, tools=tools, response_format=Person)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.parsed is None
    (call,) = choice.message.tool_calls
    messages += [{"role": "assistant", "content": None, "tool_calls": [call.model_dump(exclude_none=True)]},
                 {"role": "tool", "tool_call_id": call.id, "content": "18 degrees"}]
    second = await client.chat.completions.parse(model=MODEL, messages=messages, tools=tools, response_format=Person)
    assert isinstance(second.choices[0].message.parsed, Person)


async def test_langchain_default_with_structured_output(make_service: ServiceFactory, sim: Simulator) -> None:
    """LangChain's default method is json_schema (issue #11: it failed before)."""
    from langchain_openai import ChatOpenAI

    service = await make_service()
    model = ChatOpenAI(model=MODEL, base_url=service.base, api_key="test-key", max_retries=0, timeout=30)
    chain = model.with_structured_output(Person)
    # LangChain's clients are sync or asyncio; the test runs under trio, so in a thread.
    person = await trio.to_thread.run_sync(chain.invoke, "Describe a person.")
    assert isinstance(person, Person)
    assert MARKER in structured_instruction(asks(sim)[0].json)


BAD_FORMATS = [
    ("json", "response_format"),
    ({"type": "xml"}, "response_format.type"),
    ({"type": "json_schema"}, "response_format.json_schema"),
    ({"type": "json_schema", "json_schema": {"name": "has space", "schema": {}}}, "response_format.json_schema.name"),
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nope"}}}, "response_format.json_schema.schema"),
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"$ref": "https://example.org/s.json"}}},
     "response_format.json_schema.schema"),
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"$ref": "#/$defs/Missing"}}},
     "response_format.json_schema.schema"),
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"$defs": {"a": {"$ref": "#/$defs/a"}},
                                                                      "$ref": "#/$defs/a"}}},
     "response_format.json_schema.schema"),
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"$schema": ["not", "a", "uri"]}}},
     "response_format.json_schema.schema"),
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": []}}, "response_format.json_schema.schema"),
]


@pytest.mark.parametrize(("response_format", "param"), BAD_FORMATS)
async def test_a_bad_response_format_is_a_400_naming_it(
    make_service: ServiceFactory, sim: Simulator, response_format: Any, param: str
) -> None:
    service = await make_service()
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.post(f"{service.base}/chat/completions", json={
            "model": MODEL, "messages": ask("Hi"), "response_format": response_format})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    assert asks(sim) == []   # never sent upstream


async def test_on_copilot_the_repair_resends_the_whole_transcript(make_service: ServiceFactory, sim: Simulator) -> None:
    """G1 keeps no history server-side: the repair turn carries the conversation, the rejected
    answer and the new user turn, to the same project."""
    client = (await make_service(cookies=["json-misfit-first-1"], GENSPARK_CHAT_PROTOCOL="copilot")).openai()
    completion = await client.chat.completions.parse(model=MODEL, messages=ask("Describe a person."),
                                                     response_format=Person)
    assert isinstance(completion.choices[0].message.parsed, Person)
    first, repair = (r.json for r in sim.requests_to("/api/copilot/ask"))
    assert [m["role"] for m in repair["messages"]] == ["system", "system", "user", "assistant", "user"]
    assert repair["messages"][:3] == first["messages"]
    assert repair["messages"][4]["content"].startswith("Your previous answer cannot be used: ")


PERSON_SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
                 "required": ["name", "age"], "additionalProperties": False}


async def test_every_door_gets_checked_json_from_the_one_core(make_service: ServiceFactory) -> None:
    import anthropic

    service = await make_service()
    # Responses: text.format json_schema.
    response = await service.openai().responses.create(
        model="gpt-5.4", input="Describe a person",
        text={"format": {"type": "json_schema", "name": "person", "schema": PERSON_SCHEMA, "strict": True}})
    doc = json.loads(response.output_text)
    assert isinstance(doc["name"], str) and isinstance(doc["age"], int)
    # Anthropic Messages: output_config.format.
    client = anthropic.AsyncAnthropic(base_url=service.url, api_key="test-key", max_retries=0)
    message = await client.messages.create(
        model="claude-sonnet-4-5", max_tokens=256, messages=[{"role": "user", "content": "Describe a person"}],
        extra_body={"output_config": {"format": {"type": "json_schema", "schema": PERSON_SCHEMA}}})
    doc = json.loads(message.content[0].text)
    assert isinstance(doc["name"], str) and isinstance(doc["age"], int)


async def test_a_schema_that_is_not_json_schema_is_a_400_on_every_door(make_service: ServiceFactory) -> None:
    service = await make_service()
    bad = {"type": "no-such-type"}
    async with service.http() as http:
        responses = await http.post("/v1/responses", json={
            "model": "gpt-5.4", "input": "x", "text": {"format": {"type": "json_schema", "name": "n", "schema": bad}}})
        messages = await http.post("/v1/messages", json={
            "model": "claude-sonnet-4-5", "max_tokens": 16, "messages": [{"role": "user", "content": "x"}],
            "output_config": {"format": {"type": "json_schema", "schema": bad}}})
    assert responses.status_code == 400 and responses.json()["error"]["param"] == "text.format.schema"
    assert messages.status_code == 400 and messages.json()["type"] == "error"
    assert "output_config.format.schema" in messages.json()["error"]["message"]
