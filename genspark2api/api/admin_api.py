"""The admin API: the cookie pool changed at run time, under `{ROUTE_PREFIX}/admin/api/...`.

Off unless `ADMIN_SECRET` is set (then every route answers 404). With it, a request must carry
`Authorization: Bearer <ADMIN_SECRET>`; a client key (API_SECRET) is refused with 403 on every
route, so a client can never change the pool. JSON in and out; errors are OpenAI-shaped; cookies
are always masked (redact.mask_cookie), proxies without their password (redact.mask_proxy).
Changes take effect at once: they are calls on the live `CookiePool`.

Routes (relative to `{ROUTE_PREFIX}/admin/api`):

    GET    /cookies                    the pool
    POST   /cookies                    add: {"cookies": [..] or "one per line", "proxy"?, "label"?}
    GET    /cookies/<key>              one cookie
    PATCH  /cookies/<key>              {"proxy": URL|"direct"|null, "label": text|null}
    DELETE /cookies/<key>              remove
    POST   /cookies/<key>/disable      out of rotation (state kept underneath)
    POST   /cookies/<key>/enable
    POST   /cookies/<key>/revive       a dead cookie back to healthy
    POST   /cookies/<key>/reset        end a cooldown now
    POST   /cookies/<key>/probe        login state and credits (upstream/account.py), stored on it

`AdminActions` is shared with the admin page (admin_page.py), which calls the same operations from
its forms.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

import msgspec
import trio
from quart import Blueprint, Response, request

from ..errors import ApiError, bad_request
from ..pool.cookies import UNSET, CookieStatus
from ..runtime import Runtime
from ..upstream.account import AccountProbe, probe_account
from .openai_types import encoder, error_json

log = logging.getLogger("genspark2api.admin")

ADMIN_API_PATH = "/admin/api"
PROBE_TIMEOUT = 30.0
MAX_COOKIES_PER_ADD = 500
COOKIE_HEADER_PREFIX = "cookie:"


class AddCookies(msgspec.Struct, forbid_unknown_fields=True):
    """`cookies`: a list of entries, or one text with one entry per line (a pasted list, or a
    browser's `Cookie:` header value). Each entry may carry `| proxy=…` / `| label=…`."""

    cookies: list[str] | str
    proxy: str | None | msgspec.UnsetType = msgspec.UNSET
    label: str | None | msgspec.UnsetType = msgspec.UNSET


class ConfigureCookie(msgspec.Struct, forbid_unknown_fields=True):
    proxy: str | None | msgspec.UnsetType = msgspec.UNSET
    label: str | None | msgspec.UnsetType = msgspec.UNSET


def _unset(value: Any) -> Any:
    """msgspec's UNSET -> the pool's UNSET ("leave as it is")."""
    return UNSET if value is msgspec.UNSET else value


def pasted_entries(text: str | list[str]) -> list[str]:
    """A paste -> entries: one per line; a leading `Cookie:` (copied from devtools) dropped."""
    lines = text.splitlines() if isinstance(text, str) else [line for item in text for line in item.splitlines()]
    entries = []
    for line in lines:
        line = line.strip()
        if line.lower().startswith(COOKIE_HEADER_PREFIX):
            line = line[len(COOKIE_HEADER_PREFIX):].strip()
        if line and not line.startswith("#"):
            entries.append(line)
    return entries


def seconds_left(until: float | None, now: float) -> float | None:
    return None if until is None else max(0.0, until - now)


def probe_row(probe: AccountProbe | None) -> dict[str, Any] | None:
    if probe is None:
        return None
    return msgspec.structs.asdict(probe)


def cookie_row(status: CookieStatus, now: float) -> dict[str, Any]:
    """One cookie as the admin views show it: masked, with its cooldown's time left."""
    return {
        "key": status.key, "cookie": status.masked, "label": status.label, "proxy": status.proxy,
        "origin": str(status.origin), "state": str(status.state), "dead": status.dead, "reason": status.reason,
        "cooling_until": status.until, "cooling_seconds_left": seconds_left(status.until, now),
        "in_flight": status.in_flight, "successes": status.successes, "failures": status.failures,
        "consecutive_failures": status.consecutive_failures, "last_used": status.last_used,
        "last_error": status.last_error_detail, "substitutions": status.substitutions,
        "probe": probe_row(status.probe),
    }


class AdminActions:
    """The pool operations of the admin API and page; ApiError for an unknown key or bad value."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.clock = runtime.pool.now  # the pool's clock: `until` is on it

    @property
    def pool(self) -> Any:
        return self.runtime.pool

    def rows(self) -> list[dict[str, Any]]:
        now = self.clock()
        return [cookie_row(s, now) for s in self.pool.snapshot()]

    def row(self, key: str) -> dict[str, Any]:
        status = self.pool.status(key)
        if status is None:
            raise ApiError(404, f"No cookie with key {key[:40]!r} is in the pool.", code="cookie_not_found")
        return cookie_row(status, self.clock())

    def add(self, entries: list[str], *, proxy: Any = UNSET, label: Any = UNSET) -> list[dict[str, Any]]:
        if not entries:
            raise bad_request("No cookie given: paste one cookie per line.", param="cookies", code="no_cookies")
        if len(entries) > MAX_COOKIES_PER_ADD:
            raise bad_request(f"At most {MAX_COOKIES_PER_ADD} cookies per request.", param="cookies", code="too_many_cookies")
        try:
            results = self.pool.add(entries, proxy=proxy, label=label)
        except ValueError as exc:
            raise bad_request(str(exc), param="cookies", code="invalid_cookie_entry") from None
        if not results:
            raise bad_request("No cookie in the paste has a session id.", param="cookies", code="no_cookies")
        for key, outcome in results:
            log.info("admin: cookie %s %s", key, outcome)
        return [{"key": key, "outcome": outcome, "cookie": self.row(key)} for key, outcome in results]

    def _known(self, ok: bool, key: str) -> None:
        if not ok:
            raise ApiError(404, f"No cookie with key {key[:40]!r} is in the pool.", code="cookie_not_found")

    def remove(self, key: str) -> dict[str, Any]:
        self._known(self.pool.remove(key), key)
        log.info("admin: cookie %s removed", key)
        return {"key": key, "deleted": True}

    def set_disabled(self, key: str, disabled: bool) -> dict[str, Any]:
        self._known(self.pool.set_disabled(key, disabled), key)
        log.info("admin: cookie %s %s", key, "disabled" if disabled else "enabled")
        return self.row(key)

    def revive(self, key: str) -> dict[str, Any]:
        self._known(self.pool.revive(key), key)
        log.info("admin: cookie %s revived", key)
        return self.row(key)

    def reset(self, key: str) -> dict[str, Any]:
        self._known(self.pool.reset_cooldown(key), key)
        log.info("admin: cookie %s cooldown reset", key)
        return self.row(key)

    def configure(self, key: str, *, proxy: Any = UNSET, label: Any = UNSET) -> dict[str, Any]:
        try:
            ok = self.pool.configure(key, proxy=proxy, label=label)
        except ValueError as exc:
            raise bad_request(str(exc), param="proxy" if "proxy" in str(exc) else "label", code="invalid_cookie_setting") from None
        self._known(ok, key)
        log.info("admin: cookie %s proxy/label set", key)
        return self.row(key)

    async def probe(self, key: str) -> dict[str, Any]:
        cookie = self.pool.cookie_of(key)
        self._known(cookie is not None, key)
        with trio.move_on_after(PROBE_TIMEOUT) as scope:
            probe = await probe_account(self.runtime.client, cookie, clock=self.clock)
        if scope.cancelled_caught:
            probe = AccountProbe(checked_at=self.clock(), logged_in=None,
                                 error=f"The account probe got no answer within {PROBE_TIMEOUT:.0f} s.")
        self.pool.record_probe(key, probe)
        log.info("admin: cookie %s probed: logged_in=%s credits=%s", key, probe.logged_in, probe.credits)
        return self.row(key)


def presented_bearer() -> bytes:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip().encode() if scheme.lower() == "bearer" else b""


def matches(presented: bytes, secret: str) -> bool:
    return bool(secret) and hmac.compare_digest(presented, secret.encode())


def _error(error: ApiError) -> Response:
    return Response(error_json(error), status=error.status, content_type="application/json")


def _ok(payload: Any, status: int = 200) -> Response:
    return Response(encoder.encode(payload), status=status, content_type="application/json")


def _decode(body: bytes, kind: type[Any]) -> Any:
    if not body.strip():
        raise bad_request("The request body must be a JSON object.", code="invalid_json")
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as exc:
        raise bad_request(f"Invalid request body: {exc}.", code="invalid_request_body") from None
    except msgspec.DecodeError:
        raise bad_request("The request body is not valid JSON.", code="invalid_json") from None


def admin_api(runtime: Runtime, actions: AdminActions) -> Blueprint:
    settings = runtime.settings
    api = Blueprint("admin_api", "genspark2api.admin_api", url_prefix=settings.route_prefix + ADMIN_API_PATH)
    client_keys = [k.secret.encode() for k in settings.client_keys]  # the keys of `name:key` entries

    @api.before_request
    async def admin_only() -> Response | None:
        if not settings.admin_secret:
            return _error(ApiError(404, "The admin API is off: set ADMIN_SECRET to turn it on.", code="admin_api_off"))
        presented = presented_bearer()
        if matches(presented, settings.admin_secret):
            return None
        is_client_key = False
        for key in client_keys:  # every key compared, in constant time each
            is_client_key |= hmac.compare_digest(presented, key)
        if is_client_key:
            return _error(ApiError(403, "An API key cannot use the admin API; send 'Authorization: Bearer <ADMIN_SECRET>'.",
                                   type="permission_error", code="client_key_not_admin"))
        return _error(ApiError(401, "Invalid or missing admin key: send 'Authorization: Bearer <ADMIN_SECRET>'.",
                               code="invalid_admin_key"))

    @api.get("/cookies")
    async def list_cookies() -> Response:
        return _ok({"object": "list", "data": actions.rows()})

    @api.post("/cookies")
    async def add_cookies() -> Response:
        body = _decode(await request.get_data(), AddCookies)
        added = actions.add(pasted_entries(body.cookies), proxy=_unset(body.proxy), label=_unset(body.label))
        status = 201 if any(r["outcome"] == "added" for r in added) else 200
        return _ok({"object": "list", "data": added}, status)

    @api.get("/cookies/<key>")
    async def get_cookie(key: str) -> Response:
        return _ok(actions.row(key))

    @api.patch("/cookies/<key>")
    async def configure_cookie(key: str) -> Response:
        body = _decode(await request.get_data(), ConfigureCookie)
        return _ok(actions.configure(key, proxy=_unset(body.proxy), label=_unset(body.label)))

    @api.delete("/cookies/<key>")
    async def remove_cookie(key: str) -> Response:
        return _ok(actions.remove(key))

    @api.post("/cookies/<key>/disable")
    async def disable_cookie(key: str) -> Response:
        return _ok(actions.set_disabled(key, True))

    @api.post("/cookies/<key>/enable")
    async def enable_cookie(key: str) -> Response:
        return _ok(actions.set_disabled(key, False))

    @api.post("/cookies/<key>/revive")
    async def revive_cookie(key: str) -> Response:
        return _ok(actions.revive(key))

    @api.post("/cookies/<key>/reset")
    async def reset_cookie(key: str) -> Response:
        return _ok(actions.reset(key))

    @api.post("/cookies/<key>/probe")
    async def probe_cookie(key: str) -> Response:
        return _ok(await actions.probe(key))

    return api
