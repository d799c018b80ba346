"""Structured outputs, the pure parts (issue #11): the JSON extractor and checker, the schema check,
and the simulator's instances of a schema. Property tests: JSON embedded in any prose or fence is
found; text that holds none is never given one; what the simulator writes fits what it was shown.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genspark2api.core.conversation import OutputFormat
from genspark2api.core.structured import (
    MAX_PROBLEM_CHARS,
    STRUCTURED_MARKER,
    Accepted,
    Rejected,
    check_answer,
    check_schema,
    find_json,
    output_instruction,
    repair_request,
)
from genspark2api.errors import ApiError
from genspark2api.simulator import structured as sim_structured
from genspark2api.simulator.structured import (
    find_json_request,
    json_answer,
    minimal_instance,
    misfit_instance,
)

JSON_MODE = OutputFormat("json_object")
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
PERSON_FORMAT = OutputFormat("json_schema", PERSON, "Person")

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                    st.text(max_size=10))
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                              st.dictionaries(st.text(max_size=6), inner, max_size=4)),
                           max_leaves=12)
json_objects = st.dictionaries(st.text(max_size=6), json_values, max_size=5)
# Prose that opens no JSON value of its own (any other character goes, quotes and fences too).
prose = st.text(alphabet=st.characters(blacklist_characters="{["), max_size=40)


def dumps(value: Any, style: int) -> str:
    return json.dumps(value, indent=2 if style == 1 else None, ensure_ascii=style == 2)


# ------------------------------------------------------------------------------ the extractor


@settings(max_examples=80, deadline=None)
@given(json_objects, prose, prose, st.sampled_from(["plain", "```json\n{}\n```", "```\n{}\n```", "\n{}\n"]),
       st.integers(0, 2))
def test_an_object_embedded_in_prose_or_a_fence_is_found(value: dict, before: str, after: str, wrap: str,
                                                           style: int) -> None:
    body = dumps(value, style)
    text = before + (body if wrap == "plain" else wrap.replace("{}", body)) + after
    verdict = check_answer(text, JSON_MODE)
    assert isinstance(verdict, Accepted), (text, verdict)
    assert json.loads(verdict.text) == value and verdict.text == verdict.text.strip()


@settings(max_examples=80, deadline=None)
@given(st.text(max_size=80) | st.builds(lambda a, v, b: a + json.dumps(v)[: len(a)] + b,
                                        st.text(max_size=20), json_values, st.text(max_size=20)))
def test_whatever_is_accepted_was_written_in_the_answer(text: str) -> None:
    """Never invented: an accepted JSON text is a piece of the answer, and an object."""
    verdict = check_answer(text, JSON_MODE)
    if isinstance(verdict, Accepted):
        assert verdict.text in text and isinstance(json.loads(verdict.text), dict)
    for found in find_json(text):
        assert found.text in text and json.loads(found.text) == found.value


@settings(max_examples=80, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_characters="{"), max_size=80))
def test_prose_without_an_object_is_never_given_one(text: str) -> None:
    assert isinstance(check_answer(text, JSON_MODE), Rejected)


@pytest.mark.parametrize(("text", "problem"), [
    ("I'd rather not.", "it contains no JSON object"),
    ('Here: ```json\n{"name": "Ada", ', "the JSON in it is malformed (Expecting"),
    ('{"name": "Ada", "age": NaN}', "the JSON in it is malformed (NaN is not JSON)"),
    ('{"name": "Ada"}', "its JSON does not fit the schema: 'age' is a required property"),
    ('{"name": "Ada", "age": -1}', "its JSON does not fit the schema: at $.age: -1 is less than the minimum of 0"),
    # A bracket in the prose is not what the model meant: the problem is the object's.
    ('See [1]. {"name": 7, "age": 1}', "its JSON does not fit the schema: at $.name: 7 is not of type 'string'"),
])
def test_a_rejection_names_the_problem(text: str, problem: str) -> None:
    verdict = check_answer(text, PERSON_FORMAT)
    assert isinstance(verdict, Rejected) and verdict.problem.startswith(problem), verdict


def test_the_first_value_that_fits_wins_and_comes_back_as_written() -> None:
    text = 'First a draft {"name": "x"} and then the answer:\n```json\n{"name": "Ada",\n "age": 36}\n```'
    assert check_answer(text, PERSON_FORMAT) == Accepted('{"name": "Ada",\n "age": 36}')
    assert check_answer("[1, 2]", JSON_MODE) == Rejected("its JSON is an array, not an object")


def test_a_long_instance_is_not_quoted_whole() -> None:
    verdict = check_answer(json.dumps(["x" * 2000]), PERSON_FORMAT)
    assert isinstance(verdict, Rejected) and len(verdict.problem) < MAX_PROBLEM_CHARS + 50


def test_many_stray_brackets_stay_cheap() -> None:
    """Each failed decode may read to the end: the number of attempts is bounded."""
    text = "{ " * 20_000 + '{"name": "Ada", "age": 1}'
    assert isinstance(check_answer(text, PERSON_FORMAT), Rejected)
    assert isinstance(check_answer("[" * 100_000, JSON_MODE), Rejected)   # deep nesting is no crash


# ------------------------------------------------------------------------------ instruction, schema


def test_the_instruction_is_compact_and_shows_the_schema_on_its_own_line() -> None:
    text = output_instruction(OutputFormat("json_schema", PERSON, "Person", description="A\nperson"))
    first, schema = text.split("\n")
    assert first.startswith(STRUCTURED_MARKER) and '"Person" (A person)' in first
    assert json.loads(schema) == PERSON and " " not in schema
    assert find_json_request(["Be brief.", text]) == sim_structured.JsonRequest(PERSON)
    assert find_json_request([output_instruction(JSON_MODE)]) == sim_structured.JsonRequest(None)
    repair = repair_request("it contains no JSON object", JSON_MODE)
    assert repair == ("Your previous answer cannot be used: it contains no JSON object. "
                      "Answer again with only one JSON object: no prose before or after it, no code fences.")


@pytest.mark.parametrize("schema", [
    {"type": "nope"}, {"$ref": "https://example.org/s.json"}, {"$ref": "#/$defs/Missing"}, {"$ref": "#nowhere"},
    {"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}, {"$schema": 4}, [], {"pattern": "("},
])
def test_a_schema_that_cannot_be_used_is_a_400(schema: Any) -> None:
    with pytest.raises(ApiError) as caught:
        check_schema(schema, "response_format.json_schema.schema")
    error = caught.value
    assert error.status == 400 and error.param == "response_format.json_schema.schema"
    assert error.code == "invalid_schema"


def test_pydantic_schemas_pass_the_check() -> None:
    class Node(pydantic.BaseModel):
        label: str
        children: list[Node] = []

    class Tree(pydantic.BaseModel):
        root: Node
        kind: str | None = None

    schema = Tree.model_json_schema()
    check_schema(schema, "p")
    instance = minimal_instance(schema)
    assert Tree.model_validate(instance) and isinstance(check_answer(json.dumps(instance), OutputFormat(
        "json_schema", schema)), Accepted)


# ------------------------------------------------------------------------------ the simulator's JSON

leaf_schemas = st.one_of(
    st.just({"type": "string"}),
    st.integers(0, 8).map(lambda n: {"type": "string", "minLength": n}),
    st.integers(1, 3).map(lambda n: {"type": "string", "maxLength": n}),
    st.sampled_from([{"type": "string", "format": f} for f in ("date", "date-time", "email", "uuid", "uri", "ipv4")]),
    st.tuples(st.integers(-50, 50), st.integers(0, 10)).map(
        lambda r: {"type": "integer", "minimum": r[0], "maximum": r[0] + r[1]}),
    st.just({"type": "number", "exclusiveMinimum": 2.5}),
    st.just({"type": "boolean"}),
    st.just({"type": ["null", "string"]}),
    st.lists(st.text(max_size=5), min_size=1, max_size=3, unique=True).map(lambda e: {"enum": e}),
    scalars.map(lambda v: {"const": v}),
)
schemas = st.recursive(leaf_schemas, lambda inner: st.one_of(
    st.tuples(st.dictionaries(st.text(min_size=1, max_size=6), inner, max_size=4), st.integers(0, 4)).map(
        lambda p: {"type": "object", "properties": p[0], "required": list(p[0])[: p[1]], "additionalProperties": False}),
    st.tuples(inner, st.integers(0, 3)).map(lambda a: {"type": "array", "items": a[0], "minItems": a[1]}),
    st.lists(inner, min_size=1, max_size=3).map(lambda options: {"anyOf": options}),
), max_leaves=10)
object_schemas = st.tuples(st.dictionaries(st.text(min_size=1, max_size=6), schemas, min_size=1, max_size=4),
                           st.integers(0, 4), st.booleans()).map(
    lambda p: {"type": "object", "properties": p[0], "required": list(p[0])[: p[1]]}
    | ({"$defs": {"Item": p[0][next(iter(p[0]))]}, "properties": {**p[0], "ref": {"$ref": "#/$defs/Item"}},
        "required": [*list(p[0])[: p[1]], "ref"]} if p[2] else {}))


@settings(max_examples=50, deadline=None)
@given(schemas)
def test_the_simulated_instance_fits_its_schema(schema: dict) -> None:
    check_schema(schema, "p")
    jsonschema.validate(minimal_instance(schema), schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


@settings(max_examples=50, deadline=None)
@given(object_schemas, prose, prose)
def test_the_simulated_answer_is_accepted_and_its_misfit_is_not(schema: dict, before: str, after: str) -> None:
    output = OutputFormat("json_schema", schema)
    request = sim_structured.JsonRequest(schema)
    right = json_answer(request, "echo", "right")
    assert isinstance(check_answer(right, output), Accepted)
    assert isinstance(check_answer(before + "\n" + right + "\n" + after, output), Accepted)
    assert isinstance(check_answer(json_answer(request, "echo", "fenced"), output), Accepted)
    assert isinstance(check_answer(json_answer(request, "echo", "misfit"), output), Rejected)
    assert isinstance(check_answer(json_answer(request, "echo", "broken"), output), Rejected)
    assert isinstance(check_answer(json_answer(request, "echo", "prose"), output), Rejected)
    assert misfit_instance(schema, minimal_instance(schema)) != minimal_instance(schema)
