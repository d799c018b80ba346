"""Images and videos on the ask_proxy agents (genspark-protocol.md §12.7), end to end on the simulator."""

from __future__ import annotations

import base64

import httpx
import openai
import pytest
from conftest import ServiceFactory, with_env

from genspark2api.core.generation import GenerationJob, MediaKind
from genspark2api.core.media_agent import (
    AgentMediaReader,
    accepted_tasks,
    agent_body,
    item_verdict,
)
from genspark2api.simulator import Simulator
from genspark2api.simulator.media import PNG_SIGNATURE
from genspark2api.upstream.events import UpstreamFailure
from genspark2api.upstream.sse import decode_event

ASK = "/api/agent/ask_proxy"
POLL = "/api/ig_tasks_status"


@pytest.fixture
def make_service(make_service: ServiceFactory, sim: Simulator) -> ServiceFactory:
    """A deployment as it must be for images today: with a reCAPTCHA token service (§12.6.1)."""

    return with_env(make_service, RECAPTCHA_PROXY_URL=sim.url)  # type: ignore[attr-defined]


def asks(sim: Simulator) -> list:
    return sim.requests_to(ASK)


async def test_an_image_goes_through_the_agent_and_polling(make_service: ServiceFactory, sim: Simulator) -> None:
    service = await make_service()
    result = await service.openai().images.generate(model="gpt-image-2", prompt="A red fox", n=2, size="1024x1536",
                                                    response_format="b64_json")
    assert len(result.data) == 2
    assert all(base64.b64decode(item.b64_json).startswith(PNG_SIGNATURE) for item in result.data)
    (ask,) = asks(sim)
    body = ask.json
    assert body["type"] == "image_generation_agent" and body["project_id"] is None
    params = body["model_params"]
    assert (params["type"], params["model"], params["generation_count"], params["aspect_ratio"]) == ("image", "gpt-image-2", 2, "2:3")
    assert body["g_recaptcha_token"].startswith("sim-token-")          # a fresh token from RECAPTCHA_PROXY_URL
    assert ask.headers["referer"].endswith("/ai_image")
    (poll,) = sim.requests_to(POLL)
    assert sorted(poll.json["task_ids"]) == sorted(t for t in sim.tasks)
    # The files need the session (§12.7.4): every download carried the cookie.
    files = [r for r in sim.requests if r.path.startswith("/api/files/s/")]
    assert len(files) == 2 and all(r.session_id == "ok-1" for r in files)


async def test_inline_results_need_no_polling_and_urls_are_served_through_this_service(
    make_service: ServiceFactory, sim: Simulator
) -> None:
    """MEDIA_URLS=auto: on ai_chat the file URLs need the cookie, so clients get links on this service."""
    sim.options.image_inline = True
    service = await make_service()
    result = await service.openai().images.generate(model="nano-banana-2", prompt="A boat", n=2)
    assert sim.requests_to(POLL) == []
    async with httpx.AsyncClient() as http:
        for item in result.data:
            assert item.url.startswith(service.url + "/v1/media/")
            response = await http.get(item.url)
            assert response.status_code == 200 and response.content.startswith(PNG_SIGNATURE)


async def test_without_a_token_service_the_fake_limit_is_a_recaptcha_503_and_no_cookie_is_parked(
    make_service: ServiceFactory, sim: Simulator
) -> None:
    """§12.5 E14b: the rolling "5-hour limit" answers a missing token; it is not a quota."""
    service = await make_service(cookies=["ok-1", "ok-2"], RECAPTCHA_PROXY_URL="")
    with pytest.raises(openai.InternalServerError) as refused:
        await service.openai().images.generate(model="gpt-image-2", prompt="A cat")
    assert refused.value.status_code == 503 and "RECAPTCHA_PROXY_URL" in refused.value.message
    assert refused.value.body["code"] == "upstream_recaptcha_required"
    for status in service.runtime.pool.snapshot():
        assert status.state == "cooling" and status.until - service.runtime.pool._clock() < 120   # not 5 h


