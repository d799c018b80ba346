"""Answer events → what the client sees: content, reasoning and tool calls (pure).

One composer serves the stream and the non-stream answer, so both say the same thing. It applies,
in order: reasoning presentation (`reasoning_content` field, inline `<think>` tags, or hidden),
tool-call extraction, `stop` strings, the `max_tokens` budget, and the search "Sources" list.
Inline `<think>` tags are always balanced (openai-compat.md §2.4 item 16) and never cut by `stop`
or the budget.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..upstream.events import (
    AnswerEvent,
    ModelsReported,
    ReasoningDelta,
    Source,
    SourcesFound,
    TextDelta,
)
from .textfilters import StopFilter, TokenBudget
from .toolcalls import CallPiece, TextPiece, ToolCall, ToolCallStreamParser
from .usage import TokenCounter

THINK_OPEN = "<think>\n"
THINK_CLOSE = "\n</think>\n\n"


@dataclass(frozen=True, slots=True)
class ComposeOptions:
    reasoning_format: str = "reasoning_content"   # or "think"
    reasoning_hide: bool = False
    stops: tuple[str, ...] = ()
    max_tokens: int | None = None
    tool_names: frozenset[str] | None = None       # None: the request offered no tools
    tool_schemas: Mapping[str, Any] = field(default_factory=dict)  # name -> parameters schema
    single_call: bool = False                       # parallel_tool_calls false / legacy functions
    legacy_functions: bool = False                  # answer in the legacy `function_call` shape
    search_sources: bool = True


@dataclass(frozen=True, slots=True)
class Content:
    text: str


@dataclass(frozen=True, slots=True)
class Reasoning:
    text: str


@dataclass(frozen=True, slots=True)
class Call:
    index: int
    call: ToolCall


Piece = Content | Reasoning | Call


@dataclass(slots=True)
class AnswerComposer:
    options: ComposeOptions
    counter: TokenCounter
    models: tuple[str, ...] = ()
    content: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    calls: list[ToolCall] = field(default_factory=list)
    sources: dict[str, Source] = field(default_factory=dict)
    finish_reason: str = "stop"
    _think_open: bool = False
    _blank: str = ""  # whitespace-only answer text held back while tools are offered
    _stop: StopFilter = field(init=False)
    _budget: TokenBudget = field(init=False)
    _think_budget: TokenBudget | None = field(init=False)
    _tools: ToolCallStreamParser | None = field(init=False)

    def __post_init__(self) -> None:
        self._stop = StopFilter(self.options.stops)
        self._budget = TokenBudget(self.counter, self.options.max_tokens)
        # Inline <think> tags are completion tokens too, and the closing tag always goes out: the
        # block gets a budget of its own that leaves room for it, so completion <= max_tokens.
        self._think_budget = None
        if self.options.reasoning_format == "think" and self.options.max_tokens is not None:
            room = self.options.max_tokens - self.counter.count(THINK_CLOSE)
            self._think_budget = TokenBudget(self.counter, max(room, 0))
        names = self.options.tool_names
        self._tools = ToolCallStreamParser(names, schemas=self.options.tool_schemas) if names is not None else None

    # ---------------------------------------------------------------- input

    def feed(self, event: AnswerEvent) -> list[Piece]:
        if isinstance(event, TextDelta):
            return self._text(event.text)
        if isinstance(event, ReasoningDelta):
            return self._reasoning(event.text)
        if isinstance(event, SourcesFound):
            for source in event.sources:
                self.sources.setdefault(source.link, source)
        elif isinstance(event, ModelsReported):
            self.models = event.models
        return []

    def finish(self) -> list[Piece]:
        out: list[Piece] = []
        if self._tools is not None:
            out += self._tool_pieces(self._tools.finish())
            if not self.calls:
                out += self._content(self._blank)
        if not self._stop.stopped:
            out += self._content(self._stop.flush())
        out += self._close_think()
        if self.sources and self.options.search_sources and not self._cut:
            out += self._content(render_sources(list(self.sources.values())), filtered=False)
        if self.calls:
            self.finish_reason = "function_call" if self.options.legacy_functions else "tool_calls"
        elif self._out_of_tokens:
            self.finish_reason = "length"
        else:
            self.finish_reason = "stop"
        return out

    # ---------------------------------------------------------------- results

    @property
    def content_text(self) -> str:
        return "".join(self.content)

    @property
    def reasoning_text(self) -> str:
        return "".join(self.reasoning)

    def completion_tokens(self) -> tuple[int, int]:
        """(completion tokens, of which reasoning), counted once over what was emitted."""
        reasoning = self.counter.count(self.reasoning_text) if self.reasoning else 0
        calls = sum(self.counter.count(c.name) + self.counter.count(c.arguments) for c in self.calls)
        content = self.counter.count(self.content_text) if self.content else 0
        # Inline <think> reasoning already sits inside the content text.
        separate = 0 if self.options.reasoning_format == "think" else reasoning
        return content + separate + calls, reasoning

    @property
    def stop_sequence(self) -> str | None:
        """The stop string that ended the answer, if one did."""
        return self._stop.matched

    @property
    def cut(self) -> bool:
        """Whether `stop` or `max_tokens` ended the answer before upstream did."""
        return self._cut

    # ---------------------------------------------------------------- internals

    @property
    def _cut(self) -> bool:
        return self._stop.stopped or self._out_of_tokens

    @property
    def _out_of_tokens(self) -> bool:
        return self._budget.exhausted or (self._think_budget is not None and self._think_budget.exhausted)

    def _text(self, text: str) -> list[Piece]:
        out = self._close_think()
        if self._tools is None:
            return out + self._content(text)
        return out + self._tool_pieces(self._tools.feed(text))

    def _tool_pieces(self, pieces: list[TextPiece | CallPiece]) -> list[Piece]:
        # Whitespace around the blocks (the newline between two parallel calls) is layout, not
        # content: it waits for real text, and is dropped when a call comes instead, so an answer
        # of calls only has no content at all (openai-compat.md §2.3 item 14).
        out: list[Piece] = []
        for piece in pieces:
            if isinstance(piece, CallPiece):
                self._blank = ""
                # parallel_tool_calls=false is a promise to the client, not just a hint upstream.
                if not self._cut and not (self.options.single_call and self.calls):
                    self.calls.append(piece.call)
                    out.append(Call(len(self.calls) - 1, piece.call))
            elif not piece.text.strip():
                self._blank += piece.text
            else:
                text, self._blank = self._blank + piece.text, ""
                out += self._content(text)
        return out

    def _content(self, text: str, *, filtered: bool = True) -> list[Piece]:
        if filtered:
            text = self._stop.feed(text)
        text = self._budget.take(text) if text and not self._out_of_tokens else ""
        if not text:
            return []
        self.content.append(text)
        return [Content(text)]

    def _reasoning(self, text: str) -> list[Piece]:
        if self.options.reasoning_hide or not text or self._cut:
            return []
        if self.options.reasoning_format == "think":
            return self._think(text)
        text = self._budget.take(text)
        if not text:
            return []
        self.reasoning.append(text)
        return [Reasoning(text)]

    def _think(self, text: str) -> list[Piece]:
        """Reasoning inline in the content, the opening tag budgeted with the first piece."""
        opening = "" if self._think_open else THINK_OPEN
        block = opening + text
        if self._think_budget is not None:
            block = self._think_budget.take(block)
        block = self._budget.take(block)
        if len(block) <= len(opening):
            return []  # not even the opening tag and a character of reasoning fit
        out: list[Piece] = []
        if opening:
            self._think_open = True
            self.content.append(THINK_OPEN)
            out.append(Content(THINK_OPEN))
        text = block[len(opening):]
        self.reasoning.append(text)
        self.content.append(text)
        out.append(Content(text))
        return out

    def _close_think(self) -> list[Piece]:
        if not self._think_open:
            return []
        self._think_open = False
        self._budget.take(THINK_CLOSE)  # counted, and sent even past the budget: tags stay balanced
        self.content.append(THINK_CLOSE)
        return [Content(THINK_CLOSE)]


def render_sources(sources: list[Source]) -> str:
    """The markdown list appended to `-search` answers."""
    lines = [f"{i}. [{_escape(s.title)}]({s.link})" for i, s in enumerate(sources, 1)]
    return "\n\n**Sources**\n" + "\n".join(lines)


def _escape(title: str) -> str:
    return title.replace("[", "\\[").replace("]", "\\]").replace("\n", " ")
