"""The Responses wire, byte for byte: the `response` object and its streaming events (pure).

Shapes follow the openai SDK's types (`openai/types/responses/`): every event is one SSE frame
`event: <type>\\ndata: <json whose "type" is the same>\\n\\n` carrying a `sequence_number` that
counts every event of the stream from 0. A stream is

    response.created, response.in_progress,
    per output item: output_item.added, then
      message:       content_part.added, output_text.delta..., output_text.done, content_part.done
      reasoning:     reasoning_summary_part.added, reasoning_summary_text.delta..., .done, part.done
      function_call: function_call_arguments.delta, function_call_arguments.done
    output_item.done,
    response.completed (or response.incomplete for a max_output_tokens cut) with the whole
    output and usage; or, when upstream fails after the first byte, response.failed with
    `error{code, message}`, and the stream ends.

The same encoder builds the non-stream body (pieces in, events discarded, `final` kept), so both
say the same thing. Ids and clock come from the caller, so a whole stream is testable to the byte.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import msgspec
from msgspec import Raw, Struct

from ..core.answer import Finished, Usage
from ..core.compose import Call, Content, Piece, Reasoning
from ..errors import ApiError
from ..upstream.events import Source
from .responses_door import FunctionCall, Message, OutputText, new_item_id

KEEPALIVE = b": keep-alive\n\n"

# ---------------------------------------------------------------- output items


class UrlCitation(Struct, tag_field="type", tag="url_citation"):
    start_index: int
    end_index: int
    title: str
    url: str


class SummaryText(Struct, tag_field="type", tag="summary_text"):
    text: str


class ReasoningItem(Struct, tag_field="type", tag="reasoning"):
    id: str
    summary: list[SummaryText]


OutputItem = Message | ReasoningItem | FunctionCall


# ---------------------------------------------------------------- the response object


class InputTokensDetails(Struct):
    cached_tokens: int = 0
    cache_write_tokens: int = 0   # required by the openai SDK's types since 3.x


class OutputTokensDetails(Struct):
    reasoning_tokens: int = 0


class ResponseUsage(Struct):
    input_tokens: int
    input_tokens_details: InputTokensDetails
    output_tokens: int
    output_tokens_details: OutputTokensDetails
    total_tokens: int


class ResponseError(Struct):
    code: str
    message: str


class IncompleteDetails(Struct):
    reason: str


class ReasoningEcho(Struct):
    effort: str | None = None
    summary: str | None = None


class ResponseEcho(Struct):
    """What the response object repeats of the request (OpenAI echoes these on every response)."""

    instructions: str | None = None
    max_output_tokens: int | None = None
    parallel_tool_calls: bool = True
    previous_response_id: str | None = None
    reasoning: ReasoningEcho = msgspec.field(default_factory=ReasoningEcho)
    store: bool = True
    temperature: float | None = None
    text: Raw = Raw(b'{"format":{"type":"text"}}')
    tool_choice: Raw = Raw(b'"auto"')
    tools: list[Raw] = []
    top_p: float | None = None
    truncation: str = "disabled"
    user: str | None = None
    metadata: dict[str, str] = {}


class ResponseObject(Struct):
    id: str
    object: str
    created_at: int
    status: str
    background: bool
    completed_at: int | None
    error: ResponseError | None
    incomplete_details: IncompleteDetails | None
    instructions: str | None
    max_output_tokens: int | None
    model: str
    output: list[OutputItem]
    parallel_tool_calls: bool
    previous_response_id: str | None
    reasoning: ReasoningEcho
    store: bool
    temperature: float | None
    text: Raw
    tool_choice: Raw
    tools: list[Raw]
    top_p: float | None
    truncation: str
    usage: ResponseUsage | None
    user: str | None
    metadata: dict[str, str]


class DeletedResponse(Struct):
    id: str
    object: str = "response"
    deleted: bool = True


class ItemList(Struct, tag_field="object", tag="list"):
    data: list[Raw]
    first_id: str | None
    last_id: str | None
    has_more: bool


# ---------------------------------------------------------------- events


class ResponseEvent(Struct, tag_field="type", tag="response.created"):
    sequence_number: int
    response: ResponseObject


class InProgress(ResponseEvent, tag="response.in_progress"):
    pass


class Completed(ResponseEvent, tag="response.completed"):
    pass


class Incomplete(ResponseEvent, tag="response.incomplete"):
    pass


class Failed(ResponseEvent, tag="response.failed"):
    pass


class ItemAdded(Struct, tag_field="type", tag="response.output_item.added"):
    sequence_number: int
    output_index: int
    item: OutputItem


class ItemDone(ItemAdded, tag="response.output_item.done"):
    pass


class PartAdded(Struct, tag_field="type", tag="response.content_part.added"):
    sequence_number: int
    item_id: str
    output_index: int
    content_index: int
    part: OutputText


class PartDone(PartAdded, tag="response.content_part.done"):
    pass


class TextDelta(Struct, tag_field="type", tag="response.output_text.delta"):
    sequence_number: int
    item_id: str
    output_index: int
    content_index: int
    delta: str
    logprobs: list[Any] = []


class TextDone(Struct, tag_field="type", tag="response.output_text.done"):
    sequence_number: int
    item_id: str
    output_index: int
    content_index: int
    text: str
    logprobs: list[Any] = []


class SummaryPartAdded(Struct, tag_field="type", tag="response.reasoning_summary_part.added"):
    sequence_number: int
    item_id: str
    output_index: int
    summary_index: int
    part: SummaryText


class SummaryPartDone(SummaryPartAdded, tag="response.reasoning_summary_part.done"):
    pass


class SummaryTextDelta(Struct, tag_field="type", tag="response.reasoning_summary_text.delta"):
    sequence_number: int
    item_id: str
    output_index: int
    summary_index: int
    delta: str


class SummaryTextDone(Struct, tag_field="type", tag="response.reasoning_summary_text.done"):
    sequence_number: int
    item_id: str
    output_index: int
    summary_index: int
    text: str


class ArgumentsDelta(Struct, tag_field="type", tag="response.function_call_arguments.delta"):
    sequence_number: int
    item_id: str
    output_index: int
    delta: str


class ArgumentsDone(Struct, tag_field="type", tag="response.function_call_arguments.done"):
    sequence_number: int
    item_id: str
    output_index: int
    arguments: str


encoder = msgspec.json.Encoder()


def event_frame(event: Struct) -> bytes:
    kind = type(event).__struct_config__.tag
    return b"event: " + str(kind).encode() + b"\ndata: " + encoder.encode(event) + b"\n\n"


def wire_usage(usage: Usage) -> ResponseUsage:
    return ResponseUsage(usage.prompt_tokens, InputTokensDetails(), usage.completion_tokens,
                         OutputTokensDetails(usage.reasoning_tokens), usage.total_tokens)


def failure_code(error: ApiError) -> str:
    """OpenAI's `response.failed` vocabulary: clients retry `rate_limit_exceeded` with backoff
    (Codex does) and treat `server_error` as retryable too; our own code goes into the message."""
    return "rate_limit_exceeded" if error.status == 429 else "server_error"


def citations(text: str, sources: Iterable[Source]) -> list[UrlCitation]:
    """`url_citation` annotations: the span of each source's markdown link in the text (the
    SEARCH_SOURCES list), or an empty span at the end when the text does not show the link."""
    out = []
    for source in sources:
        at = text.find(f"]({source.link})")
        start = text.rfind("[", 0, at) if at >= 0 else -1
        if start >= 0:
            out.append(UrlCitation(start, at + len(source.link) + 3, source.title, source.link))
        else:
            out.append(UrlCitation(len(text), len(text), source.title, source.link))
    return out


@dataclass(slots=True)
class _Open:
    """The output item being written: a message or a reasoning summary, its text so far."""

    kind: str   # "message" | "reasoning"
    id: str
    index: int
    texts: list[str]


class ResponseEncoder:
    """One response's events, in order, with the output it has built so far (pure)."""

    def __init__(
        self, response_id: str, created_at: int, model: str, echo: ResponseEcho,
        *, new_id: Callable[[str], str] = new_item_id,
    ) -> None:
        self.id = response_id
        self.created_at = created_at
        self.model = model
        self.echo = echo
        self.new_id = new_id
        self.output: list[OutputItem] = []
        self.final: ResponseObject | None = None   # the response as it ended (completed, incomplete, failed)
        self._seq = 0
        self._open: _Open | None = None

    # ------------------------------------------------------------------ events

    def _next(self) -> int:
        seq, self._seq = self._seq, self._seq + 1
        return seq

    def response(self, status: str, *, usage: ResponseUsage | None = None, error: ResponseError | None = None,
                 incomplete: IncompleteDetails | None = None, completed_at: int | None = None) -> ResponseObject:
        e = self.echo
        return ResponseObject(
            self.id, "response", self.created_at, status, False, completed_at, error, incomplete,
            e.instructions, e.max_output_tokens, self.model, list(self.output), e.parallel_tool_calls,
            e.previous_response_id, e.reasoning, e.store, e.temperature, e.text, e.tool_choice, e.tools,
            e.top_p, e.truncation, usage, e.user, e.metadata,
        )

    def opening(self) -> bytes:
        created = self.response("in_progress")
        return (event_frame(ResponseEvent(self._next(), created))
                + event_frame(InProgress(self._next(), created)))

    def pieces(self, pieces: Iterable[Piece]) -> bytes:
        out = bytearray()
        for piece in pieces:
            if isinstance(piece, Content):
                out += self._text("message", piece.text)
            elif isinstance(piece, Reasoning):
                out += self._text("reasoning", piece.text)
            elif isinstance(piece, Call):
                out += self._close("completed") + self._call(piece)
        return bytes(out)

    def finished(self, end: Finished, *, completed_at: int | None = None) -> bytes:
        cut = end.finish_reason == "length"
        status = "incomplete" if cut else "completed"
        out = b""
        if not self.output and self._open is None:
            out += self._begin("message")   # every answer has a message, even an empty one
        out += self._close(status, end.sources)
        usage = wire_usage(end.usage)
        if cut:
            self.final = self.response("incomplete", usage=usage, incomplete=IncompleteDetails("max_output_tokens"))
            return out + event_frame(Incomplete(self._next(), self.final))
        self.final = self.response("completed", usage=usage, completed_at=completed_at or self.created_at)
        return out + event_frame(Completed(self._next(), self.final))

    def broken(self, error: ApiError) -> bytes:
        if self._open is not None:
            self._freeze(self._open, "incomplete")
            self._open = None
        message = f"{error.message} ({error.code})" if error.code else error.message
        self.final = self.response("failed", error=ResponseError(failure_code(error), message))
        return event_frame(Failed(self._next(), self.final))

    # ------------------------------------------------------------------ items

    def _text(self, kind: str, text: str) -> bytes:
        out = b""
        if self._open is None or self._open.kind != kind:
            out = self._close("completed") + self._begin(kind)
        item = self._open
        assert item is not None
        item.texts.append(text)
        if kind == "message":
            return out + event_frame(TextDelta(self._next(), item.id, item.index, 0, text))
        return out + event_frame(SummaryTextDelta(self._next(), item.id, item.index, 0, text))

    def _begin(self, kind: str) -> bytes:
        index = len(self.output)
        if kind == "message":
            item = _Open(kind, self.new_id("msg"), index, [])
            self._open = item
            return (event_frame(ItemAdded(self._next(), index, Message(item.id, "assistant", [], "in_progress")))
                    + event_frame(PartAdded(self._next(), item.id, index, 0, OutputText(""))))
        item = _Open(kind, self.new_id("rs"), index, [])
        self._open = item
        return (event_frame(ItemAdded(self._next(), index, ReasoningItem(item.id, [])))
                + event_frame(SummaryPartAdded(self._next(), item.id, index, 0, SummaryText(""))))

    def _freeze(self, item: _Open, status: str, sources: Iterable[Source] = ()) -> OutputItem:
        text = "".join(item.texts)
        done: OutputItem
        if item.kind == "message":
            done = Message(item.id, "assistant", [OutputText(text, citations(text, sources))], status)
        else:
            done = ReasoningItem(item.id, [SummaryText(text)])
        self.output.append(done)
        return done

    def _close(self, status: str, sources: Iterable[Source] = ()) -> bytes:
        item = self._open
        if item is None:
            return b""
        self._open = None
        done = self._freeze(item, status, sources)
        if isinstance(done, Message):
            part = done.content[0]
            assert isinstance(part, OutputText)
            return (event_frame(TextDone(self._next(), item.id, item.index, 0, part.text))
                    + event_frame(PartDone(self._next(), item.id, item.index, 0, part))
                    + event_frame(ItemDone(self._next(), item.index, done)))
        text = done.summary[0].text if isinstance(done, ReasoningItem) else ""
        return (event_frame(SummaryTextDone(self._next(), item.id, item.index, 0, text))
                + event_frame(SummaryPartDone(self._next(), item.id, item.index, 0, SummaryText(text)))
                + event_frame(ItemDone(self._next(), item.index, done)))

    def _call(self, piece: Call) -> bytes:
        index = len(self.output)
        call = piece.call
        item_id = self.new_id("fc")
        added = FunctionCall(call.id, call.name, "", item_id, "in_progress")
        done = FunctionCall(call.id, call.name, call.arguments, item_id, "completed")
        self.output.append(done)
        return (event_frame(ItemAdded(self._next(), index, added))
                + event_frame(ArgumentsDelta(self._next(), item_id, index, call.arguments))
                + event_frame(ArgumentsDone(self._next(), item_id, index, call.arguments))
                + event_frame(ItemDone(self._next(), index, done)))


def answer_pieces(content: str, reasoning: str, calls: Iterable[Any]) -> list[Piece]:
    """A whole answer as the pieces a stream of it would have had: reasoning, text, calls."""
    pieces: list[Piece] = []
    if reasoning:
        pieces.append(Reasoning(reasoning))
    if content:
        pieces.append(Content(content))
    pieces += [Call(i, call) for i, call in enumerate(calls)]
    return pieces
