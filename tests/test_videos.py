"""Videos end to end: the synchronous endpoint and OpenAI's video jobs; plus the job store."""

from __future__ import annotations

import base64

import openai
import pytest
import trio
from conftest import ServiceFactory, with_env
from test_images import wait_for

from genspark2api.api.videos import VideoJobStore, parse_video_job
from genspark2api.core.generation import Generated
from genspark2api.errors import ApiError
from genspark2api.simulator.media import solid_png


@pytest.fixture
def make_service(make_service: ServiceFactory) -> ServiceFactory:
    """These tests cover the G1 media flow of §2.2–§2.4 (GENSPARK_CHAT_PROTOCOL=copilot); the
    ai_chat agents of §12.7 are tested in test_media_agent.py."""
    return with_env(make_service, GENSPARK_CHAT_PROTOCOL="copilot")

ASK = "/api/copilot/ask"
VIDEO_POLL = "/api/vg_tasks_status"
PNG = solid_png((0, 0, 255))


def video_asks(sim) -> list:
    return [r for r in sim.requests_to(ASK) if r.json and r.json.get("type") == "COPILOT_MOA_VIDEO"]


async def poll_job(client: openai.AsyncOpenAI, job_id: str, timeout: float = 5.0):
    seen = []
    with trio.fail_after(timeout):
        while True:
            job = await client.videos.retrieve(job_id)
            seen.append((job.status, job.progress))
            if job.status in ("completed", "failed"):
                return job, seen
            await trio.sleep(0.03)


# ------------------------------------------------------------------------------ pure store


def test_store_evicts_the_oldest_finished_job_and_refuses_when_all_run() -> None:
    now = [1000.0]
    store = VideoJobStore(max_jobs=2, ttl=60, clock=lambda: now[0])
    request = parse_video_job({"prompt": "x"}, [])
    first, second = store.create(request), store.create(request)
    with pytest.raises(ApiError) as info:
        store.create(request)
    assert info.value.status == 429 and info.value.code == "video_jobs_full"
    first.complete(Generated(("u",), (), None, None), now[0])
    third = store.create(request)  # the finished one made room
    assert [j.id for j in store.newest_first()] == [third.id, second.id]
    second.fail(ApiError(502, "boom", code="generation_failed"), now[0])
    now[0] += 61  # past VIDEO_JOBS_TTL: finished jobs are forgotten
    assert [j.id for j in store.newest_first()] == [third.id]
    with pytest.raises(ApiError) as info:
        store.get(second.id)
    assert info.value.status == 404


# ------------------------------------------------------------------------------ synchronous


async def test_video_generations_endpoint(make_service: ServiceFactory, sim) -> None:
    service = await make_service()
    body = {"model": "kling/v3", "prompt": "a river at dawn", "aspect_ratio": "16:9", "duration": 5,
            "auto_prompt": True, "response_format": "url"}
    async with service.http() as http:
        response = await http.post("/v1/videos/generations", json=body)
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["created"] > 0 and answer["data"][0]["revised_prompt"] == "a river at dawn"
        assert answer["data"][0]["url"].startswith(sim.url + "/sim-files/") and answer["data"][0]["url"].endswith(".mp4")
        config = video_asks(sim)[-1].json["extra_data"]["model_configs"][0]
        assert config == {"aspect_ratio": "16:9", "duration": 5, "model": "kling/v3", "reflection_enabled": True}
        uri = "data:image/png;base64," + base64.b64encode(PNG).decode()
        response = await http.post("/v1/videos/generations", json={"model": "gemini/veo3.1/first-last-frame-to-video", "prompt": "move",
                                                                    "image": uri, "response_format": "b64_json"})
        assert response.status_code == 200, response.text
        assert base64.b64decode(response.json()["data"][0]["b64_json"])[4:8] == b"ftyp"
        content = video_asks(sim)[-1].json["messages"][0]["content"]
        assert content[0]["type"] == "image_url" and content[0]["image_url"]["url"] == uri
        assert content[1] == {"type": "text", "text": "move"}
        response = await http.post("/v1/videos/generations", json={"model": "flux", "prompt": "x"})
        assert response.status_code == 400 and response.json()["error"]["param"] == "model"


async def test_video_timeout_is_a_504(make_service: ServiceFactory, sim) -> None:
    service = await make_service(VIDEO_TIMEOUT="0.5")
    async with service.http() as http:
        response = await http.post("/v1/videos/generations", json={"model": "sora-2", "prompt": "never ends"})
    assert response.status_code == 504 and "VIDEO_TIMEOUT" in response.json()["error"]["message"]
    await wait_for(lambda: any(c.path == VIDEO_POLL and not c.completed for c in sim.stream_closures))


# ------------------------------------------------------------------------------ jobs


async def test_job_from_creation_to_content(make_service: ServiceFactory, sim) -> None:
    sim.task_poll_interval = 0.05
    client = (await make_service(AUTO_DEL_CHAT="1")).openai()
    job = await client.videos.create(model="sora-2", prompt="a cat surfing", seconds="8", size="1280x720")
    assert job.id.startswith("video_") and job.object == "video" and job.status in ("queued", "in_progress")
    assert job.seconds == "8" and job.size == "1280x720" and job.model == "sora-2" and job.prompt == "a cat surfing"
    done, seen = await poll_job(client, job.id)
    assert done.status == "completed" and done.progress == 100 and done.error is None
    assert done.completed_at >= done.created_at and done.expires_at > done.completed_at
    assert [p for _, p in seen] == sorted(p for _, p in seen)  # progress never goes back
    config = video_asks(sim)[-1].json["extra_data"]["model_configs"][0]
    assert config["duration"] == 8 and config["aspect_ratio"] == "16:9" and config["model"] == "sora-2"
    content = await client.videos.download_content(job.id)
    assert content.content[4:8] == b"ftyp"
    (project,) = {t.project_id for t in sim.tasks.values()}
    await wait_for(lambda: project in sim.deleted_projects)


