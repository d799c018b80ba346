"""What tool emulation needs to know about the JSON schemas of tool arguments (pure).

Two uses, one on each side of the emulation:
- prompting (toolprompt.py): `compact_schema` drops what costs tokens without telling the model
  anything it needs. Claude Code sends about two dozen tools with long descriptions on every turn,
  and Open WebUI's 28 built-in tools come from pydantic, which writes a `title` for every property
  and a `default` for every optional one (issue #11: ~5,000 prompt tokens for "Hello there");
- parsing (toolcalls.py): a `<parameter name="p">v</parameter>` of the Anthropic-style XML form
  carries its value as bare text, so `parameter_value` decides from the property's schema whether
  `5` is the number 5 or the string "5".
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

# Keywords that document a schema for humans or tools but change nothing the model must write.
# `default` goes too: a model that omits an optional argument gets the default anyway.
_NOISE = frozenset(
    {"$schema", "$id", "$comment", "title", "default", "examples", "example", "deprecated",
     "readOnly", "writeOnly", "markdownDescription"}
)
# Keywords whose value is one schema, a list of schemas, or a name → schema map.
_SUBSCHEMA = frozenset({"items", "additionalProperties", "not", "if", "then", "else", "contains",
                        "propertyNames", "unevaluatedProperties", "unevaluatedItems"})
_SUBSCHEMA_LISTS = frozenset({"anyOf", "oneOf", "allOf", "prefixItems"})
_SUBSCHEMA_MAPS = frozenset({"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"})

# Bounds on descriptions, in characters. A tool's first few sentences say what it does and when to
# use it; the usage notes after them (Claude Code's Bash tool has pages of them) cost thousands of
# tokens per turn on a backend that has no native tools to hold them.
TOOL_DESCRIPTION_LIMIT = 600
PROPERTY_DESCRIPTION_LIMIT = 200

_SPACES = re.compile(r"\s+")


def shorten(text: str, limit: int) -> str:
    """`text` with its whitespace runs folded to one space, cut at a word boundary to at most
    `limit` characters (an ellipsis included) when it is longer."""
    text = _SPACES.sub(" ", text).strip()
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:-") + "…"


def compact_parameters(schema: Any) -> Any:
    """A tool's `parameters` schema, compacted for the instruction: compact_schema, and at the
    top, no `"type": "object"` (the instruction says the arguments are an object) and no `null`
    among the types of an optional argument (leaving it out says the same)."""
    out = compact_schema(schema)
    if not isinstance(out, dict):
        return out
    if out.get("type") == "object" and "properties" in out:
        del out["type"]
    properties, required = out.get("properties"), out.get("required")
    if isinstance(properties, dict):
        needed = set(required) if isinstance(required, list) else set()
        for name, prop in properties.items():
            kind = prop.get("type") if isinstance(prop, dict) else None
            if name not in needed and isinstance(kind, list) and "null" in kind and len(kind) == 2:
                prop["type"] = next(k for k in kind if k != "null")
    return out


def compact_schema(schema: Any) -> Any:
    """`schema` without the noise keywords, boolean `additionalProperties`, empty `required`,
    and with long descriptions shortened. Property *names* are kept whatever they are (a property
    may well be called `title` or `default`); only keywords in schema positions are dropped."""
    if isinstance(schema, list):
        return [compact_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _NOISE:
            continue
        if key == "additionalProperties" and isinstance(value, bool):
            continue  # the instruction already says to follow the schema
        if key == "required" and value == []:
            continue
        if key == "description" and isinstance(value, str):
            value = shorten(value, PROPERTY_DESCRIPTION_LIMIT)
            if not value:
                continue
        elif key in _SUBSCHEMA:
            value = compact_schema(value)
        elif key in _SUBSCHEMA_LISTS and isinstance(value, list):
            value = [compact_schema(s) for s in value]
        elif key in _SUBSCHEMA_MAPS and isinstance(value, dict):
            value = {name: compact_schema(s) for name, s in value.items()}
        out[key] = value
    # pydantic writes Optional[int] as anyOf [{"type": "integer"}, {"type": "null"}]: the same
    # thing as one type list, in a third of the tokens.
    members = out.get("anyOf")
    if (isinstance(members, list) and members and "type" not in out
            and all(isinstance(m, dict) and set(m) == {"type"} and isinstance(m["type"], str) for m in members)):
        del out["anyOf"]
        out["type"] = [m["type"] for m in members]
    return out


# --- parsing side -------------------------------------------------------------------------------

_JSON_TYPE_OF = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
                 dict: "object", type(None): "null"}


def schema_types(schema: Any) -> frozenset[str]:
    """The JSON types `schema` allows, or an empty set when it does not say (no schema, `$ref`,
    a member of anyOf/oneOf without a type...)."""
    if not isinstance(schema, Mapping):
        return frozenset()
    kind = schema.get("type")
    if isinstance(kind, str):
        return frozenset({kind})
    if isinstance(kind, list):
        return frozenset(k for k in kind if isinstance(k, str))
    values = schema.get("enum") if isinstance(schema.get("enum"), list) else None
    if "const" in schema:
        values = [schema["const"]]
    if values:
        return frozenset(_JSON_TYPE_OF.get(type(v), "string") for v in values)
    for key in ("anyOf", "oneOf"):
        members = schema.get(key)
        if isinstance(members, list) and members:
            types = [schema_types(m) for m in members]
            return frozenset().union(*types) if all(types) else frozenset()
    if "properties" in schema:
        return frozenset({"object"})
    if "items" in schema:
        return frozenset({"array"})
    return frozenset()


def _fits(value: object, types: frozenset[str]) -> bool:
    kind = _JSON_TYPE_OF.get(type(value))
    return kind in types or (kind == "integer" and "number" in types)


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    # 1e999 decodes to inf, which would re-serialise as the non-JSON `Infinity`.
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range")
    return value


def load_json(text: str) -> object:
    """Strict JSON values (no NaN, no Infinity), but lenient about raw newlines and tabs inside
    strings: models write multi-line string arguments that way (grok2api #557, openai-compat.md
    §2.3 item 15)."""
    return json.loads(text, strict=False, parse_constant=_reject_constant, parse_float=_finite_float)


def parameter_value(raw: str, schema: Any) -> object:
    """The argument value a bare-text parameter means, given its property's schema.

    A string property takes the text exactly as written. Otherwise the text counts as JSON when
    it parses as JSON of a type the schema allows (or of any type, when the schema does not
    say), else it stays a string: the tool then sees what the model wrote, never nothing."""
    types = schema_types(schema)
    if types == {"string"}:
        return raw
    try:
        value = load_json(raw)
    except (ValueError, RecursionError):
        return raw
    if not types:
        return value
    if isinstance(value, str):  # a quoted string where strings are allowed: the text itself
        return raw
    return value if _fits(value, types) else raw


def property_schema(parameters: Any, name: str) -> Any:
    """The schema of argument `name` in a tool's `parameters` schema, or None."""
    if not isinstance(parameters, Mapping):
        return None
    properties = parameters.get("properties")
    return properties.get(name) if isinstance(properties, Mapping) else None
