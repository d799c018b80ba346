"""The admin API against the simulator: add, disable, revive, probe; keys; per-cookie proxies."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
import trio
from conftest import Service, ServiceFactory, free_port
from test_pool_e2e import LoopbackProxy, answered, ask, cookie, key_of

from genspark2api.api.app import create_app
from genspark2api.simulator import Simulator

ADMIN = "admin-secret-for-tests-0123"
CLIENT = "sk-client-key-for-tests-4567"
BASE = "/admin/api"


def admin(token: str = ADMIN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def call(service: Service, method: str, path: str, token: str | None = ADMIN, **kwargs: object):
    headers = admin(token) if token else {}
    async with service.http() as http:
        return await http.request(method, f"{service.settings.route_prefix}{BASE}{path}", headers=headers, **kwargs)


def assert_openai_error(response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == code, error


def assert_masked(text: str, *cookies: str) -> None:
    for value in cookies:
        assert value not in text and value[12:-8] not in text


# ------------------------------------------------------------------------------ the pool through the API


async def test_admin_adds_disables_revives_and_probes_a_cookie(make_service: ServiceFactory, sim: Simulator) -> None:
    first, added, dead = cookie("ok"), cookie("ok"), cookie("not-login")
    service = await make_service(cookies=[first], ADMIN_SECRET=ADMIN, API_SECRET=CLIENT)

    response = await call(service, "POST", "/cookies", json={
        "cookies": f"Cookie: agree_terms=1; session_id={added}\n# a comment\n{dead} | label=bob\n",
        "proxy": None})
    assert response.status_code == 201, response.text
    rows = response.json()["data"]
    assert [r["outcome"] for r in rows] == ["added", "added"]
    assert rows[1]["cookie"]["label"] == "bob" and rows[0]["cookie"]["origin"] == "admin"
    assert_masked(response.text, first, added, dead)
    assert len(service.runtime.pool) == 3  # at once, no restart

    again = await call(service, "POST", "/cookies", json={"cookies": [f"agree_terms=1; session_id={added}", f"session_id={first}; x=1"]})
    assert again.status_code == 200 and [r["outcome"] for r in again.json()["data"]] == ["unchanged", "updated"]

    # Disable the first two: every request now lands on the one that is not logged in, which dies.
    for value in (first, added):
        disabled = await call(service, "POST", f"/cookies/{key_of(value)}/disable")
        assert disabled.status_code == 200 and disabled.json()["state"] == "disabled"
    async with service.http(headers={"Authorization": f"Bearer {CLIENT}"}) as http:
        reply = await http.post("/v1/chat/completions", json={"model": "gpt-5.4", "messages": [{"role": "user", "content": "hi"}]})
    assert reply.status_code in (429, 503)
    row = (await call(service, "GET", f"/cookies/{key_of(dead)}")).json()
    assert row["state"] == "dead" and row["reason"]

    # A probe of the logged-out account says so, and stores it.
    probed = (await call(service, "POST", f"/cookies/{key_of(dead)}/probe")).json()
    assert probed["probe"]["logged_in"] is False and probed["state"] == "dead"
    # Revive it (an operator's call), enable the others, and probe a good one: credits from billing_cycle.
    revived = (await call(service, "POST", f"/cookies/{key_of(dead)}/revive")).json()
    assert revived["state"] == "healthy" and revived["dead"] is False
    for value in (first, added):
        assert (await call(service, "POST", f"/cookies/{key_of(value)}/enable")).json()["state"] == "healthy"
    good = (await call(service, "POST", f"/cookies/{key_of(added)}/probe")).json()["probe"]
    assert good["logged_in"] is True and good["credits"] == 100 and good["email"].endswith("@sim.example")
    probe_calls = [r.path for r in sim.requests if r.session_id == added]
    assert probe_calls == ["/api/user", "/api/credit_audit/billing_cycle"]  # no chat, no credit spent

    listing = await call(service, "GET", "/cookies")
    assert [r["key"] for r in listing.json()["data"]] == [key_of(first), key_of(added), key_of(dead)]
    assert_masked(listing.text, first, added, dead)

    removed = await call(service, "DELETE", f"/cookies/{key_of(dead)}")
    assert removed.json() == {"key": key_of(dead), "deleted": True} and len(service.runtime.pool) == 2


async def test_reset_ends_a_cooldown_and_patch_sets_proxy_and_label(make_service: ServiceFactory) -> None:
    limited = cookie("rate-limited")
    service = await make_service(cookies=[limited], ADMIN_SECRET=ADMIN)
    assert not answered(await ask(service))
    row = (await call(service, "GET", f"/cookies/{key_of(limited)}")).json()
    assert row["state"] == "cooling" and row["cooling_seconds_left"] > 500
    reset = (await call(service, "POST", f"/cookies/{key_of(limited)}/reset")).json()
    assert reset["state"] == "healthy" and reset["cooling_until"] is None

    patched = await call(service, "PATCH", f"/cookies/{key_of(limited)}",
                         json={"proxy": "socks5://user:pw-secret@127.0.0.1:9", "label": "carol"})
    assert patched.status_code == 200, patched.text
    assert patched.json()["proxy"] == "socks5://user:***@127.0.0.1:9" and patched.json()["label"] == "carol"
    assert "pw-secret" not in patched.text
    cleared = (await call(service, "PATCH", f"/cookies/{key_of(limited)}", json={"proxy": None})).json()
    assert cleared["proxy"] is None and cleared["label"] == "carol"


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("POST", "/cookies", {"cookies": []}, 400, "no_cookies"),
        ("POST", "/cookies", {"cookies": "  \n# only a comment"}, 400, "no_cookies"),
        ("POST", "/cookies", {"cookies": ["x | proxy=ftp://h:1"]}, 400, "invalid_cookie_entry"),
        ("POST", "/cookies", {"cookies": ["x"], "proxy": "bogus"}, 400, "invalid_cookie_entry"),
        ("POST", "/cookies", {"cookie": ["x"]}, 400, "invalid_request_body"),
        ("POST", "/cookies", {"cookies": 7}, 400, "invalid_request_body"),
        ("POST", "/cookies", b"{not json", 400, "invalid_json"),
        ("POST", "/cookies", b"", 400, "invalid_json"),
        ("PATCH", "/cookies/{key}", {"proxy": "socks4://h:1"}, 400, "invalid_cookie_setting"),
        ("PATCH", "/cookies/{key}", {"label": "a|b"}, 400, "invalid_cookie_setting"),
        ("PATCH", "/cookies/{key}", {"colour": "blue"}, 400, "invalid_request_body"),
        ("GET", "/cookies/000000000000", None, 404, "cookie_not_found"),
        ("POST", "/cookies/000000000000/disable", None, 404, "cookie_not_found"),
        ("POST", "/cookies/000000000000/probe", None, 404, "cookie_not_found"),
        ("DELETE", "/cookies/000000000000", None, 404, "cookie_not_found"),
    ],
)
async def test_bad_admin_requests_get_openai_errors(
    make_service: ServiceFactory, method: str, path: str, body: object, status: int, code: str
) -> None:
    value = cookie("ok")
    service = await make_service(cookies=[value], ADMIN_SECRET=ADMIN)
    kwargs = {"content": body} if isinstance(body, bytes) else ({"json": body} if body is not None else {})
    response = await call(service, method, path.format(key=key_of(value)), **kwargs)
    assert_openai_error(response, status, code)
    assert_masked(response.text, value)


# ------------------------------------------------------------------------------ who may call it


def admin_rules(service: Service) -> list[tuple[str, str]]:
    """Every route under /admin/ the app serves, with a real cookie key filled in."""
    app = create_app(service.runtime)
    rules = []
    for rule in app.url_map.iter_rules():
        if "/admin/" not in rule.rule:
            continue
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            rules.append((method, rule.rule))
    return rules


async def test_a_client_key_is_refused_on_every_admin_route(make_service: ServiceFactory) -> None:
    value = cookie("ok")
    service = await make_service(cookies=[value], ADMIN_SECRET=ADMIN, API_SECRET=CLIENT, ROUTE_PREFIX="/gs")
    rules = admin_rules(service)
    api_rules = [r for r in rules if r[1].startswith("/gs/admin/api/")]
    assert len(api_rules) >= 10 and {m for m, _ in api_rules} == {"GET", "POST", "PATCH", "DELETE"}
    assert ("POST", "/admin/action") in rules and ("POST", "/gs/admin/action") in rules
    async with service.http() as http:
        for method, rule in rules:
            path = rule.replace("<key>", key_of(value))
            for token, expected in ((CLIENT, 403 if "/admin/api/" in rule else 401), (None, 401), ("wrong-key-123456", 401)):
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                response = await http.request(method, path, headers=headers, json={"cookies": [cookie("ok")]})
                assert response.status_code == expected, (method, path, token, response.text)
    # Nothing changed: still one healthy cookie, never disabled, removed or probed.
    status = service.runtime.pool.snapshot()
    assert len(status) == 1 and str(status[0].state) == "healthy" and status[0].probe is None


async def test_admin_api_is_off_without_admin_secret(make_service: ServiceFactory) -> None:
    value = cookie("ok")
    service = await make_service(cookies=[value], API_SECRET=CLIENT)
    for method, path in (("GET", "/cookies"), ("POST", f"/cookies/{key_of(value)}/disable")):
        for token in (CLIENT, ADMIN, None):
            assert_openai_error(await call(service, method, path, token=token), 404, "admin_api_off")
    async with service.http() as http:
        form = await http.post("/admin/login", data={"secret": ADMIN})
    assert form.status_code == 404
    assert str(service.runtime.pool.snapshot()[0].state) == "healthy"


async def test_admin_api_lives_under_the_route_prefix(make_service: ServiceFactory) -> None:
    service = await make_service(ADMIN_SECRET=ADMIN, ROUTE_PREFIX="/gs")
    assert (await call(service, "GET", "/cookies")).status_code == 200
    async with service.http() as http:
        assert (await http.get(f"{BASE}/cookies", headers=admin())).status_code == 404


def test_admin_secret_must_differ_from_client_keys() -> None:
    from genspark2api.settings import Settings, SettingsError

    with pytest.raises(SettingsError, match="differ") as info:
        Settings.from_env({"ADMIN_SECRET": ADMIN, "API_SECRET": f"{CLIENT},{ADMIN}"})
    assert ADMIN not in str(info.value)
    with pytest.raises(SettingsError, match="at least 8") as info:
        Settings.from_env({"ADMIN_SECRET": "short"})
    assert "short" not in str(info.value)


# ------------------------------------------------------------------------------ per-cookie proxies


async def test_a_per_cookie_proxy_carries_that_cookie_only(make_service: ServiceFactory, sim: Simulator, nursery: trio.Nursery) -> None:
    # The upstream host exists only for the proxies: a call that bypassed them could not connect.
    address = urlsplit(sim.url)  # type: ignore[attr-defined]
    target = (address.hostname or "", address.port or 80)
    upstream = f"http://genspark.invalid:{free_port()}"
    default = LoopbackProxy("http", "genspark.invalid", target)     # PROXY_URL
    own = LoopbackProxy("socks5", "genspark.invalid", target)       # alice's own
    default_port, own_port = await nursery.start(default.serve), await nursery.start(own.serve)
    alice, bob = cookie("ok"), cookie("ok")
    service = await make_service(
        cookies=[f"{alice} | proxy=socks5://127.0.0.1:{own_port} | label=alice", bob],
        GENSPARK_BASE_URL=upstream, PROXY_URL=f"http://127.0.0.1:{default_port}",
        ADMIN_SECRET=ADMIN, AUTO_MODEL_CHAT_MAP_TYPE="0",
    )

    async def only(value: str) -> tuple[int, int]:
        """Two answers with only `value` enabled; the calls each proxy saw meanwhile."""
        before = len(default.seen), len(own.seen)
        start = len(sim.requests)
        assert answered(await ask(service)) and answered(await ask(service, stream=True))
        assert {r.session_id for r in sim.requests[start:]} == {value}
        return len(default.seen) - before[0], len(own.seen) - before[1]

    await call(service, "POST", f"/cookies/{key_of(bob)}/disable")
    via_default, via_own = await only(alice)
    assert via_default == 0 and via_own >= 1
    await call(service, "POST", f"/cookies/{key_of(bob)}/enable")
    await call(service, "POST", f"/cookies/{key_of(alice)}/disable")
    via_default, via_own = await only(bob)
    assert via_default == 2 and via_own == 0
    assert all(line.startswith(f"POST {upstream}/api/") for line in default.seen)
    # A proxy set through the admin API takes effect at once, and shares alice's connection pool.
    patched = await call(service, "PATCH", f"/cookies/{key_of(bob)}", json={"proxy": f"socks5://127.0.0.1:{own_port}"})
    assert patched.status_code == 200
    # (The socks tunnel of alice's calls may be reused: that the upstream answered at all while the
    # default proxy saw nothing proves the route, since the upstream host resolves nowhere.)
    via_default, _ = await only(bob)
    assert via_default == 0
    assert service.runtime.client.proxies_open == [f"socks5://127.0.0.1:{own_port}"]
    # The probe goes through the cookie's proxy too.
    before = len(own.seen), len(default.seen)
    probe = (await call(service, "POST", f"/cookies/{key_of(bob)}/probe")).json()["probe"]
    assert probe["logged_in"] is True and len(default.seen) == before[1]
    assert all(line == f"CONNECT {urlsplit(upstream).netloc}" for line in own.seen)


# ------------------------------------------------------------------------------ the cookie file


async def test_cookie_file_lines_carry_proxy_and_label(make_service: ServiceFactory, tmp_path) -> None:
    alice, bob = cookie("ok"), cookie("ok")
    path = tmp_path / "cookies.txt"
    path.write_text(f"# pool\n{alice} | proxy=socks5://u:pw-file@127.0.0.1:9 | label=alice\n{bob}\tlabel=bob\n")
    service = await make_service(cookies=[], GS_COOKIE_FILE=str(path), ADMIN_SECRET=ADMIN)
    rows = {r["label"]: r for r in (await call(service, "GET", "/cookies")).json()["data"]}
    assert rows["alice"]["proxy"] == "socks5://u:***@127.0.0.1:9" and rows["bob"]["proxy"] is None
    assert service.runtime.pool.proxy_for(f"session_id={alice}") == "socks5://u:pw-file@127.0.0.1:9"
    # Bob goes direct to the simulator, alice's proxy listens nowhere: the pool answers through bob.
    assert answered(await ask(service))
    # A bad line on reload leaves the pool as it was (and is logged with the cookie masked).
    path.write_text(f"{alice} | proxy=ftp://nowhere:1\n")
    service.runtime.reload_cookies("test")
    assert len(service.runtime.pool) == 2
    path.write_text(f"{bob} | label=bob again\n")
    service.runtime.reload_cookies("test")
    (only,) = (await call(service, "GET", "/cookies")).json()["data"]
    assert only["label"] == "bob again"


def test_a_bad_cookie_line_stops_the_start(tmp_path, capsys) -> None:
    from genspark2api import cli

    secret_tail = "0123456789abcdef0123456789abcdef"
    path = tmp_path / "cookies.txt"
    path.write_text(f"ok-{secret_tail} | proxy=gopher://x:70\n")
    assert cli.main([], env={"GS_COOKIE_FILE": str(path)}) == 2
    error = capsys.readouterr().err
    assert "GS_COOKIE_FILE" in error and "entry #1" in error and "proxy must be" in error
    assert secret_tail not in error and secret_tail[4:-4] not in error
    assert cli.main([], env={"GS_COOKIE": "ok-1 | colour=red"}) == 2
    assert "GS_COOKIE: cookie entry #1" in capsys.readouterr().err


async def test_with_an_admin_key_the_pool_and_upstream_views_are_the_operators(make_service: ServiceFactory) -> None:
    # Per-cookie rows and upstream drift samples are the operator's once ADMIN_SECRET is set.
    service = await make_service(ADMIN_SECRET=ADMIN, API_SECRET=CLIENT)
    async with service.http() as http:
        for path in ("/v1/pool", "/v1/upstream"):
            as_client = await http.get(path, headers={"Authorization": f"Bearer {CLIENT}"})
            assert as_client.status_code == 403 and as_client.json()["error"]["code"] == "admin_key_required"
            assert (await http.get(path)).status_code == 401
            assert (await http.get(path, headers=admin())).status_code == 200
        assert (await http.get("/v1/models", headers=admin())).status_code == 401   # still not a client key
    open_service = await make_service(API_SECRET=CLIENT)   # no ADMIN_SECRET: as before, any client key
    async with open_service.http() as http:
        assert (await http.get("/v1/pool", headers={"Authorization": f"Bearer {CLIENT}"})).status_code == 200
