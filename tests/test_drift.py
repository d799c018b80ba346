"""Drift notices: what upstream sends that no adapter knows is logged once per kind and counted."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from test_pool_e2e import answered, ask, cookie, serve

from genspark2api.simulator import Simulator
from genspark2api.upstream import drift
from genspark2api.upstream.catalog import route_model
from genspark2api.upstream.events import UpstreamFailure
from genspark2api.upstream.protocols import ChatJob, UpstreamMessage, chat_adapter
from genspark2api.upstream.recording import read_exchange
from genspark2api.upstream.sse import LineDecoder, decode_event

FIXTURES = Path(__file__).parent / "fixtures" / "upstream"


def test_first_sighting_is_reported_once_then_counted() -> None:
    now = [100.0]
    registry = drift.DriftRegistry(clock=lambda: now[0])
    assert registry.notice("event_type", "brand_new", {"type": "brand_new"}) is True
    now[0] = 105.0
    assert registry.notice("event_type", "brand_new", {"type": "brand_new", "other": 1}) is False
    assert registry.notice("message_field", "brand_new", {}) is True  # another kind, the same name
    entry = next(e for e in registry.snapshot() if e.kind == "event_type")
    assert (entry.count, entry.first_seen, entry.last_seen) == (2, 100.0, 105.0)
    assert entry.sample == '{"type":"brand_new"}'  # the first sighting's sample is kept


def test_samples_are_redacted_before_they_are_cut() -> None:
    registry = drift.DriftRegistry(sample_chars=80)
    secret = "aed9196b-0c5e-4a54-9d7a-56ed6e32f7e4"
    registry.notice("event_type", "x", {"g_recaptcha_token": "03AFcWeA" * 40, "content": f"session_id={secret}",
                                        "cookie": secret, "tail": "z" * 500})
    sample = registry.snapshot()[0].sample
    assert secret not in sample and "03AFcWeA" not in sample and len(sample) <= 81
    registry.notice("http_status", "HTTP 418", f"teapot; session_id={secret}".encode())
    assert secret not in registry.snapshot()[1].sample


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["event_type", "message_field"]), st.text(max_size=6)), max_size=80),
       st.integers(min_value=1, max_value=10))
def test_the_registry_stays_bounded_and_counts_every_sighting(notices: list[tuple[str, str]], limit: int) -> None:
    registry = drift.DriftRegistry(max_kinds=limit)
    firsts = [registry.notice(kind, name, None) for kind, name in notices]
    entries = registry.snapshot()
    assert len(entries) <= limit + 1  # the kinds, plus one overflow counter
    assert sum(e.count for e in entries) == len(notices)
    distinct = list(dict.fromkeys(notices))
    if len(distinct) <= limit:
        assert sum(firsts) == len(distinct) and all(e.kind != "overflow" for e in entries)


def events_of(name: str) -> list:
    _, body = read_exchange((FIXTURES / name).read_bytes())
    return [decode_event(line.payload) for line in LineDecoder().feed(body) + LineDecoder().finish()]


def translator():
    return chat_adapter("ai_chat").translator(ChatJob(route_model("gpt-5.4"), [UpstreamMessage("user", "hi")]))


@pytest.mark.parametrize("name", ["ai_chat_normal_answer.exchange", "ai_chat_5_hour_limit.exchange",
                                  "ai_chat_placeholder_e15.exchange", "image_agent_stream.exchange"])
def test_the_september_2026_names_are_known(name: str) -> None:
    # §12.4: project_start, agent_notification, message_start, project_field name/status/results, …
    with drift.capture() as seen:
        t = translator()
        try:
            for event in events_of(name):
                t.feed(event)
        except UpstreamFailure:
            pass   # the limit and the placeholder are failures (§12.5); their names are still known
    assert seen.snapshot() == []


def test_unknown_types_and_fields_are_reported_through_the_translator_hooks() -> None:
    events = [
        {"type": "brand_new_event", "payload": 1},
        {"type": "message_field_delta", "field_name": "session_state.new_thing", "delta": "x"},
        {"type": "message_field", "field_name": "session_state.other_thing", "field_value": 2},
        {"type": "project_field", "field_name": "video_generation_agent.extras", "field_value": []},
        {"type": "agent_notification"},  # known
    ]
    import msgspec

    with drift.capture() as seen:
        t = translator()
        for _ in range(3):
            for event in events:
                t.feed(msgspec.convert(event, type=type(decode_event(b'{"type":"x"}'))))
    found = {(e.kind, e.name): e.count for e in seen.snapshot()}
    assert found == {
        ("event_type", "brand_new_event"): 3,
        ("message_field_delta", "session_state.new_thing"): 3,
        ("message_field", "session_state.other_thing"): 3,
        ("project_field", "video_generation_agent.extras"): 3,
    }


# ------------------------------------------------------------------------------ end to end


class Inject(httpx.AsyncBaseTransport):
    """The real transport; chat answers get `extra` in front of their first byte, or are replaced."""

    def __init__(self, extra: bytes = b"", replace: httpx.Response | None = None) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.extra = extra
        self.replace = replace

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/agent/ask_proxy" and self.replace is not None:
            return self.replace
        response = await self.inner.handle_async_request(request)
        if request.url.path != "/api/agent/ask_proxy":
            return response
        inner, extra = response.stream, self.extra

        class Prefixed(httpx.AsyncByteStream):
            async def __aiter__(self):
                first = True
                async for chunk in inner:  # type: ignore[union-attr]
                    yield (extra + chunk) if first else chunk
                    first = False

            async def aclose(self) -> None:
                await inner.aclose()  # type: ignore[union-attr]

        response.stream = Prefixed()
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_an_unknown_event_is_logged_once_and_counted_in_the_status(
    nursery: trio.Nursery, sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="genspark2api.drift")
    secret = cookie("ok")
    transport = Inject(b'data: {"type": "thread_fork", "fork_id": "f1", "_event_index": 0}\n\n')
    with drift.capture():
        service = await serve(nursery, sim, [secret], {"transport": transport}, AUTO_MODEL_CHAT_MAP_TYPE="0")
        for stream in (False, True, False):
            assert answered(await ask(service, stream=stream))  # the answer still arrives
        async with service.http() as http:
            status = (await http.get("/v1/upstream")).json()
    lines = [r.getMessage() for r in caplog.records if r.name == "genspark2api.drift"]
    assert len(lines) == 1 and "event_type 'thread_fork'" in lines[0] and '"fork_id":"f1"' in lines[0]
    assert secret not in lines[0]
    assert status["object"] == "upstream" and status["transport"] == "custom"
    [row] = status["drift"]
    assert (row["kind"], row["name"], row["count"]) == ("event_type", "thread_fork", 3)


async def test_an_unknown_status_shape_is_a_drift_notice(nursery: trio.Nursery, sim: Simulator) -> None:
    teapot = httpx.Response(418, headers={"content-type": "text/plain"}, content=b"I'm a teapot")
    with drift.capture() as seen:
        service = await serve(nursery, sim, [cookie("ok")], {"transport": Inject(replace=teapot)})
        reply = await ask(service)
    assert reply.status >= 400 and reply.error is not None
    [entry] = seen.snapshot()
    assert (entry.kind, entry.name) == ("http_status", "/api/agent/ask_proxy HTTP 418 text/plain")
    assert "teapot" in entry.sample


async def test_the_status_endpoint_is_behind_the_api_key(nursery: trio.Nursery, sim: Simulator) -> None:
    service = await serve(nursery, sim, [cookie("ok")], API_SECRET="k1")
    async with service.http() as http:
        refused = await http.get("/v1/upstream")
        allowed = await http.get("/v1/upstream", headers={"Authorization": "Bearer k1"})
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    assert allowed.status_code == 200 and allowed.json()["transport"] == "httpx"
    assert allowed.json()["recording"] is False
