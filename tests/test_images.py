"""Images end to end: the openai SDK → live service → live simulator; plus the pure pieces."""

from __future__ import annotations

import base64
import json

import httpx
import openai
import pytest
import trio
from conftest import ServiceFactory, sse_frames, with_env

from genspark2api.api.images import aspect_ratio_for_size
from genspark2api.core.generation import TaskBoard, task_ids
from genspark2api.simulator.media import PNG_SIGNATURE, solid_png

ASK = "/api/copilot/ask"
IMAGE_POLL = "/api/ig_tasks_status"
RED_PNG = solid_png((255, 0, 0))


@pytest.fixture
def make_service(make_service: ServiceFactory) -> ServiceFactory:
    """These tests cover the G1 media flow of §2.2–§2.4 (GENSPARK_CHAT_PROTOCOL=copilot); the
    ai_chat agents of §12.7 are tested in test_media_agent.py."""
    return with_env(make_service, GENSPARK_CHAT_PROTOCOL="copilot")


def asks(sim) -> list:
    return [r for r in sim.requests_to(ASK) if r.json and r.json.get("type") == "COPILOT_MOA_IMAGE"]


def model_config(sim) -> dict:
    return asks(sim)[-1].json["extra_data"]["model_configs"][0]


async def wait_for(predicate, timeout: float = 2.0) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.02)


# ------------------------------------------------------------------------------ pure pieces


@pytest.mark.parametrize(
    ("size", "ratio"),
    [("1024x1024", "1:1"), ("1792x1024", "16:9"), ("1024x1792", "9:16"), ("1536x1024", "3:2"),
     ("1024x1536", "2:3"), ("1024x768", "4:3"), ("768x1024", "3:4"), ("auto", "auto"), ("4000 x 1000", "16:9")],
)
def test_size_maps_to_the_nearest_aspect_ratio(size: str, ratio: str) -> None:
    assert aspect_ratio_for_size(size) == ratio


def test_task_ids_and_board() -> None:
    content = json.dumps({"generated_images": [{"task_id": "a"}, {"task_id": ""}, {"x": 1}, {"task_id": "b"}]})
    assert task_ids(content, "generated_images") == ["a", "b"]
    assert task_ids("not json", "generated_images") == [] and task_ids(content, "generated_videos") == []
    board = TaskBoard(("a", "b", "c"), ("image_urls_nowatermark", "image_urls"))
    assert not board.feed({"type": "TASKS_STATUS_UPDATE", "task_id": "a", "progress": 60})
    assert board.overall_progress == 20
    assert board.feed({"type": "TASKS_STATUS_COMPLETE", "final_status": {
        "a": {"status": "SUCCESS", "image_urls": ["wm"], "image_urls_nowatermark": ["clean"]},
        "b": {"status": "FAILURE", "image_urls": [], "error": "nsfw"},
    }})
    urls, failed, unknown = board.outcome()
    assert urls == ["clean"] and failed == ["task b: FAILURE (nsfw)"] and unknown == ["task c: no final status"]
    assert board.overall_progress == 100


# ------------------------------------------------------------------------------ generations


async def test_generate_url_and_b64(make_service: ServiceFactory, sim) -> None:
    service = await make_service()
    client = service.openai()
    result = await client.images.generate(model="nano-banana-pro", prompt="a red apple")
    assert result.created > 0 and len(result.data) == 1
    assert result.data[0].url.startswith(sim.url + "/sim-files/") and result.data[0].revised_prompt == "a red apple"
    result = await client.images.generate(prompt="a red apple", response_format="b64_json")
    (item,) = result.data
    assert item.url is None and not item.b64_json.startswith("data:")
    assert base64.b64decode(item.b64_json).startswith(PNG_SIGNATURE)
    assert sim.downloads[-1].found
    body = asks(sim)[-1].json
    assert body["user_s_input"] == "a red apple" and body["messages"] == [{"role": "user", "content": "a red apple"}]
    assert model_config(sim)["model"] == service.settings.image_model  # IMAGE_MODEL is the default


