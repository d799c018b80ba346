"""The page at `/` over plain HTTP: who sees what, the login session, CSRF, the forms' actions."""

from __future__ import annotations

import re

import httpx
from conftest import Service, ServiceFactory
from test_pool_e2e import answered, ask, cookie, key_of

from genspark2api.api.admin_page import SESSION_COOKIE, AdminSessions, duration

ADMIN = "admin-secret-for-tests-0123"
CLIENT = "sk-client-key-for-tests-4567"


def csrf_of(page: str) -> str:
    match = re.search(r"name='csrf' value='([^']+)'", page)
    assert match, "no CSRF token in the page"
    return match.group(1)


async def logged_in(service: Service, http: httpx.AsyncClient, root: str = "") -> str:
    """Log in through the form; returns the page's CSRF token."""
    response = await http.post(f"{root}/admin/login", data={"secret": ADMIN})
    assert response.status_code == 303 and response.headers["location"] == f"{root}/"
    page = (await http.get(f"{root}/")).text
    assert "Logged in." in page
    return csrf_of(page)


async def test_counts_only_without_the_admin_key(make_service: ServiceFactory) -> None:
    values = [cookie("ok"), cookie("ok")]
    service = await make_service(cookies=values, ADMIN_SECRET=ADMIN, API_SECRET=CLIENT)
    masked = [s.masked for s in service.runtime.pool.snapshot()]
    async with service.http() as http:
        anonymous = (await http.get("/")).text
        client = (await http.get("/", headers={"Authorization": f"Bearer {CLIENT}"})).text
        bearer_admin = (await http.get("/", headers={"Authorization": f"Bearer {ADMIN}"})).text
    for page in (anonymous, client):
        assert "<b>2</b>cookies" in page and "<b>2</b>healthy" in page
        assert all(m not in page for m in masked) and "id='pool'" not in page
        assert "id='login-form'" in page and "csrf" not in page
    assert all(m in bearer_admin for m in masked) and "name='csrf'" not in bearer_admin  # no forms without a session
    for page in (anonymous, client, bearer_admin):
        assert all(v not in page for v in values)


async def test_login_sets_a_strict_http_only_session_and_logout_ends_it(make_service: ServiceFactory) -> None:
    service = await make_service(ADMIN_SECRET=ADMIN)
    async with service.http() as http:
        wrong = await http.post("/admin/login", data={"secret": "not-the-key"})
        assert wrong.status_code == 401 and "not the admin key" in wrong.text and SESSION_COOKIE not in http.cookies
        response = await http.post("/admin/login", data={"secret": ADMIN})
        set_cookie = response.headers["set-cookie"]
        assert set_cookie.startswith(f"{SESSION_COOKIE}=") and "HttpOnly" in set_cookie
        assert "SameSite=Strict" in set_cookie and "Path=/" in set_cookie and "Secure" not in set_cookie
        page = (await http.get("/")).text
        assert "id='add-form'" in page and "id='logout'" in page
        assert (await http.post("/admin/logout", data={"csrf": csrf_of(page)})).status_code == 303
        after = await http.get("/")
        assert "id='add-form'" not in after.text and "id='login-form'" in after.text
    # Behind a trusted https proxy the cookie is Secure.
    proxied = await make_service(ADMIN_SECRET=ADMIN, TRUSTED_PROXY_HOPS="1")
    async with proxied.http() as http:
        response = await http.post("/admin/login", data={"secret": ADMIN}, headers={"X-Forwarded-Proto": "https"})
        assert "Secure" in response.headers["set-cookie"]


async def test_forms_need_the_session_and_its_csrf_token(make_service: ServiceFactory) -> None:
    value = cookie("ok")
    service = await make_service(cookies=[value], ADMIN_SECRET=ADMIN)
    form = {"action": "disable", "key": key_of(value)}
    async with service.http() as http:
        no_session = await http.post("/admin/action", data={**form, "csrf": "x"})
        assert no_session.status_code == 401
        token = await logged_in(service, http)
        assert (await http.post("/admin/action", data=form)).status_code == 403
        wrong = token[:-1] + ("B" if token.endswith("A") else "A")   # one character off, never the token
        assert (await http.post("/admin/action", data={**form, "csrf": wrong})).status_code == 403
        assert str(service.runtime.pool.snapshot()[0].state) == "healthy"
        done = await http.post("/admin/action", data={**form, "csrf": token})
        assert done.status_code == 303
        assert str(service.runtime.pool.snapshot()[0].state) == "disabled"
        page = (await http.get("/")).text
        assert "disable done, now disabled" in page and f"id='enable-{key_of(value)}'" in page


