"""Tool-call emulation: the block parser (stream and non-stream) and the prompt/history rendering."""

from __future__ import annotations

import json
import re

import pytest
from fixtures.agent_tools import CHAT_UI_TOOLS, CODING_AGENT_TOOLS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genspark2api.core.toolcalls import (
    TOOL_CALL_CLOSE,
    TOOL_CALL_OPEN,
    CallPiece,
    TextPiece,
    ToolCall,
    ToolCallStreamParser,
    parse_tool_answer,
)
from genspark2api.core.toolprompt import (
    FunctionChoice,
    FunctionSpec,
    render_assistant_tool_calls,
    render_tool_instruction,
    render_tool_result,
)
from genspark2api.core.toolschema import (
    PROPERTY_DESCRIPTION_LIMIT,
    TOOL_DESCRIPTION_LIMIT,
    compact_parameters,
)
from genspark2api.core.usage import TokenCounter

NAMES = ("get_weather", "search", "write_file")
# The argument schemas the XML form types its bare-text values by (toolschema.parameter_value).
SCHEMAS = {
    "get_weather": {"type": "object", "properties": {
        "city": {"type": "string"}, "days": {"type": "integer"}, "metric": {"type": "boolean"},
        "units": {"type": ["string", "null"]}}},
    "search": {"type": "object", "properties": {
        "q": {"type": "string"}, "limit": {"type": "number"}, "filters": {"type": "object"},
        "sites": {"type": "array", "items": {"type": "string"}}}},
    "write_file": None,  # a tool without a schema: values are JSON when they parse as JSON
}