async def test_job_list_retrieve_delete_and_errors(make_service: ServiceFactory, sim) -> None:
    service = await make_service()
    client = service.openai()
    first = await client.videos.create(prompt="first clip")
    second = await client.videos.create(prompt="second clip never")  # never finishes
    page = await client.videos.list()
    assert [v.id for v in page.data] == [second.id, first.id]
    assert [v.id for v in (await client.videos.list(order="asc")).data] == [first.id, second.id]
    with pytest.raises(openai.NotFoundError) as info:
        await client.videos.retrieve("video_nope")
    assert info.value.body["code"] == "video_not_found"
    with pytest.raises(openai.ConflictError) as info:
        await client.videos.download_content(second.id)
    assert info.value.body["code"] == "video_not_ready"
    await wait_for(lambda: len(sim.requests_to(VIDEO_POLL)) == 2)  # both jobs are polling
    deleted = await client.videos.delete(second.id)
    assert deleted.deleted and deleted.id == second.id and deleted.object == "video.deleted"
    with pytest.raises(openai.NotFoundError):
        await client.videos.retrieve(second.id)
    await wait_for(lambda: any(c.path == VIDEO_POLL and not c.completed for c in sim.stream_closures))
    async with service.http() as http:
        response = await http.get("/v1/videos", params={"limit": "1"})
        listed = response.json()
        assert listed["object"] == "list" and listed["data"][0]["id"] == first.id and not listed["has_more"]
        assert "completed_at" in listed["data"][0] and "expires_at" in listed["data"][0]  # null, not absent
        assert "error" not in listed["data"][0]
        assert (await http.get("/v1/videos", params={"limit": "0"})).json()["error"]["param"] == "limit"
        assert (await http.get(f"/v1/videos/{first.id}/content", params={"variant": "thumbnail"})).status_code == 400
        assert (await http.delete("/v1/videos/video_nope")).status_code == 404


async def test_job_failures_are_reported_on_the_job(make_service: ServiceFactory, sim) -> None:
    client = (await make_service(VIDEO_TIMEOUT="0.5")).openai()
    failed = await client.videos.create(prompt="fail-all")
    slow = await client.videos.create(prompt="never")
    failed, _ = await poll_job(client, failed.id)
    assert failed.status == "failed" and failed.error.code == "generation_failed"
    slow, _ = await poll_job(client, slow.id)
    assert slow.status == "failed" and slow.error.code == "generation_timeout"


async def test_full_job_store_is_a_429(make_service: ServiceFactory, sim) -> None:
    client = (await make_service(VIDEO_JOBS_MAX="1")).openai()
    running = await client.videos.create(prompt="never")
    with pytest.raises(openai.RateLimitError) as info:
        await client.videos.create(prompt="another")
    assert "VIDEO_JOBS_MAX" in info.value.body["message"]
    await client.videos.delete(running.id)
    assert (await client.videos.create(prompt="now it fits")).status in ("queued", "in_progress")


async def test_job_with_input_reference(make_service: ServiceFactory, sim) -> None:
    service = await make_service()
    client = service.openai()
    job = await client.videos.create(prompt="animate this", model="gemini/veo3.1/first-last-frame-to-video",
                                     input_reference=("ref.png", PNG, "image/png"))
    done, _ = await poll_job(client, job.id)
    assert done.status == "completed"
    content = video_asks(sim)[-1].json["messages"][0]["content"]
    assert content[0]["image_url"]["url"] == "data:image/png;base64," + base64.b64encode(PNG).decode()
    uri = "data:image/png;base64," + base64.b64encode(PNG).decode()
    async with service.http() as http:  # the SDK only sends files; JSON carries {"image_url": ...}
        response = await http.post("/v1/videos", json={"prompt": "animate that", "input_reference": {"image_url": uri}})
    assert (await poll_job(client, response.json()["id"]))[0].status == "completed"
    assert video_asks(sim)[-1].json["messages"][0]["content"][0]["image_url"]["url"] == uri


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"model": "sora-2"}, "prompt"),
        ({"prompt": "x", "model": "nano-banana-pro"}, "model"),
        ({"prompt": "x", "seconds": "forever"}, "seconds"),
        ({"prompt": "x", "seconds": "0"}, "seconds"),
        ({"prompt": "x", "size": "wide"}, "size"),
        ({"prompt": "x", "aspect_ratio": "2:1"}, "aspect_ratio"),
        ({"prompt": "x", "input_reference[image_url]": "not an image"}, "input_reference"),
    ],
)
async def test_bad_job_input_is_a_400(make_service: ServiceFactory, sim, fields: dict, param: str) -> None:
    service = await make_service()
    async with service.http() as http:
        response = await http.post("/v1/videos", data=fields, files={"unused": ("u.txt", b"u")})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    assert video_asks(sim) == []
