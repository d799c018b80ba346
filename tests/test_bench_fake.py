"""The benchmark's fake upstream speaks what the service understands (scripts/fake_upstream.py).

Not a timing test: it only proves the fake's answers come through whole and that it counts
connections, so the benchmark's figures are about real answers.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import httpx
import trio
from conftest import start_service

_spec = importlib.util.spec_from_file_location(
    "fake_upstream", Path(__file__).resolve().parent.parent / "scripts" / "fake_upstream.py"
)
assert _spec is not None and _spec.loader is not None
fake = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fake)


async def test_the_fake_upstream_answers_through_the_service(nursery: trio.Nursery) -> None:
    port = await nursery.start(fake.serve, 0)
    service = await start_service(nursery, {"GENSPARK_BASE_URL": f"http://127.0.0.1:{port}",
                                            "GS_COOKIE": "bench", "REQUEST_RATE_LIMIT": "0"})
    async with service.http() as http:
        for stream in (False, True, False):
            body = {"model": "gpt-5.4", "stream": stream, "messages": [{"role": "user", "content": "deltas=7 pace=0"}]}
            r = await http.post("/v1/chat/completions", json=body)
            assert r.status_code == 200, r.text
            if stream:
                assert r.text.count('"content":"lorem "') == 7 and r.text.endswith("data: [DONE]\n\n")
            else:
                assert r.json()["choices"][0]["message"]["content"] == "lorem " * 7
        async with httpx.AsyncClient() as direct:
            stats = (await direct.get(f"http://127.0.0.1:{port}/stats")).json()
    assert stats == {"connections": 1, "requests": 3, "others": {}}   # nothing but answers
