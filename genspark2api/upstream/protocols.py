"""The two upstream chat generations as two small adapters behind one interface.

- `AiChat`: `POST /api/agent/ask_proxy` with `type: ai_chat`, as genspark-protocol.md §12 shows it
  for September–October 2026 (§12.2 body and headers, §12.3 threads, §12.4 stream). The default.
- `CopilotChat`: the older `POST /api/copilot/ask` with `type: COPILOT_MOA_CHAT` (§2.1, §3). No
  source of §12 uses it any more; it stays as the G1 fallback for accounts where it still answers.

Each builds the upstream body for a `ChatJob` and gives an `AnswerTranslator` that turns upstream
events into `events.AnswerEvent`s. The translator is pure (the clock comes in) and raises
`UpstreamFailure` for in-band errors: the G1 ones (§3.4.6) and the §12.5 answers that are really a
limit, a credit text or a placeholder (signals.py).
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import drift
from .catalog import ModelKind, ModelRoute
from .classify import EMPTY_ANSWER, TRUNCATED, Failure, FailureKind, classify_result
from .events import (
    AnswerDone,
    AnswerEvent,
    ModelServed,
    ModelsReported,
    ProjectStarted,
    ReasoningDelta,
    Source,
    SourcesFound,
    TextDelta,
    ThreadPosition,
    UpstreamFailure,
    UsageReported,
)
from .signals import SignalGate, classify_answer, session_limit
from .sse import UpstreamEvent, decode_json

LIMIT_FIELD = "session_state.session_limit_message"   # §12.4.1, §12.5 E14
SEARCH_QUERIES_FIELD = "session_state.search_queries"  # §12.4.3 variant (b) [I]


@dataclass(slots=True)
class UpstreamMessage:
    role: str                       # system | user | assistant
    content: str | list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Thread:
    """Where a turn goes upstream: a new project (`project_id` None) or the continuation of one.

    `last_event_index` is the highest `_event_index` the project has sent us (§12.3); -1 for a
    new thread.
    """

    project_id: str | None = None
    last_event_index: int = -1

    @property
    def continues(self) -> bool:
        return self.project_id is not None


NEW_THREAD = Thread()


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
    server_keeps_history: bool   # a follow-up sends only the new turn (§12.3) instead of the transcript

    def body(self, job: ChatJob, thread: Thread, recaptcha_token: str | None) -> dict[str, Any]: ...

    def translator(self, job: ChatJob, *, now: float | None = None,
                   accept: frozenset[str] = frozenset()) -> AnswerTranslator: ...


# ------------------------------------------------------------------------------ translation


@dataclass(slots=True)
class AnswerTranslator:
    """Upstream events → answer events, for one attempt. Pure; feed events, then `finish()`.

    `end_on_finished` (ai_chat, §12.4.1): the answer is complete only at `project_field` `status`
    = `FINISHED`, the last event; a stream without it is truncated (§12.10). Without it (G1) the
    `message_result` is the end (§3.1).

    `gate` (ai_chat): the first answer text is held while it could still be a §12.5 signal.
    `search` (§12.4.3): the `I'll search for …` preamble and the `{"queries": […]}` line that the
    model writes before a searched answer are shown as reasoning, not as the answer.
    """

    answer_fields: frozenset[str]
    reasoning_fields: frozenset[str]
    nested_result: bool
    now: float = 0.0
    unpack_detail_answer: bool = False
    end_on_finished: bool = False
    gate: SignalGate | None = None
    search: bool = False
    accept: frozenset[str] = frozenset()   # answers a loose signal match already blamed once (signals.py)
    emitted: list[str] = field(default_factory=list)
    done: bool = False
    result_seen: bool = False
    last_event_index: int = -1
    _emitted_len: int = 0
    _reasoning_field: str | None = None  # the field the last reasoning delta came on
    _preamble: list[str] | None = None   # search preamble being collected (None: not or no more)
    _preamble_raw: str = ""              # the preamble as it came, once recognised
    _note: str = ""                      # the reasoning note of the preamble, not yet sent

    def __post_init__(self) -> None:
        if self.search:
            self._preamble = []

    def feed(self, event: UpstreamEvent) -> list[AnswerEvent]:
        if event.event_index is not None and event.event_index > self.last_event_index:
            self.last_event_index = event.event_index
        kind = event.type
        if kind == "message_field_delta":
            return self._delta(event)
        if kind == "message_field":
            return self._field(event)
        if kind == "project_start" and event.id:
            return [ProjectStarted(event.id)]
        if kind == "message_result":
            return self._result(event)
        if kind == "project_field":
            return self._project_field(event)
        if kind == "error":
            # §2.9 / §4.1 E12 / §12.4.1: the newer generation has an explicit error event.
            raise UpstreamFailure(classify_result(_as_dict(event)) or _generic_error(event))
        drift.unhandled_event(event)   # agent_notification keep-alives (§12.4.1) are known, not reported
        return []

    def finish(self) -> list[AnswerEvent]:
        """At the end of the body. An ai_chat body that closes after its `message_result` but
        before `FINISHED` still delivered the authoritative final text (§12.4.1): the answer
        stands, but without a `ThreadPosition` the turn is not bound, since what the project holds
        is unknown (§12.10). Without a result it is truncated."""
        if not self.done and self.result_seen:
            self.done = True
            return [AnswerDone()]
        if not self.done:
            raise UpstreamFailure(TRUNCATED)
        return []

    # ---------------------------------------------------------------- answer text

    def _text(self, text: str) -> list[AnswerEvent]:
        if not text:
            return []
        if self._preamble is not None:
            return self._search_preamble(text)
        if self.gate is not None:
            text = self.gate.feed(text)
        return self._out(text)

    def _out(self, text: str) -> list[AnswerEvent]:
        if not text:
            return []
        self.emitted.append(text)
        self._emitted_len += len(text)
        return self._with_note([TextDelta(text)])

    def _with_note(self, out: list[AnswerEvent]) -> list[AnswerEvent]:
        """The search note goes out just before the first answer text: reasoning is answer-bearing
        for the failover runner, so sent earlier it would commit the request before the gate has
        decided the answer is not a §12.5 signal."""
        if self._note and any(isinstance(e, TextDelta) for e in out):
            out = [ReasoningDelta(self._note), *out]
            self._note = ""
        return out

    def _search_preamble(self, text: str) -> list[AnswerEvent]:
        """§12.4.3 variant (a): hold text while it may be the preamble; the queries become reasoning."""
        assert self._preamble is not None
        self._preamble.append(text)
        joined = "".join(self._preamble)
        start = joined.lstrip().replace("’", "'").lower()[: len(_PREAMBLE_START)]
        if start != _PREAMBLE_START[: len(start)]:
            self._preamble = None   # diverged: this answer has no preamble
            return self._text(joined)
        if len(start) < len(_PREAMBLE_START):
            return []               # too short to tell
        match = _PREAMBLE.match(joined)
        if match is None:
            if len(joined) > _PREAMBLE_MAX:
                self._preamble = None
                return self._text(joined)
            return []
        self._preamble = None
        self._preamble_raw = joined[: match.end()]
        queries = _queries(match.group("json"))
        self._note = "Searching the web" + (": " + "; ".join(queries) if queries else "") + "\n"
        return self._text(joined[match.end():])

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
        # streaming_markmap, streaming_detail_answer[...], search queries (§12.4.3 b) never join the answer.
        drift.unhandled_field(event)
        return []

    def _field(self, event: UpstreamEvent) -> list[AnswerEvent]:
        name = event.field_name or ""
        value = event.field_value
        if name == LIMIT_FIELD:
            text = limit_text(value)
            if text:
                # §12.5 E14: the limit field is structural; it counts whatever the text says.
                raise UpstreamFailure(session_limit(text, now=self.now))
            return []
        if name == "session_state.models" and isinstance(value, list):
            return [ModelsReported(tuple(str(v) for v in value))]
        if name.endswith("search_status_top_bar_data") and isinstance(value, dict):
            sources = _sources(value)
            return [SourcesFound(sources)] if sources else []
        if name in self.answer_fields and isinstance(value, str) and not self._emitted_len and not self._held:
            # §3.3: o1 / o3-mini-high send the whole answer as one field value (G1). On ai_chat the
            # full `content` field follows the deltas (§12.4.1) and is used only when none came.
            return self._text(value)
        drift.unhandled_field(event)
        return []

    @property
    def _held(self) -> str:
        held = self.gate.holding if self.gate is not None else ""
        return held + ("".join(self._preamble) if self._preamble else "")

    def _result(self, event: UpstreamEvent) -> list[AnswerEvent]:
        failure = classify_result(_as_dict(event))
        if failure is not None:
            raise UpstreamFailure(failure)
        out: list[AnswerEvent] = []
        message = event.message if isinstance(event.message, dict) else {}
        state = message.get("session_state") if isinstance(message.get("session_state"), dict) else {}
        served = state.get("_llm_model") or message.get("_llm_model")   # §12.4.2: look in both places
        if isinstance(served, str) and served:
            out.append(ModelServed(served))
        usage = state.get("_llm_usage") or message.get("_llm_usage")
        if isinstance(usage, dict):
            prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
            if isinstance(prompt, int) and isinstance(completion, int) and prompt >= 0 and completion >= 0:
                out.append(UsageReported(prompt, completion))
        final = _final_text(event, self.nested_result, self.unpack_detail_answer)
        if self._preamble_raw and final.lstrip().startswith(self._preamble_raw.strip()):
            # §12.4.3: whether message.content repeats the search preamble is unknown; it is not answer.
            final = final.lstrip()[len(self._preamble_raw.strip()):].lstrip()
        emitted = "".join(self.emitted)
        held = self._held            # taken before the gate and the preamble filter let go of it
        whole = final or (emitted + held)
        if self.nested_result:
            signal = classify_answer(whole, now=self.now, accept=self.accept)   # §12.10: every message_result
            if signal is not None:
                raise UpstreamFailure(signal)
        self._preamble = None        # the answer ended while we were looking for a preamble
        if self.gate is not None and not self.gate.open:
            self.gate.release()      # not a signal: what it held is answer, told below
        # §12.10: message.content, else the joined deltas (what went out, then what was held).
        if final and final.startswith(emitted) and len(final) > len(emitted):
            out += self._out(final[len(emitted):])
        elif final and not emitted:
            out += self._out(final)
        elif not final and held:
            out += self._out(held)
        out = self._with_note(out)
        if not self._emitted_len:
            raise UpstreamFailure(EMPTY_ANSWER)
        self.result_seen = True
        if not self.end_on_finished:
            self.done = True
            out.append(AnswerDone())
        return out

    def _project_field(self, event: UpstreamEvent) -> list[AnswerEvent]:
        if not self.end_on_finished or event.field_name != "status" or event.field_value != "FINISHED":
            drift.unhandled_event(event)   # `name` (the auto title) is known; anything new is noted once
            return []
        # §12.4.1: FINISHED is the last event. Without a result first there was no answer.
        if not self.result_seen:
            raise UpstreamFailure(EMPTY_ANSWER)
        self.done = True
        return [ThreadPosition(self.last_event_index), AnswerDone()]


_PREAMBLE_START = "i'll search for"
_PREAMBLE_MAX = 4000
# The preamble line, then the JSON object with the queries (§12.4.3 variant a), then the answer.
_PREAMBLE = re.compile(r"\s*I['’]ll search for[^\n{]*?\s*(?P<json>\{\s*\"queries\"\s*:\s*\[.*?\]\s*\})\s*", re.IGNORECASE | re.DOTALL)


def _queries(raw: str) -> list[str]:
    doc = decode_json(raw.encode())
    items = doc.get("queries") if isinstance(doc, dict) else None
    return [q for q in items if isinstance(q, str)] if isinstance(items, list) else []


def limit_text(value: Any) -> str:
    """TT reads the limit field as a string or as an object whose `value` holds it (§12.4.1)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("value"), str):
        return value["value"]
    return ""


