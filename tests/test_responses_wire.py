"""The Responses door without a network: the wire byte for byte, the request parser, the store.

The wire is checked two ways: a whole stream against the frames written out here by hand (key
order included), and every event against the openai SDK's own pydantic types, validated strictly
(the SDK itself only constructs, so a wrong shape would slip through it silently).
"""

from __future__ import annotations

import json
import typing
from itertools import count
from typing import Any

import msgspec
import pytest
from conftest import FakeClock
from openai.types.responses import Response as SDKResponse
from openai.types.responses import ResponseStreamEvent

from genspark2api.api.responses_door import parse_request, turns_of, validate
from genspark2api.api.responses_wire import ResponseEcho, ResponseEncoder, answer_pieces
from genspark2api.core.answer import Finished, Usage
from genspark2api.core.compose import Call, Content, Reasoning
from genspark2api.core.toolcalls import ToolCall
from genspark2api.core.toolprompt import FunctionChoice
from genspark2api.errors import ApiError
from genspark2api.pool.response_store import MemoryResponses
from genspark2api.upstream.events import Source

# The SDK's event classes by `type`, to validate each event against exactly its own class.
EVENT_TYPES = {cls.model_fields["type"].annotation.__args__[0]: cls
               for cls in typing.get_args(typing.get_args(ResponseStreamEvent)[0])}


def check_event(event: dict[str, Any]) -> None:
    EVENT_TYPES[event["type"]].model_validate(event)

RESP = "resp_0001"
CREATED = 1_770_000_000


def fixed_ids() -> Any:
    n = count(1)
    return lambda prefix: f"{prefix}_{next(n)}"


def encoder(echo: ResponseEcho | None = None) -> ResponseEncoder:
    return ResponseEncoder(RESP, CREATED, "claude-sonnet-4-6", echo or ResponseEcho(), new_id=fixed_ids())


def frame(event: dict[str, Any]) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event, separators=(',', ':'))}\n\n".encode()


def response(status: str, output: list, usage: dict | None = None, **over: Any) -> dict[str, Any]:
    body = {
        "id": RESP, "object": "response", "created_at": CREATED, "status": status, "background": False,
        "completed_at": None, "error": None, "incomplete_details": None, "instructions": None,
        "max_output_tokens": None, "model": "claude-sonnet-4-6", "output": output, "parallel_tool_calls": True,
        "previous_response_id": None, "reasoning": {"effort": None, "summary": None}, "store": True,
        "temperature": None, "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": [],
        "top_p": None, "truncation": "disabled", "usage": usage, "user": None, "metadata": {},
    }
    body.update(over)
    return body


def parse_frames(body: bytes) -> list[dict[str, Any]]:
    events = []
    for block in body.split(b"\n\n")[:-1]:
        event_line, data_line = block.split(b"\n")
        event = json.loads(data_line.removeprefix(b"data: "))
        assert event_line == b"event: " + event["type"].encode()
        events.append(event)
    return events


