"""The two upstream chat generations as two small adapters behind one interface.

- `CopilotChat`: the older `POST /api/copilot/ask` with `type: COPILOT_MOA_CHAT`
  (genspark-protocol.md §2.1, §3).
- `AiChat`: the newer `POST /api/agent/ask_proxy` with `type: ai_chat` (§2.9).

Each builds the upstream body for a `ChatJob` and gives an `AnswerTranslator` that turns upstream
events into `events.AnswerEvent`s. The translator is pure and raises `UpstreamFailure` for in-band
errors, which Genspark sends inside a 200 stream (§3.4.6).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import drift
from .catalog import ModelKind, ModelRoute
from .classify import EMPTY_ANSWER, TRUNCATED, classify_result
from .events import (
    AnswerDone,
    AnswerEvent,
    ModelsReported,
    ProjectStarted,
    ReasoningDelta,
    Source,
    SourcesFound,
    TextDelta,
    UpstreamFailure,
)
from .sse import UpstreamEvent, decode_json


@dataclass(slots=True)
class UpstreamMessage:
    role: str                       # system | user | assistant
    content: str | list[dict[str, Any]]


@dataclass(slots=True)
class ChatJob:
    route: ModelRoute
    messages: list[UpstreamMessage]

    @property
    def last_user_text(self) -> str:
        for message in reversed(self.messages):
            if message.role == "user":
                return content_text(message.content)
        return ""


def content_text(content: str | list[dict[str, Any]]) -> str:
    if isinstance(content, str):
        return content
    return "\n".join(p.get("text", "") for p in content if p.get("type") == "text")


class ChatAdapter(Protocol):
    name: str
    path: str
    referer: str

    def body(self, job: ChatJob, project_id: str | None, recaptcha_token: str | None) -> dict[str, Any]: ...

    def translator(self, job: ChatJob) -> AnswerTranslator: ...


# ------------------------------------------------------------------------------ translation


@dataclass(slots=True)
class AnswerTranslator:
    """Upstream events → answer events, for one attempt. Pure; feed events, then `finish()`."""

    answer_fields: frozenset[str]
    reasoning_fields: frozenset[str]
    nested_result: bool
    unpack_detail_answer: bool = False
    emitted: list[str] = field(default_factory=list)
    done: bool = False
    _emitted_len: int = 0
    _reasoning_field: str | None = None  # the field the last reasoning delta came on

    def feed(self, event: UpstreamEvent) -> list[AnswerEvent]:
        kind = event.type
        if kind == "message_field_delta":
            return self._delta(event)
        if kind == "message_field":
            return self._field(event)
        if kind == "project_start" and event.id:
            return [ProjectStarted(event.id)]
        if kind == "message_result":
            return self._result(event)
        if kind == "error":
            # §2.9 / §4.1 E12: the newer generation has an explicit error event.
            raise UpstreamFailure(classify_result(_as_dict(event)) or _generic_error(event))
        drift.unhandled_event(event)
        return []

    def finish(self) -> list[AnswerEvent]:
        if not self.done:
            raise UpstreamFailure(TRUNCATED)
        return []

    def _text(self, text: str) -> list[AnswerEvent]:
        if not text:
            return []
        self.emitted.append(text)
        self._emitted_len += len(text)
        return [TextDelta(text)]

    def _delta(self, event: UpstreamEvent) -> list[AnswerEvent]:
        name = event.field_name or ""
        delta = event.delta if isinstance(event.delta, str) else ""
        if name in self.answer_fields:
            return self._text(delta)
        if name in self.reasoning_fields or name.startswith("session_state.layer"):
            # §3.3: Mixture-of-Agents layers are each model's draft: reasoning, not answer. Each
            # layer (and the thinking after them) starts a paragraph, so the drafts don't run together.
            if not delta:
                return []
            if self._reasoning_field not in (None, name):
                delta = "\n\n" + delta
            self._reasoning_field = name
            return [ReasoningDelta(delta)]
        # streaming_markmap, streaming_detail_answer[...] and friends never join the answer (§3.4.3).
        drift.unhandled_field(event)
        return []

    def _field(self, event: UpstreamEvent) -> list[AnswerEvent]:
        name = event.field_name or ""
        value = event.field_value
        if name == "session_state.models" and isinstance(value, list):
            return [ModelsReported(tuple(str(v) for v in value))]
        if name.endswith("search_status_top_bar_data") and isinstance(value, dict):
            sources = _sources(value)
            return [SourcesFound(sources)] if sources else []
        if name in self.answer_fields and isinstance(value, str) and not self._emitted_len:
            # §3.3: o1 / o3-mini-high send the whole answer as one field value.
            return self._text(value)
        drift.unhandled_field(event)
        return []

    def _result(self, event: UpstreamEvent) -> list[AnswerEvent]:
        failure = classify_result(_as_dict(event))
        if failure is not None:
            raise UpstreamFailure(failure)
        final = _final_text(event, self.nested_result, self.unpack_detail_answer)
        out: list[AnswerEvent] = []
        emitted = "".join(self.emitted)
        if final and final.startswith(emitted) and len(final) > len(emitted):
            out += self._text(final[len(emitted):])
        elif final and not emitted:
            out += self._text(final)
        if not self._emitted_len:
            raise UpstreamFailure(EMPTY_ANSWER)
        self.done = True
        out.append(AnswerDone())
        return out


def _as_dict(event: UpstreamEvent) -> dict[str, Any]:
    return {
        k: getattr(event, k)
        for k in ("type", "id", "role", "content", "action", "session_state", "message", "error", "status")
        if getattr(event, k) is not None
    }


def _generic_error(event: UpstreamEvent) -> Any:
    from .classify import Failure, FailureKind

    text = str(event.error or event.content or event.message or "upstream error event")
    return Failure(FailureKind.NETWORK, "upstream_error_event", f"Genspark sent an error event: {text[:200]}")


def _final_text(event: UpstreamEvent, nested: bool, unpack_detail: bool) -> str:
    content = event.content
    if nested and isinstance(event.message, dict) and isinstance(event.message.get("content"), str):
        content = event.message["content"] or content
    if not isinstance(content, str):
        return ""
    if unpack_detail and content.lstrip().startswith("{"):
        # §3.4.3: `o1` search answers carry a JSON document with `detailAnswer` in `content`.
        doc = decode_json(content.encode())
        if isinstance(doc, dict) and isinstance(doc.get("detailAnswer"), str):
            return doc["detailAnswer"]
    return content


def _sources(value: dict[str, Any]) -> tuple[Source, ...]:
    seen: dict[str, Source] = {}
    for item in value.get("search_results") or ():
        if isinstance(item, dict) and isinstance(item.get("link"), str) and item["link"]:
            title = item.get("title") if isinstance(item.get("title"), str) else item["link"]
            seen.setdefault(item["link"], Source(title.strip() or item["link"], item["link"]))
    return tuple(seen.values())


# ------------------------------------------------------------------------------ adapters


def _is_mixture(route: ModelRoute) -> bool:
    return route.kind is ModelKind.MIXTURE


@dataclass(frozen=True, slots=True)
class CopilotChat:
    """`POST /api/copilot/ask`, `COPILOT_MOA_CHAT` (§2.1)."""

    name: str = "copilot"
    path: str = "/api/copilot/ask"
    referer: str = "/"

    def body(self, job: ChatJob, project_id: str | None, recaptcha_token: str | None) -> dict[str, Any]:
        query = f"id={project_id}&type=COPILOT_MOA_CHAT" if project_id else "type=COPILOT_MOA_CHAT"
        r1 = job.route.upstream == ("deep-seek-r1",)
        messages = []
        for m in job.messages:
            role, session_state = m.role, None
            if r1 and role == "system":
                role = "user"  # §2.1: deep-seek-r1 takes no system role
            if r1 and role == "assistant":
                session_state = {"models": ["deep-seek-r1"], "layers": 0, "answer": "", "answer_is_finished": False}
            messages.append({"role": role, "content": m.content, "is_prompt": False, "session_state": session_state})
        body: dict[str, Any] = {
            "action_params": {},
            "current_query_string": query,
            "extra_data": {
                "models": list(job.route.upstream),
                "request_web_knowledge": job.route.search,
                "run_with_another_model": False,
                "writingContent": None,
            },
            "messages": messages,
            "type": "COPILOT_MOA_CHAT",
        }
        if recaptcha_token is not None:
            body["g_recaptcha_token"] = recaptcha_token
        return body

    def translator(self, job: ChatJob) -> AnswerTranslator:
        return AnswerTranslator(
            answer_fields=frozenset({"session_state.answer"}),
            reasoning_fields=frozenset({"session_state.answerthink"}),
            nested_result=False,
            unpack_detail_answer=job.route.search,
        )


@dataclass(frozen=True, slots=True)
class AiChat:
    """`POST /api/agent/ask_proxy`, `type: ai_chat` (§2.9)."""

    name: str = "ai_chat"
    path: str = "/api/agent/ask_proxy"
    referer: str = "/agents?type=ai_chat"

    def body(self, job: ChatJob, project_id: str | None, recaptcha_token: str | None) -> dict[str, Any]:
        messages = []
        for m in job.messages:
            item: dict[str, Any] = {"role": m.role}
            if m.role == "user":
                item["id"] = str(uuid.uuid4())
            item["content"] = m.content
            if project_id:
                item["project_id"] = project_id
            messages.append(item)
        return {
            "type": "ai_chat",
            "ai_chat_model": ",".join(job.route.upstream),
            "ai_chat_enable_search": job.route.search,
            "ai_chat_disable_personalization": False,
            "use_moa_proxy": False,
            "moa_models": [],
            "writingContent": None,
            "project_id": project_id,
            "messages": messages,
            "user_s_input": job.last_user_text,
            "is_private": True,
            "push_token": "",
            "session_state": {"steps": [], "messages": messages},
            # §2.8: an empty string is reported to work on ai_chat.
            "g_recaptcha_token": recaptcha_token or "",
        }

    def translator(self, job: ChatJob) -> AnswerTranslator:
        return AnswerTranslator(
            answer_fields=frozenset({"content"}),
            reasoning_fields=frozenset({"reasoning_content", "thinking"}),
            nested_result=True,
            unpack_detail_answer=job.route.search,
        )


def chat_adapter(protocol: str) -> ChatAdapter:
    return AiChat() if protocol == "ai_chat" else CopilotChat()