async def test_every_form_action_works_and_errors_come_back_as_messages(make_service: ServiceFactory) -> None:
    limited, fresh = cookie("rate-limited"), cookie("ok")
    service = await make_service(cookies=[limited], ADMIN_SECRET=ADMIN, ROUTE_PREFIX="/gs")
    assert not answered(await ask(service))
    async with service.http() as http:
        token = await logged_in(service, http, "/gs")

        async def act(**form: str) -> str:
            response = await http.post("/gs/admin/action", data={"csrf": token, **form})
            assert response.status_code == 303 and response.headers["location"] == "/gs/"
            return (await http.get("/gs/")).text

        page = (await http.get("/gs/")).text
        assert "cooling until" in page and " left</span>" in page and f"id='reset-{key_of(limited)}'" in page
        page = await act(action="reset", key=key_of(limited))
        assert "reset done, now healthy" in page
        page = await act(action="add", cookies=f"Cookie: session_id={fresh}", proxy="", label="fresh one")
        assert f"({key_of(fresh)}): added" in page and "fresh one" in page and fresh not in page
        page = await act(action="probe", key=key_of(fresh))
        assert "logged in, 100 credits left" in page and "100 credits left;" in page
        page = await act(action="configure", key=key_of(fresh), proxy="socks5://u:topsecret@127.0.0.1:9", label="")
        assert "socks5://u:***@127.0.0.1:9" in page and "topsecret" not in page
        page = await act(action="probe", key=key_of(fresh))  # through its proxy, where nothing listens
        assert "probe says unknown" in page and "could not tell" in page
        page = await act(action="configure", key=key_of(fresh), proxy="", label="kept")  # empty keeps the proxy
        assert "socks5://u:***@127.0.0.1:9" in page and ">kept <span" in page
        page = await act(action="configure", key=key_of(fresh), proxy="default", label="kept")
        assert "socks5://u:***@127.0.0.1:9" not in page and service.runtime.pool.proxy_for(f"session_id={fresh}") is None
        page = await act(action="add", cookies="x | proxy=ftp://h:1")
        assert "flash-error" in page and "the proxy must be" in page
        page = await act(action="remove", key=key_of(fresh))
        assert "removed" in page and f"id='cookie-{key_of(fresh)}'" not in page
        page = await act(action="explode", key=key_of(limited))
        assert "Unknown action" in page
        page = await act(action="disable", key="000000000000")
        assert "No cookie with key" in page


async def test_the_page_shows_the_base_url_as_the_client_sees_it(make_service: ServiceFactory) -> None:
    service = await make_service(ROUTE_PREFIX="/gs", TRUSTED_PROXY_HOPS="1")
    async with service.http() as http:
        direct = (await http.get("/")).text
        forwarded = (await http.get("/gs", headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": "space.example.org"})).text
    assert f"<code id='base-url'>{service.url}/gs/v1</code>" in direct
    assert "<code id='base-url'>https://space.example.org/gs/v1</code>" in forwarded


async def test_requests_per_minute_and_security_headers(make_service: ServiceFactory) -> None:
    service = await make_service()
    for _ in range(3):
        assert answered(await ask(service))
    async with service.http() as http:
        response = await http.get("/")
    assert "<b>3</b>requests / min" in response.text
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert response.headers["cache-control"] == "no-store"


def test_sessions_expire_and_are_bounded() -> None:
    now = [1000.0]
    sessions = AdminSessions(ttl=60, clock=lambda: now[0])
    sid, session = sessions.create()
    assert sessions.get(sid) is session and sessions.get("other") is None and sessions.get(None) is None
    now[0] += 61
    assert sessions.get(sid) is None
    ids = [sessions.create()[0] for _ in range(100)]
    assert sessions.get(ids[0]) is None and sessions.get(ids[-1]) is not None
    assert (duration(37), duration(252), duration(7500)) == ("37 s", "4 min 12 s", "2 h 5 min")


async def test_drift_notices_show_to_an_admin_only(make_service: ServiceFactory) -> None:
    from genspark2api.upstream import drift

    service = await make_service(ADMIN_SECRET=ADMIN)
    with drift.capture():
        drift.notice("event_type", "brand_new_event", {"type": "brand_new_event", "session_id": "ok-very-secret-id"})
        async with service.http() as http:
            anonymous = (await http.get("/")).text
            await logged_in(service, http)
            admin = (await http.get("/")).text
    assert "<b>1</b>drift notices" in anonymous and "brand_new_event" not in anonymous
    assert "brand_new_event" in admin and "ok-very-secret-id" not in admin


async def test_an_admin_sees_each_named_key_with_its_counts_never_the_key(make_service: ServiceFactory) -> None:
    service = await make_service(ADMIN_SECRET=ADMIN, API_SECRET=f"alice:{CLIENT}", API_KEY_RPM="alice=100")
    client = service.openai(api_key=CLIENT)
    await client.chat.completions.create(model="gpt-5.4", messages=[{"role": "user", "content": "hi"}])
    async with service.http() as http:
        anonymous = (await http.get("/")).text
        await logged_in(service, http)
        page = (await http.get("/")).text
    assert "id='key-usage'" not in anonymous
    section = page[page.index("id='key-usage'"):]
    assert "<code>alice</code>: 1 request(s), 0 over its limit" in section and "limit 100/min" in section
    assert CLIENT not in page