@pytest.mark.parametrize("n", [1, 4])
async def test_n_images(make_service: ServiceFactory, sim, n: int) -> None:
    client = (await make_service()).openai()
    result = await client.images.generate(model="dall-e-3", prompt="kittens", n=n)
    assert len({d.url for d in result.data}) == n
    config = model_config(sim)
    assert config["generation_count"] == n and config["model"] == "gpt-image-2"  # dall-e-3 is an alias (catalog.py)


@pytest.mark.parametrize(("size", "ratio"), [("1024x1024", "1:1"), ("1792x1024", "16:9"), ("1024x1536", "2:3")])
async def test_size_and_extras_reach_model_configs(make_service: ServiceFactory, sim, size: str, ratio: str) -> None:
    client = (await make_service()).openai()
    await client.images.generate(prompt="a lake", size=size, style="natural", quality="hd",
                                 extra_body={"image_size": "4k"})
    config = model_config(sim)
    assert config["aspect_ratio"] == ratio and config["style"] == "realistic_image"
    assert config["quality"] == "hd" and config["hd"] is True and config["image_size"] == "4k"
    await client.images.generate(prompt="a lake", size=size, extra_body={"aspect_ratio": "9:16", "style": "anime"})
    config = model_config(sim)
    assert config["aspect_ratio"] == "9:16" and config["style"] == "anime"  # explicit aspect_ratio wins


async def test_reference_image_as_data_uri(make_service: ServiceFactory, sim) -> None:
    client = (await make_service()).openai()
    uri = "data:image/png;base64," + base64.b64encode(RED_PNG).decode()
    result = await client.images.generate(prompt="make it blue", extra_body={"image": uri})
    assert len(result.data) == 1
    content = asks(sim)[-1].json["messages"][0]["content"]
    assert [p["type"] for p in content] == ["private_file", "text"] and content[1]["text"] == "make it blue"
    assert content[0]["private_file"]["name"] == "image.png" and content[0]["private_file"]["type"] == "image/png"
    assert list(sim.uploads.values()) == [RED_PNG]


async def test_reference_image_by_url(make_service: ServiceFactory, sim) -> None:
    guarded = (await make_service()).openai()
    first = await guarded.images.generate(prompt="a source picture")
    loopback_url = first.data[0].url
    with pytest.raises(openai.BadRequestError) as info:
        await guarded.images.generate(prompt="again", extra_body={"images": [loopback_url]})
    assert info.value.body["param"] == "images[0]"  # loopback refused by the SSRF guard
    client = (await make_service(FETCH_ALLOW_PRIVATE="1")).openai()
    await client.images.generate(prompt="in the same style", extra_body={"images": [loopback_url]})
    assert [p["type"] for p in asks(sim)[-1].json["messages"][0]["content"]] == ["private_file", "text"]
    assert list(sim.uploads.values())[-1].startswith(PNG_SIGNATURE)


async def test_edit_with_multipart_files(make_service: ServiceFactory, sim) -> None:
    client = (await make_service()).openai()
    result = await client.images.edit(image=("in.png", RED_PNG, "image/png"), prompt="add a hat", n=2)
    assert len(result.data) == 2
    content = asks(sim)[-1].json["messages"][0]["content"]
    assert content[0]["type"] == "private_file" and content[-1] == {"type": "text", "text": "add a hat"}
    green = solid_png((0, 255, 0))
    await client.images.edit(image=[("a.png", RED_PNG, "image/png"), ("b.png", green, "image/png")],
                             prompt="merge", response_format="b64_json")
    assert [p["type"] for p in asks(sim)[-1].json["messages"][0]["content"]] == ["private_file", "private_file", "text"]
    assert list(sim.uploads.values())[-2:] == [RED_PNG, green]


