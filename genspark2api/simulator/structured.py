"""The simulated model's structured answers (issue #11): JSON that fits the schema it was shown.

A service that emulates `response_format` (genspark2api's core/structured.py) puts a system
message starting with ``Structured output:`` into the conversation, the JSON Schema (if any) on
the line after it. The simulated model then answers with a minimal instance of that schema:
required properties only, the first of an enum or a ``const``, ``"sim"``/``1``/``true`` for the
rest, formats and bounds respected, nested objects and arrays built the same way. With no schema
(JSON mode) it answers ``{"answer": <its usual echo>}``.

The thread keeps the instruction (§12.3: the server holds the history), so a follow-up that
sends only a new user turn (a repair) is still answered in JSON: ``Project.json_request``.

How well it answers is a cookie scenario (scenarios.py), to exercise the service's extraction,
validation and repair turn:

=====================  ==================================================================
json-fenced            the right JSON, but in a code fence between two sentences
json-broken-first      the first answer of a project: a sentence and a cut-off fenced
                       JSON; later answers (the repair turn) right
json-misfit-first      the first answer of a project: JSON that misses the schema; later ones right
json-misfit            every answer JSON that misses the schema (never repaired)
json-prose             every answer prose without any JSON (never repaired)
=====================  ==================================================================
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

# The first words of the instruction (genspark2api/core/structured.py STRUCTURED_MARKER).
STRUCTURED_MARKER = "Structured output:"
# Recursive schemas (a tree of nodes) stop here: deeper required objects are given empty.
MAX_DEPTH = 12

Quality = Literal["right", "fenced", "broken", "misfit", "prose"]

_FORMATS = {
    "date-time": "2026-01-01T00:00:00Z",
    "date": "2026-01-01",
    "time": "00:00:00Z",
    "email": "sim@example.org",
    "uri": "https://example.org/sim",
    "url": "https://example.org/sim",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "ipv4": "192.0.2.1",
    "ipv6": "2001:db8::1",
    "hostname": "sim.example.org",
}


@dataclass(frozen=True)
class JsonRequest:
    """What a structured instruction asked for; ``schema`` None is any JSON object."""

    schema: dict[str, Any] | None


def find_json_request(system_texts: list[str]) -> JsonRequest | None:
    """The structured instruction among the conversation's system messages, if one is there."""
    for text in system_texts:
        start = text.find(STRUCTURED_MARKER)
        if start < 0:
            continue
        _, _, rest = text[start:].partition("\n")
        try:
            schema = json.loads(rest.strip()) if rest.strip() else None
        except ValueError:
            schema = None
        return JsonRequest(schema if isinstance(schema, dict) else None)
    return None


def json_answer(request: JsonRequest, echo: str, quality: Quality) -> str:
    """The answer text to a structured request, as well as `quality` says."""
    right = minimal_instance(request.schema) if request.schema is not None else {"answer": echo}
    text = json.dumps(right, ensure_ascii=False)
    if quality == "fenced":
        return f"Here is the JSON you asked for:\n```json\n{text}\n```\nTell me if you need anything else."
    if quality == "broken":
        return f"Sure, here it is:\n```json\n{text[: max(1, len(text) // 2)]}\n```"
    if quality == "misfit":
        return json.dumps(misfit_instance(request.schema, right), ensure_ascii=False)
    if quality == "prose":
        return f"{echo} (in words, since JSON is not my thing today)"
    return text


def misfit_instance(schema: dict[str, Any] | None, right: Any) -> Any:
    """Valid JSON that does not fit: the first required property left out, or the wrong type."""
    required = schema.get("required") if schema is not None else None
    if isinstance(right, dict) and isinstance(required, list) and required and required[0] in right:
        return {k: v for k, v in right.items() if k != required[0]}
    return ["sim"] if isinstance(right, dict) else {"sim": True}


def minimal_instance(schema: Any, root: Any = None, depth: int = 0) -> Any:
    """A small value that fits `schema` (the parts of JSON Schema that models are shown)."""
    root = schema if root is None else root
    if not isinstance(schema, dict):
        return "sim"  # `true` or an unreadable schema: anything fits
    if depth > MAX_DEPTH:
        return {}
    if "$ref" in schema and isinstance(schema["$ref"], str):
        return minimal_instance(_resolve(root, schema["$ref"]), root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            # Prefer an option that is not null: `Optional[X]` should show an X.
            chosen = next((o for o in options if not (isinstance(o, dict) and o.get("type") == "null")), options[0])
            return minimal_instance(chosen, root, depth + 1)
    if isinstance(schema.get("allOf"), list) and schema["allOf"]:
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            value = minimal_instance(part, root, depth + 1)
            if not isinstance(value, dict):
                return value
            merged.update(value)
        return merged
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    return _typed(kind, schema, root, depth)


def _typed(kind: str, schema: dict[str, Any], root: Any, depth: int) -> Any:
    if kind == "object":
        properties = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
        required = schema.get("required") if isinstance(schema.get("required"), list) else []
        return {name: minimal_instance(properties.get(name, {}), root, depth + 1) for name in required}
    if kind == "array":
        prefix = schema.get("prefixItems") if isinstance(schema.get("prefixItems"), list) else []
        count = max(_int(schema.get("minItems"), 0), len(prefix))
        items = [minimal_instance(p, root, depth + 1) for p in prefix]
        items += [minimal_instance(schema.get("items", {}), root, depth + 1) for _ in range(count - len(prefix))]
        return items
    if kind in ("integer", "number"):
        return _number(schema, integer=kind == "integer")
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    text = _FORMATS.get(str(schema.get("format")), "sim")
    minimum, maximum = _int(schema.get("minLength"), 0), _int(schema.get("maxLength"), len(text))
    text = (text + "x" * max(0, minimum - len(text)))[: max(maximum, minimum)]
    return text


def _number(schema: dict[str, Any], *, integer: bool) -> int | float:
    value: float = 1
    low, high = schema.get("minimum"), schema.get("maximum")
    if isinstance(low, int | float) and value < low:
        value = low
    if isinstance(schema.get("exclusiveMinimum"), int | float) and value <= schema["exclusiveMinimum"]:
        value = schema["exclusiveMinimum"] + 1
    if isinstance(high, int | float) and value > high:
        value = high
    if isinstance(schema.get("exclusiveMaximum"), int | float) and value >= schema["exclusiveMaximum"]:
        value = schema["exclusiveMaximum"] - 1
    return int(value) if integer else value


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else default


def _resolve(root: Any, ref: str) -> Any:
    """A local `#/...` JSON Pointer; anything else resolves to no constraint."""
    if not ref.startswith("#"):
        return {}
    node = root
    for token in ref[2:].split("/") if ref.startswith("#/") else []:
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            return {}
    return node


def json_quality(scenario: str, *, first_of_project: bool) -> Quality:
    """How the cookie's scenario answers (see the table above); `scenario` is its value."""
    if scenario == "json-fenced":
        return "fenced"
    if scenario == "json-broken-first":
        return "broken" if first_of_project else "right"
    if scenario == "json-misfit-first":
        return "misfit" if first_of_project else "right"
    if scenario == "json-misfit":
        return "misfit"
    if scenario == "json-prose":
        return "prose"
    return "right"
