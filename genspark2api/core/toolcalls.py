"""Tool-call emulation, parsing side: turn the blocks a model writes back into tool calls.

Genspark has no native tool API (genspark-protocol.md §6), so toolprompt.py asks the model to
answer with blocks like `<tool_call>{"name": "f", "arguments": {"city": "Paris"}}</tool_call>`.
Strong models shown tools also write, by habit, the forms they were trained on (issue #11); those
are calls too, when they name an offered tool. This module is sans-IO: feed it the upstream text
deltas, get text and calls back.

Why a character-level parser rather than the regex other projects use (§6.3, openai-compat.md
§2.3):
- buffering the whole answer to run a regex kills time-to-first-token for every tool request;
- `<tool_call>(\\{.*?\\})</tool_call>` breaks on `}` or `</tool_call>` inside a string argument;
- a block that does not parse must come back as ordinary text, never lost and never half-leaked
  (Chat2API #122: a call leaking as content stalls agents; we keep only well-formed known calls).

The one rule that makes streaming agree with the non-stream parse: a position in the answer starts
a block iff the grammar below matches there, otherwise its character is plain text. Every decision
depends only on text already received and never changes when more arrives, so text is held back
only from a character that could start a block (`<`, or the backtick of a fence) until the match is
decided, and every way of cutting the answer into deltas gives the same result.

    block   := tagged | jsonfence
    tagged  := toolcall | calls | function
    toolcall:= "<tool_call" ws ">" ws OBJECT ws "</tool_call" ws ">"          (what we ask for)
    calls   := "<function_calls" ws ">" ws invoke (ws invoke)* ws "</function_calls" ws ">"
    invoke  := "<invoke" ws1 NAMED ">" ws (param ws)* "</invoke" ws ">"       (Claude's habit)
    param   := "<parameter" ws1 NAMED ">" VALUE "</parameter" ws ">"
    NAMED   := "name" ws "=" ws ('"' name '"' | "'" name "'") ws
    function:= "<function=" name ">" ws [OBJECT ws] "</function" ws ">"      (Llama 3.1's)
    fenced  := "```" [lang] ws tagged (ws tagged)* [ws "```"]       (```json / ```xml, §6.3 item 1)
    jsonfence := "```" ["json"] ws OBJECT ws "```"                  (a JSON call in a code block)

OBJECT ends at its matching `}`, found by scanning with string and escape awareness; in toolcall
and jsonfence it must be a known tool's envelope (see _decode_envelope), in function the arguments
object. VALUE is the text up to the first `</parameter>`, typed by the tool's schema
(toolschema.parameter_value). Every name must be an offered tool's, and an unknown one fails the
block as soon as it cannot become an offered name. A block with several calls is all of them or
none. A fenced opening is dropped only together with a block that parsed, so a code fence with no
tool call in it stays ordinary text.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from .toolscan import (
    FUNCTION_CALLS_OPEN,
    MORE,
    NO,
    InvokeScan,
    ObjectScan,
    advance_invokes,
    advance_object,
    could_become,
    expect,
    match_tag,
    skip_ws,
)
from .toolschema import load_json, parameter_value, property_schema

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"
_OPEN_TAG = "<tool_call"  # whitespace is tolerated before the '>'
_CLOSE_TAG = "</tool_call"
_FENCE = "```"
_JSON_FENCE_LANGS = frozenset({"", "json"})  # a JSON call is taken only from a fence that says JSON
_FUNCTION_EQUALS = "<function="
_FUNCTION_CLOSE = "</function"

_CANDIDATE = re.compile(r"[<`]")  # the only characters that can start a block or a fenced block
_FENCE_LANG = re.compile(r"[\w+.\-]*")
_FUNCTION_NAME = re.compile(r"[^\s<>=/\"'`{}]*")


def default_call_id() -> str:
    """An OpenAI-looking call id: "call_" and 24 random hex characters."""
    return "call_" + secrets.token_hex(12)


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # compact JSON text of an object, e.g. '{"city":"Paris"}'


@dataclass(frozen=True, slots=True)
class TextPiece:
    text: str


@dataclass(frozen=True, slots=True)
class CallPiece:
    index: int  # position of the call in the answer: 0, 1, 2... (OpenAI's tool_calls[].index)
    call: ToolCall


def _compact_json(value: object) -> str:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a "\ud800" escape: keep it escaped
        text = json.dumps(value, separators=(",", ":"))
    return text


def _decode_envelope(raw: str, allowed_names: frozenset[str]) -> tuple[str, str] | None:
    """(name, compact arguments) of one block's JSON, or None if it is not a valid call.

    Accepted shapes, all seen from models asked for the first one:
    {"name": N, "arguments": {...}}, {"function": {"name": N, "arguments": ...}},
    {"name": N, "parameters": {...}}; arguments may be a JSON string holding an object, and
    missing, null or blank arguments mean {}."""
    try:
        envelope = load_json(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(envelope, dict):
        return None
    if isinstance(envelope.get("function"), dict):
        envelope = envelope["function"]
    name = envelope.get("name")
    if not isinstance(name, str) or name not in allowed_names:
        return None
    arguments = envelope.get("arguments")
    if arguments is None:
        arguments = envelope.get("parameters")
    if isinstance(arguments, str):
        if not arguments.strip():
            arguments = None
        else:
            try:
                arguments = load_json(arguments)
            except (ValueError, RecursionError):
                return None
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        return None
    return name, _compact_json(arguments)


class ToolCallStreamParser:
    """Splits a streamed answer into text and the tool calls of its well-formed blocks.

    Only names in `allowed_names` make a call: anything else (unknown name, arguments that are
    not an object, broken JSON, a block still open at finish()) is released as ordinary text,
    verbatim. `schemas` maps a tool's name to the JSON schema of its arguments; the XML form uses
    it to type bare-text parameter values (toolschema.parameter_value)."""

    def __init__(
        self,
        allowed_names: Collection[str],
        *,
        schemas: Mapping[str, Any] | None = None,
        new_id: Callable[[], str] = default_call_id,
    ) -> None:
        self._allowed = frozenset(allowed_names)
        self._schemas = schemas or {}
        self._new_id = new_id
        self._buf = ""  # text received but not yet emitted; starts at stream offset _base
        self._base = 0
        self._in_fence = False  # a fence opened around a parsed block and is not closed yet
        self._scan: ObjectScan | None = None
        self._invokes: InvokeScan | None = None
        self._calls: list[ToolCall] = []

    @property
    def calls(self) -> list[ToolCall]:
        return list(self._calls)

    def feed(self, delta: str) -> list[TextPiece | CallPiece]:
        self._buf += delta
        return self._drain(final=False)

    def finish(self) -> list[TextPiece | CallPiece]:
        """End of the answer: whatever is still undecided is not a block, so it becomes text."""
        return self._drain(final=True)

    def _drain(self, *, final: bool) -> list[TextPiece | CallPiece]:
        buf = self._buf
        out: list[TextPiece | CallPiece] = []
        text_from = i = 0  # buf[text_from:i] is decided text not yet emitted
        while True:
            if self._in_fence:
                # Right after a fenced block: more blocks, or the closing fence, may follow.
                p = skip_ws(buf, i)
                verdict = expect(buf, p, _FENCE)
                if verdict >= 0:
                    text_from = i = verdict  # the closing fence is markup: drop it
                    self._in_fence = False
                    continue
                if p < len(buf) and buf[p] == "<":
                    verdict, calls = self._match_angle(buf, p)
                    if verdict >= 0:
                        out += self._emit(calls)
                        text_from = i = verdict
                        continue
                if verdict == MORE and not final:
                    break
                self._in_fence = False  # anything else ends the fence; rescan it as plain text
                continue
            m = _CANDIDATE.search(buf, i)
            if m is None:
                i = len(buf)
                break
            j = m.start()
            fence_open = False
            if buf[j] == "`":
                verdict, calls, fence_open = self._match_fenced(buf, j)
            else:
                verdict, calls = self._match_angle(buf, j)
            if verdict == MORE and not final:
                i = j  # hold from the possible start
                break
            if verdict < 0:  # not a block: this character is text, look further
                i = j + 1
                continue
            if j > text_from:
                out.append(TextPiece(buf[text_from:j]))
            out += self._emit(calls)
            text_from = i = verdict
            self._in_fence = fence_open
        if i > text_from:
            out.append(TextPiece(buf[text_from:i]))
        if i:
            self._buf = buf[i:]
            self._base += i
        if final:
            self._in_fence = False
        return out

    def _emit(self, calls: list[tuple[str, str]] | None) -> list[CallPiece]:
        assert calls
        pieces = []
        for name, arguments in calls:
            pieces.append(CallPiece(len(self._calls), ToolCall(self._new_id(), name, arguments)))
            self._calls.append(pieces[-1].call)
        return pieces

    def _match_fenced(self, buf: str, pos: int) -> tuple[int, list[tuple[str, str]] | None, bool]:
        """A fence opening blocks of a tagged form (verdict, calls, True: the closing fence may
        follow them), or a fenced JSON call, closing fence included (verdict, calls, False)."""
        p = expect(buf, pos, _FENCE)
        if p < 0:
            return p, None, False
        lang_end = _FENCE_LANG.match(buf, p).end()
        lang = buf[p:lang_end]
        p = skip_ws(buf, lang_end)
        if p == len(buf):
            return MORE, None, False
        if buf[p] == "<":
            return *self._match_angle(buf, p), True
        if buf[p] != "{" or lang.lower() not in _JSON_FENCE_LANGS:
            return NO, None, False
        end = self._scan_object(buf, p)
        if end < 0:
            return end, None, False
        call = _decode_envelope(buf[p:end], self._allowed)
        if call is None:
            return NO, None, False
        end = expect(buf, skip_ws(buf, end), _FENCE)
        return (end, [call], False) if end >= 0 else (end, None, False)

    def _match_angle(self, buf: str, pos: int) -> tuple[int, list[tuple[str, str]] | None]:
        """A block of one of the tagged forms at buf[pos] (a '<'). Their opening tags differ
        within ten characters, so at most one of them is still undecided past that point."""
        verdicts = []
        for match in (self._match_tool_call, self._match_function_calls, self._match_function_tag):
            verdict, calls = match(buf, pos)
            if verdict >= 0:
                return verdict, calls
            verdicts.append(verdict)
        return (MORE if MORE in verdicts else NO), None

    def _scan_object(self, buf: str, p: int) -> int:
        """Where the JSON object opening at buf[p] ends (or MORE/NO), resuming the last scan."""
        start = self._base + p
        if self._scan is None or self._scan.start != start:
            self._scan = ObjectScan(start)
        return advance_object(buf, p, self._scan)

    def _match_tool_call(self, buf: str, pos: int) -> tuple[int, list[tuple[str, str]] | None]:
        """`<tool_call>{"name": …, "arguments": {…}}</tool_call>`: the envelope we ask for."""
        p = match_tag(buf, pos, _OPEN_TAG)
        if p < 0:
            return p, None
        p = skip_ws(buf, p)
        if p == len(buf):
            return MORE, None
        if buf[p] != "{":
            return NO, None
        end = self._scan_object(buf, p)
        if end < 0:
            return end, None
        call = _decode_envelope(buf[p:end], self._allowed)
        if call is None:
            return NO, None
        end = match_tag(buf, skip_ws(buf, end), _CLOSE_TAG)
        return (end, [call]) if end >= 0 else (end, None)

    def _match_function_tag(self, buf: str, pos: int) -> tuple[int, list[tuple[str, str]] | None]:
        """`<function=NAME>{arguments}</function>`, the custom-tool form of Llama 3.1's prompt
        format; the arguments may be left out."""
        p = expect(buf, pos, _FUNCTION_EQUALS)
        if p < 0:
            return p, None
        q = _FUNCTION_NAME.match(buf, p).end()
        name = buf[p:q]
        if q == len(buf):
            return (MORE if could_become(name, self._allowed) else NO), None
        if buf[q] != ">" or name not in self._allowed:
            return NO, None
        p = skip_ws(buf, q + 1)
        if p == len(buf):
            return MORE, None
        arguments = "{}"
        if buf[p] == "{":
            end = self._scan_object(buf, p)
            if end < 0:
                return end, None
            try:
                value = load_json(buf[p:end])
            except (ValueError, RecursionError):
                return NO, None
            if not isinstance(value, dict):
                return NO, None
            arguments = _compact_json(value)
            p = skip_ws(buf, end)
        end = match_tag(buf, p, _FUNCTION_CLOSE)
        return (end, [(name, arguments)]) if end >= 0 else (end, None)

    def _match_function_calls(self, buf: str, pos: int) -> tuple[int, list[tuple[str, str]] | None]:
        """`<function_calls><invoke name="N"><parameter name="p">v</parameter>…</invoke>…
        </function_calls>`, the form Claude models write by habit. One block, several calls."""
        verdict = expect(buf, pos, FUNCTION_CALLS_OPEN)
        if verdict < 0:
            return verdict, None
        start = self._base + pos
        if self._invokes is None or self._invokes.start != start:
            self._invokes = InvokeScan(start)
        end = advance_invokes(buf, pos, self._invokes, self._allowed)
        if end < 0:
            return end, None
        calls = []
        for tool, values in self._invokes.calls:
            parameters = self._schemas.get(tool)
            arguments = {k: parameter_value(v, property_schema(parameters, k)) for k, v in values.items()}
            calls.append((tool, _compact_json(arguments)))
        return end, calls


def parse_tool_answer(
    text: str, allowed_names: Collection[str], *, schemas: Mapping[str, Any] | None = None
) -> tuple[str | None, list[ToolCall]]:
    """Non-stream parse of a whole answer: (text outside the blocks, stripped, or None if empty;
    the calls). It is the stream parser fed in one go, so both always agree."""
    parser = ToolCallStreamParser(allowed_names, schemas=schemas)
    pieces = parser.feed(text) + parser.finish()
    content = "".join(p.text for p in pieces if isinstance(p, TextPiece)).strip()
    return content or None, parser.calls