def compact(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def block(name: str, arguments: object = None, *, raw: str | None = None) -> str:
    body = raw if raw is not None else json.dumps({"name": name, "arguments": arguments})
    return f"{TOOL_CALL_OPEN}{body}{TOOL_CALL_CLOSE}"


def stream(deltas: list[str], names=NAMES) -> tuple[str, list[tuple[int, ToolCall]], list[list]]:
    """Feed the deltas; return the streamed text, the (index, call) pairs and the pieces per feed."""
    parser = ToolCallStreamParser(names, schemas=SCHEMAS)
    per_feed = [parser.feed(d) for d in deltas] + [parser.finish()]
    pieces = [p for batch in per_feed for p in batch]
    text = "".join(p.text for p in pieces if isinstance(p, TextPiece))
    calls = [(p.index, p.call) for p in pieces if isinstance(p, CallPiece)]
    assert [c for _, c in calls] == parser.calls
    return text, calls, per_feed


def named(calls) -> list[tuple[str, str]]:
    return [(c.name, c.arguments) for c in calls]


def text_of(batch: list) -> str:
    return "".join(p.text for p in batch if isinstance(p, TextPiece))


# --- well-formed blocks -------------------------------------------------------------------------


def test_plain_text_has_no_calls():
    assert parse_tool_answer("Hello, world!\n", NAMES) == ("Hello, world!", [])
    assert parse_tool_answer("  \n", NAMES) == (None, [])


def test_single_block():
    content, calls = parse_tool_answer(block("get_weather", {"city": "Paris"}), NAMES)
    assert content is None
    assert named(calls) == [("get_weather", '{"city":"Paris"}')]


def test_prose_before_and_after_is_kept():
    answer = "Let me check.\n" + block("get_weather", {"city": "Paris"}) + "\nOne moment."
    content, calls = parse_tool_answer(answer, NAMES)
    assert content == "Let me check.\n\nOne moment."
    assert named(calls) == [("get_weather", '{"city":"Paris"}')]


def test_parallel_calls_in_order_with_unique_ids():
    answer = "\n".join(block(n, {"i": i}) for i, n in enumerate(["search", "get_weather", "search"]))
    text, calls, _ = stream([answer])
    assert text == "\n\n"
    assert [i for i, _ in calls] == [0, 1, 2]
    assert named(c for _, c in calls) == [("search", '{"i":0}'), ("get_weather", '{"i":1}'), ("search", '{"i":2}')]
    ids = [c.id for _, c in calls]
    assert len(set(ids)) == 3
    assert all(re.fullmatch(r"call_[0-9a-f]{24}", i) for i in ids)


def test_new_id_is_injectable():
    ids = iter(["call_a", "call_b"])
    parser = ToolCallStreamParser(NAMES, new_id=lambda: next(ids))
    parser.feed(block("search", {}) + block("search", {}))
    assert [c.id for c in parser.calls] == ["call_a", "call_b"]


def test_arguments_are_compact_and_keep_unicode():
    _, calls = parse_tool_answer(block("get_weather", {"city": "Zürich", "n": [1, 2.5, None]}), NAMES)
    assert calls[0].arguments == '{"city":"Zürich","n":[1,2.5,null]}'


@pytest.mark.parametrize(
    "answer",
    [
        "<tool_call>\n  {\"name\": \"search\", \"arguments\": {\"q\": \"x\"}}\n</tool_call>",
        "<tool_call >{\"name\": \"search\", \"arguments\": {\"q\": \"x\"}}</tool_call\n>",
        '<tool_call>{"function": {"name": "search", "arguments": {"q": "x"}}}</tool_call>',
        '<tool_call>{"type": "function", "function": {"name": "search", "arguments": "{\\"q\\": \\"x\\"}"}}</tool_call>',
        '<tool_call>{"name": "search", "parameters": {"q": "x"}}</tool_call>',
        '<tool_call>{"name": "search", "arguments": "{\\"q\\":\\"x\\"}"}</tool_call>',
        '<tool_call>{\n  "name": "search",\n  "arguments": {\n    "q": "x"\n  }\n}</tool_call>',
    ],
    ids=["newlines", "spaces-in-tags", "function", "function-string", "parameters", "string", "indented"],
)
def test_tolerated_envelopes(answer):
    content, calls = parse_tool_answer(answer, NAMES)
    assert content is None
    assert named(calls) == [("search", '{"q":"x"}')]


@pytest.mark.parametrize(
    "body",
    ['{"name": "search"}', '{"name": "search", "arguments": null}', '{"name": "search", "arguments": ""}'],
)
def test_missing_null_or_blank_arguments_mean_empty_object(body):
    assert named(parse_tool_answer(block("", raw=body), NAMES)[1]) == [("search", "{}")]


def test_close_tag_and_braces_inside_a_string_argument():
    args = {"code": 'print("</tool_call>")\n}}{', "x": "<tool_call>"}
    content, calls = parse_tool_answer(block("write_file", args) + " done", NAMES)
    assert content == "done"
    assert named(calls) == [("write_file", compact(args))]


def test_multi_line_string_argument_with_raw_newlines():
    # Strictly invalid JSON (raw control characters in a string), but what models write.
    answer = '<tool_call>{"name": "write_file", "arguments": {"text": "line 1\n\tline 2\\n"}}</tool_call>'
    assert named(parse_tool_answer(answer, NAMES)[1]) == [("write_file", '{"text":"line 1\\n\\tline 2\\n"}')]


@pytest.mark.parametrize("lang", ["json", "xml", ""])
def test_fence_around_a_block_does_not_leak(lang):
    answer = f"Calling:\n```{lang}\n{block('search', {'q': 1})}\n```\nDone."
    text, calls, _ = stream(list(answer))
    assert text == "Calling:\n\nDone."
    assert named(c for _, c in calls) == [("search", '{"q":1}')]


def test_fence_with_several_blocks():
    answer = f"```json\n{block('search', {'q': 1})}\n{block('get_weather', {})}\n```"
    assert named(parse_tool_answer(answer, NAMES)[1]) == [("search", '{"q":1}'), ("get_weather", "{}")]
    assert parse_tool_answer(answer, NAMES)[0] is None


def test_fence_never_closed_still_drops_its_opening():
    answer = f"```json\n{block('search', {})}\nAnd more text."
    content, calls = parse_tool_answer(answer, NAMES)
    assert (content, named(calls)) == ("And more text.", [("search", "{}")])


def test_code_fence_without_tool_call_is_text():
    answer = "Example:\n```python\nprint('<tool')\n```\n```json\n{\"a\": 1}\n```\nInline `code` and ``` alone"
    assert parse_tool_answer(answer, NAMES) == (answer, [])
    assert stream(list(answer))[0] == answer


# --- falling back to text -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        block("delete_everything", {"a": 1}),  # unknown name
        block("", raw='{"name": "search", "arguments": [1, 2]}'),  # arguments not an object
        block("", raw='{"name": "search", "arguments": 5}'),
        block("", raw='{"name": "search", "arguments": "not json"}'),
        block("", raw='{"name": "search", "arguments": "[1]"}'),
        block("", raw='{"arguments": {}}'),  # no name
        block("", raw='{"name": 3}'),
        block("", raw='{"name": "search", "arguments": {oops}}'),  # broken JSON
        block("", raw='{"name": "search",}'),
        block("", raw='{"name": "search", "arguments": {"x": NaN}}'),
        block("", raw='{"name": "search", "arguments": {"x": 1e999}}'),
        block("", raw='{"name": "search"} trailing'),  # junk before the closing tag
        block("", raw='["search"]'),
        "<tool_call> I will now call search.</tool_call>",  # no JSON at all
        '<tool_call>{"name": "search", "arguments": {}}',  # never closed
        '<tool_call>{"name": "search", "arguments": {"q": "unterminated',
        '<tool_call>{"name": "search", "arguments": {}}</tool_cal',
        "```json\n" + block("nope", {}) + "\n```",  # a fence around an unknown call stays too
        "<tool_call",
        "<",
    ],
)
def test_invalid_block_is_released_verbatim(answer):
    assert parse_tool_answer("Before " + answer + " after", NAMES) == ("Before " + answer + " after", [])
    text, calls, _ = stream(list(answer))
    assert (text, calls) == (answer, [])


