"""Tool-call emulation, parsing side: turn `<tool_call>{...}</tool_call>` blocks back into calls.

Genspark has no native tool API (genspark-protocol.md §6), so toolprompt.py asks the model to
answer with blocks like `<tool_call>{"name": "f", "arguments": {"city": "Paris"}}</tool_call>`.
This module is sans-IO: feed it the upstream text deltas, get text and calls back.

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

    block  := "<tool_call" ws ">" ws OBJECT ws "</tool_call" ws ">"
    fenced := "```" [lang] ws block (ws block)* [ws "```"]        (```json / ```xml, §6.3 item 1)

OBJECT ends at its matching `}`, found by scanning with string and escape awareness; then it must
be a known tool's envelope (see _decode_envelope). A fenced opening is dropped only together with
a block that parsed, so a code fence with no tool call in it stays ordinary text.
"""

from __future__ import annotations

import json
import math
import re
import secrets
from collections.abc import Callable, Collection
from dataclasses import dataclass

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"
_OPEN_TAG = "<tool_call"  # whitespace is tolerated before the '>'
_CLOSE_TAG = "</tool_call"
_FENCE = "```"

# A matcher answers with the index just past what it matched (>= 0) or one of these verdicts.
_MORE = -1  # the text received so far cannot decide yet
_NO = -2  # definitely not a block at this position

_WS = re.compile(r"\s*")
_CANDIDATE = re.compile(r"[<`]")  # the only characters that can start a block or a fenced block
_FENCE_LANG = re.compile(r"[\w+.\-]*")
# Outside strings a JSON object holds only punctuation, whitespace, numbers and true/false/null.
# The next character that is none of those is a quote, a brace, or junk that proves the block
# broken at once: an unbalanced `{` then fails at `</tool_call>` instead of swallowing the answer.
_OUTSIDE_STRING = re.compile(r"[^\s\[\]:,0-9.+\-eEtrufalsn]")
_INSIDE_STRING = re.compile(r'["\\]')


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


@dataclass(slots=True)
class _ObjectScan:
    """Progress in finding where a JSON object ends, kept across deltas so that a long argument
    streamed in small deltas is scanned once rather than once per delta."""

    start: int  # stream offset of the opening '{'
    pos: int = 0  # offset (from start) of the next character to look at
    depth: int = 0
    in_string: bool = False
    result: int = _MORE  # once decided: offset (from start) just past the '}', or _NO


def _advance_scan(buf: str, at: int, scan: _ObjectScan) -> int:
    """Continue `scan` over buf, whose index `at` holds the '{'. Returns the index just past the
    matching '}', _MORE or _NO."""
    if scan.result == _MORE:
        i, n = at + scan.pos, len(buf)
        while scan.result == _MORE:
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
                    scan.result = _NO
            i = j + 1
        scan.pos = i - at
    return scan.result if scan.result < 0 else at + scan.result


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    # 1e999 decodes to inf, which would re-serialise as the non-JSON `Infinity`.
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range")
    return value


def _load_json(text: str) -> object:
    # strict=False lets raw newlines and tabs through inside strings: models write multi-line
    # string arguments that way (grok2api #557, openai-compat.md §2.3 item 15).
    return json.loads(text, strict=False, parse_constant=_reject_constant, parse_float=_finite_float)


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
        envelope = _load_json(raw)
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
                arguments = _load_json(arguments)
            except (ValueError, RecursionError):
                return None
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        return None
    return name, _compact_json(arguments)


def _expect(buf: str, pos: int, word: str) -> int:
    got = buf[pos : pos + len(word)]
    if got == word:
        return pos + len(word)
    return _MORE if len(got) < len(word) and word.startswith(got) else _NO


def _skip_ws(buf: str, pos: int) -> int:
    return _WS.match(buf, pos).end()


def _match_tag(buf: str, pos: int, tag: str) -> int:
    """`tag`, optional whitespace, then '>'."""
    p = _expect(buf, pos, tag)
    if p < 0:
        return p
    p = _skip_ws(buf, p)
    if p == len(buf):
        return _MORE
    return p + 1 if buf[p] == ">" else _NO


