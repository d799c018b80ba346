"""Malformed bodies and parameters that used to crash a handler: each is a 400 naming the part."""

from __future__ import annotations

import pytest

from conftest import ServiceFactory

DEEP = b"[" * 1000 + b"]" * 1000
CHAT = b'{"model": "gpt-5.4", "messages": [{"role": "user", "content": "x"}], "metadata": %s}'


@pytest.mark.parametrize(
    ("method", "path", "body", "param", "code"),
    [
        ("POST", "/v1/images/generations", b'{"prompt": "x", "n": "\xc2\xb2"}', "n", "invalid_value"),
        ("POST", "/v1/videos", b'{"prompt": "x", "seconds": "\xc2\xb2"}', "seconds", "invalid_value"),
        ("POST", "/v1/videos/generations", b'{"prompt": "x", "duration": "\xe2\x91\xa0"}', "duration", "invalid_value"),
        ("GET", "/v1/videos?limit=%C2%B2", None, "limit", "invalid_value"),
        ("POST", "/v1/chat/completions", CHAT % DEEP, None, "invalid_json"),
        ("POST", "/v1/chat/completions", DEEP, None, "invalid_json"),
        ("POST", "/v1/images/generations", b'{"prompt": %s}' % DEEP, None, "invalid_json"),
        ("POST", "/v1/videos", b'{"a":' * 1000 + b"1" + b"}" * 1000, None, "invalid_json"),
        ("POST", "/v1/chat/completions", b'{"model": "gpt-5.4\xff\xfe", "messages": [{"role": "user", "content": "x"}]}', None, "invalid_json"),
        ("POST", "/v1/images/generations", b'{"prompt": "\xc3\x28"}', None, "invalid_json"),
    ],
)
async def test_crashers_are_400s(make_service: ServiceFactory, sim, method: str, path: str, body: bytes | None,
                                 param: str | None, code: str) -> None:
    service = await make_service()
    async with service.http() as http:
        response = await http.request(method, path, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["code"] == code and error["message"]
    assert sim.requests == []
