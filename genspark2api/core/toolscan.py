"""Resumable scanners of the tool-call parser (toolcalls.py): where a JSON object ends, and the
Anthropic-style `<function_calls>` XML form. Pure.

Both keep their progress in a small state object between deltas, so a long argument streamed in
small deltas is scanned once, not once per delta. Each answers with the index just past what it
matched, or MORE (the text so far cannot decide) or NO (definitely not a match here); a verdict
never changes when more text arrives.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

FUNCTION_CALLS_OPEN = "<function_calls"
_FUNCTION_CALLS_CLOSE = "</function_calls"
_INVOKE_OPEN = "<invoke"
_INVOKE_CLOSE = "</invoke"
_PARAMETER_OPEN = "<parameter"
_PARAMETER_CLOSE = "</parameter"

# Verdicts; any index >= 0 is a match ending there.
MORE = -1  # the text received so far cannot decide yet
NO = -2  # definitely not a match at this position

_WS = re.compile(r"\s*")
_NAME_END = re.compile(r"[\"'<>\n]")  # what ends a quoted name="…" (only its own quote rightly)
# Outside strings a JSON object holds only punctuation, whitespace, numbers and true/false/null.
# The next character that is none of those is a quote, a brace, or junk that proves the block
# broken at once: an unbalanced `{` then fails at `</tool_call>` instead of swallowing the answer.
_OUTSIDE_STRING = re.compile(r"[^\s\[\]:,0-9.+\-eEtrufalsn]")
_INSIDE_STRING = re.compile(r'["\\]')


@dataclass(slots=True)
class ObjectScan:
    """Progress in finding where a JSON object ends, kept across deltas so that a long argument
    streamed in small deltas is scanned once rather than once per delta."""

    start: int  # stream offset of the opening '{'
    pos: int = 0  # offset (from start) of the next character to look at
    depth: int = 0
    in_string: bool = False
    result: int = MORE  # once decided: offset (from start) just past the '}', or NO


def advance_object(buf: str, at: int, scan: ObjectScan) -> int:
    """Continue `scan` over buf, whose index `at` holds the '{'. Returns the index just past the
    matching '}', MORE or NO."""
    if scan.result == MORE:
        i, n = at + scan.pos, len(buf)
        while scan.result == MORE:
            if scan.in_string:
                m = _INSIDE_STRING.search(buf, i)
                if m is None:
                    i = n
                    break
                j = m.start()
                if buf[j] == "\\":
                    if j + 1 == n:  # the escaped character has not arrived yet
                        i = j
                        break
                    i = j + 2
                    continue
                scan.in_string = False
            else:
                m = _OUTSIDE_STRING.search(buf, i)
                if m is None:
                    i = n
                    break
                j = m.start()
                char = buf[j]
                if char == '"':
                    scan.in_string = True
                elif char == "{":
                    scan.depth += 1
                elif char == "}":
                    scan.depth -= 1
                    if scan.depth == 0:
                        scan.result = j + 1 - at
                else:
                    scan.result = NO
            i = j + 1
        scan.pos = i - at
    return scan.result if scan.result < 0 else at + scan.result




def expect(buf: str, pos: int, word: str) -> int:
    got = buf[pos : pos + len(word)]
    if got == word:
        return pos + len(word)
    return MORE if len(got) < len(word) and word.startswith(got) else NO


def skip_ws(buf: str, pos: int) -> int:
    return _WS.match(buf, pos).end()


def match_tag(buf: str, pos: int, tag: str) -> int:
    """`tag`, optional whitespace, then '>'."""
    p = expect(buf, pos, tag)
    if p < 0:
        return p
    p = skip_ws(buf, p)
    if p == len(buf):
        return MORE
    return p + 1 if buf[p] == ">" else NO


def could_become(partial: str, names: frozenset[str]) -> bool:
    return any(name.startswith(partial) for name in names)


def match_named_tag(buf: str, pos: int, tag: str) -> tuple[int, str | None]:
    """`tag`, whitespace, `name="…"` (or single quotes), optional whitespace, '>'.

    Returns (index past the '>', the name), or (MORE, the name so far or None) or (NO, None).
    A name holding '<', '>' or a newline is no name: a stray quote then fails at once instead of
    holding the rest of the answer back."""
    p = expect(buf, pos, tag)
    if p < 0:
        return p, None
    q = skip_ws(buf, p)
    if q == len(buf):
        return MORE, None
    if q == p:  # "<invokes": another word
        return NO, None
    p = expect(buf, q, "name")
    if p >= 0:
        p = expect(buf, skip_ws(buf, p), "=")
    if p < 0:
        return p, None
    p = skip_ws(buf, p)
    if p == len(buf):
        return MORE, None
    quote = buf[p]
    if quote not in "\"'":
        return NO, None
    m = _NAME_END.search(buf, p + 1)
    if m is None:
        return MORE, buf[p + 1 :]
    if m.group() != quote:
        return NO, None
    name = buf[p + 1 : m.start()]
    p = skip_ws(buf, m.end())
    if p == len(buf):
        return MORE, name
    return (p + 1, name) if buf[p] == ">" else (NO, None)


class _Stage(enum.Enum):
    OPEN = enum.auto()  # "<function_calls>" expected
    INVOKE = enum.auto()  # an "<invoke name=…>", or "</function_calls>" after at least one
    PARAMETER = enum.auto()  # a "<parameter name=…>", or "</invoke>"
    VALUE = enum.auto()  # a parameter's text, up to the first "</parameter>"


@dataclass(slots=True)
class InvokeScan:
    """Progress through one `<function_calls>` block, kept across deltas like ObjectScan, so a
    long parameter value streamed in small deltas is searched once. Offsets are from `start`."""

    start: int  # stream offset of the '<' of "<function_calls"
    pos: int = 0  # where the next element begins
    stage: _Stage = _Stage.OPEN
    calls: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    tool: str = ""  # the invoke being read
    values: dict[str, str] = field(default_factory=dict)
    parameter: str = ""  # the parameter whose value is being read
    search_from: int = 0  # where to look for the closing "</parameter" next


def advance_invokes(buf: str, at: int, scan: InvokeScan, names: frozenset[str]) -> int:
    """Continue `scan` over buf, whose index `at` holds the block's '<'. Returns the index just
    past "</function_calls>", MORE or NO; scan.calls holds the raw calls once it is past."""
    while True:
        p = at + scan.pos
        if scan.stage is _Stage.OPEN:
            end = match_tag(buf, p, FUNCTION_CALLS_OPEN)
            if end < 0:
                return end
            scan.pos, scan.stage = end - at, _Stage.INVOKE
        elif scan.stage is _Stage.INVOKE:
            q = skip_ws(buf, p)
            if q == len(buf):
                return MORE
            closed = match_tag(buf, q, _FUNCTION_CALLS_CLOSE) if scan.calls else NO
            if closed >= 0:
                return closed
            end, tool = match_named_tag(buf, q, _INVOKE_OPEN)
            if end == MORE and tool is not None and not could_become(tool, names):
                return NO  # only offered tools make calls: decide as soon as the name says so
            if end < 0:
                return MORE if MORE in (closed, end) else NO
            if tool not in names:
                return NO
            scan.tool, scan.values = tool, {}
            scan.pos, scan.stage = end - at, _Stage.PARAMETER
        elif scan.stage is _Stage.PARAMETER:
            q = skip_ws(buf, p)
            if q == len(buf):
                return MORE
            closed = match_tag(buf, q, _INVOKE_CLOSE)
            if closed >= 0:
                scan.calls.append((scan.tool, scan.values))
                scan.pos, scan.stage = closed - at, _Stage.INVOKE
                continue
            end, parameter = match_named_tag(buf, q, _PARAMETER_OPEN)
            if end < 0:
                return MORE if MORE in (closed, end) else NO
            if parameter in scan.values:  # two values for one argument: which one was meant?
                return NO
            scan.parameter = parameter
            scan.pos = scan.search_from = end - at
            scan.stage = _Stage.VALUE
        else:
            j = buf.find(_PARAMETER_CLOSE, at + scan.search_from)
            if j < 0:
                # The tag may have begun in the last few characters: look there again next time.
                scan.search_from = max(scan.search_from, len(buf) - at - len(_PARAMETER_CLOSE) + 1)
                return MORE
            end = match_tag(buf, j, _PARAMETER_CLOSE)
            if end == MORE:
                scan.search_from = j - at
                return MORE
            if end == NO:  # "</parameters" or the like: still the value
                scan.search_from = j + 1 - at
                continue
            scan.values[scan.parameter] = buf[at + scan.pos : j]
            scan.pos, scan.stage = end - at, _Stage.PARAMETER