class ToolCallStreamParser:
    """Splits a streamed answer into text and the tool calls of its well-formed blocks.

    Only names in `allowed_names` make a call: anything else (unknown name, arguments that are
    not an object, broken JSON, a block still open at finish()) is released as ordinary text,
    verbatim."""

    def __init__(
        self, allowed_names: Collection[str], *, new_id: Callable[[], str] = default_call_id
    ) -> None:
        self._allowed = frozenset(allowed_names)
        self._new_id = new_id
        self._buf = ""  # text received but not yet emitted; starts at stream offset _base
        self._base = 0
        self._in_fence = False  # a fence opened around a parsed block and is not closed yet
        self._scan: _ObjectScan | None = None
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
                p = _skip_ws(buf, i)
                verdict = _expect(buf, p, _FENCE)
                if verdict >= 0:
                    text_from = i = verdict  # the closing fence is markup: drop it
                    self._in_fence = False
                    continue
                if p < len(buf) and buf[p] == "<":
                    verdict, call = self._match_block(buf, p)
                    if verdict >= 0:
                        out.append(self._emit(call))
                        text_from = i = verdict
                        continue
                if verdict == _MORE and not final:
                    break
                self._in_fence = False  # anything else ends the fence; rescan it as plain text
                continue
            m = _CANDIDATE.search(buf, i)
            if m is None:
                i = len(buf)
                break
            j = m.start()
            fenced = buf[j] == "`"
            verdict, call = self._match_fenced(buf, j) if fenced else self._match_block(buf, j)
            if verdict == _MORE and not final:
                i = j  # hold from the possible start
                break
            if verdict < 0:  # not a block: this character is text, look further
                i = j + 1
                continue
            if j > text_from:
                out.append(TextPiece(buf[text_from:j]))
            out.append(self._emit(call))
            text_from = i = verdict
            self._in_fence = fenced
        if i > text_from:
            out.append(TextPiece(buf[text_from:i]))
        if i:
            self._buf = buf[i:]
            self._base += i
        if final:
            self._in_fence = False
        return out

    def _emit(self, call: tuple[str, str] | None) -> CallPiece:
        assert call is not None
        name, arguments = call
        piece = CallPiece(len(self._calls), ToolCall(self._new_id(), name, arguments))
        self._calls.append(piece.call)
        return piece

    def _match_fenced(self, buf: str, pos: int) -> tuple[int, tuple[str, str] | None]:
        p = _expect(buf, pos, _FENCE)
        if p < 0:
            return p, None
        p = _skip_ws(buf, _FENCE_LANG.match(buf, p).end())
        if p == len(buf):
            return _MORE, None
        if buf[p] != "<":
            return _NO, None
        return self._match_block(buf, p)

    def _match_block(self, buf: str, pos: int) -> tuple[int, tuple[str, str] | None]:
        """Match one block at buf[pos]: (index past it, (name, arguments)) or (_MORE/_NO, None)."""
        p = _match_tag(buf, pos, _OPEN_TAG)
        if p < 0:
            return p, None
        p = _skip_ws(buf, p)
        if p == len(buf):
            return _MORE, None
        if buf[p] != "{":
            return _NO, None
        start = self._base + p
        if self._scan is None or self._scan.start != start:
            self._scan = _ObjectScan(start)
        end = _advance_scan(buf, p, self._scan)
        if end < 0:
            return end, None
        call = _decode_envelope(buf[p:end], self._allowed)
        if call is None:
            return _NO, None
        end = _match_tag(buf, _skip_ws(buf, end), _CLOSE_TAG)
        return (end, call) if end >= 0 else (end, None)


def parse_tool_answer(
    text: str, allowed_names: Collection[str]
) -> tuple[str | None, list[ToolCall]]:
    """Non-stream parse of a whole answer: (text outside the blocks, stripped, or None if empty;
    the calls). It is the stream parser fed in one go, so both always agree."""
    parser = ToolCallStreamParser(allowed_names)
    pieces = parser.feed(text) + parser.finish()
    content = "".join(p.text for p in pieces if isinstance(p, TextPiece)).strip()
    return content or None, parser.calls
