"""Observability: /metrics (parsed with Prometheus' own parser), its protection, named client keys
with their counters and per-minute limits, and LOG_FORMAT=json from the real process."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import trio
from conftest import ServiceFactory, free_port
from prometheus_client.parser import text_string_to_metric_families
from test_pool_e2e import cookie, service_process

from genspark2api.client_keys import (
    ClientKey,
    limits_by_key,
    parse_client_keys,
    parse_key_rpm,
)
from genspark2api.redact import mask_cookie
from genspark2api.settings import Settings, SettingsError
from genspark2api.simulator import Simulator

MODEL = "gpt-5.4"
CHAT = "/v1/chat/completions"
ADMIN = "adm-0123456789abcdef-secret"
ALICE = "sk-alice-0123456789abcdef"
PLAIN = "sk-plain-fedcba9876543210"
MESSAGES = [{"role": "user", "content": "hi"}]


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, by (name, sorted labels); the parser rejects a malformed one."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(scraped: dict, name: str, **labels: str) -> float:
    return scraped.get((name, tuple(sorted(labels.items()))), 0.0)


async def scrape(http: httpx.AsyncClient, **headers: str) -> dict:
    response = await http.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return samples(response.text)


# ------------------------------------------------------------------------------ /metrics with traffic


async def test_metrics_move_with_stream_non_stream_and_a_failover(make_service: ServiceFactory) -> None:
    faulty = cookie("rate-limited")  # first in order: the first request tries it, then fails over
    service = await make_service(cookies=[faulty, cookie("ok")], METRICS="open", HEDGE_AFTER_SECONDS="0")
    client = service.openai()
    async with service.http() as http:
        before = await scrape(http)
        assert value(before, "genspark2api_cookies", state="healthy") == 2
        whole = await client.chat.completions.create(model=MODEL, messages=MESSAGES)
        stream = await client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert whole.choices[0].message.content and text
        missing = await http.post(CHAT, json={"model": "no-such-model-at-all", "messages": MESSAGES})
        assert missing.status_code == 404
        after = await scrape(http)

    chat = {"route": CHAT, "status": "200", "model": MODEL}
    assert value(after, "genspark2api_requests_total", **chat) - value(before, "genspark2api_requests_total", **chat) == 2
    # A refused model name is no label value (label sets stay bounded); with UNKNOWN_MODEL_MOA,
    # where any name is served, the name is counted as `other`.
    assert value(after, "genspark2api_requests_total", route=CHAT, status="404", model="") == 1
    assert service.runtime.metrics.model_label("no-such-model-at-all") == "other"
    assert value(after, "genspark2api_requests_total", route="/metrics", status="200", model="") >= 1
    assert value(after, "genspark2api_upstream_attempts_total", outcome="rate_limited") == 1
    assert value(after, "genspark2api_upstream_attempts_total", outcome="success") == 2
    assert value(after, "genspark2api_failovers_total") == 1
    assert value(after, "genspark2api_hedges_total") == 0
    assert value(after, "genspark2api_first_content_seconds_count", route=CHAT) == 1  # the stream
    assert value(after, "genspark2api_request_duration_seconds_count", route=CHAT) == 3
    assert value(after, "genspark2api_tokens_total", type="prompt") >= whole.usage.prompt_tokens > 0
    assert value(after, "genspark2api_tokens_total", type="completion") > whole.usage.completion_tokens > 0
    assert value(after, "genspark2api_cookies", state="cooling") == 1
    assert value(after, "genspark2api_cookies", state="healthy") == 1
    assert value(after, "genspark2api_cookies_in_flight") == 0


async def test_a_hedge_and_its_beaten_attempt_are_counted(make_service: ServiceFactory, sim: Simulator) -> None:
    sim.answer_delay_slow = 3.0
    service = await make_service(cookies=[cookie("slow-first-byte"), cookie("ok")], METRICS="open",
                                 HEDGE_AFTER_SECONDS="0.2")
    async with service.http() as http:
        assert (await http.post(CHAT, json={"model": MODEL, "messages": MESSAGES})).status_code == 200
        with trio.fail_after(3):  # the beaten attempt reports once its cancellation has run
            while value(scraped := await scrape(http), "genspark2api_upstream_attempts_total", outcome="network") < 1:
                await trio.sleep(0.02)
    assert value(scraped, "genspark2api_hedges_total") == 1
    assert value(scraped, "genspark2api_failovers_total") == 0
    assert value(scraped, "genspark2api_upstream_attempts_total", outcome="success") == 1


async def test_every_answer_carries_a_request_id(make_service: ServiceFactory) -> None:
    service = await make_service()
    async with service.http() as http:
        models = await http.get("/v1/models")
        chat = await http.post(CHAT, json={"model": MODEL, "messages": MESSAGES})
        other = await http.get("/v1/models")
    ids = [models.headers["x-request-id"], other.headers["x-request-id"]]
    assert all(len(i) == 32 for i in ids) and ids[0] != ids[1]
    assert chat.headers["x-request-id"] == chat.json()["id"] and chat.json()["id"].startswith("chatcmpl-")


# ------------------------------------------------------------------------------ protection


async def test_metrics_need_the_admin_key_and_refuse_client_keys(make_service: ServiceFactory) -> None:
    service = await make_service(API_SECRET=f"alice:{ALICE}", ADMIN_SECRET=ADMIN)
    async with service.http() as http:
        anonymous = await http.get("/metrics")
        wrong = await http.get("/metrics", headers={"Authorization": "Bearer nope"})
        client = await http.get("/metrics", headers={"Authorization": f"Bearer {ALICE}"})
        admin = await http.get("/metrics", headers={"Authorization": f"Bearer {ADMIN}"})
        admin_as_client = await http.get("/v1/models", headers={"Authorization": f"Bearer {ADMIN}"})
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "invalid_admin_key"
    assert wrong.status_code == 401
    assert client.status_code == 403 and client.json()["error"]["code"] == "admin_key_required"
    assert admin.status_code == 200 and "genspark2api_requests_total" in admin.text
    assert admin_as_client.status_code == 401  # the admin key is not a client key either


@pytest.mark.parametrize(("env", "status", "code"), [
    ({"METRICS": "off", "ADMIN_SECRET": ADMIN}, 404, "not_found"),
    ({"METRICS": "admin"}, 403, "admin_key_not_set"),
])
async def test_metrics_off_or_without_an_admin_key(make_service: ServiceFactory, env: dict, status: int, code: str) -> None:
    service = await make_service(**env)
    async with service.http() as http:
        response = await http.get("/metrics", headers={"Authorization": f"Bearer {ADMIN}"})
    assert response.status_code == status and response.json()["error"]["code"] == code


async def test_metrics_open_answers_without_a_key_under_the_prefix_too(make_service: ServiceFactory) -> None:
    service = await make_service(API_SECRET=ALICE, METRICS="open", ROUTE_PREFIX="hf")
    async with service.http() as http:
        for path in ("/metrics", "/hf/metrics"):
            assert (await http.get(path)).status_code == 200
        await http.get("/hf/v1/models", headers={"Authorization": f"Bearer {ALICE}"})
        scraped = await scrape(http)
    # Routes are labelled without ROUTE_PREFIX, so dashboards do not depend on it.
    assert value(scraped, "genspark2api_requests_total", route="/v1/models", status="200", model="") == 1


# ------------------------------------------------------------------------------ named client keys


async def test_named_keys_are_counted_by_name_never_by_key(make_service: ServiceFactory) -> None:
    service = await make_service(API_SECRET=f"alice:{ALICE},{PLAIN}", METRICS="open")
    async with service.http() as http:
        for key in (ALICE, ALICE, PLAIN):
            response = await http.post(CHAT, json={"model": MODEL, "messages": MESSAGES},
                                       headers={"Authorization": f"Bearer {key}"})
            assert response.status_code == 200
        refused = await http.get("/v1/models", headers={"Authorization": "Bearer alice"})
        text = (await http.get("/metrics")).text
    assert refused.status_code == 401
    rows = {row.name: row for row in service.runtime.key_usage.snapshot()}
    assert set(rows) == {"alice", "key2"}
    assert rows["alice"].requests == 2 and rows["key2"].requests == 1
    assert rows["alice"].prompt_tokens > 0 and rows["alice"].completion_tokens > 0
    assert rows["alice"].last_used is not None and rows["alice"].requests_per_minute == 0
    scraped = samples(text)
    assert value(scraped, "genspark2api_client_key_requests_total", key="alice") == 2
    assert value(scraped, "genspark2api_client_key_requests_total", key="key2") == 1
    assert value(scraped, "genspark2api_client_key_tokens_total", key="alice", type="completion") == \
        rows["alice"].completion_tokens
    assert ALICE not in text and PLAIN not in text


async def test_a_key_over_its_rpm_gets_429_with_retry_after(make_service: ServiceFactory) -> None:
    service = await make_service(API_SECRET=f"alice:{ALICE},bob:{PLAIN}", API_KEY_RPM="alice=2", METRICS="open")
    async with service.http() as http:
        alice = {"Authorization": f"Bearer {ALICE}"}
        statuses = [(await http.get("/v1/models", headers=alice)).status_code for _ in range(3)]
        refused = await http.get("/v1/models", headers=alice)
        bob = [(await http.get("/v1/models", headers={"Authorization": f"Bearer {PLAIN}"})).status_code for _ in range(4)]
        scraped = await scrape(http)
    assert statuses == [200, 200, 429] and bob == [200] * 4
    error = refused.json()["error"]
    assert refused.status_code == 429 and error["code"] == "api_key_rate_limited" and error["type"] == "rate_limit_error"
    assert "'alice'" in error["message"] and ALICE not in error["message"]
    assert 1 <= int(refused.headers["retry-after"]) <= 31  # 2/min: one request back every 30 s
    assert value(scraped, "genspark2api_client_key_rate_limited_total", key="alice") == 2
    assert value(scraped, "genspark2api_client_key_requests_total", key="alice") == 4


def test_api_secret_entries_and_their_names() -> None:
    keys = parse_client_keys(["alice:sk-a", "sk-plain", "bob:abc:def", "sk:", ":sk-x", "with space:k"])
    assert keys == (ClientKey("alice", "sk-a"), ClientKey("key2", "sk-plain"), ClientKey("bob", "abc:def"),
                    ClientKey("key4", "sk:"), ClientKey("key5", ":sk-x"), ClientKey("key6", "with space:k"))
    with pytest.raises(ValueError, match="names a key twice: alice"):
        parse_client_keys(["alice:a", "alice:b"])
    with pytest.raises(ValueError, match="same key under two names"):
        parse_client_keys(["alice:a", "bob:a"])
    assert parse_key_rpm(" alice=60, *=5 ,") == (("alice", 60), ("*", 5))
    assert limits_by_key(keys[:2], (("alice", 60), ("*", 5))) == {"alice": 60, "key2": 5}
    with pytest.raises(ValueError, match="carol"):
        limits_by_key(keys, (("carol", 1),))


@pytest.mark.parametrize(("env", "message"), [
    ({"API_SECRET": "alice:k1", "API_KEY_RPM": "carol=3"}, "names no key of API_SECRET: carol"),
    ({"API_KEY_RPM": "alice=fast"}, "API_KEY_RPM entry 'alice=fast' is not accepted"),
    ({"API_SECRET": "a:k,a:j"}, "names a key twice"),
    ({"API_SECRET": "k1-long-secret", "ADMIN_SECRET": "k1-long-secret"}, "ADMIN_SECRET is also a client key"),
    ({"METRICS_BIND": "9100"}, "METRICS_BIND='9100' is not a listen address"),
    ({"METRICS_BIND": "::1:9100"}, "not a listen address"),
    ({"METRICS": "public"}, "use one of: off, admin, open"),
    ({"LOG_FORMAT": "xml"}, "use one of: text, json"),
])
def test_bad_observability_settings_stop_the_start(env: dict, message: str) -> None:
    with pytest.raises(SettingsError, match=message.replace("(", r"\(").replace("*", r"\*")):
        Settings.from_env(env)


def test_observability_settings_accepted() -> None:
    s = Settings.from_env({"METRICS_BIND": "[::1]:9100", "LOG_FORMAT": "JSON", "METRICS": "open"})
    assert (s.metrics_bind, s.log_format, s.metrics) == ("[::1]:9100", "json", "open")
    assert Settings().metrics == "admin" and Settings().log_format == "text" and Settings().metrics_bind == ""


# ------------------------------------------------------------------------------ the real process


async def test_json_logs_carry_the_request_id_and_the_scrape_listener_is_open(sim: Simulator, tmp_path: Path) -> None:
    faulty, good = cookie("rate-limited"), cookie("ok")
    scrape_port = free_port()
    log_path = tmp_path / "service.log"
    env = {"GS_COOKIE": f"{faulty},{good}", "API_SECRET": f"alice:{ALICE}", "ADMIN_SECRET": ADMIN,
           "LOG_FORMAT": "json", "METRICS_BIND": f"127.0.0.1:{scrape_port}", "HEDGE_AFTER_SECONDS": "0"}
    async with service_process(sim, log_path, **env) as (_, http):
        chat = await http.post(CHAT, json={"model": MODEL, "messages": MESSAGES},
                               headers={"Authorization": f"Bearer {ALICE}"})
        assert chat.status_code == 200
        assert (await http.get("/metrics")).status_code == 401  # the main port keeps METRICS=admin
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{scrape_port}", timeout=15) as scraper:
            open_metrics = await scraper.get("/metrics")
            elsewhere = await scraper.get("/v1/models")
        assert open_metrics.status_code == 200 and elsewhere.status_code == 404
        scraped = samples(open_metrics.text)
        assert value(scraped, "genspark2api_client_key_requests_total", key="alice") == 1
        assert value(scraped, "genspark2api_failovers_total") == 1
        with trio.fail_after(5):  # the attempt's warning may land a moment after the answer
            while "attempt on" not in log_path.read_text():
                await trio.sleep(0.05)

    output = log_path.read_text()
    lines = [json.loads(line) for line in output.splitlines() if line.strip()]  # every line is JSON
    assert all({"timestamp", "level", "logger", "message"} <= set(line) for line in lines)
    request_id = chat.headers["x-request-id"].removeprefix("chatcmpl-")
    failed = [line for line in lines if line["message"].startswith("attempt on")]
    # Logged in the failover attempt's own task, and still carrying the request's id.
    assert failed and failed[0]["request_id"] == request_id and failed[0]["level"] == "WARNING"
    assert any("base URL" in line["message"] for line in lines)
    assert any(mask_cookie("session_id=" + good) in line["message"] for line in lines)
    for secret in (ALICE, ADMIN, faulty, good):
        assert secret not in output