def test_lone_angle_brackets_and_lookalike_tags_are_text():
    for answer in ["a < b", "a <b> c", "<toolbox>", "<tool>", "<tool_calls>", "</tool_call>", "x <tool_call"]:
        assert parse_tool_answer(answer, NAMES) == (answer.strip(), [])


def test_unbalanced_braces_fail_early_and_the_next_block_still_parses():
    broken = '<tool_call>{"name": "search", "arguments": {"q": 1}</tool_call>'
    answer = broken + "\n" + block("search", {"q": 2})
    content, calls = parse_tool_answer(answer, NAMES)
    assert (content, named(calls)) == (broken, [("search", '{"q":2}')])


def test_missing_close_tag_followed_by_a_block():
    first = '<tool_call>{"name": "search", "arguments": {"q": 1}}'
    content, calls = parse_tool_answer(first + "\n" + block("search", {"q": 2}), NAMES)
    assert content == first
    assert named(calls) == [("search", '{"q":2}')]


def test_only_allowed_names():
    answer = block("search", {}) + block("get_weather", {})
    content, calls = parse_tool_answer(answer, ["get_weather"])
    assert content == block("search", {})
    assert named(calls) == [("get_weather", "{}")]


# --- streaming behaviour ------------------------------------------------------------------------


def test_text_streams_until_a_possible_tag_start():
    parser = ToolCallStreamParser(NAMES)
    assert text_of(parser.feed("Hello <")) == "Hello "
    assert parser.feed("to") == []
    assert parser.feed("ol_c") == []
    assert text_of(parser.feed("x and more")) == "<tool_cx and more"  # released once disambiguated
    assert text_of(parser.feed(" a <")) == " a "
    assert text_of(parser.feed(" b")) == "< b"
    assert text_of(parser.feed(" `")) == " "
    assert text_of(parser.feed("x`")) == "`x"
    assert text_of(parser.finish()) == "`"


def test_a_call_is_emitted_as_soon_as_its_block_closes():
    parser = ToolCallStreamParser(NAMES)
    answer = "Hi " + block("search", {"q": "x"})
    out = [parser.feed(ch) for ch in answer]
    assert text_of(out[0]) == "H"
    assert all(batch == [] for batch in out[3:-1])
    assert [type(p) for p in out[-1]] == [CallPiece]
    assert parser.finish() == []


def test_broken_block_is_released_before_the_answer_ends():
    parser = ToolCallStreamParser(NAMES)
    assert parser.feed('<tool_call>{"name": "search"') == []
    assert text_of(parser.feed(", oops")) == '<tool_call>{"name": "search", oops'


def test_unclosed_block_is_released_by_finish():
    parser = ToolCallStreamParser(NAMES)
    assert parser.feed('text <tool_call>{"name": "search", "arguments": {"q"') == [TextPiece("text ")]
    assert parser.finish() == [TextPiece('<tool_call>{"name": "search", "arguments": {"q"')]
    assert parser.calls == []


def test_long_argument_in_small_deltas():
    # ~160 KB of JSON string in 5-character deltas: quadratic rescanning would take minutes.
    content = ("x" * 60 + '\\"{}</tool_call>\\n') * 2000
    answer = '<tool_call>{"name": "write_file", "arguments": {"text": "' + content + '"}}</tool_call>'
    _, calls, _ = stream([answer[i : i + 5] for i in range(0, len(answer), 5)])
    assert len(calls) == 1


# --- the forms models write by habit -------------------------------------------------------------


def invoke(name: str, **values: str) -> str:
    parameters = "".join(f'\n<parameter name="{k}">{v}</parameter>' for k, v in values.items())
    return f'<invoke name="{name}">{parameters}\n</invoke>'


def function_calls(*invokes: str) -> str:
    return "<function_calls>\n" + "\n".join(invokes) + "\n</function_calls>"


def parse(answer: str) -> tuple[str | None, list[tuple[str, str]]]:
    content, calls = parse_tool_answer(answer, NAMES, schemas=SCHEMAS)
    text, streamed, _ = stream(list(answer))
    assert ((text.strip() or None), named(c for _, c in streamed)) == (content, named(calls))
    return content, named(calls)


def test_xml_invoke_values_are_typed_by_the_schema():
    answer = "Checking.\n" + function_calls(
        invoke("get_weather", city="42", days=" 3\n", metric="false", units="null"),
        invoke("search", q='{"not": "parsed"}', limit="2.5", filters='{"lang": "fr"}', sites='["a.org"]'),
    ) + "\nDone."
    assert parse(answer) == ("Checking.\n\nDone.", [
        ("get_weather", '{"city":"42","days":3,"metric":false,"units":null}'),
        ("search", '{"q":"{\\"not\\": \\"parsed\\"}","limit":2.5,"filters":{"lang":"fr"},"sites":["a.org"]}'),
    ])


