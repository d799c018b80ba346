"""Bad input, auth, rate limit, blacklist, CORS, ROUTE_PREFIX, health: every answer OpenAI-shaped."""

from __future__ import annotations

import pytest
from conftest import ServiceFactory

BAD_BODIES = [
    (b"not json", None, "invalid_json"),
    (b"", None, "invalid_json"),
    (b"[1, 2]", None, "invalid_json"),
    (b'{"messages": [{"role": "user", "content": "x"}]}', "model", None),
    (b'{"model": 5, "messages": [{"role": "user", "content": "x"}]}', "model", None),
    (b'{"model": "  ", "messages": [{"role": "user", "content": "x"}]}', "model", None),
    (b'{"model": "gpt-5.4"}', "messages", None),
    (b'{"model": "gpt-5.4", "messages": []}', "messages", None),
    (b'{"model": "gpt-5.4", "messages": {"role": "user"}}', "messages", None),
    (b'{"model": "gpt-5.4", "messages": [{"content": "x"}]}', "messages[0].role", None),
    (b'{"model": "gpt-5.4", "messages": [{"role": "wizard", "content": "x"}]}', "messages[0].role", None),
    (b'{"model": "gpt-5.4", "messages": [{"role": "user", "content": 42}]}', "messages[0].content", None),
    (b'{"model": "gpt-5.4", "messages": [{"role": "user", "content": [{"type": "video", "x": 1}]}]}', "messages[0].content[0].type", None),
    (b'{"model": "gpt-5.4", "messages": [{"role": "user", "content": null}]}', "messages[0].content", None),
    (b'{"model": "gpt-5.4", "n": 2, "messages": [{"role": "user", "content": "x"}]}', "n", None),
    (b'{"model": "gpt-5.4", "max_tokens": 0, "messages": [{"role": "user", "content": "x"}]}', "max_tokens", None),
    (b'{"model": "gpt-5.4", "stream": "yes", "messages": [{"role": "user", "content": "x"}]}', "stream", None),
    (b'{"model": "gpt-5.4", "messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "AA==", "format": "wav"}}]}]}',
     "messages[0].content[0]", "unsupported_content"),
]


@pytest.mark.parametrize(("body", "param", "code"), BAD_BODIES)
async def test_bad_input_is_a_400_naming_the_param_and_never_goes_upstream(
    make_service: ServiceFactory, sim, body: bytes, param: str | None, code: str | None
) -> None:
    service = await make_service()
    async with service.http() as http:
        response = await http.post("/v1/chat/completions", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["param"] == param and error["message"]
    if code:
        assert error["code"] == code
    assert sim.requests == []


async def test_unknown_fields_are_accepted(make_service: ServiceFactory) -> None:
    service = await make_service()
    async with service.http() as http:
        response = await http.post("/v1/chat/completions", json={
            "model": "gpt-5.4", "messages": [{"role": "user", "content": "x"}], "temperature": 0.2,
            "user": "u1", "metadata": {"a": "b"}, "seed": 7, "stream_options": {"include_usage": True},
            "logprobs": False, "reasoning_effort": "low", "store": False, "top_p": 1, "presence_penalty": 0,
        })
    assert response.status_code == 200


async def test_size_path_and_method_errors_are_json(make_service: ServiceFactory) -> None:
    service = await make_service(MAX_REQUEST_BYTES="2048")
    async with service.http() as http:
        big = await http.post("/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "x" * 5000}]})
        missing = await http.get("/v1/nothing-here")
        method = await http.get("/v1/chat/completions")
    assert big.status_code == 413 and big.json()["error"]["code"] == "request_too_large"
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert method.status_code == 405 and method.json()["error"]["code"] == "method_not_allowed"


async def test_api_key_is_required_when_configured(make_service: ServiceFactory) -> None:
    service = await make_service(API_SECRET="sk-one,sk-two")
    body = {"model": "gpt-5.4", "messages": [{"role": "user", "content": "x"}]}
    async with service.http() as http:
        none = await http.post("/v1/chat/completions", json=body)
        wrong = await http.post("/v1/chat/completions", json=body, headers={"Authorization": "Bearer sk-three"})
        basic = await http.post("/v1/chat/completions", json=body, headers={"Authorization": "Basic sk-one"})
        good = await http.post("/v1/chat/completions", json=body, headers={"Authorization": "Bearer sk-two"})
        models = await http.get("/v1/models")
        health = await http.get("/healthz")
    for response in (none, wrong, basic, models):
        assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
    assert good.status_code == 200 and health.status_code == 200


async def test_rate_limit_per_ip(make_service: ServiceFactory) -> None:
    service = await make_service(REQUEST_RATE_LIMIT="3")
    async with service.http() as http:
        statuses = [(await http.get("/v1/models")) for _ in range(5)]
    assert [r.status_code for r in statuses] == [200, 200, 200, 429, 429]
    limited = statuses[3]
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.json()["error"]["type"] == "rate_limit_error"


async def test_ip_black_list(make_service: ServiceFactory) -> None:
    service = await make_service(IP_BLACK_LIST="10.9.9.9,127.0.0.1")
    async with service.http() as http:
        response = await http.get("/v1/models")
    assert response.status_code == 403 and response.json()["error"]["code"] == "ip_blocked"


async def test_cors_preflight_and_headers(service) -> None:
    async with service.http() as http:
        preflight = await http.options("/v1/chat/completions", headers={
            "Origin": "https://chat.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type"})
        normal = await http.get("/v1/models", headers={"Origin": "https://chat.example"})
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert "Authorization" in preflight.headers["access-control-allow-headers"]
    assert normal.headers["access-control-allow-origin"] == "*"


async def test_route_prefix(make_service: ServiceFactory) -> None:
    service = await make_service(ROUTE_PREFIX="hf")
    async with service.http() as http:
        prefixed = await http.get("/hf/v1/models")
        bare = await http.get("/v1/models")
        health = [await http.get(p) for p in ("/healthz", "/hf/healthz", "/", "/hf/")]
    assert prefixed.status_code == 200 and bare.status_code == 404
    assert [r.status_code for r in health] == [200, 200, 200, 200]
    answer = await service.openai().chat.completions.create(model="gpt-5.4", messages=[{"role": "user", "content": "p"}])
    assert "You said: p" in answer.choices[0].message.content


async def test_index_page_shows_masked_pool(make_service: ServiceFactory) -> None:
    secret = "aed9196b-1111-2222-3333-444444e6e32f7e4d"
    service = await make_service(cookies=[secret])
    async with service.http() as http:
        page = await http.get("/")
    assert page.status_code == 200 and "genspark2api" in page.text
    assert secret not in page.text


async def test_readyz_follows_the_pool(make_service: ServiceFactory) -> None:
    ready = await make_service(cookies=["ok-1"])
    dead = await make_service(cookies=["not-login-1"], GENSPARK_CHAT_PROTOCOL="copilot")
    async with ready.http() as http:
        assert (await http.get("/readyz")).json() == {"status": "ready", "healthy": 1, "cooling": 0, "dead": 0}
    async with dead.http() as http:
        assert (await http.get("/readyz")).status_code == 200
        await http.post("/v1/chat/completions", json={"model": "gpt-5.4", "messages": [{"role": "user", "content": "x"}]})
        response = await http.get("/readyz")
    assert response.status_code == 503 and response.json()["dead"] == 1
