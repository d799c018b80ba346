"""Emulated tool calling end to end: the openai SDK → live service → live simulator.

The simulator plays a model that follows the `<tool_call>` instruction (simulator/answers.py):
it calls a tool the question gives a reason to call (here "weather" or "time"; a plain greeting
is answered in text), two tools when the question says "parallel", writes a broken
block when it says "malformed", calls a tool nobody offered when it says "unknown", wraps the
block in two sentences when it says "prose", and answers in prose quoting the result once a
"Tool result" turn follows the question; asked for "xml", "llama" or "fenced" it writes its calls
in those habit forms instead of the envelope. Both upstream protocols are exercised.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

import openai
import pydantic
import pytest
from conftest import ServiceFactory, sse_frames
from fixtures.agent_tools import CHAT_UI_TOOLS

from genspark2api.core.compose import AnswerComposer, Call, ComposeOptions, Content
from genspark2api.core.toolschema import compact_parameters
from genspark2api.core.usage import TokenCounter
from genspark2api.upstream.events import TextDelta

PROTOCOLS = ["ai_chat", "copilot"]
CHAT_PATH = {"ai_chat": "/api/agent/ask_proxy", "copilot": "/api/copilot/ask"}

WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "description": "Current weather in a city", "parameters": WEATHER_SCHEMA},
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Local time in a time zone",
        "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]},
    },
}
TOOLS = [WEATHER, TIME]
ASK = [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "Weather in Paris?"}]
# The simulated model fills string arguments with "sim" (answers.example_arguments).
WEATHER_ARGS = {"city": "sim"}
TIME_ARGS = {"tz": "sim"}
RESULT = "18 degrees and sunny"


# ------------------------------------------------------------------------------ helpers


def upstream_bodies(sim, protocol: str) -> list[dict[str, Any]]:
    return [r.json for r in sim.requests_to(CHAT_PATH[protocol])]


def upstream_turns(body: dict[str, Any]) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in body["messages"]]


def project_of(body: dict[str, Any], protocol: str) -> str | None:
    if protocol == "ai_chat":
        return body["project_id"]
    return parse_qs(body["current_query_string"]).get("id", [None])[0]


def instruction_of(body: dict[str, Any]) -> str | None:
    texts = [text for role, text in upstream_turns(body) if role == "system" and "<tool_call>" in text]
    assert len(texts) <= 1
    return texts[0] if texts else None


def assert_tools_offered(body: dict[str, Any]) -> str:
    """The tool instruction went upstream as a system turn, after the client's own system turn."""
    turns = upstream_turns(body)
    assert turns[0] == ("system", "You are a helpful assistant.")
    instruction = instruction_of(body)
    assert instruction is not None and turns[1] == ("system", instruction)
    for tool in TOOLS:
        f = tool["function"]
        listed = {"name": f["name"], "description": f["description"], "parameters": compact_parameters(f["parameters"])}
        assert json.dumps(listed, separators=(",", ":")) in instruction
    assert '<tool_call>{"name": "<tool name>", "arguments": {...}}</tool_call>' in instruction
    return instruction


def assert_call(call: Any, name: str, arguments: dict[str, Any]) -> None:
    assert call.id.startswith("call_") and len(call.id) > len("call_")
    assert call.type == "function"
    assert call.function.name == name
    assert isinstance(call.function.arguments, str)
    assert json.loads(call.function.arguments) == arguments


def quotes_result(answer: str, result: str = RESULT) -> bool:
    """The simulated model's answer after a tool result quotes it."""
    return "The tool returned: Tool result for " in answer and result in answer


def tool_results(calls: list[Any], *contents: str) -> list[dict[str, Any]]:
    return [{"role": "tool", "tool_call_id": c.id, "content": text} for c, text in zip(calls, contents, strict=True)]