def test_xml_invoke_values_that_do_not_fit_their_type_stay_strings():
    answer = function_calls(invoke("get_weather", days="three", metric="1", units='"metric"'))
    assert parse(answer)[1] == [("get_weather", '{"days":"three","metric":"1","units":"\\"metric\\""}')]


def test_xml_invoke_without_a_schema_reads_json_where_it_parses():
    answer = function_calls(invoke("write_file", path="/tmp/a b", size="12", meta='{"x": [1]}', quoted='"hi"'))
    assert parse(answer)[1] == [("write_file", '{"path":"/tmp/a b","size":12,"meta":{"x":[1]},"quoted":"hi"}')]
    # Without schemas at all (a caller that passes names only) the same rule holds.
    assert named(parse_tool_answer(answer, NAMES)[1]) == [("write_file", parse(answer)[1][0][1])]


def test_xml_string_value_is_kept_exactly_with_markup_inside():
    value = '\n  line "1" <b>&amp;</b> </parameters> </parameter x>\n{}\n'
    answer = function_calls(invoke("write_file", text=value), "<invoke name='search'></invoke>")
    assert parse(answer)[1] == [("write_file", compact({"text": value})), ("search", "{}")]


@pytest.mark.parametrize(
    "answer",
    [
        function_calls(invoke("delete_everything", a="1")),  # not offered
        function_calls(invoke("search"), invoke("nope")),  # all the calls of a block or none
        "<function_calls></function_calls>",
        "<function_calls><invoke>x</invoke></function_calls>",
        '<function_calls><invoke name="search"><param name="q">1</param></invoke></function_calls>',
        '<function_calls><invoke name="search"></invoke> and text</function_calls>',
        '<function_calls><invoke name="search"></invoke>',  # never closed
        '<function_calls><invoke name="search"><parameter name="q">unterminated',
        '<invoke name="search"></invoke>',  # no <function_calls> around it
        '<function=nope>{"a": 1}</function>',
        '<function=search>[1]</function>',
        '<function=search>{"a": 1} junk</function>',
        '<function=search {"a": 1}</function>',
        '<function=search>{"a": 1}',
        "```json\n{\"name\": \"nope\", \"arguments\": {}}\n```",
        "```python\n{\"name\": \"search\", \"arguments\": {}}\n```",  # only a fence that says JSON
        "```json\n{\"name\": \"search\", \"arguments\": {}}\nand no closing fence",
        "```json\n{\"name\": \"search\", \"arguments\": {}}\n``",
        "```json\n{\"name\": \"search\", \"arguments\": [1]}\n```",
    ],
)
def test_habit_form_that_is_no_call_is_released_verbatim(answer):
    assert parse_tool_answer("Before " + answer + " after", NAMES, schemas=SCHEMAS) == (
        "Before " + answer + " after", [])
    text, calls, _ = stream(list(answer))
    assert (text, calls) == (answer, [])


def test_duplicate_parameter_is_no_call():
    answer = function_calls('<invoke name="search"><parameter name="q">1</parameter>'
                            '<parameter name="q">2</parameter></invoke>')
    assert parse(answer) == (answer, [])


def test_function_tag_form():
    answer = 'Sure. <function=get_weather>{"city": "Paris", "days": 2}</function>\n<function=search></function>'
    assert parse(answer) == ("Sure.", [("get_weather", '{"city":"Paris","days":2}'), ("search", "{}")])
    assert parse('<function=search>\n  {"q": "}</function>"}\n</function >')[1] == [("search", '{"q":"}</function>"}')]


@pytest.mark.parametrize("lang", ["json", "JSON", ""])
def test_fenced_json_call(lang):
    answer = f'I will search.\n```{lang}\n{{"name": "search", "arguments": {{"q": "```"}}}}\n```\nThen answer.'
    assert parse(answer) == ("I will search.\n\nThen answer.", [("search", '{"q":"```"}')])
    envelope = '{"type": "function", "function": {"name": "search", "arguments": "{\\"q\\": 1}"}}'
    assert parse(f"```{lang}\n{envelope}\n```")[1] == [("search", '{"q":1}')]


def test_fenced_xml_forms_drop_their_fence():
    answer = "```xml\n" + function_calls(invoke("search", q="x")) + "\n<function=get_weather>{}</function>\n```\nok"
    assert parse(answer) == ("ok", [("search", '{"q":"x"}'), ("get_weather", "{}")])


