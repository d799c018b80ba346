"""What a client asked, whichever front door it came through.

Each front door (chat completions, Responses, Anthropic Messages) parses its request into one
`Conversation`: the turns, the tools and how they may be used, the output format, the limits and
the reasoning wish. The chat service, the composer and the upstream adapters only ever see this,
so a rule about turns, tools or media is written once (STYLE.md, "one neutral middle").

Where the client put something (`messages[2].content[0]`, `input[1].content[0]`) travels with it
as `param`, so an error found in the middle still names the client's own parameter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeAlias

from ..errors import ApiError, bad_request
from ..upstream.catalog import ModelRoute
from .toolcalls import ToolCall
from .toolprompt import FunctionSpec, ToolChoice

Role: TypeAlias = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True, slots=True)
class Text:
    text: str


@dataclass(frozen=True, slots=True)
class MediaRef:
    """An image or file the client sent, still to be fetched or decoded (media_prep.py)."""

    kind: Literal["image", "file"]
    url: str                   # a data: URI or an http(s) URL
    param: str                 # where the client put it, for errors
    filename: str | None = None


Part: TypeAlias = Text | MediaRef


@dataclass(frozen=True, slots=True)
class Turn:
    """One message of the conversation.

    `system` turns carry instructions (OpenAI `developer`, Anthropic `system`, Responses
    `instructions`). An assistant turn may carry the tool calls it made; a `tool` turn is the
    result of one call, `call_id` naming it and `name` the function when known.
    """

    role: Role
    parts: tuple[Part, ...] = ()
    calls: tuple[ToolCall, ...] = ()
    call_id: str | None = None
    name: str | None = None
    is_error: bool = False

    @property
    def text(self) -> str:
        return "\n".join(p.text for p in self.parts if isinstance(p, Text))

    @property
    def media(self) -> tuple[MediaRef, ...]:
        return tuple(p for p in self.parts if isinstance(p, MediaRef))


def text_turn(role: Role, text: str) -> Turn:
    return Turn(role, (Text(text),) if text else ())


@dataclass(frozen=True, slots=True)
class ToolSetup:
    functions: tuple[FunctionSpec, ...]
    choice: ToolChoice
    parallel: bool
    legacy: bool = False   # chat's `functions`/`function_call`: one call, in the legacy shape

    @property
    def names(self) -> frozenset[str]:
        return frozenset(f.name for f in self.functions)

    @property
    def offered(self) -> bool:
        return bool(self.functions) and self.choice != "none"


@dataclass(frozen=True, slots=True)
class OutputFormat:
    """A structured answer: any JSON object, or one that fits `schema` (structured.py)."""

    kind: Literal["json_object", "json_schema"]
    schema: dict | None = None
    name: str | None = None
    strict: bool = False
    param: str = "response_format"   # the client's parameter, for errors
    description: str | None = None   # what the schema is for, shown to the model


# How reasoning is shown: as the operator set it (REASONING_FORMAT / REASONING_HIDE, chat
# completions' knobs), as separate reasoning pieces (Responses summaries, Anthropic thinking
# blocks), or not at all (the client did not ask for it).
ReasoningWish: TypeAlias = Literal["settings", "separate", "hidden"]


@dataclass(frozen=True, slots=True)
class Conversation:
    route: ModelRoute
    turns: tuple[Turn, ...]
    stream: bool
    stops: tuple[str, ...] = ()
    max_tokens: int | None = None
    tools: ToolSetup | None = None
    output: OutputFormat | None = None
    reasoning: ReasoningWish = "settings"

    @property
    def media(self) -> list[MediaRef]:
        return [ref for turn in self.turns for ref in turn.media]


def media_error(ref: MediaRef, reason: str) -> ApiError:
    return bad_request(f"{ref.param}: {reason}", param=ref.param, code="invalid_media")
