"""Replay a recorded upstream exchange (recording.py) through the real adapter code.

The saved response is served to a `GensparkClient` by an in-memory transport, so status checks,
SSE sniffing, event decoding, the protocol translator and the failure classifier all run exactly
as in a live attempt (chat.ChatService.attempt, media_agent.agent_attempt, generation.media_attempt);
what comes out is what the client would have been given. `scripts/replay.py` prints it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from .core.generation import TaskBoard
from .core.media_agent import AgentMediaReader, accepted_tasks
from .settings import Settings
from .upstream import drift
from .upstream.catalog import ModelKind, ModelRoute
from .upstream.classify import Failure
from .upstream.client import GensparkClient
from .upstream.events import (
    AnswerDone,
    ModelServed,
    ModelsReported,
    ProjectStarted,
    ReasoningDelta,
    SourcesFound,
    TextDelta,
    UpstreamFailure,
)
from .upstream.protocols import ChatJob, UpstreamMessage, chat_adapter
from .upstream.recording import read_exchange
from .upstream.signals import classify_answer, session_limit

TASK_PATHS = ("/api/ig_tasks_status", "/api/vg_tasks_status")
URL_KEYS = {"/api/ig_tasks_status": ("image_urls_nowatermark", "image_urls"),
            "/api/vg_tasks_status": ("video_urls_nowatermark", "video_urls")}


@dataclass(slots=True)
class Replay:
    """What one recorded exchange gives a client."""

    mode: str                                   # chat | image | video | tasks
    protocol: str | None = None                 # ai_chat | copilot (chat mode)
    status: int | None = None
    text: str = ""
    reasoning: str = ""
    sources: list[tuple[str, str]] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    project_id: str | None = None
    done: bool = False
    failure: Failure | None = None
    urls: list[str] = field(default_factory=list)        # image, video and tasks modes
    task_problems: list[str] = field(default_factory=list)
    drift: list[drift.DriftEntry] = field(default_factory=list)

    def lines(self) -> list[str]:
        """The human-readable report of scripts/replay.py."""
        out = [f"mode: {self.mode}" + (f" ({self.protocol})" if self.protocol else "") + f", HTTP {self.status}"]
        if self.mode == "chat":
            out.append(f"text: {self.text!r}")
            if self.reasoning:
                out.append(f"reasoning: {self.reasoning!r}")
            for title, url in self.sources:
                out.append(f"source: {title} <{url}>")
            if self.models:
                out.append(f"models reported: {', '.join(self.models)}")
            if self.project_id:
                out.append(f"project: {self.project_id}")
        else:
            out += [f"url: {u}" for u in self.urls] + [f"task: {p}" for p in self.task_problems]
        if self.failure is not None:
            f = self.failure
            out.append(f"failure: {f.code} ({f.kind}) - {f.detail}" + (f" [reset_at {f.reset_at:g}]" if f.reset_at else ""))
        else:
            out.append("outcome: " + ("answer complete" if self.done else "no failure, but not complete"))
        for entry in self.drift:
            out.append(f"drift: unknown {entry.kind} {entry.name!r} x{entry.count}: {entry.sample}")
        return out


def _client(envelope: dict[str, Any], body: bytes) -> GensparkClient:
    headers = [(k, v) for k, v in envelope.get("response_headers") or []
               if k.lower() not in ("content-length", "content-encoding", "transfer-encoding")]

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(int(envelope.get("status") or 200), headers=headers, content=body)

    settings = Settings(base_url="http://recorded.invalid")
    return GensparkClient(settings, transport=httpx.MockTransport(answer))


def _job(envelope: dict[str, Any]) -> ChatJob:
    request = envelope.get("request_json") if isinstance(envelope.get("request_json"), dict) else {}
    model = request.get("ai_chat_model") or ((request.get("extra_data") or {}).get("models") or ["gpt-4o"])[0]
    search = bool(request.get("ai_chat_enable_search") or (request.get("extra_data") or {}).get("request_web_knowledge"))
    # The id as it was sent, known to the catalogue or not: a recording replays whatever it holds.
    route = ModelRoute(str(model), ModelKind.TEXT, (str(model),), search)
    return ChatJob(route, [UpstreamMessage("user", str(request.get("user_s_input") or ""))])


AGENT_TYPES = {"image_generation_agent": ("image", "image_generation_agent.results", ("image_urls_nowatermark", "image_urls")),
               "video_generation_agent": ("video", "video_generation_agent.results", ("video_urls", "video_url"))}


async def replay(envelope: dict[str, Any], body: bytes, protocol: str | None = None) -> Replay:
    """Feed one exchange through the adapter of its path (or `protocol`, for a chat stream)."""
    path = str(envelope.get("path") or "")
    tasks = path in TASK_PATHS
    request = envelope.get("request_json") if isinstance(envelope.get("request_json"), dict) else {}
    agent = AGENT_TYPES.get(str(request.get("type")))
    if protocol is None:
        protocol = "copilot" if path == "/api/copilot/ask" else "ai_chat"
    mode = "tasks" if tasks else (agent[0] if agent else "chat")
    result = Replay(mode, None if tasks or agent else protocol, envelope.get("status"))
    client = _client(envelope, body)
    with drift.capture() as seen:
        try:
            if tasks:
                await _tasks(client, path, envelope, result)
            elif agent:
                await _agent(client, agent, request, result)
            else:
                await _chat(client, protocol, envelope, result)
        except UpstreamFailure as exc:
            result.failure = exc.failure
        finally:
            await client.aclose()
    result.drift = seen.snapshot()
    return result


async def _chat(client: GensparkClient, protocol: str, envelope: dict[str, Any], result: Replay) -> None:
    adapter = chat_adapter(protocol)
    translator = adapter.translator(_job(envelope))
    # As chat.ChatService.attempt does it.
    async with client.open_stream(adapter.path, cookie="", json={}) as stream:
        async for event in stream.events():
            for out in translator.feed(event):
                _take(out, result)
            if translator.done:
                break
        if not translator.done:
            failure = stream.failure_from_other_text()
            if failure is not None:
                raise UpstreamFailure(failure)
        for out in translator.finish():
            _take(out, result)


def _take(event: Any, result: Replay) -> None:
    if isinstance(event, TextDelta):
        result.text += event.text
    elif isinstance(event, ReasoningDelta):
        result.reasoning += event.text
    elif isinstance(event, SourcesFound):
        result.sources += [(s.title, s.link) for s in event.sources]
    elif isinstance(event, ModelsReported):
        result.models = list(event.models)
    elif isinstance(event, ModelServed):
        result.models = [event.model]
    elif isinstance(event, ProjectStarted):
        result.project_id = event.project_id
    elif isinstance(event, AnswerDone):
        result.done = True


async def _agent(client: GensparkClient, agent: tuple[str, str, tuple[str, ...]], request: dict[str, Any],
                 result: Replay) -> None:
    """As media_agent.agent_attempt reads the agent's answer (§12.7.2), without the polling."""
    kind, results_field, url_keys = agent
    reader = AgentMediaReader(results_field)
    async with client.open_stream("/api/agent/ask_proxy", cookie="", json={}, accept="*/*") as stream:
        async for event in stream.events():
            reader.feed(event)
            if reader.finished:
                break
    result.project_id = reader.project_id
    token_sent = bool(request.get("g_recaptcha_token"))
    now = time.time()
    if reader.limit_text:
        raise UpstreamFailure(session_limit(reader.limit_text, now=now, image=kind == "image", token_sent=token_sent))
    accepted = accepted_tasks(reader.items or [], url_keys)
    if not (accepted.done or accepted.pending or accepted.failed):
        failure = classify_answer(reader.answer, now=now, image=kind == "image", token_sent=token_sent)
        if failure is not None:
            raise UpstreamFailure(failure)
    result.urls = list(accepted.done.values())
    result.task_problems = [f"task {t}: {r}" for t, r in accepted.failed.items()]
    result.task_problems += [f"task {t}: accepted, to be polled" for t in accepted.pending]
    result.done = reader.finished


async def _tasks(client: GensparkClient, path: str, envelope: dict[str, Any], result: Replay) -> None:
    request = envelope.get("request_json") if isinstance(envelope.get("request_json"), dict) else {}
    ids = tuple(str(t) for t in request.get("task_ids") or ())
    board = TaskBoard(ids, URL_KEYS[path])
    # As generation.media_attempt reads the poll stream.
    async with client.open_stream(path, cookie="", json={}, accept="*/*") as stream:
        async for item in stream.objects():
            if board.feed(item):
                result.done = True
                break
    urls, failed, unknown = board.outcome()
    result.urls, result.task_problems = urls, failed + unknown


async def replay_file(path: str | Path, protocol: str | None = None) -> Replay:
    envelope, body = read_exchange(Path(path).read_bytes())
    return await replay(envelope, body, protocol)