def test_habit_forms_are_held_only_until_decided():
    parser = ToolCallStreamParser(NAMES, schemas=SCHEMAS)
    assert text_of(parser.feed("Hi <function_calls>\n<invoke name=\"sea")) == "Hi "
    assert text_of(parser.feed("shell\">")) == '<function_calls>\n<invoke name="seashell">'  # not offered
    assert text_of(parser.feed(" <function=get_")) == " "
    assert text_of(parser.feed("time>")) == "<function=get_time>"
    assert text_of(parser.feed(" ```json\n{\"name\": \"nope\"")) == " "
    assert text_of(parser.feed("}")) == '```json\n{"name": "nope"}'


def test_long_xml_value_in_small_deltas():
    # ~185 KB of parameter text in 37,000 deltas: a parser that rescanned its buffer on every
    # delta would take minutes here (no wall-clock bound: timings belong to scripts/bench.py).
    value = ("x" * 60 + "</parameters>\n<tool_call>") * 2500
    answer = function_calls(invoke("write_file", text=value))
    _, calls, _ = stream([answer[i : i + 5] for i in range(0, len(answer), 5)])
    assert named(c for _, c in calls) == [("write_file", compact({"text": value}))]


# --- property: every split of an answer gives the same result -----------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**20), 10**20)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.lists(st.sampled_from([*'ab <>{}[]"\\\n\t/é`', "</tool_call>"]), max_size=8).map("".join),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)
json_objects = st.dictionaries(st.text("abc_\"<", max_size=5), json_values, max_size=4)


@st.composite
def envelope_texts(draw) -> tuple[str, tuple[str, str]]:
    """The JSON of a call envelope in one of the tolerated shapes, and the (name, arguments) it means."""
    name = draw(st.sampled_from(NAMES))
    args = draw(json_objects)
    shape = draw(st.sampled_from(["plain", "function", "parameters", "string", "omitted"]))
    if shape == "omitted":
        envelope = {"name": name} if draw(st.booleans()) else {"name": name, "arguments": None}
        args = {}
    elif shape == "function":
        envelope = {"function": {"name": name, "arguments": args}}
    elif shape == "parameters":
        envelope = {"name": name, "parameters": args}
    elif shape == "string":
        envelope = {"name": name, "arguments": json.dumps(args)}
    else:
        envelope = {"name": name, "arguments": args}
    body = json.dumps(envelope, ensure_ascii=draw(st.booleans()), indent=draw(st.sampled_from([None, 2])))
    return body, (name, compact(args))


layout = st.sampled_from(["", " ", "\n", "\n  "])
# Bare text of a string parameter: markup of every form, but never its own closing tag.
xml_text = st.lists(
    st.sampled_from(["a", " ", "\n", "<", ">", "{", "}", '"', "'", "5", "null", "é", "</invoke>",
                     "</function_calls>", "<tool_call>", "</parameter x", "</parameters>", "<parameter name=\"q\">"]),
    max_size=6,
).map("".join)


@st.composite
def xml_value(draw, tool: str, parameter: str) -> tuple[str, object]:
    """(the text written between the parameter tags, the argument value it means)."""
    ws = draw(layout)
    if tool == "write_file":  # no schema: JSON where it parses, else the text
        if draw(st.booleans()):
            value = draw(json_values)
            return ws + json.dumps(value) + ws, value
        text = "hello " + draw(xml_text)
        return text, text
    kind = SCHEMAS[tool]["properties"][parameter]["type"]
    if kind == "string":
        text = draw(xml_text)
        return text, text
    if kind == ["string", "null"]:
        text = draw(xml_text | st.just(ws + "null" + ws))
        return text, None if text.strip() == "null" else text
    value = draw({
        "integer": st.integers(-(10**12), 10**12),
        "boolean": st.booleans(),
        "number": st.floats(allow_nan=False, allow_infinity=False) | st.integers(-100, 100),
        "object": json_objects,
        "array": st.lists(st.text(max_size=3), max_size=3),
    }[kind])
    return ws + json.dumps(value) + ws, value


@st.composite
def xml_blocks(draw) -> tuple[str, list[tuple[str, str]]]:
    invokes, calls = [], []
    for tool in draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=3)):
        names = list(SCHEMAS[tool]["properties"]) if SCHEMAS[tool] else ["path", "text", "meta"]
        arguments, written = {}, []
        for parameter in draw(st.lists(st.sampled_from(names), unique=True, max_size=3)):
            text, value = draw(xml_value(tool, parameter))
            arguments[parameter] = value
            written.append(f'<parameter name="{parameter}">{text}</parameter>')
        quote = draw(st.sampled_from(['"', "'"]))
        invokes.append(f"<invoke name={quote}{tool}{quote}>{draw(layout)}{draw(layout).join(written)}{draw(layout)}</invoke>")
        calls.append((tool, compact(arguments)))
    return f"<function_calls>{draw(layout)}{draw(layout).join(invokes)}{draw(layout)}</function_calls>", calls


