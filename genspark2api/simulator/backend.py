"""The simulated Genspark backend: decides which script answers a request and updates the state.

No HTTP here: app.py decodes requests and plays the scripts this module returns. Each public
method is one upstream call (genspark-protocol.md §2).

Per-cookie stream scenarios (scenarios.py picks them from the session_id prefix):

=================  ==========================================================================
free-limit         project_start, then the exact E5 quota line (§3.4.6)
free-limit-reset   the same, its content text ending in ``{time:<now+3h>}`` [I]
flaky              the first ask of the session id gets the E3 rate limit (429 ``Rate limit
                   exceeded cf1``), every later one is normal; remembered per session id
session-limit      project_start, then an ACTION_SESSION_LIMIT result with ``{time:<now+2h>}``
overloaded         the May 2025 "Server overloaded" stream (§3.4.6) on chat and generation; for
                   chat it arrives as the answer, exactly where a real answer would be
stall              project_start, then silence until the client leaves
cut-stream         a normal start and two answer deltas, then the body ends (no message_result)
empty-answer       project_start and a message_result with empty content
retired            copilot chat only: a message_result saying the feature was retired (E10) [I]
error-event        ask_proxy only: an ``error`` event after message_start (E12) [I]
degraded           chat answers come from ``gpt-4o-mini`` and ``session_state.models`` says so
                   (both generations)
needs-captcha      ``g_recaptcha_token`` must be a token from ``GET /genspark`` (single use):
                   otherwise chat is degraded and image/video get the overloaded stream (§2.8)
=================  ==========================================================================

Generation prompts pick the task outcome: ``fail-one`` (the last task fails), ``fail-all``,
``never`` (polling never completes); otherwise every task succeeds. The number of image tasks is
``extra_data.model_configs[0].generation_count`` when sent, else ``n=<k>`` in the prompt, else 1
(capped at 8); a video request makes one task.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

from . import streams
from .answers import Conversation, compose_answer, storage_url_for
from .playback import utc_now
from .scenarios import RATE_LIMITED, CannedResponse, Scenario, scenario_for
from .state import MediaKind, MediaTask, Project, SimulatorState, TaskOutcome
from .streams import ChatIds, Step
from .wire import AgentAsk, BadBody, CopilotAsk, Message, TaskStatusQuery

DEGRADED_MODEL = "gpt-4o-mini"  # issue #15: degraded answers read like gpt-4o-mini
SESSION_LIMIT_RESET = timedelta(hours=2)
FREE_LIMIT_RESET = timedelta(hours=3)
MAX_IMAGES = 8
_GENERATION_KINDS: dict[str, MediaKind] = {"COPILOT_MOA_IMAGE": "image", "COPILOT_MOA_VIDEO": "video"}


def _new_id() -> str:
    return str(uuid.uuid4())


def _pairs(messages: list[Message]) -> list[tuple[str | None, Any]]:
    return [(message.role, message.content) for message in messages]


class SimulatedBackend:
    def __init__(self, state: SimulatorState, clock: Callable[[], datetime] = utc_now) -> None:
        self.state = state
        self.clock = clock

    def flaky_refusal(self, session_id: str | None) -> CannedResponse | None:
        """``flaky``: the first ask of a session id is rate limited (§4.1 E3), the rest are not."""
        if session_id is None or scenario_for(session_id) is not Scenario.FLAKY:
            return None
        if session_id in self.state.flaky_refused:
            return None
        self.state.flaky_refused.add(session_id)
        return RATE_LIMITED

    # --- G1 /api/copilot/ask ----------------------------------------------------------------

    def copilot_ask(self, ask: CopilotAsk, session_id: str | None) -> list[Step]:
        """Dispatch on ``type`` (§2.1, §2.2, §2.4)."""
        project_id = parse_qs(ask.current_query_string).get("id", [None])[0]
        if ask.type == "COPILOT_MOA_CHAT":
            return self._g1_chat(ask, session_id, project_id)
        if ask.type in _GENERATION_KINDS:
            return self._generation(ask, session_id, project_id, _GENERATION_KINDS[ask.type])
        raise BadBody(f"unsupported type: {ask.type!r}")

    def _g1_chat(self, ask: CopilotAsk, session_id: str | None, project_id: str | None) -> list[Step]:
        models = ask.extra_data.models
        if not models:
            raise BadBody("extra_data.models is empty")
        scenario = scenario_for(session_id)
        if scenario is Scenario.RETIRED:
            return streams.retired_script()
        if scenario is Scenario.OVERLOADED:
            return streams.overloaded_script(_new_id(), self.clock())
        project, is_new = self._project(project_id, ",".join(models), session_id)
        ids = ChatIds(project.id, _new_id())
        if early := self._early_end(scenario, ids):
            return early
        if scenario is Scenario.EMPTY_ANSWER:
            return streams.empty_answer_script(ids, models)
        used = [DEGRADED_MODEL] if self._degraded(scenario, ask.g_recaptcha_token) else models
        conversation = Conversation.from_messages(_pairs(ask.messages))
        answer = compose_answer(
            conversation,
            used,
            search=ask.extra_data.request_web_knowledge,
            earlier_turns=len(project.turns),
            uploads=self.state.uploads,
        )
        script = streams.g1_chat_script(ids, answer, reported_models=used, new_project=is_new, now=self.clock())
        return self._finish_chat(scenario, script, project, conversation.question, answer.text)

    # --- G2 /api/agent/ask_proxy ------------------------------------------------------------

    def agent_ask(self, ask: AgentAsk, session_id: str | None) -> list[Step]:
        """``ai_chat`` (§2.9); ``retired`` and ``bad-request-cf`` do not apply here."""
        if ask.type != "ai_chat":
            raise BadBody(f"unsupported type: {ask.type!r}")
        models = [model.strip() for model in ask.ai_chat_model.split(",") if model.strip()]
        if not models:
            raise BadBody("ai_chat_model is empty")
        scenario = scenario_for(session_id)
        if scenario is Scenario.OVERLOADED:
            return streams.overloaded_script(_new_id(), self.clock())
        project, _ = self._project(ask.project_id, ask.ai_chat_model, session_id)
        ids = ChatIds(project.id, _new_id())
        if early := self._early_end(scenario, ids):
            return early
        if scenario is Scenario.EMPTY_ANSWER:
            return streams.g2_empty_answer_script(ids)
        if scenario is Scenario.ERROR_EVENT:
            return streams.g2_error_script(ids)
        used = [DEGRADED_MODEL] if self._degraded(scenario, ask.g_recaptcha_token) else models
        conversation = Conversation.from_messages(_pairs(ask.messages))
        answer = compose_answer(
            conversation,
            used,
            search=ask.ai_chat_enable_search,
            earlier_turns=len(project.turns),
            uploads=self.state.uploads,
        )
        script = streams.g2_chat_script(ids, answer, reported_models=used, now=self.clock())
        return self._finish_chat(scenario, script, project, conversation.question, answer.text)

    # --- shared chat plumbing ---------------------------------------------------------------

    def _project(self, project_id: str | None, model: str, session_id: str | None) -> tuple[Project, bool]:
        """Reuse the project named by the request (with its memory), else start a new one.

        An id the simulator has never seen is adopted as a fresh project, so a service configured
        with a fixed project id (MODEL_CHAT_MAP, §5.5) works against a new simulator.
        """
        if project_id and project_id in self.state.projects:
            return self.state.projects[project_id], False
        project = Project(project_id or _new_id(), model, session_id)
        self.state.projects[project.id] = project
        return project, True

    def _early_end(self, scenario: Scenario, ids: ChatIds) -> list[Step] | None:
        """The scenarios that end every kind of ask the same way once its project has started."""
        if scenario is Scenario.FREE_LIMIT:
            return streams.free_limit_script(ids.project_id)
        if scenario is Scenario.FREE_LIMIT_RESET:
            reset_at = int((self.clock() + FREE_LIMIT_RESET).timestamp())
            return streams.free_limit_script(ids.project_id, reset_at)
        if scenario is Scenario.SESSION_LIMIT:
            reset_at = int((self.clock() + SESSION_LIMIT_RESET).timestamp())
            return streams.session_limit_script(ids.project_id, reset_at)
        if scenario is Scenario.STALL:
            return streams.stall_script(ids.project_id)
        return None

    def _degraded(self, scenario: Scenario, token: str | None) -> bool:
        if scenario is Scenario.NEEDS_CAPTCHA:
            return not self.state.redeem_token(token)
        return scenario is Scenario.DEGRADED

    def _finish_chat(
        self, scenario: Scenario, script: list[Step], project: Project, question: str, answer: str
    ) -> list[Step]:
        if scenario is Scenario.CUT_STREAM:
            return streams.cut_stream(script)
        project.turns.append((question, answer))  # only answers that will be sent in full
        return script

    # --- generation (§2.2, §2.4) -------------------------------------------------------------

    def _generation(
        self, ask: CopilotAsk, session_id: str | None, project_id: str | None, kind: MediaKind
    ) -> list[Step]:
        prompt = ask.user_s_input or Conversation.from_messages(_pairs(ask.messages)).question
        configs = ask.extra_data.model_configs
        model = configs[0].model if configs and configs[0].model else "unknown-model"
        scenario = scenario_for(session_id)
        captcha_failed = scenario is Scenario.NEEDS_CAPTCHA and not self.state.redeem_token(ask.g_recaptcha_token)
        if captcha_failed or scenario is Scenario.OVERLOADED:  # §2.8: what a failed captcha looks like
            return streams.overloaded_script(_new_id(), self.clock())
        project, _ = self._project(project_id, model, session_id)
        ids = ChatIds(project.id, _new_id())
        if early := self._early_end(scenario, ids):
            return early
        if scenario is Scenario.EMPTY_ANSWER:
            return streams.empty_answer_script(ids, [model])
        count = 1 if kind == "video" else _image_count(configs[0].generation_count if configs else None, prompt)
        outcomes = _outcomes(prompt, count)
        tasks = [MediaTask(_new_id(), kind, model, prompt, outcome, project.id, session_id) for outcome in outcomes]
        script = streams.generation_script(ids, kind, tasks, prompt=prompt, now=self.clock())
        if scenario is Scenario.CUT_STREAM:
            return streams.cut_stream(script)  # tasks never announced, so never stored
        self.state.tasks.update((task.id, task) for task in tasks)
        project.turns.append((prompt, streams.generation_content(kind, tasks)))
        return script

    def task_status(self, query: TaskStatusQuery, kind: MediaKind, base_url: str) -> Iterator[Step]:
        return streams.poll_script(query.task_ids, self.state.tasks, kind, base_url)

    def legacy_task_status(self, task_id: str, base_url: str) -> dict[str, Any]:
        task = self.state.tasks.get(task_id)
        if task is not None:
            task.legacy_polls += 1
        return streams.legacy_status(task, task_id, base_url)

    # --- uploads and projects (§2.5, §2.6) -----------------------------------------------------

    def upload_slot(self, base_url: str) -> dict[str, Any]:
        key = uuid.uuid4().hex
        self.state.upload_slots.add(key)
        data = {
            "upload_image_url": f"{base_url}/sim-blob/{key}?sv=sim&sig=x",  # an Azure-like SAS URL
            "private_storage_url": storage_url_for(key),
        }
        return {"status": 0, "message": "success", "data": data}

    def store_upload(self, key: str, data: bytes) -> bool:
        if key not in self.state.upload_slots:
            return False
        self.state.uploads[key] = data
        return True

    def delete_project(self, project_id: str) -> dict[str, Any]:
        self.state.deleted_projects.append(project_id)
        self.state.projects.pop(project_id, None)
        return {"status": 0, "message": "success"}


def _image_count(generation_count: int | None, prompt: str) -> int:
    if generation_count is None:
        match = re.search(r"\bn=(\d+)\b", prompt)
        generation_count = int(match.group(1)) if match else 1
    return max(1, min(MAX_IMAGES, generation_count))


def _outcomes(prompt: str, count: int) -> list[TaskOutcome]:
    words = prompt.lower()
    if re.search(r"\bnever\b", words):
        return [TaskOutcome.NEVER] * count
    if re.search(r"\bfail-all\b", words):
        return [TaskOutcome.FAILURE] * count
    if re.search(r"\bfail-one\b", words):
        return [TaskOutcome.SUCCESS] * (count - 1) + [TaskOutcome.FAILURE]
    return [TaskOutcome.SUCCESS] * count