async def test_an_accepted_task_is_never_submitted_again_elsewhere(make_service: ServiceFactory, sim: Simulator) -> None:
    """A task that fails after acceptance fails the request; it would cost credits twice elsewhere."""
    service = await make_service(cookies=["ok-1", "ok-2"])
    with pytest.raises(openai.APIStatusError) as failed:
        await service.openai().images.generate(model="gpt-image-2", prompt="fail-all please")
    assert failed.value.status_code == 502 and failed.value.body["code"] == "generation_failed"
    assert len(asks(sim)) == 1


async def test_a_refused_request_moves_to_another_cookie(make_service: ServiceFactory, sim: Simulator) -> None:
    """§12.5 E14 with a fixed reset: a real wall; the request goes elsewhere, the cookie rests until it."""
    service = await make_service(cookies=["image-5h-limit-1", "ok-2"])
    result = await service.openai().images.generate(model="gpt-image-2", prompt="A tree", response_format="b64_json")
    assert len(result.data) == 1
    assert [r.session_id for r in asks(sim)] == ["image-5h-limit-1", "ok-2"]
    walled = next(s for s in service.runtime.pool.snapshot() if s.state == "cooling")
    assert walled.reason == "upstream_5h_limit" and walled.until - service.runtime.pool._clock() > 3600


async def test_a_chat_routed_image_model_uses_the_agent(make_service: ServiceFactory, sim: Simulator) -> None:
    service = await make_service()
    answer = await service.openai().chat.completions.create(
        model="gpt-image-2", messages=[{"role": "user", "content": "Draw a lighthouse"}])
    assert "/v1/media/" in answer.choices[0].message.content
    assert asks(sim)[0].json["type"] == "image_generation_agent"


async def test_a_video_goes_through_the_video_agent(make_service: ServiceFactory, sim: Simulator) -> None:
    service = await make_service()
    async with service.http() as http:
        response = await http.post("/v1/videos/generations", json={
            "model": "kling/v3", "prompt": "waves", "aspect_ratio": "9:16", "duration": 5})
    assert response.status_code == 200, response.text
    body = asks(sim)[0].json
    assert body["type"] == "video_generation_agent"
    assert body["model_params"]["duration"] == "5" and body["model_params"]["aspect_ratio"] == "9:16"
    assert response.json()["data"][0]["url"].startswith(service.url + "/v1/media/")


# ------------------------------------------------------------------------------ pure pieces


def test_body_and_verdicts() -> None:
    job = GenerationJob(MediaKind.IMAGE, "gpt-image-2.5", "A cat", {"aspect_ratio": "3:4"}, (), 1)
    body = agent_body(job, "tok")
    assert body["model_params"]["tier"] == "flare" and body["model_params"]["quality"] == "auto"
    assert body["messages"][0]["thinking"] is False and body["client_message_id"] == body["messages"][0]["id"]
    keys = ("image_urls_nowatermark", "image_urls")
    assert item_verdict({"status": "SUCCESS", "image_urls": ["/api/files/s/Ab3"]}, keys) == ("done", "/api/files/s/Ab3")
    assert item_verdict({"status": -2, "message": "task not found"}, keys)[0] == "failed"
    assert item_verdict({"status": "CENSORED"}, keys)[0] == "failed"
    assert item_verdict({"status": "PICKED"}, keys) == ("pending", None)
    accepted = accepted_tasks([{"task_id": "t1", "status": "PICKED", "model": "gpt-image-2"}], keys)
    assert accepted.pending == ["t1"] and accepted.models == {"gpt-image-2"}


def test_the_reader_takes_the_results_field_and_the_limit() -> None:
    reader = AgentMediaReader("image_generation_agent.results")
    for line in (
        b'{"id": "p1", "_event_index": 0, "type": "project_start"}',
        b'{"message_id": "m", "field_name": "session_state.session_limit_message", "field_value": {"value": "AI Image [5-hour limit](x) reached."}, "type": "message_field"}',
        b'{"id": "p1", "field_name": "image_generation_agent.results", "field_value": [], "type": "project_field"}',
        b'{"id": "p1", "field_name": "status", "field_value": "FINISHED", "type": "project_field"}',
    ):
        reader.feed(decode_event(line))
    assert reader.project_id == "p1" and reader.items == [] and reader.finished
    assert reader.limit_text.startswith("AI Image [5-hour limit]")
    with pytest.raises(UpstreamFailure):
        reader.feed(decode_event(b'{"type": "error", "error": "boom"}'))