def test_a_whole_stream_byte_for_byte() -> None:
    """Reasoning summary, text with a search citation, a function call, then response.completed."""
    enc = encoder()
    body = enc.opening()
    body += enc.pieces([Reasoning("Think"), Reasoning("ing."), Content("See [Doc](https://d/1)")])
    body += enc.pieces([Call(0, ToolCall("call_a", "get_weather", '{"city":"Paris"}'))])
    body += enc.finished(Finished("tool_calls", Usage(12, 7, 2), sources=(Source("Doc", "https://d/1"),)),
                         completed_at=CREATED + 3)
    reasoning = {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "Thinking."}]}
    text = {"type": "output_text", "text": "See [Doc](https://d/1)", "annotations": [], "logprobs": []}
    message = {"type": "message", "id": "msg_2", "role": "assistant", "content": [text], "status": "completed"}
    call = {"type": "function_call", "call_id": "call_a", "name": "get_weather", "arguments": '{"city":"Paris"}',
            "id": "fc_3", "status": "completed"}
    usage = {"input_tokens": 12, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
             "output_tokens": 7,
             "output_tokens_details": {"reasoning_tokens": 2}, "total_tokens": 19}
    msg = {"item_id": "msg_2", "output_index": 1, "content_index": 0}
    rs = {"item_id": "rs_1", "output_index": 0, "summary_index": 0}
    expected = [
        {"type": "response.created", "sequence_number": 0, "response": response("in_progress", [])},
        {"type": "response.in_progress", "sequence_number": 1, "response": response("in_progress", [])},
        {"type": "response.output_item.added", "sequence_number": 2, "output_index": 0,
         "item": {"type": "reasoning", "id": "rs_1", "summary": []}},
        {"type": "response.reasoning_summary_part.added", "sequence_number": 3, **rs,
         "part": {"type": "summary_text", "text": ""}},
        {"type": "response.reasoning_summary_text.delta", "sequence_number": 4, **rs, "delta": "Think"},
        {"type": "response.reasoning_summary_text.delta", "sequence_number": 5, **rs, "delta": "ing."},
        {"type": "response.reasoning_summary_text.done", "sequence_number": 6, **rs, "text": "Thinking."},
        {"type": "response.reasoning_summary_part.done", "sequence_number": 7, **rs,
         "part": {"type": "summary_text", "text": "Thinking."}},
        {"type": "response.output_item.done", "sequence_number": 8, "output_index": 0, "item": reasoning},
        {"type": "response.output_item.added", "sequence_number": 9, "output_index": 1,
         "item": {"type": "message", "id": "msg_2", "role": "assistant", "content": [], "status": "in_progress"}},
        {"type": "response.content_part.added", "sequence_number": 10, **msg,
         "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}},
        {"type": "response.output_text.delta", "sequence_number": 11, **msg, "delta": "See [Doc](https://d/1)",
         "logprobs": []},
        {"type": "response.output_text.done", "sequence_number": 12, **msg, "text": "See [Doc](https://d/1)",
         "logprobs": []},
        {"type": "response.content_part.done", "sequence_number": 13, **msg, "part": text},
        {"type": "response.output_item.done", "sequence_number": 14, "output_index": 1, "item": message},
        {"type": "response.output_item.added", "sequence_number": 15, "output_index": 2,
         "item": {**call, "arguments": "", "status": "in_progress"}},
        {"type": "response.function_call_arguments.delta", "sequence_number": 16, "item_id": "fc_3",
         "output_index": 2, "delta": '{"city":"Paris"}'},
        {"type": "response.function_call_arguments.done", "sequence_number": 17, "item_id": "fc_3",
         "output_index": 2, "arguments": '{"city":"Paris"}'},
        {"type": "response.output_item.done", "sequence_number": 18, "output_index": 2, "item": call},
        {"type": "response.completed", "sequence_number": 19,
         "response": response("completed", [reasoning, message, call], usage, completed_at=CREATED + 3)},
    ]
    # The message was closed by the call, before the sources were known: no citation on it.
    assert body == b"".join(frame(e) for e in expected)
    for event in parse_frames(body):
        check_event(event)


def test_citations_mark_the_source_links_of_the_open_message() -> None:
    enc = encoder()
    enc.opening()
    enc.pieces([Content("Answer.\n\n**Sources**\n1. [Doc](https://d/1)")])
    enc.finished(Finished("stop", Usage(1, 1), sources=(Source("Doc", "https://d/1"), Source("Gone", "https://g"))))
    (message,) = enc.final.output
    part = message.content[0]
    link = part.text.index("[Doc]")
    assert [(a.start_index, a.end_index, a.url, a.title) for a in part.annotations] == [
        (link, len(part.text), "https://d/1", "Doc"),
        (len(part.text), len(part.text), "https://g", "Gone"),   # not shown in the text: an empty span
    ]
    SDKResponse.model_validate_json(msgspec.json.encode(enc.final))


def test_a_length_cut_is_response_incomplete_and_a_late_failure_is_response_failed() -> None:
    enc = encoder()
    enc.opening()
    events = parse_frames(enc.pieces([Content("Once upon")]) + enc.finished(Finished("length", Usage(3, 2))))
    last = events[-1]
    assert last["type"] == "response.incomplete"
    assert last["response"]["status"] == "incomplete"
    assert last["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert last["response"]["output"][0]["status"] == "incomplete"
    assert [e["sequence_number"] for e in events] == list(range(2, 2 + len(events)))

    enc = encoder()
    enc.opening()
    enc.pieces([Content("Half")])
    failed = parse_frames(enc.broken(ApiError(429, "All accounts are cooling.", code="accounts_cooling")))
    assert [e["type"] for e in failed] == ["response.failed"]
    error = failed[0]["response"]["error"]
    # OpenAI's vocabulary (Codex retries rate_limit_exceeded); our own code stays in the message.
    assert error == {"code": "rate_limit_exceeded", "message": "All accounts are cooling. (accounts_cooling)"}
    assert failed[0]["response"]["status"] == "failed"
    check_event(failed[0])
    enc = encoder()
    enc.opening()
    assert "server_error" in enc.broken(ApiError(502, "cut", code="upstream_truncated")).decode()


def test_an_empty_answer_still_has_a_message_and_the_whole_body_matches_the_sdk() -> None:
    enc = encoder()
    enc.pieces(answer_pieces("", "", ()))
    enc.finished(Finished("stop", Usage(1, 0)))
    parsed = SDKResponse.model_validate_json(msgspec.json.encode(enc.final))
    assert parsed.output_text == "" and parsed.output[0].type == "message"
    enc = encoder()
    enc.pieces(answer_pieces("Hi", "hmm", (ToolCall("call_x", "f", "{}"),)))
    enc.finished(Finished("tool_calls", Usage(1, 2)))
    parsed = SDKResponse.model_validate_json(msgspec.json.encode(enc.final))
    assert [item.type for item in parsed.output] == ["reasoning", "message", "function_call"]
    assert parsed.output_text == "Hi"


# ------------------------------------------------------------------------------ the request parser


def parse(body: dict[str, Any], **kwargs: Any) -> Any:
    return validate(parse_request(json.dumps(body).encode()), **kwargs)


def bad(body: dict[str, Any]) -> ApiError:
    with pytest.raises(ApiError) as info:
        parse(body)
    assert info.value.status == 400, info.value
    return info.value


CODEX_LIKE = {
    "model": "claude-sonnet-4-6",
    "instructions": None,
    "input": [
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Be terse."}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "use get_weather for Paris"}]},
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": None},
        {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "get_weather",
         "arguments": '{"city":"Paris"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "18C"},
        {"type": "local_shell_call", "id": "x", "call_id": "c", "action": {}, "status": "completed"},
    ],
    "tools": [
        {"type": "function", "name": "get_weather", "description": "Weather", "strict": False,
         "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
        {"type": "namespace", "name": "multi_agent_v1", "tools": []},
        {"type": "web_search", "external_web_access": False},
        {"type": "local_shell"}, {"type": "custom", "name": "apply_patch", "format": {"type": "grammar"}},
        {"type": "file_search", "vector_store_ids": []}, {"type": "computer_use_preview"},
    ],
    "tool_choice": "auto",
    "parallel_tool_calls": False,
    "reasoning": {"effort": "medium", "summary": "auto"},
    "store": False,
    "stream": True,
    "include": ["reasoning.encrypted_content"],
    "prompt_cache_key": "abc",
    "client_metadata": {"x": "y"},
}


def test_a_codex_request_parses_with_its_foreign_tools_and_items_ignored() -> None:
    params = parse(CODEX_LIKE)
    conversation = params.conversation
    assert [t.role for t in conversation.turns] == ["system", "user", "assistant", "tool"]
    assert conversation.turns[2].calls == (ToolCall("call_1", "get_weather", '{"city":"Paris"}'),)
    assert conversation.turns[3].call_id == "call_1" and conversation.turns[3].text == "18C"
    assert conversation.tools is not None and conversation.tools.names == {"get_weather"}
    assert conversation.tools.parallel is False
    assert conversation.route.search is False        # external_web_access: false
    assert conversation.reasoning == "separate" and conversation.stream and not params.store
    live = {**CODEX_LIKE, "tools": [{"type": "web_search", "external_web_access": True}]}
    assert parse(live).conversation.route.search is True and parse(live).conversation.tools is None
    assert parse({"model": "gpt-5.4", "input": "hi", "tools": [{"type": "web_search_preview"}]}
                 ).conversation.route.search is True


def test_strings_formats_choices_and_instructions() -> None:
    params = parse({"model": "gpt-5.4", "input": "Hi", "instructions": "Be kind.", "max_output_tokens": 9,
                    "text": {"format": {"type": "json_schema", "name": "P", "schema": {"type": "object"},
                                        "strict": True}},
                    "tools": [{"type": "function", "name": "f"}], "tool_choice": {"type": "function", "name": "f"}})
    c = params.conversation
    assert [(t.role, t.text) for t in c.turns] == [("system", "Be kind."), ("user", "Hi")]
    assert c.max_tokens == 9 and c.reasoning == "hidden"
    assert c.output is not None and (c.output.kind, c.output.name, c.output.strict, c.output.param) == \
        ("json_schema", "P", True, "text.format")
    assert c.tools is not None and c.tools.choice == FunctionChoice("f")
    assert parse({"model": "gpt-5.4", "input": "x", "text": {"format": {"type": "json_object"}}}
                 ).conversation.output.kind == "json_object"
    assert parse({"model": "gpt-5.4", "input": "x", "text": {"format": {"type": "text"}}}).conversation.output is None
    image = parse({"model": "gpt-5.4", "input": [{"role": "user", "content": [
        {"type": "input_text", "text": "what is it"},
        {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="},
        {"type": "input_file", "file_data": "JVBERi0=", "filename": "a.pdf"}]}]})
    media = image.conversation.media
    assert [(m.kind, m.param) for m in media] == [("image", "input[0].content[1]"), ("file", "input[0].content[2]")]
    assert media[1].url.startswith("data:application/octet-stream;base64,") and media[1].filename == "a.pdf"
    # An image a tool returned (Codex's view_image) follows the result as a user turn of its own.
    shot = parse({"model": "gpt-5.4", "input": [
        {"type": "function_call", "call_id": "call_v", "name": "view_image", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_v", "output": [
            {"type": "input_text", "text": "ok"}, {"type": "input_image", "image_url": "https://e/x.png"}]}]})
    assert [t.role for t in shot.conversation.turns] == ["assistant", "tool", "user"]
    assert shot.conversation.turns[1].text == "ok"
    assert [(m.url, m.param) for m in shot.conversation.media] == [("https://e/x.png", "input[1].output[1]")]


@pytest.mark.parametrize(("body", "param"), [
    ({"input": "hi"}, "model"),
    ({"model": "gpt-5.4"}, "input"),
    ({"model": "gpt-5.4", "input": []}, "input"),
    ({"model": "gpt-5.4", "input": 5}, "input"),
    ({"model": "gpt-5.4", "input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
    ({"model": "gpt-5.4", "input": [{"content": "x"}]}, "input[0]"),
    ({"model": "gpt-5.4", "input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}]},
     "input[0].content[0].file_id"),
    ({"model": "gpt-5.4", "input": [{"role": "user", "content": [{"type": "input_file", "file_id": "file-1"}]}]},
     "input[0].content[0].file_id"),
    ({"model": "gpt-5.4", "input": [{"role": "user", "content": [{"type": "input_audio"}]}]}, "input[0].content[0]"),
    ({"model": "gpt-5.4", "input": [{"role": "user", "content": [{"type": "hologram"}]}]}, "input[0].content[0].type"),
    ({"model": "gpt-5.4", "input": [{"type": "function_call", "call_id": "c", "arguments": "{}"}]}, "input[0].name"),
    ({"model": "gpt-5.4", "input": [{"role": "assistant", "content": "only me"}]}, "input"),
    ({"model": "gpt-5.4", "input": "x", "tools": [{"type": "function", "name": "bad name!"}]}, "tools[0].name"),
    ({"model": "gpt-5.4", "input": "x", "tool_choice": "sometimes"}, "tool_choice"),
    ({"model": "gpt-5.4", "input": "x", "tools": [{"type": "function", "name": "f"}],
      "tool_choice": {"type": "function", "name": "g"}}, "tool_choice.name"),
    ({"model": "gpt-5.4", "input": "x", "text": {"format": {"type": "json_schema", "name": "n"}}},
     "text.format.schema"),
    ({"model": "gpt-5.4", "input": "x", "text": {"format": {"type": "yaml"}}}, "text.format.type"),
    ({"model": "gpt-5.4", "input": "x", "max_output_tokens": 0}, "max_output_tokens"),
    ({"model": "gpt-5.4", "input": "x", "background": True}, "background"),
    ({"model": "gpt-5.4", "input": "x", "temperature": "hot"}, "temperature"),
    ({"model": "gpt-image-2", "input": "draw a cat"}, "model"),
])
def test_bad_input_is_a_400_naming_the_parameter(body: dict[str, Any], param: str) -> None:
    assert bad(body).param == param


def test_unknown_models_are_404_and_empty_bodies_400() -> None:
    with pytest.raises(ApiError) as info:
        parse({"model": "no-such-model-xyz", "input": "x"})
    assert info.value.status == 404 and info.value.code == "model_not_found"
    with pytest.raises(ApiError) as info:
        parse_request(b"  ")
    assert info.value.status == 400


def test_stored_items_read_back_as_the_same_turns() -> None:
    """What the store keeps (normalised items) gives the turns the client's own items gave."""
    params = parse(CODEX_LIKE)
    stored = msgspec.json.decode(msgspec.json.encode(list(params.input_items)))
    again = parse({**CODEX_LIKE, "input": stored})
    assert again.conversation.turns == params.conversation.turns
    assert turns_of(params.input_items) == list(params.conversation.turns)
    assert all(getattr(item, "id", None) for item in params.input_items)


def test_assistant_items_in_a_row_are_one_turn() -> None:
    params = parse({"model": "gpt-5.4", "input": [
        {"role": "user", "content": "q"},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Let me check. "}]},
        {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}"},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Done soon."}]},
        {"type": "function_call", "call_id": "call_2", "name": "g", "arguments": "{\"a\":1}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "r1"},
    ]})
    _, answer, result = params.conversation.turns
    assert answer.role == "assistant" and answer.text == "Let me check. Done soon."
    assert [c.id for c in answer.calls] == ["call_1", "call_2"] and result.role == "tool"


# ------------------------------------------------------------------------------ the store


def test_the_store_is_bounded_by_count_bytes_and_time() -> None:
    clock = FakeClock()
    store = MemoryResponses(max_entries=2, max_bytes=10, clock=clock)
    store.put("a", b"1234", clock() + 60)
    store.put("b", b"5678", clock() + 60)
    assert store.get("a") == b"1234"          # a is now the most recently used
    store.put("c", b"90", clock() + 60)       # over the count: b goes, not a
    assert (store.get("a"), store.get("b"), store.get("c")) == (b"1234", None, b"90")
    store.put("d", b"abcdefghi", clock() + 60)  # over the count (a goes), then over the bytes (c goes)
    assert (store.get("a"), store.get("c"), store.get("d")) == (None, None, b"abcdefghi")
    assert store.size_bytes == 9
    store.put("huge", b"x" * 11, clock() + 60)  # larger than the bound: not kept, nothing pushed out
    assert store.get("huge") is None and store.get("d") == b"abcdefghi"
    clock.advance(61)
    assert store.get("d") is None and len(store) == 0 and store.size_bytes == 0
    store.put("e", b"1", clock() + 5)
    store.delete("e")
    store.delete("never")
    assert store.get("e") is None
