"""The simulated ``POST /api/agent/ask_proxy`` (genspark-protocol.md §12): decisions and state.

No HTTP here: app.py has already applied the header and cookie gates (User-Agent, Origin and
Referer, session id, the edge scenarios) and decoded the body; this module decides the rest and
returns either a canned HTTP answer or a script for playback.

Order of the remaining checks: tool-protocol messages → 422 (§12.5 E20, every type); for
``ai_chat`` the account's concurrency / rate gate → 429 (E18); then the project (§12.3: unknown
or deleted → 500 E21, another account's → ``foreign_project``); then the cookie scenario, the
quota model and credits; then the answer.

Cookie scenarios on ask_proxy (scenarios.py picks them from the session id prefix):

=====================  ======================================================================
chat-5h-limit          E13 as the answer text, no reset (§12.5)
chat-5h-limit-reset    the §12.5 example: ``session_state.session_limit_message`` + content,
                       ``Resets {time:N}`` with N fixed (simulator start + 3 h)
image-5h-limit         images/videos: empty results + E14 with the same fixed N
approaching-limit      E14a ``Approaching 5-hour limit.``: chat as text, images as limit message
placeholder            E15 on every ask, ``_llm_model`` set
placeholder-sometimes  E15 on every 3rd ai_chat ask of the session id, normal otherwise
credits-gone           chat E16 ``您的积分已用完``; images E16b, empty results
throttle-text          E17 as the answer text
declined               E23 as the answer text, ``_llm_model`` set
cut-before-finished    a normal answer whose body ends after message_result
cut-stream             two content deltas, then the body ends (no message_result)
degraded               ai_chat served by ``gpt-5.4-nano``, named in ``_llm_model``
needs-captcha          ai_chat: degraded unless the body carries a fresh token (old §2.8 habit)
empty-answer           a normal-shaped answer with empty content
error-event            an ``error`` event after message_start (§4.1 E12)
free-limit(-reset), session-limit, overloaded, stall: the older shapes of backend.py, numbered
json-fenced, json-broken-first, json-misfit-first, json-misfit, json-prose: how a structured
                       answer goes wrong (structured.py, issue #11); also on copilot
=====================  ======================================================================

Options (options.py) choose the [I] readings; their defaults follow §12's recommendation.
"""

from __future__ import annotations

import hashlib
import math
import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from . import agent_streams as ags
from . import streams
from .answers import Conversation, compose_answer, message_text, task_outcomes
from .models import (
    DEFAULT_VIDEO_MODEL,
    DEGRADED_CHAT_MODEL,
    FALLBACK_CHAT_MODEL,
    coerce_image_model,
    coerce_image_size,
    image_pixels,
    served_chat_model,
)
from .options import SimOptions
from .playback import Timing
from .scenarios import (
    FOREIGN_PROJECT_FORBIDDEN,
    PROJECT_ERROR,
    TOO_MANY_REQUESTS,
    TOOL_MESSAGES,
    CannedResponse,
    Scenario,
    scenario_for,
)
from .state import MediaKind, MediaTask, Project, SimulatorState, TaskOutcome
from .streams import ChatIds, Step, project_title
from .structured import json_quality
from .wire import AgentAsk, BadBody, Message

FIXED_RESET_AFTER = timedelta(hours=3)  # chat-5h-limit-reset / image-5h-limit: a real, fixed wall
ROLLING_RESET = 5400  # §12.5 E14b: the fake wall of a missing token, always now + 90 min
PROMPT_OVERHEAD = 800  # §12.4.2 example: "Hello" cost 812 prompt tokens (system prompt etc.)
MAX_GENERATIONS = 8
VIDEO_LIMIT_TEXT = "AI Video [5-hour limit](https://www.genspark.ai/helpcenter/membership-plans#usage) reached."  # [I]


@dataclass(frozen=True)
class Streamed:
    """An SSE answer; ``holds_slot``: the app releases the account's concurrency slot when it closes."""

    script: Iterable[Step]
    holds_slot: bool = False


AgentOutcome = CannedResponse | Streamed


def _new_id() -> str:
    return str(uuid.uuid4())


def _uses_tool_protocol(messages: list[Message]) -> bool:
    """§12.5 E20: ``role: "tool"`` or an assistant message with ``tool_calls``."""
    return any(m.role == "tool" or (m.role == "assistant" and m.tool_calls) for m in messages)


