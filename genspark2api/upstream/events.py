"""What an upstream answer means, independent of the protocol generation that carried it.

The protocol adapters turn upstream events into these; the failover runner, the OpenAI chunk
composer and the image/video services only ever see these.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .classify import Failure


class UpstreamFailure(Exception):
    """An attempt failed; `failure` decides the cookie's fate and the client's answer."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(f"{failure.code}: {failure.detail}")
        self.failure = failure


@dataclass(frozen=True, slots=True)
class ProjectStarted:
    project_id: str


@dataclass(frozen=True, slots=True)
class ModelsReported:
    """`session_state.models`: the model(s) that really answered (silent downgrades, §11)."""

    models: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ModelServed:
    """`_llm_model` of an ai_chat result: the model that really answered (§12.4.2, §12.8.3)."""

    model: str


@dataclass(frozen=True, slots=True)
class UsageReported:
    """`_llm_usage` of an ai_chat result: Genspark's own token counts (§12.4.2)."""

    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True, slots=True)
class ThreadPosition:
    """The highest `_event_index` of a finished turn: the next turn's `last_seen_event_index` (§12.3)."""

    event_index: int


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    text: str


@dataclass(frozen=True, slots=True)
class Source:
    title: str
    link: str


@dataclass(frozen=True, slots=True)
class SourcesFound:
    sources: tuple[Source, ...]


@dataclass(frozen=True, slots=True)
class AnswerDone:
    """The final result arrived: the answer is complete."""


@dataclass(frozen=True, slots=True)
class TasksAccepted:
    """Upstream accepted generation tasks (§12.7.2): the request is committed to this cookie, since
    a resubmission elsewhere would spend credits twice."""

    task_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class MediaReady:
    """Generated images or videos (one attempt's whole result)."""

    urls: tuple[str, ...]
    failed: tuple[str, ...] = ()          # human-readable reasons of tasks that did not succeed
    project_id: str | None = None
    extra: dict = field(default_factory=dict)


AnswerEvent = (
    ProjectStarted | ModelsReported | ModelServed | UsageReported | ThreadPosition
    | TextDelta | ReasoningDelta | SourcesFound | AnswerDone | TasksAccepted | MediaReady
)


def is_answer_bearing(event: object) -> bool:
    """Events after which a failover would lose something the client may already have seen."""
    return isinstance(event, TextDelta | ReasoningDelta | AnswerDone | TasksAccepted | MediaReady)
