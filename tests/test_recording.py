"""UPSTREAM_RECORD_DIR and scripts/replay.py: record an exchange, redacted; replay it through the adapters."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from conftest import free_port
from test_pool_e2e import ask, cookie, serve, wait_for

from genspark2api.replay import replay, replay_file
from genspark2api.simulator import Simulator
from genspark2api.upstream.classify import FailureKind
from genspark2api.upstream.recording import FORMAT, read_exchange

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).parent / "fixtures" / "upstream"
CHAT = "/api/agent/ask_proxy"


def recorded(directory: Path, path: str) -> list[tuple[dict, bytes, bytes]]:
    out = []
    for file in sorted(directory.glob("*.exchange")):
        data = file.read_bytes()
        envelope, body = read_exchange(data)
        if envelope["path"] == path:
            out.append((envelope, body, data))
    return out


@pytest.mark.parametrize("transport", ["httpx", "browser"])
async def test_an_exchange_is_saved_redacted_and_replays_to_what_the_client_got(
    nursery: trio.Nursery, sim: Simulator, tmp_path: Path, transport: str
) -> None:
    if transport == "browser":
        pytest.importorskip("curl_cffi")
    secret = cookie("ok")
    service = await serve(nursery, sim, [secret], UPSTREAM_TRANSPORT=transport, UPSTREAM_RECORD_DIR=str(tmp_path),
                          RECAPTCHA_PROXY_URL=sim.url, AUTO_MODEL_CHAT_MAP_TYPE="0")  # type: ignore[attr-defined]
    reply = await ask(service, stream=True, question="record me")
    assert reply.status == 200 and "record me" in reply.text
    await wait_for(lambda: len(recorded(tmp_path, CHAT)) == 1)
    [(envelope, body, data)] = recorded(tmp_path, CHAT)

    sent = next(r for r in sim.requests if r.path == CHAT)
    token = sent.json["g_recaptcha_token"]
    assert token and secret not in data.decode("utf-8", "replace") and token.encode() not in data
    assert envelope["format"] == FORMAT and envelope["method"] == "POST" and envelope["status"] == 200
    headers = dict(envelope["request_headers"])
    assert headers["cookie"] == "[redacted]" and headers["origin"] == sim.url  # type: ignore[attr-defined]
    assert envelope["request_json"]["g_recaptcha_token"] == "[redacted]"
    assert envelope["request_json"]["user_s_input"] == "record me"  # the rest of the body stays as sent
    assert body.startswith(b"data: ") and envelope["body_bytes"] == len(body) and not envelope["body_truncated"]

    again = await replay(envelope, body)
    assert again.done and again.failure is None and again.text == reply.text

    async with service.http() as http:
        assert (await http.get("/v1/upstream")).json()["recording"] is True


async def test_recording_never_fails_a_request(
    nursery: trio.Nursery, sim: Simulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="genspark2api.recording")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    service = await serve(nursery, sim, [cookie("ok")], UPSTREAM_RECORD_DIR=str(blocker / "records"))
    reply = await ask(service)
    assert reply.status == 200 and "You said" in reply.text
    assert any("could not save" in r.getMessage() for r in caplog.records)


async def test_a_transport_failure_is_recorded_too(nursery: trio.Nursery, sim: Simulator, tmp_path: Path) -> None:
    service = await serve(nursery, sim, [cookie("ok")], GENSPARK_BASE_URL=f"http://127.0.0.1:{free_port()}",
                          UPSTREAM_RECORD_DIR=str(tmp_path))
    reply = await ask(service)
    assert reply.status >= 400 and reply.error is not None  # the cookie cools; the client is told
    await wait_for(lambda: bool(recorded(tmp_path, CHAT)))
    envelope, body, _ = recorded(tmp_path, CHAT)[0]
    assert envelope["status"] is None and body == b"" and "ConnectError" in envelope["error"]


# ------------------------------------------------------------------------------ the §12 fixtures


async def test_replay_normal_answer_of_12_4_2() -> None:
    result = await replay_file(FIXTURES / "ai_chat_normal_answer.exchange")
    assert (result.mode, result.protocol, result.status) == ("chat", "ai_chat", 200)
    assert result.text == "Hello! How can I help?" and result.done and result.failure is None
    assert result.project_id == "995fb522-8f24-4555-8c79-195a2f39b502" and result.drift == []


async def test_replay_normal_answer_names_the_served_model() -> None:
    # §12.4.2: the served model of message.session_state._llm_model is reported.
    result = await replay_file(FIXTURES / "ai_chat_normal_answer.exchange")
    assert result.models == ["claude-4-5-haiku"]


LIMIT_TEXT = "AI Chat [5-hour limit](https://www.genspark.ai/helpcenter/membership-plans#usage) reached. Resets {time:1790595239}"
PLACEHOLDER = "Sorry, I couldn't produce a response this turn."



async def test_replay_5_hour_limit_is_a_cooling_failure_with_its_reset() -> None:
    # §12.5 E13/E14: an account-scoped failure with reset_at from {time:N}, never text.
    result = await replay_file(FIXTURES / "ai_chat_5_hour_limit.exchange")
    assert result.failure is not None and result.failure.account_scoped
    assert result.failure.reset_at == 1790595239 and result.text == ""



async def test_replay_placeholder_e15_is_a_failure() -> None:
    # §12.5 E15: the placeholder never reaches the client as an answer.
    result = await replay_file(FIXTURES / "ai_chat_placeholder_e15.exchange")
    assert result.failure is not None and result.failure.kind is not FailureKind.REQUEST and result.text == ""



async def test_replay_image_agent_stream_names_the_accepted_task() -> None:
    # A `type: image_generation_agent` exchange replays through the image agent's reader (picked by
    # the request body), and an item with a task_id and no URL is an accepted task to poll (§12.7.2),
    # not the chat text "I've started generating your image.".
    result = await replay_file(FIXTURES / "image_agent_stream.exchange")
    assert result.mode == "image" and result.text == "" and result.done and result.failure is None
    assert result.task_problems == ["task 7e2a1b3f-4c5d-4e6f-9a01-b2c3d4e5f6a7: accepted, to be polled"]
    assert result.drift == []


async def test_replay_poll_stream_of_12_7_3() -> None:
    result = await replay_file(FIXTURES / "ig_tasks_status_poll.exchange")
    assert result.mode == "tasks" and result.done and result.failure is None
    assert result.urls == ["https://www.genspark.ai/api/files/s/kftnM0EN"]  # the no-watermark URL first
    assert result.drift == []   # §12.7.3's `{"tasks": …}` rounds are known


async def test_replay_poll_stream_knows_the_tasks_line() -> None:
    # `{"tasks": {id: {"status": …}}}` is progress, not drift.
    result = await replay_file(FIXTURES / "ig_tasks_status_poll.exchange")
    assert result.drift == []


def test_the_replay_script_prints_what_the_client_would_get() -> None:
    files = [str(FIXTURES / "ai_chat_normal_answer.exchange"), str(FIXTURES / "ig_tasks_status_poll.exchange")]
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "replay.py"), *files, "--protocol", "ai_chat"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "text: 'Hello! How can I help?'" in done.stdout and "outcome: answer complete" in done.stdout
    assert "url: https://www.genspark.ai/api/files/s/kftnM0EN" in done.stdout and "drift:" not in done.stdout
    bad = subprocess.run([sys.executable, str(ROOT / "scripts" / "replay.py"), str(ROOT / "README.md")],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "genspark2api-exchange/1" in bad.stderr


async def test_recording_keeps_proxy_url_on_the_httpx_transport(nursery: trio.Nursery, sim: Simulator, tmp_path: Path) -> None:
    # Recording wraps the transport httpx would have built itself: PROXY_URL must still carry every call.
    from urllib.parse import urlsplit

    from test_pool_e2e import LoopbackProxy, answered

    address = urlsplit(sim.url)  # type: ignore[attr-defined]
    upstream = f"http://genspark.invalid:{free_port()}"
    proxy = LoopbackProxy("socks5", "genspark.invalid", (address.hostname or "", address.port or 80))
    port = await nursery.start(proxy.serve)
    service = await serve(nursery, sim, [cookie("ok")], GENSPARK_BASE_URL=upstream, PROXY_URL=f"socks5://127.0.0.1:{port}",
                          UPSTREAM_RECORD_DIR=str(tmp_path), AUTO_MODEL_CHAT_MAP_TYPE="0")
    assert answered(await ask(service))
    await wait_for(lambda: len(recorded(tmp_path, CHAT)) == 1)
    assert proxy.seen == [f"CONNECT {urlsplit(upstream).netloc}"]
    assert recorded(tmp_path, CHAT)[0][0]["url"] == upstream + CHAT
