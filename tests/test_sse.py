"""The upstream SSE decoder: any byte split gives the same events; error text is kept."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genspark2api.upstream.sse import (
    DataLine,
    LineDecoder,
    LineTooLong,
    OtherLine,
    decode_event,
)


def python_style(obj: dict) -> bytes:
    # genspark-protocol.md §1.5: Python json.dumps separators, `type` last.
    return json.dumps(obj).encode()


EVENTS = [
    {"id": "p1", "type": "project_start"},
    {"message_id": "m1", "field_name": "session_state.answer", "delta": "Hé\u00d7llo, \"world\"\n", "type": "message_field_delta"},
    {"message_id": "m1", "field_name": "_updatetime", "field_value": "2025-05-05T14:33:48.992304", "type": "message_field"},
    {"id": "m1", "role": "assistant", "content": "done", "session_state": {"answer": "done"}, "type": "message_result"},
]


def stream_bytes(newline: bytes) -> bytes:
    lines = [b"data: " + python_style(e) for e in EVENTS]
    lines.insert(2, b"Rate limit exceeded cf1")
    return newline.join(line + newline for line in lines)


def decode_all(data: bytes, cuts: list[int]) -> list[DataLine | OtherLine]:
    decoder = LineDecoder()
    out: list[DataLine | OtherLine] = []
    start = 0
    for cut in sorted(set(cuts)):
        out += decoder.feed(data[start:cut])
        start = cut
    out += decoder.feed(data[start:])
    out += decoder.finish()
    return out


@settings(max_examples=300, deadline=None)
@given(newline=st.sampled_from([b"\n", b"\r\n", b"\r"]), data=st.data())
def test_any_byte_split_gives_the_same_events(newline: bytes, data: st.DataObject) -> None:
    body = stream_bytes(newline)
    cuts = data.draw(st.lists(st.integers(0, len(body)), max_size=40))
    lines = decode_all(body, cuts)
    assert lines == decode_all(body, [])
    data_lines = [line for line in lines if isinstance(line, DataLine)]
    assert [json.loads(d.payload) for d in data_lines] == EVENTS
    assert [line.text for line in lines if isinstance(line, OtherLine)] == [b"Rate limit exceeded cf1"]
    events = [decode_event(d.payload) for d in data_lines]
    assert events[1].delta == "Hé\u00d7llo, \"world\"\n"
    assert events[3].type == "message_result" and events[3].content == "done"


def test_data_without_space_and_unknown_fields_are_tolerated() -> None:
    lines = LineDecoder().feed(b'data:{"type": "ping", "new_key": [1, 2]}\n\nevent: x\n: comment\n\n')
    assert isinstance(lines[0], DataLine)
    event = decode_event(lines[0].payload)
    assert event is not None and event.type == "ping"
    assert [type(line) for line in lines] == [DataLine, OtherLine, OtherLine]


def test_html_body_is_kept_as_other_lines() -> None:
    page = b"<!DOCTYPE html><html><head><title>Just a moment...</title></head><body></body></html>"
    lines = decode_all(page, [10, 20])
    assert lines == [OtherLine(page)]


def test_non_json_data_line_is_not_an_event() -> None:
    assert decode_event(b"not json") is None
    assert decode_event(b"[1, 2]") is None


def test_overlong_line_is_an_error_not_a_memory_blow_up() -> None:
    decoder = LineDecoder(max_line=1024)
    decoder.feed(b"data: " + b"x" * 1000)
    with pytest.raises(LineTooLong):
        decoder.feed(b"y" * 100)