async def collect_stream(stream) -> tuple[str, list[dict[str, Any]], list[str | None], list[Any]]:
    """(content, calls assembled by index, finish reasons, every chunk) of an SDK stream."""
    content, calls, finishes, chunks = "", {}, [], []
    async for chunk in stream:
        chunks.append(chunk)
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        content += choice.delta.content or ""
        for delta in choice.delta.tool_calls or ():
            assert delta.index is not None
            call = calls.setdefault(delta.index, {"id": None, "name": None, "arguments": ""})
            if delta.id:
                call["id"] = delta.id
            if delta.function and delta.function.name:
                call["name"] = delta.function.name
            if delta.function and delta.function.arguments:
                call["arguments"] += delta.function.arguments
        finishes.append(choice.finish_reason)
    return content, [calls[i] for i in sorted(calls)], [f for f in finishes if f], chunks


def assistant_turn(content: str | None, calls: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": content,
        "tool_calls": [
            {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
            for c in calls
        ],
    }


def assert_history_rendered(body: dict[str, Any], calls: list[tuple[str, dict[str, Any]]], results: list[str],
                            protocol: str = "copilot") -> None:
    """The second request. copilot: the whole history, the earlier calls in the envelope, each
    result a "Tool result" user turn. ai_chat continues the project of the call, so it sends
    only the new turn (§12.2.4): the results as one user message, nothing else."""
    turns = upstream_turns(body)
    if protocol == "ai_chat":
        ((role, text),) = turns
        pieces = text.split("\n\n")
        assert role == "user" and len(pieces) == len(results)
        for piece, (name, _), result in zip(pieces, calls, results, strict=True):
            assert piece.startswith(f"Tool result for {name} (tool_call_id=call_") and piece.endswith(f"):\n{result}")
        assert body["last_seen_event_index"] >= 0
        return
    assert_tools_offered(body)
    blocks = "\n".join(
        f'<tool_call>{{"name": "{name}", "arguments": {json.dumps(args, separators=(",", ":"))}}}</tool_call>'
        for name, args in calls
    )
    assert turns[2:4] == [("user", "Weather in Paris?"), ("assistant", blocks)]
    assert [role for role, _ in turns[4:]] == ["user"] * len(results)
    for (_, text), (name, _), result in zip(turns[4:], calls, results, strict=True):
        assert text.startswith(f"Tool result for {name} (tool_call_id=call_") and text.endswith(f"):\n{result}")


# ------------------------------------------------------------------------------ the tool loop


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_tool_loop_non_stream(make_service: ServiceFactory, sim, protocol: str) -> None:
    service = await make_service(GENSPARK_CHAT_PROTOCOL=protocol)
    client = service.openai()
    first = await client.chat.completions.create(model="claude-sonnet-4-6", messages=ASK, tools=TOOLS)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert len(choice.message.tool_calls) == 1
    assert_call(choice.message.tool_calls[0], "get_weather", WEATHER_ARGS)
    assert first.usage.completion_tokens > 0

    (body1,) = upstream_bodies(sim, protocol)
    instruction = assert_tools_offered(body1)
    assert "several blocks" in instruction and "only when it helps" in instruction
    assert project_of(body1, protocol) is None
    (project,) = sim.projects

    history = ASK + [choice.message.model_dump(exclude_none=True)] + tool_results(choice.message.tool_calls, RESULT)
    second = await client.chat.completions.create(model="claude-sonnet-4-6", messages=history, tools=TOOLS)
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.tool_calls is None
    assert quotes_result(second.choices[0].message.content)

    body2 = upstream_bodies(sim, protocol)[1]
    assert_history_rendered(body2, [("get_weather", WEATHER_ARGS)], [RESULT], protocol)
    # Conversation binding: the follow-up continues the upstream chat of the call.
    assert project_of(body2, protocol) == project and list(sim.projects) == [project]
    assert len(sim.projects[project].turns) == 2

    # A plain follow-up after the tool loop still continues the same upstream chat.
    history += [second.choices[0].message.model_dump(exclude_none=True), {"role": "user", "content": "Thanks!"}]
    third = await client.chat.completions.create(model="claude-sonnet-4-6", messages=history, tools=TOOLS)
    if protocol == "copilot":   # ai_chat sent only "Thanks!": the instruction lives in the project
        # Tools still offered, but "Thanks!" gives no reason to call one (issue #11).
        assert third.choices[0].finish_reason == "stop" and third.choices[0].message.tool_calls is None
    else:
        assert upstream_turns(upstream_bodies(sim, protocol)[2]) == [("user", "Thanks!")]
    assert project_of(upstream_bodies(sim, protocol)[2], protocol) == project and list(sim.projects) == [project]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_tool_loop_stream(make_service: ServiceFactory, sim, protocol: str) -> None:
    service = await make_service(GENSPARK_CHAT_PROTOCOL=protocol)
    client = service.openai()
    stream = await client.chat.completions.create(model="gpt-5.4", messages=ASK, tools=TOOLS, stream=True)
    content, calls, finishes, _ = await collect_stream(stream)
    assert content == "" and finishes == ["tool_calls"]
    assert len(calls) == 1 and calls[0]["name"] == "get_weather" and calls[0]["id"].startswith("call_")
    assert json.loads(calls[0]["arguments"]) == WEATHER_ARGS
    (project,) = sim.projects

    history = ASK + [assistant_turn(None, calls), {"role": "tool", "tool_call_id": calls[0]["id"], "content": RESULT}]
    stream = await client.chat.completions.create(model="gpt-5.4", messages=history, tools=TOOLS, stream=True)
    content, calls2, finishes, _ = await collect_stream(stream)
    assert calls2 == [] and finishes == ["stop"]
    assert quotes_result(content)

    body2 = upstream_bodies(sim, protocol)[1]
    assert_history_rendered(body2, [("get_weather", WEATHER_ARGS)], [RESULT], protocol)
    assert project_of(body2, protocol) == project and list(sim.projects) == [project]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_parallel_calls_and_their_results(make_service: ServiceFactory, sim, protocol: str) -> None:
    service = await make_service(GENSPARK_CHAT_PROTOCOL=protocol)
    client = service.openai()
    ask = ASK[:1] + [{"role": "user", "content": "Weather and time, in parallel please"}]
    stream = await client.chat.completions.create(model="gpt-5.4", messages=ask, tools=TOOLS, stream=True)
    content, calls, finishes, chunks = await collect_stream(stream)
    assert finishes == ["tool_calls"] and content == ""
    indexes = [d.index for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or ()]
    assert sorted(set(indexes)) == [0, 1]
    assert [c["name"] for c in calls] == ["get_weather", "get_time"]
    assert [json.loads(c["arguments"]) for c in calls] == [WEATHER_ARGS, TIME_ARGS]
    assert len({c["id"] for c in calls}) == 2

    whole = await client.chat.completions.create(model="gpt-5.4", messages=ask, tools=TOOLS)
    message = whole.choices[0].message
    assert whole.choices[0].finish_reason == "tool_calls" and message.content is None
    assert [c.function.name for c in message.tool_calls] == ["get_weather", "get_time"]

    history = ask + [message.model_dump(exclude_none=True)] + tool_results(message.tool_calls, RESULT, "09:30")
    answer = await client.chat.completions.create(model="gpt-5.4", messages=history, tools=TOOLS)
    assert answer.choices[0].finish_reason == "stop"
    assert quotes_result(answer.choices[0].message.content)
    last = upstream_bodies(sim, protocol)[-1]
    if protocol == "ai_chat":
        assert_history_rendered(last, [("get_weather", WEATHER_ARGS), ("get_time", TIME_ARGS)], [RESULT, "09:30"], protocol)
        return
    sent = upstream_turns(last)
    assert sent[-3][0] == "assistant" and sent[-3][1].count("<tool_call>") == 2
    assert sent[-2][1].startswith("Tool result for get_weather") and sent[-2][1].endswith(RESULT)
    assert sent[-1][1].startswith("Tool result for get_time") and sent[-1][1].endswith("09:30")


async def test_parallel_tool_calls_false_asks_for_one_call(make_service: ServiceFactory, sim) -> None:
    service = await make_service()
    client = service.openai()
    await client.chat.completions.create(model="gpt-5.4", messages=ASK, tools=TOOLS)
    await client.chat.completions.create(model="gpt-5.4", messages=ASK, tools=TOOLS, parallel_tool_calls=False)
    parallel, single = (instruction_of(b) for b in upstream_bodies(sim, "ai_chat"))
    assert "several blocks" in parallel and "at most one tool" not in parallel
    assert "Call at most one tool per answer" in single and "several blocks" not in single
    # A model that writes two blocks anyway still gives the client the one call it allowed.
    ask = ASK[:1] + [{"role": "user", "content": "Weather and time, in parallel please"}]
    one = await client.chat.completions.create(model="gpt-5.4", messages=ask, tools=TOOLS, parallel_tool_calls=False)
    assert len(one.choices[0].message.tool_calls) == 1 and one.choices[0].finish_reason == "tool_calls"


# ------------------------------------------------------------------------------ the SDK's stream helper


class GetWeather(pydantic.BaseModel):
    """Current weather in a city"""

    city: str


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_stream_helper_with_pydantic_tool(make_service: ServiceFactory, sim, protocol: str) -> None:
    service = await make_service(GENSPARK_CHAT_PROTOCOL=protocol)
    client = service.openai()
    done_events = []
    async with client.chat.completions.stream(
        model="claude-sonnet-4-6", messages=ASK, tools=[openai.pydantic_function_tool(GetWeather)]
    ) as stream:
        async for event in stream:
            if event.type == "tool_calls.function.arguments.done":
                done_events.append(event)
        final = await stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert_call(call, "GetWeather", WEATHER_ARGS)
    assert call.function.parsed_arguments == GetWeather(city="sim")
    assert [(e.index, e.name, e.parsed_arguments) for e in done_events] == [(0, "GetWeather", GetWeather(city="sim"))]
    assert '"name":"GetWeather"' in instruction_of(upstream_bodies(sim, protocol)[0])


async def test_stream_helper_with_strict_dict_tools_in_parallel(make_service: ServiceFactory) -> None:
    service = await make_service()
    strict = [{"type": "function", "function": {**t["function"], "strict": True}} for t in TOOLS]
    ask = ASK[:1] + [{"role": "user", "content": "weather and time, both in parallel"}]
    async with service.openai().chat.completions.stream(model="gpt-5.4", messages=ask, tools=strict) as stream:
        final = await stream.get_final_completion()
    calls = final.choices[0].message.tool_calls
    assert final.choices[0].finish_reason == "tool_calls"
    assert [(c.function.name, c.function.parsed_arguments) for c in calls] == [
        ("get_weather", WEATHER_ARGS), ("get_time", TIME_ARGS),
    ]
    assert len({c.id for c in calls}) == 2


# ------------------------------------------------------------------------------ tool_choice and friends


async def test_tool_choice_none_offers_no_tools(make_service: ServiceFactory, sim) -> None:
    service = await make_service()
    result = await service.openai().chat.completions.create(
        model="gpt-5.4", messages=ASK, tools=TOOLS, tool_choice="none"
    )
    choice = result.choices[0]
    assert choice.finish_reason == "stop" and choice.message.tool_calls is None
    assert choice.message.content.startswith("[simulated gpt-5.4] You said: Weather in Paris?")
    (body,) = upstream_bodies(sim, "ai_chat")
    assert upstream_turns(body) == [(m["role"], m["content"]) for m in ASK]


@pytest.mark.parametrize(
    ("tool_choice", "rule"),
    [
        ("auto", "Call a tool only when it helps."),
        ("required", "In this answer you MUST call at least one tool."),
        ({"type": "function", "function": {"name": "get_time"}}, 'In this answer you MUST call the tool "get_time".'),
    ],
)
async def test_tool_choice_reaches_the_instruction(make_service: ServiceFactory, sim, tool_choice, rule: str) -> None:
    service = await make_service()
    result = await service.openai().chat.completions.create(
        model="gpt-5.4", messages=ASK, tools=TOOLS, tool_choice=tool_choice
    )
    assert result.choices[0].finish_reason == "tool_calls"
    instruction = instruction_of(upstream_bodies(sim, "ai_chat")[0])
    assert instruction.splitlines()[-1].startswith(f"- {rule}")


async def test_unknown_named_tool_choice_is_a_400(make_service: ServiceFactory, sim) -> None:
    service = await make_service()
    with pytest.raises(openai.BadRequestError) as info:
        await service.openai().chat.completions.create(
            model="gpt-5.4", messages=ASK, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "nope"}}
        )
    assert info.value.status_code == 400 and info.value.body["param"] == "tool_choice"
    assert "nope" in info.value.body["message"]
    with pytest.raises(openai.BadRequestError) as info:
        await service.openai().chat.completions.create(
            model="gpt-5.4", messages=ASK, functions=[WEATHER["function"]], function_call={"name": "nope"}
        )
    assert info.value.body["param"] == "function_call"
    assert upstream_bodies(sim, "ai_chat") == []


