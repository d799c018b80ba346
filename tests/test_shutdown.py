"""SIGTERM with work in flight: chat, image and video work ends with a clear error, never cut."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import httpx
import trio
from conftest import ServiceFactory

from genspark2api.simulator import Simulator

CHAT = {"model": "gpt-5.4", "stream": True, "messages": [{"role": "user", "content": "a long answer " * 20}]}
IMAGE_CHAT = {"model": "nano-banana-pro", "stream": True, "messages": [{"role": "user", "content": "a cat"}]}


def sse_lines(text: str) -> list[str]:
    return [line for line in text.split("\n") if line.startswith("data: ")]


async def test_sigterm_ends_chat_image_and_image_chat_in_flight(sim: Simulator, tmp_path: Path) -> None:
    from test_pool_e2e import service_process

    sim.answer_delay = 1.0
    sim.task_poll_interval = 1.0   # an image takes several seconds
    log_path = tmp_path / "service.log"
    results: dict[str, httpx.Response] = {}
    # Images on ai_chat need a reCAPTCHA token per request (§12.6.1): the simulator's service gives them.
    async with service_process(sim, log_path, GS_COOKIE="ok-1,ok-2", STREAM_KEEPALIVE_SECONDS="0.5",
                               RECAPTCHA_PROXY_URL=sim.url) as (process, http):

        async def post(name: str, path: str, body: dict) -> None:
            async with httpx.AsyncClient(base_url=str(http.base_url), timeout=15) as own:
                results[name] = await own.post(path, json=body)

        with trio.fail_after(15):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(post, "chat", "/v1/chat/completions", CHAT)
                nursery.start_soon(post, "image", "/v1/images/generations", {"prompt": "a cat", "model": "nano-banana-pro"})
                nursery.start_soon(post, "image_chat", "/v1/chat/completions", IMAGE_CHAT)
                await trio.sleep(1.5)  # all three are in flight upstream
                assert not results
                sent = time.monotonic()
                process.send_signal(signal.SIGTERM)
        with trio.fail_after(8):
            code = await process.wait()
        took = time.monotonic() - sent
    assert code == 0, log_path.read_text()
    assert took < 6.0
    image = results["image"]  # finished within the grace, or ended with the shutdown error; never empty
    assert (image.status_code == 200 and image.json()["data"]) or (
        image.status_code == 503 and image.json()["error"]["code"] == "service_shutting_down"), image.text
    chat = sse_lines(results["chat"].text)
    assert chat[-1] == "data: [DONE]" and json.loads(chat[-2][6:])["error"]["code"] == "service_shutting_down"
    image_chat = sse_lines(results["image_chat"].text)
    assert image_chat[-1] == "data: [DONE]", image_chat[-3:]
    assert "error" in json.loads(image_chat[-2][6:]) or "![image 1]" in results["image_chat"].text


async def test_image_work_in_flight_ends_with_the_shutdown_error(make_service: ServiceFactory, sim: Simulator) -> None:
    sim.task_poll_interval = 1.0
    service = await make_service(RECAPTCHA_PROXY_URL=sim.url)
    results: dict[str, httpx.Response] = {}
    async with service.http() as http:

        async def post(name: str, body: dict, path: str = "/v1/chat/completions") -> None:
            results[name] = await http.post(path, json=body)

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(post, "image", {"prompt": "a cat"}, "/v1/images/generations")
                nursery.start_soon(post, "stream", IMAGE_CHAT)
                nursery.start_soon(post, "whole", {**IMAGE_CHAT, "stream": False})
                await trio.sleep(0.3)
                service.runtime.begin_shutdown(grace=0.2)
    for name in ("image", "whole"):
        assert results[name].status_code == 503, results[name].text
        assert results[name].json()["error"]["code"] == "service_shutting_down"
    lines = sse_lines(results["stream"].text)
    assert lines[-1] == "data: [DONE]" and json.loads(lines[-2][6:])["error"]["code"] == "service_shutting_down"


async def test_a_video_job_in_flight_fails_with_a_status_at_shutdown(make_service: ServiceFactory, sim: Simulator) -> None:
    sim.task_poll_interval = 1.0
    service = await make_service()
    async with service.http() as http:
        job = (await http.post("/v1/videos", json={"prompt": "waves", "model": "sora-2"})).json()
        await trio.sleep(0.3)
        service.runtime.begin_shutdown(grace=0.2)
        with trio.fail_after(5):
            while (view := (await http.get(f"/v1/videos/{job['id']}")).json())["status"] not in ("completed", "failed"):
                await trio.sleep(0.05)
        assert view["status"] == "failed" and view["error"]["code"] == "service_shutting_down"
        refused = await http.post("/v1/videos", json={"prompt": "waves", "model": "sora-2"})
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "service_shutting_down"


async def test_idle_shutdown_is_quick_even_with_stuck_looking_connections(sim: Simulator, tmp_path: Path) -> None:
    """An HTTP/1.0 client and a connection whose body never came do not hold the exit."""
    from test_pool_e2e import service_process

    log_path = tmp_path / "service.log"
    async with service_process(sim, log_path, GS_COOKIE="ok-1", API_SECRET="sk-x") as (process, http):
        port = http.base_url.port
        idle = await trio.open_tcp_stream("127.0.0.1", port)
        await idle.send_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        half = await trio.open_tcp_stream("127.0.0.1", port)
        await half.send_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Length: 50\r\n\r\n")
        await trio.sleep(0.3)
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(8):
            code = await process.wait()
        took = time.monotonic() - sent
        await idle.aclose()
        await half.aclose()
    assert code == 0 and took < 2.0, (took, log_path.read_text()[-2000:])