def _as_dict(event: UpstreamEvent) -> dict[str, Any]:
    return {
        k: getattr(event, k)
        for k in ("type", "id", "role", "content", "action", "session_state", "message", "error", "status")
        if getattr(event, k) is not None
    }


def _generic_error(event: UpstreamEvent) -> Failure:
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


@dataclass(frozen=True, slots=True)
class CopilotChat:
    """`POST /api/copilot/ask`, `COPILOT_MOA_CHAT` (§2.1). Sends the whole history every turn."""

    name: str = "copilot"
    path: str = "/api/copilot/ask"
    referer: str = "/"
    server_keeps_history: bool = False

    def body(self, job: ChatJob, thread: Thread, recaptcha_token: str | None) -> dict[str, Any]:
        project_id = thread.project_id
        query = f"id={project_id}&type=COPILOT_MOA_CHAT" if project_id else "type=COPILOT_MOA_CHAT"
        messages = [
            {"role": m.role, "content": m.content, "is_prompt": False, "session_state": None} for m in job.messages
        ]
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

    def translator(self, job: ChatJob, *, now: float | None = None,
                   accept: frozenset[str] = frozenset()) -> AnswerTranslator:
        return AnswerTranslator(
            answer_fields=frozenset({"session_state.answer"}),
            reasoning_fields=frozenset({"session_state.answerthink"}),
            nested_result=False,
            now=time.time() if now is None else now,
            unpack_detail_answer=job.route.search,
        )