async def test_legacy_functions_and_function_call(make_service: ServiceFactory, sim) -> None:
    service = await make_service()
    client = service.openai()
    functions = [t["function"] for t in TOOLS]
    result = await client.chat.completions.create(model="gpt-5.4", messages=ASK, functions=functions)
    # Legacy requests get the legacy answer shape: message.function_call, finish "function_call".
    assert result.choices[0].finish_reason == "function_call"
    assert result.choices[0].message.tool_calls is None
    legacy_call = result.choices[0].message.function_call
    assert legacy_call.name == "get_weather" and json.loads(legacy_call.arguments) == WEATHER_ARGS
    await client.chat.completions.create(
        model="gpt-5.4", messages=ASK, functions=functions, function_call={"name": "get_time"}
    )
    none = await client.chat.completions.create(model="gpt-5.4", messages=ASK, functions=functions, function_call="none")
    assert none.choices[0].message.tool_calls is None
    streamed = await client.chat.completions.create(model="gpt-5.4", messages=ASK, functions=functions, stream=True)
    chunks = [c async for c in streamed]
    deltas = [c.choices[0].delta.function_call for c in chunks if c.choices and c.choices[0].delta.function_call]
    assert deltas[0].name == "get_weather" and "".join(d.arguments or "" for d in deltas) == legacy_call.arguments
    assert chunks[-1].choices[0].finish_reason == "function_call"
    first, named, off, _ = upstream_bodies(sim, "ai_chat")
    # Legacy functions call one function per turn.
    assert "Call at most one tool per answer" in assert_tools_offered(first)
    assert instruction_of(named).endswith('In this answer you MUST call the tool "get_time".')
    assert instruction_of(off) is None

    # A legacy history (assistant function_call + function result) is rendered like tool calls.
    history = ASK + [
        {"role": "assistant", "content": None, "function_call": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
        {"role": "function", "name": "get_weather", "content": RESULT},
    ]
    answer = await client.chat.completions.create(model="gpt-5.4", messages=history, functions=functions)
    assert quotes_result(answer.choices[0].message.content)
    sent = upstream_turns(upstream_bodies(sim, "ai_chat")[-1])
    assert sent[-2] == ("assistant", '<tool_call>{"name": "get_weather", "arguments": {"city":"Paris"}}</tool_call>')
    assert sent[-1] == ("user", f"Tool result for get_weather (tool_call_id=):\n{RESULT}")


# ------------------------------------------------------------------------------ malformed blocks


@pytest.mark.parametrize(
    ("question", "verbatim"),
    [
        ("give me a malformed weather call", '<tool_call>{"name": broken json</tool_call>'),
        # A well-formed block calling a tool the request did not offer is no call either.
        ("use some unknown tool for the weather",
         '<tool_call>{"name": "sim_unoffered_tool", "arguments": {}}</tool_call>'),
        ("an unknown weather tool, in xml",
         '<function_calls>\n<invoke name="sim_unoffered_tool">\n</invoke>\n</function_calls>'),
        ("an unknown weather tool, llama style", '<function=sim_unoffered_tool>{}</function>'),
        ("an unknown weather tool, fenced",
         '```json\n{"name": "sim_unoffered_tool", "arguments": {}}\n```'),
    ],
    ids=["malformed", "not-offered", "not-offered-xml", "not-offered-llama", "not-offered-fenced"],
)
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_malformed_block_is_released_as_text(
    make_service: ServiceFactory, protocol: str, question: str, verbatim: str
) -> None:
    service = await make_service(GENSPARK_CHAT_PROTOCOL=protocol)
    client = service.openai()
    ask = ASK[:1] + [{"role": "user", "content": question}]

    whole = await client.chat.completions.create(model="gpt-5.4", messages=ask, tools=TOOLS)
    assert whole.choices[0].finish_reason == "stop" and whole.choices[0].message.tool_calls is None
    assert whole.choices[0].message.content == verbatim

    stream = await client.chat.completions.create(model="gpt-5.4", messages=ask, tools=TOOLS, stream=True)
    content, calls, finishes, _ = await collect_stream(stream)
    assert content == verbatim and calls == [] and finishes == ["stop"]


@pytest.mark.parametrize(
    ("deltas", "content", "calls"),
    [
        (["<tool_call>{\"name\": \"f\"}</tool_call>", "\n", " <tool_call>{\"name\": \"f\"}</tool_call>\n"], "", 2),
        (["Let me look.", "\n\n", "<tool_call>{\"name\": \"f\"}</tool_call>"], "Let me look.", 1),
        (["\n  ", "Hello", "\n"], "\n  Hello\n", 0),  # no call: every blank is kept, in place
    ],
)
def test_blank_text_around_calls_is_not_content(tmp_path, deltas: list[str], content: str, calls: int) -> None:
    composer = AnswerComposer(ComposeOptions(tool_names=frozenset({"f"})), TokenCounter(data_dir=tmp_path))
    pieces = [p for d in deltas for p in composer.feed(TextDelta(d))] + composer.finish()
    assert "".join(p.text for p in pieces if isinstance(p, Content)) == composer.content_text == content
    assert sum(isinstance(p, Call) for p in pieces) == calls
    assert composer.finish_reason == ("tool_calls" if calls else "stop")


# ------------------------------------------------------------------------------ bytes on the wire


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_tool_call_stream_bytes(make_service: ServiceFactory, protocol: str) -> None:
    service = await make_service(GENSPARK_CHAT_PROTOCOL=protocol)
    async with service.http() as http:
        response = await http.post(
            "/v1/chat/completions",
            json={"model": "gpt-5.4", "stream": True, "tools": TOOLS,
                  "messages": ASK[:1] + [{"role": "user", "content": "weather and time, parallel please"}]},
        )
    assert response.status_code == 200
    frames = sse_frames(response.content)
    assert frames[-1] == b"data: [DONE]"
    # No piece of the markup anywhere: not in content, not in arguments, not escaped.
    for fragment in (b"<tool", b"</tool", b"tool_call>", b"\\u003c"):
        assert fragment not in response.content
    chunks = [json.loads(f[6:]) for f in frames[:-1]]
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert [d for d in deltas if d.get("content")] == []

    tool_deltas = [t for d in deltas for t in d.get("tool_calls", ())]
    assert all(isinstance(t["index"], int) for t in tool_deltas)
    firsts = {}
    for t in tool_deltas:
        if t["index"] not in firsts:
            firsts[t["index"]] = t
            assert t["id"].startswith("call_") and t["type"] == "function"
            assert t["function"]["name"] in ("get_weather", "get_time") and t["function"]["arguments"] == ""
        else:
            assert set(t) == {"index", "function"} and set(t["function"]) == {"arguments"}
    assert sorted(firsts) == [0, 1] and firsts[0]["id"] != firsts[1]["id"]
    arguments = {i: "".join(t["function"]["arguments"] for t in tool_deltas if t["index"] == i) for i in firsts}
    assert json.loads(arguments[0]) == WEATHER_ARGS and json.loads(arguments[1]) == TIME_ARGS

    finishes = [c["choices"][0]["finish_reason"] for c in chunks]
    assert [f for f in finishes if f] == ["tool_calls"] and finishes[-1] == "tool_calls"
    assert chunks[-1]["choices"][0]["delta"] == {}


# ------------------------------------------------------------------------------ with reasoning, through failover


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_reasoning_model_calls_tools(make_service: ServiceFactory, sim, protocol: str) -> None:
    service = await make_service(GENSPARK_CHAT_PROTOCOL=protocol)
    sim.options.readable_reasoning = True   # §12.4.4: none on ai_chat unless asked for
    client = service.openai()
    stream = await client.chat.completions.create(model="gpt-5.5-pro", messages=ASK, tools=TOOLS, stream=True)
    content, calls, finishes, chunks = await collect_stream(stream)
    reasoning = "".join(
        getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in chunks if c.choices
    )
    assert reasoning.startswith("Simulated reasoning")
    assert content == "" and finishes == ["tool_calls"]
    assert [(c["name"], json.loads(c["arguments"])) for c in calls] == [("get_weather", WEATHER_ARGS)]

    whole = await client.chat.completions.create(model="gpt-5.5-pro", messages=ASK, tools=TOOLS)
    message = whole.choices[0].message
    assert message.reasoning_content.startswith("Simulated reasoning") and message.content is None
    assert whole.choices[0].finish_reason == "tool_calls"
    assert_call(message.tool_calls[0], "get_weather", WEATHER_ARGS)
    assert whole.usage.completion_tokens_details.reasoning_tokens > 0


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_tool_call_survives_failover(make_service: ServiceFactory, sim, protocol: str) -> None:
    service = await make_service(cookies=["rate-limited-1", "ok-1"], GENSPARK_CHAT_PROTOCOL=protocol)
    client = service.openai()
    stream = await client.chat.completions.create(model="gpt-5.4", messages=ASK, tools=TOOLS, stream=True)
    content, calls, finishes, _ = await collect_stream(stream)
    assert content == "" and finishes == ["tool_calls"]
    assert [(c["name"], json.loads(c["arguments"])) for c in calls] == [("get_weather", WEATHER_ARGS)]
    sent = sim.requests_to(CHAT_PATH[protocol])
    assert [r.session_id for r in sent] == ["rate-limited-1", "ok-1"]
    assert all(instruction_of(r.json) for r in sent)


# ------------------------------------------------------------------------------ prose around a call


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_prose_around_a_call_is_content(make_service: ServiceFactory, protocol: str) -> None:
    # The simulated model writes "<sentence>\n<tool_call>…</tool_call>\n<sentence>" (answers.py).
    service = await make_service(GENSPARK_CHAT_PROTOCOL=protocol)
    client = service.openai()
    ask = ASK[:1] + [{"role": "user", "content": "Weather in Paris, with some prose"}]
    expected = "Let me look that up for you.\n\nI will answer as soon as the tool replies."

    whole = await client.chat.completions.create(model="gpt-5.4", messages=ask, tools=TOOLS)
    choice = whole.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content == expected
    (call,) = choice.message.tool_calls
    assert_call(call, "get_weather", WEATHER_ARGS)

    stream = await client.chat.completions.create(model="gpt-5.4", messages=ask, tools=TOOLS, stream=True)
    content, calls, finishes, _ = await collect_stream(stream)
    assert content == expected and finishes == ["tool_calls"]
    assert [(c["name"], json.loads(c["arguments"])) for c in calls] == [("get_weather", WEATHER_ARGS)]


# ------------------------------------------------------------------------------ reasons to call, habit forms (issue #11)


async def test_a_greeting_with_many_tools_is_answered_in_text(make_service: ServiceFactory, sim) -> None:
    # Open WebUI's browser offers its 28 built-in tools on every request, "Hello there" included.
    service = await make_service()
    client = service.openai()
    hello = [{"role": "user", "content": "Hello there"}]
    whole = await client.chat.completions.create(model="gpt-5.4", messages=hello, tools=CHAT_UI_TOOLS)
    choice = whole.choices[0]
    assert choice.finish_reason == "stop" and choice.message.tool_calls is None
    assert choice.message.content == "[simulated gpt-5.4] You said: Hello there"
    stream = await client.chat.completions.create(model="gpt-5.4", messages=hello, tools=CHAT_UI_TOOLS, stream=True)
    content, calls, finishes, _ = await collect_stream(stream)
    assert (content, calls, finishes) == (choice.message.content, [], ["stop"])
    # The tools were offered all the same; a question about one of them calls it, and only it.
    instruction = instruction_of(upstream_bodies(sim, "ai_chat")[0])
    assert all(f'{{"name":"{t["function"]["name"]}"' in instruction for t in CHAT_UI_TOOLS)
    weather = [{"role": "user", "content": "What's the weather in Lyon?"}]
    answer = await client.chat.completions.create(model="gpt-5.4", messages=weather, tools=CHAT_UI_TOOLS)
    assert [c.function.name for c in answer.choices[0].message.tool_calls] == ["get_weather"]
    assert json.loads(answer.choices[0].message.tool_calls[0].function.arguments) == {"city": "sim", "units": "sim"}


@pytest.mark.parametrize("form", ["xml", "llama", "fenced"])
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_calls_written_in_a_habit_form_are_tool_calls(make_service: ServiceFactory, protocol: str,
                                                             form: str) -> None:
    service = await make_service(GENSPARK_CHAT_PROTOCOL=protocol)
    ask = ASK[:1] + [{"role": "user", "content": f"Weather and time in parallel, {form} please, with prose"}]
    prose = "Let me look that up for you.\n\nI will answer as soon as the tool replies."
    expected = [("get_weather", WEATHER_ARGS), ("get_time", TIME_ARGS)]

    whole = await service.openai().chat.completions.create(model="gpt-5.4", messages=ask, tools=TOOLS)
    choice = whole.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content == prose
    assert [(c.function.name, json.loads(c.function.arguments)) for c in choice.message.tool_calls] == expected

    async with service.http() as http:
        response = await http.post("/v1/chat/completions",
                                   json={"model": "gpt-5.4", "stream": True, "tools": TOOLS, "messages": ask})
    assert response.status_code == 200
    for fragment in (b"<function", b"</function", b"<invoke", b"<parameter", b"```", b"\\u003c"):
        assert fragment not in response.content
    chunks = [json.loads(f[6:]) for f in sse_frames(response.content)[:-1]]
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert "".join(d.get("content") or "" for d in deltas) == prose
    streamed: dict[int, list[str]] = {}
    for t in (t for d in deltas for t in d.get("tool_calls", ())):
        streamed.setdefault(t["index"], [t["function"].get("name"), ""])[1] += t["function"]["arguments"]
    assert [(name, json.loads(arguments)) for name, arguments in streamed.values()] == expected
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"][0]["finish_reason"]] == ["tool_calls"]
