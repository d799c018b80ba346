"""Structured outputs (issue #11): JSON mode and JSON Schema by instruction, extraction and check.

Genspark has no `response_format` and no constrained decoding (genspark-protocol.md §6: its
models only ever see text), so a structured answer is emulated, as tool calls are:

1. `output_instruction` tells the model, in a system turn beside the tool instruction, to answer
   with one JSON value (fitting the schema, shown compactly);
2. `check_answer` finds the JSON in what it wrote (the whole answer, a code fence, or the first
   complete top-level value inside prose) and validates it with `jsonschema`;
3. when that fails, `repair_request` is the one follow-up user turn that names the problem; the
   chat service sends it on the same upstream thread (core/chat.py) and checks again;
4. `structured_failure` is the error when the repair fails too: never invalid JSON as an answer.

Pure: text in, verdicts out. `check_schema` is the front doors' check of a client's schema.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import jsonschema
import referencing.exceptions
from jsonschema.exceptions import SchemaError, best_match

from ..errors import ApiError, bad_request, upstream_error
from .conversation import OutputFormat

# The first words of the instruction. The simulator looks for them (simulator/structured.py
# keeps its own copy: it imports nothing of the service).
STRUCTURED_MARKER = "Structured output:"
# A problem quoted back to the model or the client stays readable: jsonschema's messages repeat
# the offending instance, which may be the whole answer.
MAX_PROBLEM_CHARS = 300
# Bounds the scan for JSON inside prose: each failed decode may read to the end of the text.
MAX_DECODE_ATTEMPTS = 500

_FENCE = re.compile(r"```[ \t]*(?:json|JSON|json5|javascript|js)?[ \t]*\r?\n(.*?)```", re.DOTALL)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# NaN and Infinity are Python's extension of JSON; a client's parser (pydantic, JSON.parse)
# refuses them, so they are not JSON here either.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _compact(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


# ------------------------------------------------------------------------------ the instruction


def output_instruction(output: OutputFormat) -> str:
    """The system instruction asking for `output`: compact, the schema on one line of its own."""
    rules = "and nothing else: no prose before or after it, no code fences, no comments."
    if output.schema is None:
        return f"{STRUCTURED_MARKER} answer with one JSON object {rules}"
    name = f' "{output.name}"' if output.name else ""
    about = f" ({_one_line(output.description)})" if output.description else ""
    return (
        f"{STRUCTURED_MARKER} answer with one JSON value that fits the JSON Schema{name}{about} below, {rules} "
        "Give every required property and only the properties the schema allows.\n"
        + _compact(output.schema)
    )


def repair_request(problem: str, output: OutputFormat) -> str:
    """The user turn that asks once more, naming what was wrong with the answer."""
    wanted = "one JSON object" if output.schema is None else "the one JSON value that fits the JSON Schema you were given"
    return (f"Your previous answer cannot be used: {problem}. "
            f"Answer again with only {wanted}: no prose before or after it, no code fences.")


def structured_failure(problem: str, output: OutputFormat) -> ApiError:
    """The answer did not fit even after the repair turn: a 502, the upstream's answer being what
    failed. `x-should-retry: false`: the OpenAI SDKs would otherwise repeat the request (and
    its repair) twice on their own; the client may still decide to."""
    error = upstream_error(
        502, f"The model's answer did not fit {output.param} even after a repair turn: {problem}.",
        "structured_output_failed",
    )
    error.param = output.param
    error.headers["x-should-retry"] = "false"
    return error


def _one_line(text: str) -> str:
    return " ".join(text.split())


# ------------------------------------------------------------------------------ the client's schema


def check_schema(schema: object, param: str) -> None:
    """A 400 naming `param` unless `schema` is a JSON Schema we can validate answers against.

    Only references inside the schema itself are allowed: a remote `$ref` would have the service
    fetch a URL a client chose (netguard.py's concern), and an answer cannot be checked without it.
    """
    if not isinstance(schema, dict):
        raise bad_request(f"'{param}' must be a JSON Schema object.", param=param, code="invalid_schema")
    if not isinstance(schema.get("$schema", ""), str):
        raise bad_request(f"'{param}.$schema' must be a string: the URI of a JSON Schema draft.",
                          param=param, code="invalid_schema")
    validator = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        validator.check_schema(schema)
        for ref in _refs(schema):
            if not ref.startswith("#"):
                raise bad_request(f"'{param}': only references inside the schema are supported, not $ref {ref!r}.",
                                  param=param, code="invalid_schema")
            if ref.startswith("#/") and not _points_somewhere(schema, ref):
                raise bad_request(f"'{param}': $ref {ref!r} points to nothing in the schema.",
                                  param=param, code="invalid_schema")
        # A few trial values find what only validating can: an anchor that is not there, or
        # references that go round in a circle (RecursionError) — before anything is asked.
        trial = validator(schema)
        for value in ({}, [], None, "", 0):
            trial.is_valid(value)
    except referencing.exceptions.Unresolvable as exc:
        raise bad_request(f"'{param}': a reference in the schema cannot be resolved ({_short(str(exc))}).",
                          param=param, code="invalid_schema") from None
    except SchemaError as exc:
        where = "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in exc.absolute_path)
        raise bad_request(f"'{param}' is not a valid JSON Schema: {_short(exc.message)}"
                          + (f" (at {param}{where})" if where else "") + ".",
                          param=param, code="invalid_schema") from None
    except RecursionError:
        raise bad_request(f"'{param}' nests too deeply or its references go round in a circle.",
                          param=param, code="invalid_schema") from None


def _refs(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("$ref", "$dynamicRef") and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _points_somewhere(schema: dict, ref: str) -> bool:
    """Whether the JSON Pointer fragment `#/a/b` names a place in `schema` (RFC 6901)."""
    node: object = schema
    for token in ref[2:].split("/"):
        token = unquote(token).replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            return False
    return True


# ------------------------------------------------------------------------------ finding the JSON


@dataclass(frozen=True, slots=True)
class Found:
    """One JSON value in the answer text, and where it was written."""

    value: Any
    text: str


def find_json(text: str) -> list[Found]:
    """The JSON values an answer may mean as its output, most likely first.

    The whole answer when it is JSON; else the bodies of code fences that are JSON; then each
    complete top-level object or array in the text, left to right (a value found is skipped
    whole, so nothing nested in it counts). Never a value that is not written in the text.
    """
    stripped = text.strip()
    whole = _decode(stripped)
    if whole is not None:
        return [Found(whole[0], stripped)]
    found: list[Found] = []
    for match in _FENCE.finditer(text):
        body = match.group(1).strip()
        value = _decode(body)
        if value is not None:
            found.append(Found(value[0], body))
    found += _scan(text)
    return found


def _decode(text: str) -> tuple[Any] | None:
    if not text or text[0] not in '{["-0123456789tfn':
        return None
    try:
        return (_DECODER.decode(text),)
    except (ValueError, RecursionError):
        return None


def _scan(text: str) -> list[Found]:
    found: list[Found] = []
    attempts = 0
    index = _next_opening(text, 0)
    while index >= 0 and attempts < MAX_DECODE_ATTEMPTS:
        try:
            value, end = _DECODER.raw_decode(text, index)
        except (ValueError, RecursionError):
            attempts += 1
            index = _next_opening(text, index + 1)
            continue
        found.append(Found(value, text[index:end]))
        index = _next_opening(text, end)
    return found


def _next_opening(text: str, start: int) -> int:
    braces, brackets = text.find("{", start), text.find("[", start)
    if braces < 0 or brackets < 0:
        return max(braces, brackets)
    return min(braces, brackets)


def _malformed(text: str) -> str | None:
    """Why the first object in `text` is not JSON, when the answer seems to have tried."""
    start = text.find("{")
    if start < 0:
        return None
    try:
        _DECODER.raw_decode(text, start)
    except json.JSONDecodeError as exc:
        return f"{exc.msg} at line {exc.lineno} column {exc.colno}"
    except ValueError as exc:
        return str(exc)
    except RecursionError:
        return "it nests too deeply"
    return None


# ------------------------------------------------------------------------------ the verdict


@dataclass(frozen=True, slots=True)
class Accepted:
    text: str        # the JSON exactly as the model wrote it, nothing around it


@dataclass(frozen=True, slots=True)
class Rejected:
    problem: str     # what was wrong, in words for the model (the repair turn) and the client


Verdict = Accepted | Rejected


def check_answer(text: str, output: OutputFormat) -> Verdict:
    """The first JSON value in the answer that fits `output`, or why none does.

    Raises a 400 `ApiError` when the schema itself cannot be used (a reference that resolves to
    nothing the door's check could see); the front doors check schemas before anything is sent.
    """
    found = find_json(text)
    if not found:
        why = _malformed(text)
        if why is not None:
            return Rejected(f"the JSON in it is malformed ({why})")
        return Rejected("it contains no JSON object")
    validator = _validator(output)
    expected = _expected_type(output)
    problems: list[tuple[bool, str]] = []
    for candidate in found:
        problem = _problem(candidate.value, output, validator)
        if problem is None:
            return Accepted(candidate.text)
        problems.append((expected is not None and isinstance(candidate.value, expected), problem))
    # Name the problem of the value the model most likely meant: the first of the right kind.
    return Rejected(next((p for right_kind, p in problems if right_kind), problems[0][1]))


def _validator(output: OutputFormat) -> jsonschema.protocols.Validator | None:
    if output.schema is None:
        return None
    cls = jsonschema.validators.validator_for(output.schema, default=jsonschema.Draft202012Validator)
    # Formats (date, email, uuid, ...) are checked where jsonschema can without extra packages:
    # a client's model class (pydantic) checks them too, and would fail on what we let through.
    return cls(output.schema, format_checker=cls.FORMAT_CHECKER)


def _expected_type(output: OutputFormat) -> type | tuple[type, ...] | None:
    declared = "object" if output.schema is None else output.schema.get("type")
    return {"object": dict, "array": list}.get(declared) if isinstance(declared, str) else None


def _problem(value: Any, output: OutputFormat, validator: jsonschema.protocols.Validator | None) -> str | None:
    if validator is None:
        return None if isinstance(value, dict) else f"its JSON is {_kind(value)}, not an object"
    try:
        error = best_match(validator.iter_errors(value))
    except referencing.exceptions.Unresolvable as exc:
        raise bad_request(f"'{output.param}': the schema has a reference that cannot be resolved "
                          f"({_short(str(exc))}).", param=output.param, code="invalid_schema") from None
    except RecursionError:
        return "its JSON nests too deeply to be checked"
    if error is None:
        return None
    where = f"at {error.json_path}: " if error.json_path != "$" else ""
    return f"its JSON does not fit the schema: {where}{_short(error.message)}"


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"


def _short(text: str) -> str:
    text = _one_line(text)
    return text if len(text) <= MAX_PROBLEM_CHARS else text[: MAX_PROBLEM_CHARS - 1] + "…"