@st.composite
def valid_blocks(draw) -> tuple[str, list[tuple[str, str]]]:
    """A well-formed block in one of the recognised forms and shapes, and the calls it means."""
    form = draw(st.sampled_from(["tool_call", "tool_call", "xml", "function", "jsonfence"]))
    if form == "xml":
        text, calls = draw(xml_blocks())
    elif form == "function":
        name, args = draw(st.sampled_from(NAMES)), draw(json_objects)
        written = draw(layout) + json.dumps(args) + draw(layout) if args or draw(st.booleans()) else draw(layout)
        text, calls = f"<function={name}>{written}</function>", [(name, compact(args))]
    else:
        body, call = draw(envelope_texts())
        calls = [call]
        if form == "jsonfence":
            return f"```{draw(st.sampled_from(['json', '']))}\n{body}{draw(layout)}```", calls
        text = f"<tool_call{draw(st.sampled_from(['', ' ']))}>{draw(layout)}{body}{draw(layout)}</tool_call>"
    fence = draw(st.sampled_from([None, "json", "xml"]))
    if fence is not None:
        text = f"```{fence}\n{text}\n```"
    return text, calls


# Blocks that must come back as text whatever follows them (each fails within its own span).
closed_malformed_blocks = st.sampled_from(
    [
        block("nope", {"a": "<tool_call>"}),
        block("", raw='{"name": "search", "arguments": [1]}'),
        block("", raw='{"name": "search", "arguments": "x"}'),
        block("", raw='{"arguments": {}}'),
        block("", raw='{"name": "search", "arguments": {oops}}'),
        block("", raw='{"name": "search", "arguments": {}} junk'),
        block("", raw='{"name": "search", "arguments": {"a": 1}'),  # unbalanced
        "<tool_call> I would call search here.",
        '<function_calls><invoke name="nope"><parameter name="q">x</parameter></invoke></function_calls>',
        '<function_calls>\n<invoke name="search">\n</invoke>\noops</function_calls>',
        "<function_calls></function_calls>",
        '<function_calls><invoke name="search"><parameter name="q">1</parameter><parameter name="q">2</parameter>',
        '<function_calls><invoke name="search"><param name="q">1</param></invoke></function_calls>',
        '<function=nope>{"a": 1}</function>',
        '<function=search>[1]</function>',
        '<function=search>{"a": 1} junk</function>',
        '<function=search {"a": 1}</function>',
        '```json\n{"name": "nope", "arguments": {}}\n``` x',
        '```json\n{"name": "search", "arguments": {}} and text\n``` x',
        '```python\n{"name": "search", "arguments": {}}\n``` x',
    ]
)
# Blocks the text after them could complete: only ever at the very end of an answer.
open_malformed_blocks = st.sampled_from(
    [
        '<tool_call>{"name": "search", "arguments": {"q": "x\n',
        '<tool_call>{"name": "search", "arguments": {}}',
        '<tool_call>{"name": "search", "arguments": {}}</tool_',
        "<tool_call",
        "<tool_call>",
        "```json\n<tool_call>",
        "<",
        "<function_calls>",
        '<function_calls>\n<invoke name="search">\n<parameter name="q">x',
        '<function_calls><invoke name="search"></invoke>',
        '<function_calls><invoke name="sea',
        '<function=search>{"q": 1}',
        "<function=sea",
        '```json\n{"name": "search", "arguments": {}}\n``',
        '```json\n{"name": "search"',
    ]
)
# Text that looks like the start of a block but, on its own, cannot form or finish one.
safe_text = st.lists(
    st.sampled_from(
        ["a", "b c", " ", "\n", "<", "<tool", "<toolbox>", "<tool_call", "</tool_call>", "a < b",
         "{", "}", '"', "\\", ":", "[", "tool_call", "é", "<function", "<function_calls>", "</invoke>",
         '<invoke name="nope">', '<parameter name="q">', "</function>", "<function=nope>", "``` x"]
    ),
    max_size=8,
).map("".join)
# Anything, including fences and `>` that complete or open blocks with their neighbours.
wild_text = st.lists(
    st.sampled_from(
        ["a", " ", "\n", "<", "<tool", "<tool_call", ">", "<tool_call>", "<tool_call>{", "}", "{",
         '"', "\\", "`", "```", "```json\n", "\n```", "</tool_call>", '{"name": "search"}', "json",
         "<function_calls>", '<invoke name="search">', "<invoke name='get_weather'>", '<parameter name="q">',
         '<parameter name="days">', "</parameter>", "</invoke>", "</function_calls>", "<function=search>",
         "<function=", "</function>", "5"]
    ),
    max_size=8,
).map("".join)