def _resends_history(messages: list[Message]) -> bool:
    """§12.3 AX-H Bug #1: more than one non-system message, or any assistant message."""
    rest = [m for m in messages if m.role != "system"]
    return len(rest) > 1 or any(m.role == "assistant" for m in rest)


def _words(text: str) -> int:
    return len(text.split())


def usage_for(prompt_words: int, answer: str) -> dict[str, int]:
    """``_llm_usage`` (§12.4.2 [I: keys]): deterministic, ~4 tokens per 3 words."""
    prompt = PROMPT_OVERHEAD + math.ceil(prompt_words * 4 / 3)
    completion = math.ceil(_words(answer) * 4 / 3)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def file_id_for(task_id: str, role: str) -> str:
    """An 8-character ``[A-Za-z0-9]`` file id (§12.7.4, TT-4's regex), stable per task and role."""
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    number = int.from_bytes(hashlib.sha256(f"{task_id}/{role}".encode()).digest()[:8], "big")
    chars = []
    for _ in range(8):
        number, digit = divmod(number, 62)
        chars.append(alphabet[digit])
    return "".join(chars)


class AgentBackend:
    def __init__(
        self,
        state: SimulatorState,
        options: SimOptions,
        clock: Callable[[], datetime],
    ) -> None:
        self.state = state
        self.options = options
        self.clock = clock
        # The fixed wall of chat-5h-limit-reset / image-5h-limit: the same N on every request.
        self.fixed_reset = int((clock() + FIXED_RESET_AFTER).timestamp())

    def ask(self, ask: AgentAsk, session_id: str, *, base_url: str, timing: Timing, now: float) -> AgentOutcome:
        """Dispatch on ``type`` (§12.11 item 1); ``now`` is trio's clock (gates, token ages)."""
        if ask.type not in ("ai_chat", "image_generation_agent", "video_generation_agent"):
            raise BadBody(f"unsupported type: {ask.type!r}")
        if _uses_tool_protocol(ask.messages):
            return TOOL_MESSAGES  # §12.5 E20
        if ask.type == "ai_chat":
            return self._chat(ask, session_id, timing, now)
        kind: MediaKind = "image" if ask.type == "image_generation_agent" else "video"
        return self._media(ask, session_id, kind, base_url, now)

    # --- projects (§12.3) ---------------------------------------------------------------------

    def _project(self, ask: AgentAsk, session_id: str, model: str) -> CannedResponse | tuple[Project, bool, bool]:
        """(project, is new, is another account's) or the HTTP answer that refuses it."""
        if not ask.project_id:
            project = Project(_new_id(), model, session_id, kind=ask.type, ctime=self._ctime())
            self.state.projects[project.id] = project
            return project, True, False
        project = self.state.projects.get(ask.project_id)
        if project is None:
            if not self.options.adopt_unknown_projects or ask.project_id in self.state.deleted_projects:
                return PROJECT_ERROR  # §12.5 E21: unknown or deleted
            project = Project(ask.project_id, model, session_id, kind=ask.type, ctime=self._ctime())
            self.state.projects[project.id] = project
            return project, True, False
        if project.session_id != session_id:  # §12.3 account pinning
            if self.options.foreign_project == "500":
                return PROJECT_ERROR
            if self.options.foreign_project == "403":
                return FOREIGN_PROJECT_FORBIDDEN
            return project, False, True
        return project, False, False

    def _ctime(self) -> str:
        return self.clock().replace(tzinfo=None).isoformat(timespec="microseconds")

    def _numbered(self, project: Project | None, script: Iterable[Step], timing: Timing | None = None) -> Streamed:
        """§12.4.1: keepalives in place, then ``_event_index`` continuing the project's count."""
        if timing is not None:
            script = ags.with_keepalives(script, timing.answer_delay, timing.heartbeat_interval)
        first = project.event_count if project is not None else 0
        steps, following = ags.numbered(script, first)
        if project is not None:
            project.event_count = following
        return Streamed(steps)

    # --- ai_chat --------------------------------------------------------------------------------

    def _chat(self, ask: AgentAsk, session_id: str, timing: Timing, now: float) -> AgentOutcome:
        opts = self.options
        admitted = self.state.ledger.admit(
            session_id, now, max_concurrent=opts.max_concurrent, penalty=opts.concurrency_penalty,
            rate_per_minute=opts.rate_per_minute,
        )
        if not admitted:
            return TOO_MANY_REQUESTS  # §12.5 E18: no Retry-After
        outcome = self._chat_admitted(ask, session_id, timing, now)
        if isinstance(outcome, CannedResponse):
            self.state.ledger.release(session_id)
            return outcome
        return Streamed(outcome.script, holds_slot=True)

    def _chat_admitted(self, ask: AgentAsk, session_id: str, timing: Timing, now: float) -> AgentOutcome:
        scenario = scenario_for(session_id)
        if scenario is Scenario.OVERLOADED:
            return self._numbered(None, streams.overloaded_script(_new_id(), self.clock()))
        resolved = self._project(ask, session_id, ask.ai_chat_model)
        if isinstance(resolved, CannedResponse):
            return resolved
        project, is_new, foreign = resolved
        project.last_seen_event_indexes.append(ask.last_seen_event_index)
        ids = ChatIds(project.id, _new_id())
        served, label = self._served(ask, scenario, now)
        if foreign:  # foreign_project="empty": AX-H's "empty responses"
            return self._numbered(project, ags.chat_script(ids, self._blank(served)), timing)
        if early := self._older_end(scenario, ids):
            return self._numbered(project, early)
        if signal := self._chat_signal(scenario, session_id, ids, served):
            return self._numbered(project, signal)
        if scenario is Scenario.ERROR_EVENT:
            return self._numbered(project, streams.g2_error_script(ids))
        resent = not is_new and _resends_history(ask.messages)
        if scenario is Scenario.EMPTY_ANSWER or (resent and self.options.resent_history == "blank"):
            return self._numbered(project, ags.chat_script(ids, self._blank(served)), timing)
        if resent:  # resent_history="refusal"
            refusal = ags.ChatReply(ags.REFUSAL_TEXT, served, usage_for(0, ags.REFUSAL_TEXT))
            return self._numbered(project, ags.chat_script(ids, refusal), timing)
        return self._numbered(project, self._answer(ask, scenario, project, is_new, ids, served, label), timing)

    def _served(self, ask: AgentAsk, scenario: Scenario, now: float) -> tuple[str, str]:
        """(``_llm_model``, the label the answer text claims) — §12.8.3, §12.2.5."""
        requested = ask.ai_chat_model
        degraded = scenario is Scenario.DEGRADED or (
            scenario is Scenario.NEEDS_CAPTCHA and not self.state.redeem_token(ask.g_recaptcha_token, now)
        )
        if degraded:
            served = DEGRADED_CHAT_MODEL if requested != DEGRADED_CHAT_MODEL else FALLBACK_CHAT_MODEL
            return served, served
        served = served_chat_model(requested)
        # §12.2.5: MoA only with use_moa_proxy, moa_models, models, and the lead as ai_chat_model.
        if ask.use_moa_proxy and ask.moa_models and ask.models and requested == ask.models[0]:
            return served, "MoA of " + "+".join(ask.models)
        return served, served

    def _blank(self, served: str) -> ags.ChatReply:
        return ags.ChatReply("", served, usage_for(0, ""))

    def _older_end(self, scenario: Scenario, ids: ChatIds) -> list[Step] | None:
        """The pre-§12 abnormal streams, kept selectable on ask_proxy (their G1 shapes)."""
        now = self.clock()
        if scenario is Scenario.FREE_LIMIT:
            return streams.free_limit_script(ids.project_id)
        if scenario is Scenario.FREE_LIMIT_RESET:
            return streams.free_limit_script(ids.project_id, int((now + timedelta(hours=3)).timestamp()))
        if scenario is Scenario.SESSION_LIMIT:
            return streams.session_limit_script(ids.project_id, int((now + timedelta(hours=2)).timestamp()))
        if scenario is Scenario.STALL:
            return streams.stall_script(ids.project_id)
        return None

    def _chat_signal(self, scenario: Scenario, session_id: str, ids: ChatIds, served: str) -> list[Step] | None:
        """§12.5 in-band answers, by cookie scenario, then the quota model, then credits."""
        ask_number = self.state.ledger.count_ask(session_id)
        model_state = {"_llm_model": served}
        if scenario is Scenario.CHAT_5H_LIMIT:
            return ags.signal_script(ids, ags.CHAT_LIMIT_TEXT)  # E13
        if scenario is Scenario.CHAT_5H_LIMIT_RESET:
            return ags.signal_script(ids, ags.with_reset(ags.CHAT_LIMIT_TEXT, self.fixed_reset), limit_field=True)
        if scenario is Scenario.APPROACHING_LIMIT:
            return ags.signal_script(ids, ags.APPROACHING_LIMIT_TEXT)  # E14a
        if scenario is Scenario.PLACEHOLDER or (scenario is Scenario.PLACEHOLDER_SOMETIMES and ask_number % 3 == 0):
            return ags.signal_script(ids, ags.PLACEHOLDER_TEXT, session_state=model_state)  # E15
        if scenario is Scenario.CREDITS_GONE:
            return ags.signal_script(ids, ags.CREDITS_GONE_TEXT)  # E16
        if scenario is Scenario.THROTTLE_TEXT:
            return ags.signal_script(ids, ags.THROTTLE_TEXT)  # E17
        if scenario is Scenario.DECLINED:
            return ags.signal_script(ids, ags.DECLINED_TEXT, session_state=model_state)  # E23
        unix_now = int(self.clock().timestamp())
        if (end := self.state.ledger.window_spent(session_id, unix_now, self.options.five_hour_budget)) is not None:
            return ags.signal_script(ids, ags.with_reset(ags.CHAT_LIMIT_TEXT, end), limit_field=True)  # §12.11 item 8
        if self.state.ledger.credits_left(session_id, self.options.credits) == 0:
            return ags.signal_script(ids, ags.CREDITS_GONE_TEXT)  # §12.11 item 7
        return None

    def _answer(
        self, ask: AgentAsk, scenario: Scenario, project: Project, is_new: bool, ids: ChatIds, served: str, label: str
    ) -> list[Step]:
        conversation = Conversation.from_messages([(m.role, m.content) for m in ask.messages])
        if conversation.json_request is not None:
            project.json_request = conversation.json_request
        elif project.json_request is not None:  # §12.3: the thread still holds the instruction
            conversation = replace(conversation, json_request=project.json_request)
        answer = compose_answer(
            conversation,
            [served],
            search=False,  # §12.4.3: no citations on ai_chat; the preamble is the stream's
            earlier_turns=len(project.turns),
            uploads=self.state.uploads,
            label=label,
            recalled=project.turns[0][0] if project.turns else None,  # §12.3: server-side history
            json_quality=json_quality(scenario.value, first_of_project=not project.turns),
        )
        history_words = sum(_words(user) + _words(reply) for user, reply in project.turns)
        asked_words = sum(_words(message_text(m.content)) for m in ask.messages)
        title = project_title(conversation.question) if is_new else None
        reply = ags.ChatReply(
            answer.text,
            served,
            usage_for(history_words + asked_words, answer.text),
            title=title,
            search_query=conversation.question if ask.ai_chat_enable_search else None,
            thinking=answer.thinking if self.options.readable_reasoning else (),
        )
        script = ags.chat_script(ids, reply, search_variant=self.options.search_variant)
        if scenario is Scenario.CUT_STREAM:
            return streams.cut_stream(script)  # never fully sent: not remembered
        if scenario is Scenario.CUT_BEFORE_FINISHED:
            script = ags.cut_before_finished(script)
        if title is not None:
            project.name = title
        project.turns.append((conversation.question, answer.text))
        self._spend(project.session_id or "", chat=True)
        return script

    def _spend(self, session_id: str, *, chat: bool) -> None:
        self.state.ledger.spend_window(session_id, int(self.clock().timestamp()), self.options.five_hour_budget)
        if chat:  # §12.5: image generation on the agent is free
            self.state.ledger.spend_credit(session_id)

    # --- image and video agents (§12.7) ---------------------------------------------------------

    def _media(self, ask: AgentAsk, session_id: str, kind: MediaKind, base_url: str, now: float) -> AgentOutcome:
        params = ask.model_params
        model = coerce_image_model(params.model) if kind == "image" else params.model or DEFAULT_VIDEO_MODEL
        resolved = self._project(ask, session_id, model)
        if isinstance(resolved, CannedResponse):
            return resolved
        project, _, foreign = resolved
        project.last_seen_event_indexes.append(ask.last_seen_event_index)
        ids = ChatIds(project.id, _new_id())
        field = ags.IMAGE_RESULTS if kind == "image" else ags.VIDEO_RESULTS
        if foreign:
            return self._numbered(project, ags.media_script(ids, field, [], ""))
        scenario = scenario_for(session_id)
        if scenario is Scenario.STALL:
            return self._numbered(project, streams.stall_script(ids.project_id))
        if refusal := self._media_refusal(ask, scenario, session_id, kind, now):
            text, limit_field = refusal
            return self._numbered(project, ags.media_refusal_script(ids, field, text, limit_field=limit_field))
        prompt, references = _prompt_and_references(ask)
        count = 1 if kind == "video" else max(1, min(MAX_GENERATIONS, params.generation_count or 1))
        tasks = [
            self._task(kind, model, prompt, outcome, project, session_id, references, base_url, ask)
            for outcome in task_outcomes(prompt, count)
        ]
        inline = self.options.image_inline or bool(re.search(r"\binline\b", prompt.lower()))
        items = [ags.image_item(t, inline=inline) if kind == "image" else ags.video_item(t, inline=inline) for t in tasks]
        noun = "image" if kind == "image" else "video"
        content = f"I've started generating your {noun}."
        if references:
            content += f" ({references} reference image{'s' if references > 1 else ''} attached.)"
        script = ags.media_script(ids, field, items, content)
        if scenario is Scenario.CUT_STREAM:
            return self._numbered(project, script[:2])  # tasks never announced, so never stored
        for task in tasks:
            self._store(task)
        project.turns.append((prompt, content))
        self._spend(session_id, chat=False)
        return self._numbered(project, script)

    def _media_refusal(
        self, ask: AgentAsk, scenario: Scenario, session_id: str, kind: MediaKind, now: float
    ) -> tuple[str, bool] | None:
        """(text, as session_limit_message?) when the agent refuses (§12.7.2 outcome 3)."""
        limit_text = ags.IMAGE_LIMIT_TEXT if kind == "image" else VIDEO_LIMIT_TEXT
        if scenario is Scenario.IMAGE_5H_LIMIT:
            return ags.with_reset(limit_text, self.fixed_reset), True  # E14, a real wall
        if scenario is Scenario.APPROACHING_LIMIT:
            return ags.APPROACHING_LIMIT_TEXT, True  # E14a
        if scenario is Scenario.CREDITS_GONE:
            return ags.IMAGE_CREDITS_GONE_TEXT, False  # E16b
        unix_now = int(self.clock().timestamp())
        if (end := self.state.ledger.window_spent(session_id, unix_now, self.options.five_hour_budget)) is not None:
            return ags.with_reset(limit_text, end), True  # §12.11 item 8
        # §12.6 / §12.5 E14b: no fresh token → a disguised limit that rolls and consumes nothing.
        # Images only: no source shows the video agent checking a token [I].
        strict = kind == "image" and self.options.image_captcha_strict
        if strict and not self.state.redeem_token(ask.g_recaptcha_token, now):
            return ags.with_reset(limit_text, unix_now + ROLLING_RESET), True
        return None

    def _task(
        self, kind: MediaKind, model: str, prompt: str, outcome: TaskOutcome, project: Project,
        session_id: str, references: int, base_url: str, ask: AgentAsk,
    ) -> MediaTask:
        params = ask.model_params
        task_id = _new_id()
        self.state.agent_tasks_made += 1
        # §12.7.4: "a URL may come back relative": every 2nd agent task does.
        prefix = "" if self.state.agent_tasks_made % 2 == 0 else base_url
        roles = ("watermark", "nowatermark") if kind == "image" else ("video",)
        urls = [f"{prefix}/api/files/s/{file_id_for(task_id, role)}" for role in roles]
        size = coerce_image_size(params.image_size) if kind == "image" else None
        duration = str(params.duration) if params.duration is not None else "5"
        return MediaTask(
            task_id, kind, model, prompt, outcome, project.id, session_id,
            generation="agent",
            image_size=size,
            pixels=image_pixels(size or "auto", params.aspect_ratio),
            duration=duration if kind == "video" else None,
            references=references,
            urls=(urls[0],),
            urls_nowatermark=(urls[-1],) if kind == "image" else (),
        )

    def _store(self, task: MediaTask) -> None:
        self.state.tasks[task.id] = task
        for url in (*task.urls, *task.urls_nowatermark):
            self.state.files[url.rsplit("/", 1)[1]] = ("task", task.id)


def _prompt_and_references(ask: AgentAsk) -> tuple[str, int]:
    """The prompt text and how many ``image_url`` parts (§12.7.5 reference images) came with it."""
    users = [m for m in ask.messages if m.role == "user"]
    content: Any = users[-1].content if users else None
    references = 0
    if isinstance(content, list):
        references = sum(1 for part in content if isinstance(part, dict) and part.get("type") == "image_url")
    prompt = ask.user_s_input or message_text(content)
    return prompt, references