async def test_partial_failure_lists_the_failed_task(make_service: ServiceFactory, sim) -> None:
    service = await make_service()
    async with service.http() as http:
        response = await http.post("/v1/images/generations", json={"prompt": "three cats fail-one", "n": 3})
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["data"]) == 2 and len(body["failed"]) == 1 and "FAILURE" in body["failed"][0]


async def test_all_tasks_failed_is_a_502_and_not_the_cookies_fault(make_service: ServiceFactory, sim) -> None:
    service = await make_service(cookies=["ok-1", "ok-2"])
    with pytest.raises(openai.APIStatusError) as info:
        await service.openai().images.generate(prompt="fail-all please", n=2)
    assert info.value.status_code == 502 and info.value.body["code"] == "generation_failed"
    assert len(asks(sim)) == 1  # not retried on another cookie
    assert all(s.state == "healthy" for s in service.runtime.pool.snapshot())


async def test_never_finishing_task_times_out_cleanly(make_service: ServiceFactory, sim) -> None:
    service = await make_service(IMAGE_TIMEOUT="1")
    started = trio.current_time()
    with pytest.raises(openai.APIStatusError) as info:
        await service.openai().images.generate(prompt="this will never finish")
    assert info.value.status_code == 504 and info.value.body["code"] == "generation_timeout"
    assert "IMAGE_TIMEOUT" in info.value.body["message"]
    assert trio.current_time() - started < 3
    await wait_for(lambda: any(c.path == IMAGE_POLL for c in sim.stream_closures))
    (closed,) = [c for c in sim.stream_closures if c.path == IMAGE_POLL]
    assert not closed.completed  # the upstream poll connection was closed by us


async def test_client_leaving_stops_the_upstream_poll(make_service: ServiceFactory, sim) -> None:
    service = await make_service()
    async with service.http() as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.post("/v1/images/generations", json={"prompt": "never mind"}, timeout=0.3)
        await wait_for(lambda: [c.completed for c in sim.stream_closures if c.path == IMAGE_POLL] == [False])
        async with http.stream("POST", "/v1/chat/completions", json={
                "model": "nano-banana-pro", "messages": [{"role": "user", "content": "never"}], "stream": True}) as response:
            chunks = response.aiter_bytes()
            assert b'"role":"assistant"' in await chunks.__anext__()
            await wait_for(lambda: len(sim.requests_to(IMAGE_POLL)) == 2)  # then the client leaves mid-poll
    await wait_for(lambda: [c.completed for c in sim.stream_closures if c.path == IMAGE_POLL] == [False, False])


async def test_overloaded_cookie_fails_over(make_service: ServiceFactory, sim) -> None:
    service = await make_service(cookies=["overloaded-1", "ok-1"])
    result = await service.openai().images.generate(prompt="a boat")
    assert len(result.data) == 1
    assert [r.session_id for r in asks(sim)] == ["overloaded-1", "ok-1"]
    assert [r.session_id for r in sim.requests_to(IMAGE_POLL)] == ["ok-1"]


async def test_all_cookies_overloaded_is_a_503_naming_recaptcha(make_service: ServiceFactory, sim) -> None:
    service = await make_service(cookies=["overloaded-1", "overloaded-2"])
    with pytest.raises(openai.APIStatusError) as info:
        await service.openai().images.generate(prompt="a boat")
    assert info.value.status_code == 503 and "RECAPTCHA_PROXY_URL" in info.value.body["message"]
    assert len(asks(sim)) == 2


async def test_auto_del_chat_deletes_the_project(make_service: ServiceFactory, sim) -> None:
    service = await make_service(AUTO_DEL_CHAT="1")
    await service.openai().images.generate(prompt="a house")
    (project,) = {task.project_id for task in sim.tasks.values()}
    await wait_for(lambda: project in sim.deleted_projects)


# ------------------------------------------------------------------------------ via chat