@dataclass(frozen=True, slots=True)
class AiChat:
    """`POST /api/agent/ask_proxy`, `type: ai_chat` (§12.2)."""

    name: str = "ai_chat"
    path: str = "/api/agent/ask_proxy"
    referer: str = "/agents?type=ai_chat"   # §12.2.1
    server_keeps_history: bool = True       # §12.3

    def body(self, job: ChatJob, thread: Thread, recaptcha_token: str | None) -> dict[str, Any]:
        """The UI body of §12.2.3, in the UI's key order.

        A new thread (`project_id: null`) carries the whole transcript, as SB/AR do; a follow-up
        carries only the new user turn (§12.2.4), since the server keeps the history and a resent
        transcript breaks the answer (§12.3).
        """
        messages: list[dict[str, Any]] = []
        for m in job.messages:
            item: dict[str, Any] = {"role": m.role}
            if m.role == "user":
                item["id"] = str(uuid.uuid4())
            item["content"] = m.content
            if m.role == "user":
                # UI-side fields the browser echoes into every request (§12.2.3, AX-A [O]).
                item.update(pending=True, sendStatus="sending", _deepDiveStateNegContent=content_text(m.content))
            messages.append(item)
        client_message_id = next((m["id"] for m in reversed(messages) if "id" in m), str(uuid.uuid4()))
        route = job.route
        mixture = route.kind is ModelKind.MIXTURE
        members = list(route.upstream)
        body: dict[str, Any] = {
            # §12.2.5: in MoA mode the lead member MUST be ai_chat_model, and `models` MUST be present.
            "ai_chat_model": members[0],
            "ai_chat_enable_search": route.search,
            "ai_chat_disable_personalization": False,
            "use_moa_proxy": mixture,
            "moa_models": members if mixture else [],
        }
        if mixture:
            body["models"] = members
        body.update({
            "writingContent": None,
            "sas_ask_origin": "typed",
            "type": "ai_chat",
            "project_id": thread.project_id,
            "messages": messages,
            "user_s_input": job.last_user_text,
            "client_message_id": client_message_id,
            # §12.6.1: an empty token works for ai_chat.
            "g_recaptcha_token": recaptcha_token or "",
            "is_private": True,
            "push_token": "",
            "session_state": {"steps": [], "messages": messages},
            "last_seen_event_index": thread.last_event_index if thread.continues else -1,
            "chat_session_id": None,
        })
        return body

    def translator(self, job: ChatJob, *, now: float | None = None,
                   accept: frozenset[str] = frozenset()) -> AnswerTranslator:
        return AnswerTranslator(
            answer_fields=frozenset({"content"}),
            # §12.4.4: no readable reasoning is recorded for ai_chat; these stay for accounts that send it.
            reasoning_fields=frozenset({"reasoning_content", "thinking"}),
            nested_result=True,
            now=time.time() if now is None else now,
            unpack_detail_answer=job.route.search,
            end_on_finished=True,
            gate=SignalGate(),
            search=job.route.search,
            accept=accept,
        )


def chat_adapter(protocol: str) -> ChatAdapter:
    return AiChat() if protocol == "ai_chat" else CopilotChat()
