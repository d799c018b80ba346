"""What an operator sees: start errors, start-up lines, logs, the `/` page, 404 texts."""

from __future__ import annotations

import gc
import socket
from pathlib import Path

import pytest
from conftest import ServiceFactory

from genspark2api.cli import GC_THRESHOLDS, hypercorn_config, main, tune_gc
from genspark2api.settings import Settings

SECRET = "sk-operator-0123456789abcdef"


def test_a_busy_port_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["--demo"], {"HOST": "127.0.0.1", "PORT": str(port)}) == 2
    err = capsys.readouterr().err
    assert f"genspark2api: cannot listen on 127.0.0.1:{port}: Address already in use\n" in err
    assert "Traceback" not in err and "ExceptionGroup" not in err


def test_the_service_freezes_its_start_up_objects_and_collects_less_often() -> None:
    """cli.run calls tune_gc once the app is built (the 50-client benchmark spent 0.7 ms of CPU per
    request in the collector with Python's defaults)."""
    thresholds, frozen = gc.get_threshold(), gc.get_freeze_count()
    made_at_start = {"a": [1]}

    def tracked() -> bool:   # by identity: `in` would compare every object with ==
        return any(obj is made_at_start for obj in gc.get_objects())

    try:
        tune_gc()
        assert gc.get_threshold() == GC_THRESHOLDS and GC_THRESHOLDS[0] >= 10_000
        assert gc.get_freeze_count() > frozen
        assert not tracked()   # frozen: no collection walks it any more
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
    assert tracked()


def test_access_log_masks_media_capability_tokens() -> None:
    config = hypercorn_config(Settings(debug=True, route_prefix="/hf"))
    token = "Zq8d3kVbN0p1uYtR7sWx"
    scope = {"type": "http", "headers": [], "path": f"/hf/v1/media/{token}.png", "query_string": b"",
             "method": "GET", "scheme": "http", "http_version": "1.1", "client": ("10.0.0.1", 5)}
    atoms = config.log.atoms(scope, {"status": 200, "headers": []}, 0.01)
    line = config.access_log_format % atoms
    assert token not in line and token[:8] not in line and "/hf/v1/media/Zq8d…" in line
    assert "/v1/chat/completions" in config.log.atoms({**scope, "path": "/v1/chat/completions"}, None, 0)["r"]


async def test_the_start_up_lines_never_show_the_api_key(sim, tmp_path: Path) -> None:
    from test_pool_e2e import service_process

    log_path = tmp_path / "service.log"
    async with service_process(sim, log_path, GS_COOKIE="ok-1", API_SECRET=f"{SECRET},sk-second-key-987654") as (_, http):
        assert (await http.get("/v1/models", headers={"Authorization": f"Bearer {SECRET}"})).status_code == 200
    output = log_path.read_text()
    assert "try: curl" in output and 'Authorization: Bearer $API_SECRET' in output
    assert SECRET not in output and SECRET[4:-4] not in output and "sk-second-key-987654" not in output


async def test_404_under_v1_names_the_path_not_the_prefix(make_service: ServiceFactory) -> None:
    service = await make_service()
    async with service.http() as http:
        api = (await http.post("/v1/embeddings", json={})).json()["error"]["message"]
        other = (await http.get("/chat/completions")).json()["error"]["message"]
    assert "Unknown API path: /v1/embeddings" in api and "lives under" not in api
    assert "chat/completions" in api
    assert "The API lives under /v1/" in other


async def test_index_page_shows_counts_without_the_key_and_details_with_it(make_service: ServiceFactory) -> None:
    service = await make_service(cookies=["ok-1", "ok-2"], API_SECRET=SECRET)
    masked = [s.masked for s in service.runtime.pool.snapshot()]
    async with service.http() as http:
        anonymous = (await http.get("/")).text
        keyed = (await http.get("/", headers={"Authorization": f"Bearer {SECRET}"})).text
    assert "<b>2</b>cookies" in anonymous and "<b>2</b>healthy" in anonymous and "<b>0</b>dead" in anonymous
    assert all(m not in anonymous for m in masked) and "id='pool'" not in anonymous
    assert all(m in keyed for m in masked) and "id='pool'" in keyed
    open_service = await make_service(cookies=["ok-1"])
    async with open_service.http() as http:
        assert open_service.runtime.pool.snapshot()[0].masked in (await http.get("/")).text
