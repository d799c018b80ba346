"""media_agent.agent_attempt against a scripted upstream (no network): decisions only."""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

import pytest

from genspark2api.core.generation import GenerationJob, MediaKind
from genspark2api.core.media_agent import agent_attempt
from genspark2api.upstream.events import TasksAccepted, UpstreamFailure
from genspark2api.upstream.sse import decode_event


class Scripted:
    """A client whose ask stream plays `events` (and whose poll never needs to run)."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self._events = events

    async def recaptcha_token(self, cookie: str) -> str:
        return "tok"

    @asynccontextmanager
    async def open_stream(self, *args: Any, **kwargs: Any):
        events = self._events

        class Stream:
            async def events(self):
                for event in events:
                    yield decode_event(json.dumps(event).encode())

            def failure_from_other_text(self) -> None:
                return None

        yield Stream()

    def absolute(self, url: str) -> str:
        return url


async def run(events: list[dict[str, Any]]) -> list[Any]:
    out: list[Any] = []

    async def emit(event: Any) -> None:
        out.append(event)

    rt = SimpleNamespace(client=Scripted(events))
    await agent_attempt(rt, GenerationJob(MediaKind.IMAGE, "gpt-image-2", "cat"), None,
                        SimpleNamespace(cookie="c", masked="c"), emit)  # type: ignore[arg-type]
    return out


def stream(items: list[dict[str, Any]], *, limit: str | None = None) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = [{"id": "p", "_event_index": 0, "type": "project_start"}]
    if limit:
        events.append({"message_id": "m", "field_name": "session_state.session_limit_message", "field_value": limit,
                       "type": "message_field"})
    events += [{"id": "p", "field_name": "image_generation_agent.results", "field_value": items, "type": "project_field"},
               {"type": "message_result", "message": {"content": "ok"}},
               {"id": "p", "field_name": "status", "field_value": "FINISHED", "type": "project_field"}]
    return events


async def test_an_accepted_task_beside_a_limit_notice_is_still_accepted() -> None:
    """TT-4: 'a response with a task_id is not a wall'; failing over would submit it twice."""
    done = [{"task_id": "t1", "status": "SUCCESS", "image_urls": ["/api/files/s/Ab12Cd34"]}]
    out = await run(stream(done, limit="Approaching 5-hour limit."))
    assert out[1] == TasksAccepted(("t1",)) and out[-1].urls == ("/api/files/s/Ab12Cd34",)


async def test_a_refusal_with_a_limit_notice_fails_over() -> None:
    with pytest.raises(UpstreamFailure) as refused:
        await run(stream([], limit="AI Image [5-hour limit](x) reached. Resets {time:4102444800}"))
    assert refused.value.failure.code == "upstream_5h_limit" and refused.value.failure.retry_elsewhere
