"""The simulated Genspark backend: decides which script answers a request and updates the state.

No HTTP here: app.py decodes requests and plays the scripts this module returns. Each public
method is one upstream call (genspark-protocol.md §2); ``POST /api/agent/ask_proxy`` (§12) is
decided by ``self.agent`` (agent.py, which lists its own scenarios and options).

Per-cookie stream scenarios of ``/api/copilot/ask`` (scenarios.py picks them from the session_id
prefix):

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
degraded           chat answers come from ``gpt-4o-mini`` and ``session_state.models`` says so
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

import trio

from . import agent_streams, streams
from .agent import AgentBackend
from .agent import file_id_for as agent_file_id
from .answers import Conversation, compose_answer, storage_url_for, task_outcomes
from .media import colour_for, fake_mp4, solid_png
from .options import SimOptions
from .playback import utc_now
from .scenarios import (
    RATE_LIMITED,
    CannedResponse,
    Scenario,
    is_logged_out,
    scenario_for,
)
from .state import MediaKind, MediaTask, Project, SimulatorState, TaskOutcome
from .streams import ChatIds, Step
from .structured import json_quality
from .wire import BadBody, CopilotAsk, Message, TaskStatusQuery

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
    """G1 (``/api/copilot/ask``) and the account calls; ask_proxy is ``self.agent`` (agent.py)."""

    def __init__(
        self,
        state: SimulatorState,
        options: SimOptions | None = None,
        clock: Callable[[], datetime] = utc_now,
        monotonic: Callable[[], float] = trio.current_time,
    ) -> None:
        self.state = state
        self.clock = clock
        self.monotonic = monotonic
        self.options = options or SimOptions()
        self.agent = AgentBackend(state, self.options, clock)

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
            json_quality=json_quality(scenario.value, first_of_project=not project.turns),
        )
        script = streams.g1_chat_script(ids, answer, reported_models=used, new_project=is_new, now=self.clock())
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
            return not self.state.redeem_token(token, self.monotonic())
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
        captcha_failed = scenario is Scenario.NEEDS_CAPTCHA and not self.state.redeem_token(
            ask.g_recaptcha_token, self.monotonic()
        )
        if captcha_failed or scenario is Scenario.OVERLOADED:  # §2.8: what a failed captcha looks like
            return streams.overloaded_script(_new_id(), self.clock())
        project, _ = self._project(project_id, model, session_id)
        ids = ChatIds(project.id, _new_id())
        if early := self._early_end(scenario, ids):
            return early
        if scenario is Scenario.EMPTY_ANSWER:
            return streams.empty_answer_script(ids, [model])
        count = 1 if kind == "video" else _image_count(configs[0].generation_count if configs else None, prompt)
        outcomes = task_outcomes(prompt, count)
        tasks = [MediaTask(_new_id(), kind, model, prompt, outcome, project.id, session_id) for outcome in outcomes]
        script = streams.generation_script(ids, kind, tasks, prompt=prompt, now=self.clock())
        if scenario is Scenario.CUT_STREAM:
            return streams.cut_stream(script)  # tasks never announced, so never stored
        self.state.tasks.update((task.id, task) for task in tasks)
        project.turns.append((prompt, streams.generation_content(kind, tasks)))
        return script

    def task_status(self, query: TaskStatusQuery, kind: MediaKind, base_url: str) -> Iterator[Step]:
        """§12.7.3 lines for ask_proxy image tasks (and unknown ids); §2.3 lines as soon as one
        known id is a copilot task, so a G1 client keeps its shape. Videos keep §2.4's shape."""
        tasks = self.state.tasks
        known = [tasks[t] for t in query.task_ids if t in tasks]
        if kind == "image" and not any(task.generation == "copilot" for task in known):
            agent_tasks = {t.id: t for t in known if t.kind == "image"}
            return agent_streams.agent_poll_script(query.task_ids, agent_tasks)
        return streams.poll_script(query.task_ids, tasks, kind, base_url)

    def task_detail(self, task_id: str) -> dict[str, Any]:
        """``GET /api/spark/image_generation_task_detail`` (§12.7.3 alt): PICKED on the first call."""
        task = self.state.tasks.get(task_id)
        if task is not None:
            task.legacy_polls += 1
        done = task is not None and task.legacy_polls > 1 and task.outcome is not TaskOutcome.NEVER
        return agent_streams.task_detail(task, done=done)

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

    def upload_url(self, base_url: str) -> dict[str, Any]:
        """§12.7.5 (TT-4 mapped it): ``upload_url`` to PUT to, ``file_wrapper_url`` to reference
        [I: the keys besides these two]. The file is then served at ``/api/files/s/<id>``."""
        key = uuid.uuid4().hex
        self.state.upload_slots.add(key)
        file_id = agent_file_id(key, "upload")
        self.state.files[file_id] = ("upload", key)
        data = {"upload_url": f"{base_url}/sim-blob/{key}?sv=sim&sig=x", "file_wrapper_url": f"{base_url}/api/files/s/{file_id}"}
        return {"status": 0, "message": "success", "data": data}

    def stored_file(self, file_id: str) -> tuple[str, bytes] | None:
        """(content type, bytes) of ``/api/files/s/<id>`` (§12.7.4), None when there is none."""
        entry = self.state.files.get(file_id)
        if entry is None:
            return None
        source, ref = entry
        if source == "upload":
            data = self.state.uploads.get(ref)
            return None if data is None else ("application/octet-stream", data)
        task = self.state.tasks.get(ref)
        if task is None or task.outcome is not TaskOutcome.SUCCESS:
            return None
        if task.kind == "image":
            return "image/png", solid_png(colour_for(f"{task.id}/{file_id}"))
        return "video/mp4", fake_mp4(task.id)

    # --- account probes (§12.9.4) -------------------------------------------------------------

    def user(self, session_id: str | None) -> dict[str, Any]:
        if is_logged_out(session_id):
            return {"status": -5, "message": "user not found"}  # §12.5 E24
        cogen = {"email": f"{session_id}@sim.example", "name": f"Simulated {session_id}", "plan": "free",
                 "personal_membership_ext": {"status": "inactive"}}
        return {"status": 0, "message": "success", "data": {"cogen": cogen}}

    def is_login(self, session_id: str | None) -> dict[str, Any]:
        if is_logged_out(session_id):
            return {"status": 0, "message": "success", "data": {"is_login": False}}
        data = {"is_login": True, "cogen_id": f"cogen-{session_id}", "cogen_email": f"{session_id}@sim.example"}
        return {"status": 0, "message": "success", "data": data}

    def billing_cycle(self, session_id: str) -> dict[str, Any]:
        """§12.5 free tier (KE): ``data.remaining``; 100 when credits are unlimited."""
        return {"status": 0, "message": "success",
                "data": {"remaining": self.state.ledger.credits_left(session_id, self.options.credits)}}

    def my_projects(self, session_id: str) -> dict[str, Any]:
        """``GET /api/project/my?from=agents`` (§12.3, AR's shape), newest first."""
        owned = [p for p in self.state.projects.values() if p.session_id == session_id]
        listed = [
            {"id": p.id, "chat_model": p.model, "name": p.name, "type": p.kind, "status": "FINISHED", "ctime": p.ctime}
            for p in reversed(owned)
        ]
        return {"status": 0, "message": "success", "data": {"projects": listed}}

    def delete_project(self, project_id: str) -> dict[str, Any]:
        self.state.deleted_projects.append(project_id)
        self.state.projects.pop(project_id, None)
        return {"status": 0, "message": "success"}


def _image_count(generation_count: int | None, prompt: str) -> int:
    if generation_count is None:
        match = re.search(r"\bn=(\d+)\b", prompt)
        generation_count = int(match.group(1)) if match else 1
    return max(1, min(MAX_IMAGES, generation_count))