async def test_chat_routed_image_non_stream(make_service: ServiceFactory, sim) -> None:
    client = (await make_service()).openai()
    uri = "data:image/png;base64," + base64.b64encode(RED_PNG).decode()
    result = await client.chat.completions.create(model="nano-banana-2", messages=[
        {"role": "user", "content": "ignored earlier turn"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "text", "text": "a cat in a hat"}, {"type": "image_url", "image_url": {"url": uri}}]},
    ])
    content = result.choices[0].message.content
    assert content.startswith("![image 1](" + sim.url + "/sim-files/") and content.endswith(".png)")
    assert result.choices[0].finish_reason == "stop" and result.model == "nano-banana-2"
    assert result.usage.total_tokens == result.usage.prompt_tokens + result.usage.completion_tokens > 0
    body = asks(sim)[-1].json
    assert body["user_s_input"] == "a cat in a hat" and body["messages"][0]["content"][0]["type"] == "private_file"


async def test_chat_routed_image_stream(make_service: ServiceFactory, sim) -> None:
    sim.task_poll_interval = 0.1
    service = await make_service(STREAM_KEEPALIVE_SECONDS="0.05")
    stream = await service.openai().chat.completions.create(
        model="nano-banana-pro", messages=[{"role": "user", "content": "a dog"}], stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("![image 1](") and [c.choices[0].finish_reason for c in chunks if c.choices].count("stop") == 1
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    async with service.http() as http:
        raw = await http.post("/v1/chat/completions", json={
            "model": "nano-banana-pro", "messages": [{"role": "user", "content": "a dog"}], "stream": True})
    frames = sse_frames(raw.content)
    assert frames[0].startswith(b"data: ") and b": keep-alive" in frames and frames[-1] == b"data: [DONE]"


async def test_chat_routed_failure_after_role_chunk(make_service: ServiceFactory, sim) -> None:
    client = (await make_service(cookies=["overloaded-1"])).openai()
    stream = await client.chat.completions.create(model="nano-banana-pro", messages=[{"role": "user", "content": "x"}], stream=True)
    with pytest.raises(openai.APIError, match="RECAPTCHA_PROXY_URL"):
        async for _ in stream:
            pass


async def test_chat_routed_video(make_service: ServiceFactory, sim) -> None:
    client = (await make_service()).openai()
    result = await client.chat.completions.create(model="kling/v3", messages=[{"role": "user", "content": "a river"}])
    content = result.choices[0].message.content
    assert content.startswith("[video 1](" + sim.url + "/sim-files/") and content.endswith(".mp4)")
    video_asks = [r for r in sim.requests_to(ASK) if r.json["type"] == "COPILOT_MOA_VIDEO"]
    assert video_asks[-1].json["extra_data"]["model_configs"][0]["model"] == "kling/v3"


# ------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": "x", "model": "gpt-5.4"}, "model"),
        ({"prompt": "x", "model": "no-such-model"}, "model"),
        ({"model": "nano-banana-pro"}, "prompt"),
        ({"prompt": "   "}, "prompt"),
        ({"prompt": 5}, "prompt"),
        ({"prompt": "x", "n": 0}, "n"),
        ({"prompt": "x", "n": 5}, "n"),
        ({"prompt": "x", "n": True}, "n"),
        ({"prompt": "x", "size": "huge"}, "size"),
        ({"prompt": "x", "size": "0x100"}, "size"),
        ({"prompt": "x", "style": "baroque"}, "style"),
        ({"prompt": "x", "aspect_ratio": "5:7"}, "aspect_ratio"),
        ({"prompt": "x", "response_format": "png"}, "response_format"),
        ({"prompt": "x", "stream": True}, "stream"),
        ({"prompt": "x", "image": "!!not base64!!"}, "image"),
        ({"prompt": "x", "image": "data:text/plain;base64,aGVsbG8="}, "image"),
        ({"prompt": "x", "images": "http://example.com/a.png"}, "images"),
        ({"prompt": "x", "images": ["data:image/png;base64,AAAA", 7]}, "images[1]"),
        ({"prompt": "x", "image": "http://127.0.0.1:1/a.png"}, "image"),
    ],
)
async def test_bad_input_is_a_400_naming_the_param(make_service: ServiceFactory, sim, body: dict, param: str) -> None:
    service = await make_service()
    async with service.http() as http:
        response = await http.post("/v1/images/generations", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    assert asks(sim) == []


async def test_bad_bodies_and_edit_without_image(make_service: ServiceFactory, sim) -> None:
    service = await make_service()
    async with service.http() as http:
        for content in (b"", b"{not json", b"[1, 2]"):
            response = await http.post("/v1/images/generations", content=content,
                                       headers={"Content-Type": "application/json"})
            assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json"
        response = await http.post("/v1/images/edits", data={"prompt": "x"}, files={"mask": ("m.png", RED_PNG)})
        assert response.status_code == 400 and response.json()["error"]["param"] == "image"
        response = await http.post("/v1/images/edits", data={"prompt": "x", "n": "9"}, files={"image": ("a.png", RED_PNG)})
        assert response.status_code == 400 and response.json()["error"]["param"] == "n"
        response = await http.post("/v1/images/edits", data={"prompt": "x"}, files={"image": ("a.txt", b"plain text")})
        assert response.status_code == 400 and response.json()["error"]["param"] == "image"
        response = await http.post("/v1/chat/completions", json={
            "model": "nano-banana-pro", "messages": [{"role": "system", "content": "no user turn"}]})
        assert response.status_code == 400 and response.json()["error"]["param"] == "messages"
    assert asks(sim) == []



async def test_a_large_multipart_edit_is_decoded_off_the_event_loop(make_service: ServiceFactory, sim, monkeypatch) -> None:
    from genspark2api.api import bodies

    threads: list[str] = []
    real = bodies.trio.to_thread.run_sync

    async def spy(fn, *args, **kwargs):
        threads.append(getattr(fn, "__qualname__", ""))
        return await real(fn, *args, **kwargs)

    monkeypatch.setattr(bodies.trio.to_thread, "run_sync", spy)
    client = (await make_service()).openai()
    big = RED_PNG + b"\0" * (2 * 1024 * 1024)   # a PNG with 2 MiB of trailing padding
    await client.images.edit(image=("big.png", big, "image/png"), prompt="add a hat")
    assert any("parse_form" in name for name in threads)
    assert list(sim.uploads.values())[-1] == big
    threads.clear()
    await client.images.edit(image=("in.png", RED_PNG, "image/png"), prompt="small")
    assert not threads   # a small form is parsed at once


async def test_a_malformed_multipart_body_is_a_400(make_service: ServiceFactory) -> None:
    service = await make_service()
    async with service.http() as http:
        response = await http.post(
            "/v1/images/edits", content=b"--b\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\nx",
            headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_form"


@pytest.mark.parametrize(
    ("model", "response_format", "answered_in"),
    [
        ("gpt-image-1", None, "b64_json"),  # like OpenAI's API: Open WebUI sends none and reads b64_json
        ("gpt-image-1.5", None, "b64_json"),
        ("gpt-image-2", None, "b64_json"),
        ("gpt-image-1", "url", "url"),  # a url is still there for the asking
        ("dall-e-3", None, "url"),
        (None, None, "url"),  # no model: dall-e-2 at OpenAI, which answers in url
    ],
)
async def test_default_response_format_follows_openai(make_service: ServiceFactory, model, response_format,
                                                      answered_in: str) -> None:
    service = await make_service()
    body = {"prompt": "a green pear"} | ({"model": model} if model else {}) | (
        {"response_format": response_format} if response_format else {})
    async with service.http() as http:
        response = await http.post("/v1/images/generations", json=body)
    assert response.status_code == 200
    (item,) = response.json()["data"]
    assert set(item) == {answered_in, "revised_prompt"}
    if answered_in == "b64_json":
        assert base64.b64decode(item["b64_json"]).startswith(PNG_SIGNATURE)
    else:
        assert item["url"].startswith("http")
