"""What the chat service hands a front door: a whole answer, or a stream of pieces then an end.

Door-neutral: content, reasoning and tool calls arrive as composer pieces (compose.py); the end
says why the answer stopped and what it cost. Each front door encodes these into its own wire
(chat chunks, Responses events, Anthropic events); none of them touches the failover runner.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, TypeAlias

from ..errors import ApiError
from ..upstream.events import Source
from .compose import Piece
from .toolcalls import ToolCall

# Why an answer ended: upstream finished ("stop"), a stop string matched ("stop" with
# `stop_sequence` set), max_tokens cut it ("length"), or it is tool calls ("tool_calls",
# "function_call" for chat's legacy functions).
FinishReason: TypeAlias = Literal["stop", "length", "tool_calls", "function_call"]


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class AnswerInfo:
    """Known once the answer starts: ids and the model names for the wire and the headers."""

    id: str                   # the request id (X-Request-Id), hex
    created: int
    model: str                # the model the client asked for, echoed on the wire
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Finished:
    """The answer is complete."""

    finish_reason: FinishReason
    usage: Usage
    stop_sequence: str | None = None           # the stop string that ended it, if one did
    sources: tuple[Source, ...] = ()


@dataclass(frozen=True, slots=True)
class Broken:
    """The answer failed after its first byte: the stream must say so in its own wire and end."""

    error: ApiError


End: TypeAlias = Finished | Broken


@dataclass(frozen=True, slots=True)
class Answer:
    """A whole answer (non-stream)."""

    info: AnswerInfo
    content: str
    reasoning: str
    calls: tuple[ToolCall, ...]
    end: Finished


@dataclass(frozen=True, slots=True)
class Step:
    """What one item of the answer stream adds: pieces, and possibly the end."""

    pieces: list[Piece]
    end: End | None = None