@st.composite
def separable_answers(draw):
    """An answer whose parts cannot merge, with its expected text and calls: text pieces and
    malformed blocks come back verbatim as text, valid blocks as calls."""
    parts = draw(
        st.lists(
            st.one_of(
                safe_text.map(lambda t: ("text", t)),
                valid_blocks().map(lambda b: ("call", b)),
                closed_malformed_blocks.map(lambda t: ("text", t)),
            ),
            max_size=6,
        )
    )
    if draw(st.integers(0, 4)) == 0:
        parts.append(("text", draw(open_malformed_blocks)))
    answer = "".join(v if k == "text" else v[0] for k, v in parts)
    text = "".join(v for k, v in parts if k == "text")
    calls = [call for k, v in parts if k == "call" for call in v[1]]
    return answer, text, calls


@st.composite
def wild_answers(draw):
    parts = draw(
        st.lists(
            st.one_of(
                wild_text, valid_blocks().map(lambda b: b[0]), closed_malformed_blocks, open_malformed_blocks
            ),
            max_size=6,
        )
    )
    return "".join(parts)


def splits(draw, answer: str) -> list[str]:
    cuts = sorted(set(draw(st.lists(st.integers(0, len(answer)), max_size=len(answer) + 1))))
    bounds = [0, *cuts, len(answer)]
    return [answer[a:b] for a, b in zip(bounds, bounds[1:])]


def check_split_invariance(answer: str, deltas: list[str]) -> tuple[str, list[tuple[str, str]]]:
    whole_content, whole_calls = parse_tool_answer(answer, NAMES, schemas=SCHEMAS)
    results = []
    for pieces in (deltas, list(answer)):
        text, calls, _ = stream(pieces)
        assert [i for i, _ in calls] == list(range(len(calls)))
        assert len({c.id for _, c in calls}) == len(calls)
        assert (text.strip() or None) == whole_content
        assert named(c for _, c in calls) == named(whole_calls)
        results.append((text, named(c for _, c in calls)))
    assert results[0] == results[1]  # the exact text too, not just stripped
    return results[0]


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_property_separable_answers(data):
    """For an answer made of text (with `<`, `<tool`, braces, quotes, newlines), valid blocks in
    every recognised form and shape and malformed blocks, cut into deltas at any points (and into single
    characters): the streamed text is exactly the text pieces and malformed blocks, verbatim, in
    order; the calls are exactly the valid blocks, in order; and it all equals parse_tool_answer.
    So a valid block never shows up as text: any `<tool_call` in the text came from a text piece or
    a malformed block."""
    answer, expected_text, expected_calls = data.draw(separable_answers())
    text, calls = check_split_invariance(answer, splits(data.draw, answer))
    assert text == expected_text
    assert calls == expected_calls
    for markup in ("<tool_call", "<function_calls", "<invoke", "<function=", "```"):
        assert text.count(markup) == expected_text.count(markup)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_property_any_answer_any_split(data):
    """For any answer, including text that opens, closes, fences or completes blocks next to its
    neighbours: every way of cutting it into deltas gives the same text and the same calls as the
    non-stream parse, with indexes 0, 1, 2... and distinct ids."""
    answer = data.draw(wild_answers())
    check_split_invariance(answer, splits(data.draw, answer))


# --- prompt and history rendering ---------------------------------------------------------------

WEATHER = FunctionSpec(
    "get_weather", "Current weather for a city", {"type": "object", "properties": {"city": {"type": "string"}}}
)
SEARCH = FunctionSpec("search", None, None)


def test_no_instruction_without_tools_or_with_choice_none():
    assert render_tool_instruction([], "auto") is None
    assert render_tool_instruction([WEATHER], "none") is None


def test_instruction_lists_tools_as_json_and_the_envelope():
    text = render_tool_instruction([WEATHER, SEARCH], "auto")
    assert TOOL_CALL_OPEN in text and TOOL_CALL_CLOSE in text
    tools = [json.loads(line) for line in text.splitlines() if line.startswith('{"name"')]
    assert tools == [
        {"name": "get_weather", "description": "Current weather for a city",
         "parameters": {"properties": {"city": {"type": "string"}}}},  # compact: an object goes without saying
        {"name": "search", "parameters": {"type": "object", "properties": {}}},
    ]
    assert '<tool_call>{"name": "<tool name>", "arguments": {...}}</tool_call>' in text
    assert "answer normally" in text
    assert "several blocks" in text


def test_instruction_choices():
    assert "MUST call at least one tool" in render_tool_instruction([WEATHER], "required")
    single = render_tool_instruction([WEATHER], "required", parallel=False)
    assert "at most one tool" in single and "several" not in single
    assert 'MUST call the tool "search"' in render_tool_instruction([WEATHER, SEARCH], FunctionChoice("search"))
    with pytest.raises(ValueError):
        render_tool_instruction([WEATHER], FunctionChoice("search"))


