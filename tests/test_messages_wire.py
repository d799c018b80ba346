"""The Anthropic Messages door without a server: request parsing, the wire byte for byte, errors,
and the Claude names of the catalogue."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genspark2api.api.messages_door import parse_messages_request
from genspark2api.api.messages_wire import (
    MessagesStreamEncoder,
    anthropic_status,
    error_body,
    error_frame,
    message_body,
    thinking_signature,
)
from genspark2api.core.answer import Answer, AnswerInfo, Finished, Usage
from genspark2api.core.compose import Call, Content, Reasoning
from genspark2api.core.conversation import MediaRef, Text
from genspark2api.core.toolcalls import ToolCall
from genspark2api.core.toolprompt import FunctionChoice
from genspark2api.errors import ApiError, upstream_error
from genspark2api.settings import Settings, SettingsError
from genspark2api.upstream.catalog import Catalog

WEATHER_TOOL = {"name": "get_weather", "description": "Current weather in a city",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}


def parse(**body: Any):
    body = {"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]} | body
    return parse_messages_request(json.dumps(body).encode())


def refused(param: str, **body: Any) -> ApiError:
    with pytest.raises(ApiError) as info:
        parse(**body)
    assert info.value.status == 400 and info.value.param == param, (info.value, param)
    return info.value


# ------------------------------------------------------------------------------ request


def test_a_full_request_becomes_one_conversation() -> None:
    png = "iVBORw0KGgo="
    params = parse(
        system=[{"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1; cc_entrypoint=cli;"},
                {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        messages=[
            {"role": "user", "content": [
                {"type": "text", "text": "What is in this?", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png}},
                {"type": "document", "title": "spec.pdf",
                 "source": {"type": "url", "url": "https://example.com/spec.pdf"}},
            ]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "abc"},
                {"type": "redacted_thinking", "data": "xyz"},
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
            ]},
            {"role": "system", "content": "Agents: none."},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18 degrees", "is_error": False},
                {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": True,
                 "content": [{"type": "text", "text": "no such city"}]},
                {"type": "text", "text": "And now?"},
            ]},
            {"role": "user", "content": "Consecutive user turns are fine."},
        ],
        tools=[WEATHER_TOOL, {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
               {"type": "bash_20250124", "name": "bash"}, {"type": "text_editor_20250728", "name": "str_replace_based_edit_tool"}],
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
        stop_sequences=["END"], thinking={"type": "enabled", "budget_tokens": 2048},
        metadata={"user_id": "u"}, temperature=0.2, top_p=0.9, top_k=5, service_tier="auto",
        context_management={"edits": []}, output_config={"effort": "high"},
    )
    c = params.conversation
    assert params.thinking and c.reasoning == "separate"
    assert c.route.upstream == ("claude-sonnet-4-5",) and c.route.search   # the web search server tool
    assert c.stops == ("END",) and c.max_tokens == 100
    assert c.tools is not None and [f.name for f in c.tools.functions] == ["get_weather"]
    assert c.tools.choice == "required" and c.tools.parallel is False
    roles = [t.role for t in c.turns]
    assert roles == ["system", "user", "assistant", "system", "tool", "tool", "user", "user"]
    assert c.turns[0].text == "Be brief."   # the billing line is not an instruction
    user = c.turns[1]
    assert user.parts[0] == Text("What is in this?")
    assert user.parts[1] == MediaRef("image", f"data:image/png;base64,{png}", "messages[0].content[1]")
    assert user.parts[2] == MediaRef("file", "https://example.com/spec.pdf", "messages[0].content[2]", "spec.pdf")
    assistant = c.turns[2]
    assert assistant.text == "Let me check."
    assert assistant.calls == (ToolCall("toolu_1", "get_weather", '{"city":"Paris"}'),)
    assert (c.turns[4].call_id, c.turns[4].text, c.turns[4].is_error) == ("toolu_1", "18 degrees", False)
    assert (c.turns[5].call_id, c.turns[5].text, c.turns[5].is_error) == ("toolu_2", "no such city", True)
    assert c.turns[6].text == "And now?"


def test_defaults_and_the_other_choices() -> None:
    c = parse().conversation
    assert c.tools is None and c.reasoning == "hidden" and not c.stream and not c.route.search
    assert parse(tools=[WEATHER_TOOL]).conversation.tools.choice == "auto"
    assert parse(tools=[WEATHER_TOOL], tool_choice={"type": "none"}).conversation.tools.offered is False
    named = parse(tools=[WEATHER_TOOL], tool_choice={"type": "tool", "name": "get_weather"}).conversation.tools
    assert named.choice == FunctionChoice("get_weather") and named.parallel
    assert parse(thinking={"type": "adaptive"}).conversation.reasoning == "separate"
    assert parse(thinking={"type": "disabled"}).conversation.reasoning == "hidden"
    assert parse(model="claude-opus-4-8").route.upstream == ("claude-opus-4-8",)
    text_doc = parse(messages=[{"role": "user", "content": [
        {"type": "document", "title": "notes", "source": {"type": "text", "media_type": "text/plain", "data": "a b"}}]}])
    assert text_doc.conversation.turns[0].text == "Document 'notes':\na b"
    pdf = parse(messages=[{"role": "user", "content": [
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}}]}])
    assert pdf.conversation.turns[0].parts == (
        MediaRef("file", "data:application/pdf;base64,JVBERi0=", "messages[0].content[0]"),)
    history = parse(messages=[
        {"role": "user", "content": "search it"},
        {"role": "assistant", "content": [
            {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "x"}},
            {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []},
            {"type": "text", "text": "Found it."}]},
        {"role": "user", "content": "thanks"}])
    assert [t.text for t in history.conversation.turns] == ["search it", "Found it.", "thanks"]
    found = parse(messages=[{"role": "user", "content": [
        {"type": "search_result", "title": "Docs", "source": "https://example.com/d",
         "content": [{"type": "text", "text": "The answer is 4."}]}, {"type": "text", "text": "Sum it up"}]}])
    assert found.conversation.turns[0].text == "Docs https://example.com/d\nThe answer is 4.\nSum it up"


@pytest.mark.parametrize(("param", "body"), [
    ("max_tokens", {"max_tokens": None}),
    ("max_tokens", {"max_tokens": 0}),
    ("messages", {"messages": []}),
    ("messages[0].role", {"messages": [{"role": "tool", "content": "x"}]}),
    ("messages[0].content[0].type", {"messages": [{"role": "user", "content": [{"type": "video", "url": "x"}]}]}),
    ("messages[0].content[0].type", {"messages": [{"role": "user", "content": [{"text": "no type"}]}]}),
    ("messages[0].content[0].source.media_type", {"messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "data": "x"}}]}]}),
    ("messages[0].content[0].source", {"messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "file", "file_id": "file_1"}}]}]}),
    ("messages[0].content[0]", {"messages": [{"role": "assistant", "content": [
        {"type": "tool_result", "tool_use_id": "t", "content": "x"}]}]}),
    ("messages[0].content[0]", {"messages": [{"role": "user", "content": [
        {"type": "tool_use", "id": "t", "name": "f", "input": {}}]}]}),
    ("system[0].type", {"system": [{"type": "image"}]}),
    ("tools[0].name", {"tools": [{"name": "bad name", "input_schema": {}}]}),
    ("tools[0].input_schema", {"tools": [{"name": "f"}]}),
    ("tools", {"tools": [WEATHER_TOOL, WEATHER_TOOL]}),
    ("tool_choice.name", {"tools": [WEATHER_TOOL], "tool_choice": {"type": "tool", "name": "other"}}),
    ("tool_choice.type", {"tools": [WEATHER_TOOL], "tool_choice": {"type": "sometimes"}}),
    ("tool_choice", {"tool_choice": {"type": "any"}}),
    ("thinking.type", {"thinking": {"type": "maybe"}}),
    ("model", {"model": "gpt-image-2"}),
])
def test_bad_requests_name_the_parameter(param: str, body: dict[str, Any]) -> None:
    body = dict(body)
    if body.get("max_tokens", 1) is None:
        body.pop("max_tokens")
        with pytest.raises(ApiError) as info:
            parse_messages_request(json.dumps({"model": "claude-sonnet-4-5", "messages": [
                {"role": "user", "content": "hi"}]}).encode())
        assert (info.value.status, info.value.param, info.value.message) == (400, "max_tokens", "max_tokens: Field required")
        return
    refused(param, **body)


def test_count_tokens_needs_no_max_tokens_and_unknown_models_are_404() -> None:
    body = {"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]}
    assert parse_messages_request(json.dumps(body).encode(), counting=True).conversation.max_tokens is None
    with pytest.raises(ApiError) as info:
        parse(model="claude-sonet-4-5")
    assert (info.value.status, info.value.code) == (404, "model_not_found") and "claude-sonnet-4-5" in info.value.message


# ------------------------------------------------------------------------------ wire


def test_a_stream_byte_for_byte() -> None:
    events = MessagesStreamEncoder("msg_1", "claude-opus-4-6", 12, thinking=True)
    out = events.start()
    out += events.pieces([Reasoning("Let me "), Reasoning("think.")])
    out += events.pieces([Content("Hello"), Content(" there")])
    out += events.pieces([Call(0, ToolCall("call_abc", "get_weather", '{"city": "Paris"}'))])
    out += events.finish(Finished("tool_calls", Usage(12, 9, 3)))
    signature = thinking_signature("Let me think.")
    assert out.decode() == (
        'event: message_start\ndata: {"type":"message_start","message":{"type":"message","id":"msg_1",'
        '"role":"assistant","model":"claude-opus-4-6","content":[],"stop_reason":null,"stop_sequence":null,'
        '"usage":{"input_tokens":12,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":0}}}\n\n'
        'event: ping\ndata: {"type":"ping"}\n\n'
        'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
        '"content_block":{"type":"thinking","thinking":"","signature":""}}\n\n'
        'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
        '"delta":{"type":"thinking_delta","thinking":"Let me "}}\n\n'
        'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
        '"delta":{"type":"thinking_delta","thinking":"think."}}\n\n'
        'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
        f'"delta":{{"type":"signature_delta","signature":"{signature}"}}}}\n\n'
        'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
        'event: content_block_start\ndata: {"type":"content_block_start","index":1,'
        '"content_block":{"type":"text","text":""}}\n\n'
        'event: content_block_delta\ndata: {"type":"content_block_delta","index":1,'
        '"delta":{"type":"text_delta","text":"Hello"}}\n\n'
        'event: content_block_delta\ndata: {"type":"content_block_delta","index":1,'
        '"delta":{"type":"text_delta","text":" there"}}\n\n'
        'event: content_block_stop\ndata: {"type":"content_block_stop","index":1}\n\n'
        'event: content_block_start\ndata: {"type":"content_block_start","index":2,'
        '"content_block":{"type":"tool_use","id":"toolu_abc","name":"get_weather","input":{}}}\n\n'
        'event: content_block_delta\ndata: {"type":"content_block_delta","index":2,'
        '"delta":{"type":"input_json_delta","partial_json":"{\\"city\\":\\"Paris\\"}"}}\n\n'
        'event: content_block_stop\ndata: {"type":"content_block_stop","index":2}\n\n'
        'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},'
        '"usage":{"input_tokens":12,"output_tokens":9}}\n\n'
        'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    )


def test_reasoning_is_dropped_unless_thinking_was_asked_and_stop_reasons() -> None:
    events = MessagesStreamEncoder("msg_1", "m", 1, thinking=False)
    assert events.pieces([Reasoning("secret")]) == b""
    tail = events.finish(Finished("stop", Usage(1, 1), stop_sequence="END")).decode()
    assert '"stop_reason":"stop_sequence","stop_sequence":"END"' in tail
    assert "content_block" not in tail   # nothing was open
    for reason, expected in (("stop", "end_turn"), ("length", "max_tokens"), ("tool_calls", "tool_use")):
        assert f'"stop_reason":"{expected}"' in MessagesStreamEncoder("m", "m", 1, thinking=False).finish(
            Finished(reason, Usage(1, 1))).decode()


def test_the_whole_message_byte_for_byte() -> None:
    info = AnswerInfo("abc", 0, "claude-sonnet-4-5-20250929")
    answer = Answer(info, "Hi.", "Because.", (ToolCall("call_x", "f", "{}"),), Finished("tool_calls", Usage(5, 7, 2)))
    signature = thinking_signature("Because.")
    assert message_body(answer, thinking=True).decode() == (
        '{"type":"message","id":"msg_abc","role":"assistant","model":"claude-sonnet-4-5-20250929","content":['
        f'{{"type":"thinking","thinking":"Because.","signature":"{signature}"}},{{"type":"text","text":"Hi."}},'
        '{"type":"tool_use","id":"toolu_x","name":"f","input":{}}],"stop_reason":"tool_use","stop_sequence":null,'
        '"usage":{"input_tokens":5,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":7}}'
    )
    empty = Answer(info, "", "", (), Finished("stop", Usage(5, 0)))
    assert json.loads(message_body(empty, thinking=False))["content"] == [{"type": "text", "text": ""}]


@pytest.mark.parametrize(("error", "status", "kind"), [
    (ApiError(400, "bad"), 400, "invalid_request_error"),
    (ApiError(401, "key"), 401, "authentication_error"),
    (ApiError(403, "blocked", code="ip_blocked"), 403, "permission_error"),
    (ApiError(404, "gone"), 404, "not_found_error"),
    (ApiError(413, "big"), 413, "request_too_large"),
    (upstream_error(429, "cooling", "accounts_cooling", retry_after=60), 429, "rate_limit_error"),
    (upstream_error(429, "busy", "accounts_busy", retry_after=5), 529, "overloaded_error"),
    (upstream_error(503, "captcha", "upstream_overloaded"), 529, "overloaded_error"),
    (upstream_error(503, "renew cookies", "no_usable_account"), 503, "api_error"),
    (upstream_error(502, "broke", "upstream_truncated"), 502, "api_error"),
    (upstream_error(504, "slow", "upstream_timeout"), 504, "timeout_error"),
    (ApiError(500, "bug", type="server_error"), 500, "api_error"),
])
def test_error_statuses_and_types(error: ApiError, status: int, kind: str) -> None:
    assert anthropic_status(error) == (status, kind)
    assert error_body(error, "req_1").decode() == (
        f'{{"type":"error","error":{{"type":"{kind}","message":"{error.message}"}},"request_id":"req_1"}}')
    assert error_frame(error).decode() == (
        f'event: error\ndata: {{"type":"error","error":{{"type":"{kind}","message":"{error.message}"}}}}\n\n')


# ------------------------------------------------------------------------------ models


@pytest.mark.parametrize(("name", "served"), [
    ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
    ("claude-sonnet-4-5", "claude-sonnet-4-5"),
    ("claude-sonnet-4-6", "claude-sonnet-4-6"),
    ("claude-opus-4-8", "claude-opus-4-8"),           # Claude Code 2.1.197's default
    ("claude-opus-4-6[1m]", "claude-opus-4-6"),
    ("claude-opus-4-6-fast", "claude-opus-4-6"),
    ("claude-opus-4-5-20251101", "claude-opus-4-5"),
    ("claude-opus-4-1-20250805", "claude-opus-4-6"),
    ("claude-opus-4-20250514", "claude-opus-4-6"),
    ("claude-haiku-4-5-20251001", "claude-4-5-haiku"),
    ("claude-3-5-haiku-latest", "claude-4-5-haiku"),
    ("claude-3-7-sonnet-20250219", "claude-sonnet-4"),
    ("claude-sonnet-4-20250514", "claude-sonnet-4"),
    ("claude-sonnet-4.6", "claude-sonnet-4-6"),
    ("claude-fable-5", "claude-opus-5-5"),
    ("claude-mythos-5", "claude-opus-5-5"),
    ("anthropic.claude-3-5-sonnet-20241022-v2:0", "claude-sonnet-4"),
])
def test_claude_names_as_clients_send_them(name: str, served: str) -> None:
    assert Catalog().route(name).upstream == (served,)


def test_operator_aliases() -> None:
    settings = Settings.from_env({"MODEL_ALIASES": "fast=claude-haiku-4-5, big=gpt-5.5-pro"})
    catalog = Catalog(extra_aliases=settings.model_aliases)
    assert catalog.route("fast").upstream == ("claude-4-5-haiku",) and catalog.route("big").upstream == ("gpt-5.5-pro",)
    assert catalog.aliases()["fast"] == "claude-4-5-haiku"
    with pytest.raises(SettingsError, match="not-a-model"):
        Settings.from_env({"MODEL_ALIASES": "x=not-a-model"})
    with pytest.raises(SettingsError, match="name=genspark-id"):
        Settings.from_env({"MODEL_ALIASES": "missing-target"})


def test_a_tool_result_with_an_image_keeps_its_heading() -> None:
    """Media turns go upstream as their parts, so the heading is written into them here."""
    turns = parse(messages=[
        {"role": "user", "content": "use screenshot"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "screenshot", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "is_error": True, "content": [
            {"type": "text", "text": "partial"},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}]}]},
    ]).conversation.turns
    result = turns[2]
    assert result.role == "user" and result.parts == (
        Text("Tool result for screenshot (tool_call_id=toolu_1):\n[error]"), Text("partial"),
        MediaRef("image", "https://example.com/a.png", "messages[2].content[0].content[1]"))


def test_structured_outputs_become_the_output_format() -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}}
    for body, param in (({"output_config": {"format": {"type": "json_schema", "schema": schema}, "effort": "low"}},
                         "output_config.format"),
                        ({"output_format": {"type": "json_schema", "schema": schema}}, "output_format")):
        output = parse(**body).conversation.output
        assert output is not None and (output.kind, output.schema, output.param) == ("json_schema", schema, param)
    assert parse(output_config={"effort": "high"}).conversation.output is None
    refused("output_config.format", output_config={"format": {"type": "xml"}})


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.sampled_from(
        ["", "text", "image", "document", "tool_use", "tool_result", "thinking", "base64", "url", "user",
         "assistant", "system", "any", "tool", "enabled", "web_search_20250305", "json_schema", "x"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(
        ["type", "text", "source", "media_type", "data", "url", "id", "name", "input", "tool_use_id", "content",
         "is_error", "role", "input_schema", "format", "schema", "title"]), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=80, deadline=None)
@given(messages=_json, system=_json, tools=_json, tool_choice=_json, output_config=_json)
def test_any_body_is_an_answer_or_a_400(messages: Any, system: Any, tools: Any, tool_choice: Any,
                                        output_config: Any) -> None:
    body = {"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": messages, "system": system,
            "tools": tools, "tool_choice": tool_choice, "output_config": output_config}
    try:
        parse_messages_request(json.dumps(body).encode())
    except ApiError as exc:
        assert exc.status == 400 and exc.message
