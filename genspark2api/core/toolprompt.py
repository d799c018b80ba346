"""Tool-call emulation, prompting side: the instruction that offers tools, and tool history as text.

Genspark has no native tool API (genspark-protocol.md §6), so the tools go into a system
instruction and the model answers with `<tool_call>{...}</tool_call>` blocks, parsed back by
toolcalls.py. Earlier calls and results in the history are rendered in that same envelope: a model
shown a different history format copies it instead of the one asked for (§6.3 item 6).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, TypeAlias

from .toolcalls import TOOL_CALL_CLOSE, TOOL_CALL_OPEN
from .toolschema import TOOL_DESCRIPTION_LIMIT, compact_parameters, shorten


@dataclass(frozen=True, slots=True)
class FunctionSpec:
    name: str
    description: str | None
    parameters: dict | None  # JSON schema of the arguments object


@dataclass(frozen=True, slots=True)
class FunctionChoice:
    """tool_choice naming one function: the model must call it."""

    name: str


ToolChoice: TypeAlias = Literal["auto", "none", "required"] | FunctionChoice

# A function declared without parameters takes none; say so rather than leave the model guessing.
_NO_PARAMETERS = {"type": "object", "properties": {}}


def _compact(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _call_block(name: str, arguments: object) -> str:
    # Spaced exactly like the envelope shown in the instruction, so history reads as examples of it.
    envelope = f'{{"name": {_compact(name)}, "arguments": {_compact(arguments)}}}'
    return TOOL_CALL_OPEN + envelope + TOOL_CALL_CLOSE


def _tool_line(function: FunctionSpec) -> str:
    """One offered tool as one line of compact JSON, its schema without the noise (toolschema.py):
    agents offer two dozen tools or more, and every request that carries the instruction (each
    turn on copilot, the first of a conversation on ai_chat) pays for every token of it."""
    description = shorten(function.description, TOOL_DESCRIPTION_LIMIT) if function.description else ""
    parameters = compact_parameters(function.parameters) if function.parameters is not None else _NO_PARAMETERS
    return _compact({"name": function.name} | ({"description": description} if description else {})
                    | {"parameters": parameters})


def render_tool_instruction(
    functions: Sequence[FunctionSpec], choice: ToolChoice, *, parallel: bool = True
) -> str | None:
    """The system instruction offering `functions`, or None when no tool may be called.

    Raises ValueError when `choice` names a function that is not offered (a client error)."""
    if choice == "none" or not functions:
        return None
    if isinstance(choice, FunctionChoice) and choice.name not in {f.name for f in functions}:
        raise ValueError(f"tool_choice names {choice.name!r}, which is not among the tools")
    tools = "\n".join(_tool_line(f) for f in functions)
    if parallel:
        count = "One block per call; to call several tools at once, write several blocks in a row."
    else:
        count = "Call at most one tool per answer: write a single block."
    if isinstance(choice, FunctionChoice):
        when = f"In this answer you MUST call the tool {_compact(choice.name)}."
    elif choice == "required":
        when = f"In this answer you MUST call {'at least one tool' if parallel else 'one tool'}."
    else:
        when = "Call a tool only when it helps. When no tool is needed, answer normally, without any block."
    # The rules answer the failure modes of genspark-protocol.md §6.3: drifting envelopes and
    # fences (1), names not matching (5), and fabricated results or claimed calls (4).
    return f"""You can call external tools. Each line below is one tool as a JSON object: its "name", what it does, and the JSON schema of its "parameters".

{tools}

To call a tool, write a block exactly like this:
{TOOL_CALL_OPEN}{{"name": "<tool name>", "arguments": {{...}}}}{TOOL_CALL_CLOSE}

Rules:
- {count}
- Between the tags put one valid JSON object and nothing else: "name" is a tool name from the list above, spelled exactly; "arguments" is a JSON object that follows that tool's schema. Escape quotes and newlines inside strings as JSON requires. Do not put the blocks in code fences.
- Stop right after the last {TOOL_CALL_CLOSE}. Never write a tool's result yourself and never claim to have used a tool without writing its block: the results are sent to you in the next message, each starting with "Tool result".
- {when}"""


def render_assistant_tool_calls(content: str | None, calls: Sequence[tuple[str, str, str]]) -> str:
    """Text of a history assistant turn that called tools; `calls` holds (id, name, arguments JSON).

    The ids are left out so the blocks look exactly like the ones the model is asked to write;
    the matching results name their tool and come in the same order."""
    blocks = []
    for _id, name, arguments in calls:
        try:
            parsed: object = json.loads(arguments) if arguments.strip() else {}
        except ValueError:
            parsed = arguments  # not JSON: keep the client's text as a string, do not lose it
        blocks.append(_call_block(name, parsed))
    parts = ([content.strip()] if content and content.strip() else []) + ["\n".join(blocks)]
    return "\n\n".join(p for p in parts if p)


def render_tool_result(tool_call_id: str, name: str | None, content: str) -> str:
    """Text of a history tool result, sent as a user message (the instruction promises results
    "starting with Tool result")."""
    about = f" for {name}" if name else ""
    return f"Tool result{about} (tool_call_id={tool_call_id}):\n{content}"