def test_history_calls_use_the_envelope_the_parser_reads():
    calls = [("call_1", "get_weather", '{"city": "Paris"}'), ("call_2", "search", "")]
    text = render_assistant_tool_calls("Checking.", calls)
    assert text.startswith("Checking.\n\n<tool_call>")
    content, parsed = parse_tool_answer(text, NAMES)
    assert content == "Checking."
    assert named(parsed) == [("get_weather", '{"city":"Paris"}'), ("search", "{}")]
    assert render_assistant_tool_calls(None, calls[:1]) == (
        '<tool_call>{"name": "get_weather", "arguments": {"city":"Paris"}}</tool_call>'
    )


def test_history_tool_result():
    text = render_tool_result("call_1", "get_weather", "Sunny, 21 °C")
    assert text.startswith("Tool result")
    assert "get_weather" in text and "call_1" in text and text.endswith("Sunny, 21 °C")
    assert render_tool_result("call_2", None, "ok").startswith("Tool result (tool_call_id=call_2)")


# --- a compact instruction ----------------------------------------------------------------------


def test_compact_schema_drops_noise_and_keeps_what_the_model_writes():
    schema = {
        "$schema": "http://json-schema.org/draft-07/schema#", "title": "Args", "type": "object",
        "additionalProperties": False, "required": ["title"],
        "properties": {
            "title": {"type": "string", "title": "Title", "description": "  The   title\n\n of it "},
            "default": {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None, "title": "Default"},
            "mode": {"type": "string", "enum": ["a", "b"], "default": "a", "examples": ["a"]},
            "tags": {"type": "array", "items": {"type": "string", "title": "Tag"}, "minItems": 1},
            "extra": {"type": "object", "additionalProperties": {"type": "number", "title": "V"}},
            "long": {"type": "string", "description": "word " * 100},
        },
    }
    assert compact_parameters(schema) == {
        "required": ["title"],
        "properties": {
            "title": {"type": "string", "description": "The title of it"},
            "default": {"type": "integer"},  # optional: leaving it out says "null"
            "mode": {"type": "string", "enum": ["a", "b"]},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1},
            "extra": {"type": "object", "additionalProperties": {"type": "number"}},
            "long": {"type": "string", "description": ("word " * 39).strip() + "…"},
        },
    }
    assert len(compact_parameters(schema)["properties"]["long"]["description"]) <= PROPERTY_DESCRIPTION_LIMIT
    assert schema["properties"]["default"]["title"] == "Default"  # the caller's schema is untouched
    # A required nullable argument keeps its null.
    assert compact_parameters({"properties": {"a": {"type": ["string", "null"]}}, "required": ["a"]}) == {
        "properties": {"a": {"type": ["string", "null"]}}, "required": ["a"]}


def test_long_tool_description_is_cut_at_a_word():
    text = render_tool_instruction([FunctionSpec("f", "Does things. " + "More notes here. " * 80, None)], "auto")
    (line,) = [json.loads(t) for t in text.splitlines() if t.startswith('{"name"')]
    assert line["description"].startswith("Does things. More notes") and line["description"].endswith("…")
    assert len(line["description"]) <= TOOL_DESCRIPTION_LIMIT


def agent_specs(tools: list[dict]) -> list[FunctionSpec]:
    return [FunctionSpec(t["function"]["name"], t["function"]["description"], t["function"]["parameters"])
            for t in tools]


# Measured when the instruction was made compact (o200k_base tokens, issue #11): the two dozen
# Claude-Code-like tools took 5,979 tokens before and 4,349 after; the 28 Open-WebUI-like ones
# 2,630 before and 1,760 after. The bounds leave a little room, not a regression's worth.
@pytest.mark.parametrize(("tools", "max_chars", "max_tokens"),
                         [(CODING_AGENT_TOOLS, 21_000, 4_500), (CHAT_UI_TOOLS, 8_800, 1_850)],
                         ids=["coding-agent", "chat-ui"])
def test_instruction_for_agent_tool_sets_stays_compact(tools, max_chars, max_tokens):
    text = render_tool_instruction(agent_specs(tools), "auto")
    assert len(text) <= max_chars
    counter = TokenCounter()
    if counter.exact:
        assert counter.count(text) <= max_tokens
    # Compact, not lossy: every tool, every argument, what is required and every enum survive.
    lines = [json.loads(t) for t in text.splitlines() if t.startswith('{"name"')]
    assert [line["name"] for line in lines] == [t["function"]["name"] for t in tools]
    for line, tool in zip(lines, tools, strict=True):
        original, compacted = tool["function"]["parameters"], line["parameters"]
        assert list(compacted.get("properties", {})) == list(original["properties"])
        assert compacted.get("required", []) == original["required"]
        enums = re.findall(r'"enum":\[[^\]]*\]', json.dumps(original, separators=(",", ":")))
        assert enums == re.findall(r'"enum":\[[^\]]*\]', json.dumps(compacted, separators=(",", ":")))
        assert line["description"][:40] == " ".join(tool["function"]["description"].split())[:40]
