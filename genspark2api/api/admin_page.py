"""The page at `/`: the service at a glance, and with the admin key the pool's controls.

Server-rendered HTML with a little CSS, no JavaScript and no build step; cards instead of a wide
table, so it reads on a phone.

Who sees what:

* Everyone: the version, the upstream and its protocol, the base URL to paste into a client, the
  pool's counts by state, requests per minute and the upstream drift notices' count.
* `ADMIN_SECRET` unset: the per-cookie cards (masked) for a request with an API key (or an open
  API), as before; no actions.
* `ADMIN_SECRET` set: the cards and the drift notices only for an admin: a login form posts the
  key once and gets a session cookie (random id kept server-side in memory, HttpOnly,
  SameSite=Strict, Secure over https, 12 h). Every form carries the session's CSRF token, checked
  on each POST. Nothing is stored in the browser but that cookie. A request with
  `Authorization: Bearer <ADMIN_SECRET>` sees the cards too (no forms: those need the session).

Forms post to `{root}/admin/login`, `{root}/admin/logout` and `{root}/admin/action` (root: where the
page was served, `/` or `ROUTE_PREFIX`), then redirect back to the page (303) with a one-time
message.
"""

from __future__ import annotations

import hmac
import html
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from quart import Quart, Response, request

from .. import __version__
from ..core.media_links import public_base
from ..errors import ApiError
from ..pool.cookies import UNSET, CookieState
from ..runtime import Runtime
from ..upstream import drift
from .admin_api import (
    AdminActions,
    cookie_row,
    matches,
    pasted_entries,
    presented_bearer,
)
from .openai_types import error_json
from .ratelimit import RecentRequests

SESSION_COOKIE = "genspark2api_admin"
SESSION_TTL = 12 * 3600.0
MAX_SESSIONS = 64          # oldest dropped first: a flood of logins cannot grow memory
DRIFT_SHOWN = 10
ACTIONS = ("add", "disable", "enable", "revive", "reset", "remove", "probe", "configure")


@dataclass(slots=True)
class AdminSession:
    csrf: str
    expires: float
    flash: list[tuple[str, str]] = field(default_factory=list)   # (kind: ok|error, text)


class AdminSessions:
    """Admin logins of the page, in memory (a restart logs everyone out, which is fine)."""

    def __init__(self, *, ttl: float = SESSION_TTL, clock: Callable[[], float] = time.time) -> None:
        self.ttl = ttl
        self.clock = clock
        self._sessions: dict[str, AdminSession] = {}

    def create(self) -> tuple[str, AdminSession]:
        now = self.clock()
        for sid in [s for s, session in self._sessions.items() if session.expires <= now]:
            del self._sessions[sid]
        while len(self._sessions) >= MAX_SESSIONS:
            del self._sessions[next(iter(self._sessions))]
        sid = secrets.token_urlsafe(32)
        session = self._sessions[sid] = AdminSession(secrets.token_urlsafe(32), now + self.ttl)
        return sid, session

    def get(self, sid: str | None) -> AdminSession | None:
        session = self._sessions.get(sid) if sid else None
        if session is None:
            return None
        if session.expires <= self.clock():
            del self._sessions[sid]  # type: ignore[arg-type]
            return None
        return session

    def drop(self, sid: str | None) -> None:
        if sid:
            self._sessions.pop(sid, None)


# ------------------------------------------------------------------------------ formatting


def esc(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def duration(seconds: float) -> str:
    """`4 min 12 s`, `2 h 5 min`, `37 s`."""
    seconds = max(0, int(seconds + 0.5))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"


def utc_time(unix: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(unix))


def ago(unix: float | None, now: float) -> str:
    return "never" if unix is None else f"{duration(now - unix)} ago"


STYLE = """
:root{color-scheme:light dark;--line:#8884;--muted:#777;--ok:#1a7f37;--warn:#9a6700;--bad:#cf222e}
*{box-sizing:border-box}body{font:15px/1.45 system-ui,sans-serif;max-width:60rem;margin:0 auto;padding:1rem}
h1{font-size:1.35rem;margin:.2rem 0}h2{font-size:1.1rem;margin:1.4rem 0 .5rem}
code{font:13px ui-monospace,monospace;overflow-wrap:anywhere}.muted{color:var(--muted)}
.facts{display:grid;grid-template-columns:repeat(auto-fit,minmax(11rem,1fr));gap:.5rem}
.fact,.card{border:1px solid var(--line);border-radius:.5rem;padding:.6rem .75rem}
.fact b{display:block;font-size:1.3rem}.cards{display:grid;gap:.6rem}
.card h3{font-size:1rem;margin:0 0 .3rem;display:flex;gap:.5rem;flex-wrap:wrap;align-items:baseline}
.card dl{display:grid;grid-template-columns:max-content 1fr;gap:.1rem .8rem;margin:.3rem 0}
.card dt{color:var(--muted)}.card dd{margin:0;overflow-wrap:anywhere}
.state{font-weight:600}.state-healthy{color:var(--ok)}.state-cooling{color:var(--warn)}
.state-dead,.state-disabled{color:var(--bad)}
.actions{display:flex;flex-wrap:wrap;gap:.35rem;margin-top:.4rem}.actions form{margin:0}
button,input,textarea{font:inherit}button{padding:.3rem .7rem;border-radius:.35rem;border:1px solid var(--line);cursor:pointer}
input,textarea{width:100%;padding:.35rem;border:1px solid var(--line);border-radius:.35rem}
label{display:block;margin:.35rem 0 .15rem}.row{display:grid;grid-template-columns:1fr 1fr;gap:.5rem}
.flash{padding:.5rem .75rem;border-radius:.4rem;border:1px solid var(--line);margin:.5rem 0}
.flash-error{border-color:var(--bad)}.flash-ok{border-color:var(--ok)}
details summary{cursor:pointer}@media(max-width:30rem){.row{grid-template-columns:1fr}}
"""


# ------------------------------------------------------------------------------ the page


@dataclass(frozen=True)
class PageView:
    """Everything the page shows, decided before rendering (so `render_page` is pure)."""

    root: str                       # "" or ROUTE_PREFIX: where the forms post
    base_url: str                   # the full base URL to paste into a client
    admin_enabled: bool
    details: bool                   # per-cookie cards and drift samples
    session: AdminSession | None    # an admin logged in: the forms
    rows: list[dict[str, Any]]
    requests_per_minute: int
    upstream: str
    protocol: str
    transport: str
    drift_rows: list[dict[str, Any]]
    now: float
    key_usage: str = ""             # rendered HTML of the named-key counters (see `key_usage_section`)
    login_error: str | None = None
    flash: list[tuple[str, str]] = field(default_factory=list)


def render_page(view: PageView) -> str:
    states = [r["state"] for r in view.rows]
    facts = [
        ("cookies", len(states)), ("healthy", states.count("healthy")), ("cooling", states.count("cooling")),
        ("dead", states.count("dead")), ("disabled", states.count("disabled")),
        ("in flight", sum(r["in_flight"] for r in view.rows)), ("requests / min", view.requests_per_minute),
        ("drift notices", len(view.drift_rows)),
    ]
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width,initial-scale=1'>",
        f"<title>genspark2api {esc(__version__)}</title><style>{STYLE}</style></head><body>",
        f"<h1>genspark2api <span class='muted'>{esc(__version__)}</span></h1>",
        ("<p>OpenAI- and Anthropic-compatible API over Genspark. Base URL for your client: "
        f"<code id='base-url'>{esc(view.base_url)}</code></p>"),
        (f"<p class='muted'>Upstream <code>{esc(view.upstream)}</code>, protocol <code>{esc(view.protocol)}</code>, "
        f"transport <code>{esc(view.transport)}</code>.</p>"),
    ]
    parts += [f"<div class='flash flash-{esc(kind)}' role='status'>{esc(text)}</div>" for kind, text in view.flash]
    parts.append("<div class='facts' id='counts'>")
    parts += [f"<div class='fact'><b>{esc(value)}</b>{esc(name)}</div>" for name, value in facts]
    parts.append("</div>")
    if view.session is not None:
        parts.append(_add_form(view))
    parts.append("<h2>Cookie pool</h2>")
    if view.details:
        if not view.rows:
            parts.append("<p>No cookie is configured.</p>")
        parts.append("<div class='cards' id='pool'>")
        parts += [_card(row, view) for row in view.rows]
        parts.append("</div>")
        parts.append(view.key_usage)
        parts.append(_drift(view))
    elif view.admin_enabled:
        parts.append("<p>Log in with the admin key to see and manage each cookie.</p>")
    else:
        parts.append("<p>Send the API key (<code>Authorization: Bearer …</code>) to see each cookie. "
                     "Set <code>ADMIN_SECRET</code> to manage the pool here.</p>")
    if view.admin_enabled:
        parts.append(_session_form(view))
    parts.append("</body></html>")
    return "".join(parts)


def _hidden(view: PageView, action: str, key: str | None = None) -> str:
    assert view.session is not None
    fields = f"<input type='hidden' name='csrf' value='{esc(view.session.csrf)}'>" \
             f"<input type='hidden' name='action' value='{esc(action)}'>"
    if key is not None:
        fields += f"<input type='hidden' name='key' value='{esc(key)}'>"
    return fields


def _button(view: PageView, action: str, key: str, text: str) -> str:
    return (f"<form method='post' action='{esc(view.root)}/admin/action'>{_hidden(view, action, key)}"
            f"<button type='submit' id='{esc(action)}-{esc(key)}'>{esc(text)}</button></form>")


def _card(row: dict[str, Any], view: PageView) -> str:
    key, state = row["key"], row["state"]
    title = esc(row["label"]) if row["label"] else "<span class='muted'>no label</span>"
    facts: list[tuple[str, str]] = [("cookie", f"<code>{esc(row['cookie'])}</code>")]
    if row["reason"]:
        facts.append(("reason", f"<code>{esc(row['reason'])}</code>"))
    if row["cooling_until"] is not None:
        facts.append(("cooling until", (f"{esc(utc_time(row['cooling_until']))} "
                      f"(<span class='left'>{esc(duration(row['cooling_seconds_left'] or 0))} left</span>)")))
    facts += [
        ("in flight", esc(row["in_flight"])),
        ("answers", f"{esc(row['successes'])} ok, {esc(row['failures'])} failed"),
        ("last used", esc(ago(row["last_used"], view.now))),
    ]
    if row["last_error"]:
        facts.append(("last error", esc(str(row["last_error"])[:300])))
    if row["substitutions"]:
        facts.append(("substituted", esc(", ".join(f"{k} ×{v}" for k, v in row["substitutions"].items()))))
    probe = row["probe"]
    if probe is not None:
        if probe["logged_in"]:
            credits = "unknown" if probe["credits"] is None else f"{probe['credits']} credits left"
            text = f"{credits}; {probe['email'] or ''} {('(' + probe['plan'] + ')') if probe['plan'] else ''}"
        else:
            text = "not logged in" if probe["logged_in"] is False else "could not tell"
        if probe["error"]:
            text += f" ({str(probe['error'])[:200]})"
        facts.append(("probe", (f"<span class='probe'>{esc(text)}</span> <span class='muted'>"
                      f"{esc(ago(probe['checked_at'], view.now))}</span>")))
    facts.append(("proxy", f"<code>{esc(row['proxy'])}</code>" if row["proxy"] else "<span class='muted'>PROXY_URL (default)</span>"))
    facts.append(("from", esc("configuration" if row["origin"] == "config" else "added here")))
    out = [
        f"<article class='card' id='cookie-{esc(key)}' data-state='{esc(state)}'>",
        (f"<h3>{title} <span class='state state-{esc(state)}'>{esc(state)}</span>"
        f"<code class='muted'>{esc(key)}</code></h3><dl>"),
        *(f"<dt>{name}</dt><dd>{value}</dd>" for name, value in facts),
        "</dl>",
    ]
    if view.session is not None:
        buttons = [_button(view, "enable", key, "Enable") if state == CookieState.DISABLED
                   else _button(view, "disable", key, "Disable")]
        if row["dead"]:
            buttons.append(_button(view, "revive", key, "Revive"))
        if row["cooling_until"] is not None:
            buttons.append(_button(view, "reset", key, "Reset cooldown"))
        buttons += [_button(view, "probe", key, "Probe"), _button(view, "remove", key, "Remove")]
        out.append(f"<div class='actions'>{''.join(buttons)}</div>")
        out.append(
            f"<details><summary>Proxy and label</summary><form method='post' action='{esc(view.root)}/admin/action'>"
            f"{_hidden(view, 'configure', key)}<div class='row'>"
            f"<div><label>Proxy (<code>default</code> = PROXY_URL, <code>direct</code> = none)</label>"
            f"<input name='proxy' placeholder='{esc(row['proxy'] or 'socks5://host:1080')}'></div>"
            f"<div><label>Label</label><input name='label' value='{esc(row['label'] or '')}' maxlength='64'></div>"
            "</div><p class='muted'>Leave the proxy empty to keep it (a proxy's password is never shown).</p>"
            "<button type='submit'>Save</button></form></details>"
        )
    out.append("</article>")
    return "".join(out)


def _add_form(view: PageView) -> str:
    return (
        "<h2>Add cookies</h2>"
        f"<form method='post' action='{esc(view.root)}/admin/action' id='add-form'>{_hidden(view, 'add')}"
        "<label for='add-cookies'>One cookie per line: a session id, <code>session_id=…</code>, or a whole "
        "browser <code>Cookie:</code> string; a line may end in <code> | proxy=… | label=…</code></label>"
        "<textarea id='add-cookies' name='cookies' rows='3' autocomplete='off' spellcheck='false'></textarea>"
        "<div class='row'><div><label for='add-proxy'>Proxy for these (optional)</label>"
        "<input id='add-proxy' name='proxy' placeholder='socks5://host:1080'></div>"
        "<div><label for='add-label'>Label (optional)</label><input id='add-label' name='label' maxlength='64'></div></div>"
        "<p><button type='submit' id='add-submit'>Add</button></p></form>"
    )


def _session_form(view: PageView) -> str:
    if view.session is not None:
        return (f"<form method='post' action='{esc(view.root)}/admin/logout'>"
                f"<input type='hidden' name='csrf' value='{esc(view.session.csrf)}'>"
                "<p><button type='submit' id='logout'>Log out</button></p></form>")
    error = f"<div class='flash flash-error' role='alert'>{esc(view.login_error)}</div>" if view.login_error else ""
    return (
        f"<h2>Admin</h2>{error}<form method='post' action='{esc(view.root)}/admin/login' id='login-form'>"
        "<label for='admin-secret'>Admin key (ADMIN_SECRET)</label>"
        "<input type='password' id='admin-secret' name='secret' autocomplete='current-password' required>"
        "<p><button type='submit' id='login'>Log in</button></p></form>"
    )


def _drift(view: PageView) -> str:
    if not view.drift_rows:
        return "<h2>Upstream drift</h2><p class='muted'>Nothing unknown seen from upstream.</p>"
    recent = sorted(view.drift_rows, key=lambda r: -r["last_seen"])[:DRIFT_SHOWN]
    items = "".join(
        f"<li><code>{esc(r['kind'])}</code> <code>{esc(r['name'])}</code>: {esc(r['count'])}×, last "
        f"{esc(ago(r['last_seen'], view.now))}<br><code class='muted'>{esc(r['sample'][:200])}</code></li>"
        for r in recent
    )
    return f"<h2>Upstream drift</h2><p class='muted'>What Genspark sent that no adapter knows (newest first).</p><ul>{items}</ul>"


def key_usage_section(runtime: Runtime) -> str:
    """Per client key (by name, never the key): requests, refusals by API_KEY_RPM, tokens."""
    rows = runtime.key_usage.snapshot()
    if not rows:
        return ""
    items = "".join(
        f"<li><code>{esc(r.name)}</code>: {r.requests} request(s), {r.rate_limited} over its limit, "
        f"{r.prompt_tokens} prompt + {r.completion_tokens} completion tokens"
        f"{f', limit {r.requests_per_minute}/min' if r.requests_per_minute else ''}</li>"
        for r in rows
    )
    return f"<h2>API keys</h2><ul id='key-usage'>{items}</ul>"


# ------------------------------------------------------------------------------ routes


def register_admin_page(
    app: Quart, runtime: Runtime, actions: AdminActions, recent: RecentRequests, key_presented: Callable[[], bool]
) -> None:
    settings = runtime.settings
    prefix = settings.route_prefix
    sessions = AdminSessions()

    def root_of_request() -> str:
        return prefix if prefix and (request.path == prefix or request.path.startswith(prefix + "/")) else ""

    def base_url() -> str:
        try:
            return public_base(settings, request.scheme, request.host, request.headers) + "/v1"
        except ApiError:
            return f"{prefix}/v1"

    def secure() -> bool:
        return base_url().startswith("https://")

    def current() -> tuple[str | None, AdminSession | None]:
        sid = request.cookies.get(SESSION_COOKIE)
        return sid, sessions.get(sid) if settings.admin_secret else None

    def page(session: AdminSession | None, *, status: int = 200, login_error: str | None = None) -> Response:
        admin_on = bool(settings.admin_secret)
        bearer_admin = admin_on and matches(presented_bearer(), settings.admin_secret)
        details = (session is not None or bearer_admin) if admin_on else key_presented()
        flash = []
        if session is not None:
            flash, session.flash = session.flash, []
        now = actions.clock()
        view = PageView(
            root=root_of_request(), base_url=base_url(), admin_enabled=admin_on, details=details, session=session,
            rows=[cookie_row(s, now) for s in runtime.pool.snapshot()], requests_per_minute=recent.per_minute(),
            upstream=settings.base_url, protocol=settings.chat_protocol, transport=runtime.client.transport_name,
            drift_rows=drift.as_rows(), now=now, key_usage=key_usage_section(runtime) if details else "",
            login_error=login_error, flash=flash,
        )
        response = Response(render_page(view), status=status, content_type="text/html; charset=utf-8")
        response.headers["Cache-Control"] = "no-store"
        # The page never needs to be framed or to run scripts: say so (clickjacking, injected markup).
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"
        return response

    def back_to_page() -> Response:
        response = Response("", status=303)
        response.headers["Location"] = (root_of_request() or "") + "/"
        return response

    def refused(status: int, text: str) -> Response:
        return Response(f"<!doctype html><meta charset='utf-8'><title>{status}</title><p>{esc(text)}</p>"
                        f"<p><a href='{esc(root_of_request())}/'>Back to the page</a></p>",
                        status=status, content_type="text/html; charset=utf-8")

    def admin_off() -> Response:
        return Response(error_json(ApiError(404, "The admin API is off: set ADMIN_SECRET to turn it on.", code="admin_api_off")),
                        status=404, content_type="application/json")

    async def index() -> Response:
        return page(current()[1])

    async def login() -> Response:
        if not settings.admin_secret:
            return admin_off()
        form = await request.form
        secret = (form.get("secret") or "").strip().encode()
        if not matches(secret, settings.admin_secret):
            return page(None, status=401, login_error="That is not the admin key.")
        sid, session = sessions.create()
        session.flash.append(("ok", "Logged in."))
        response = back_to_page()
        response.set_cookie(SESSION_COOKIE, sid, max_age=int(SESSION_TTL), path="/", httponly=True,
                            samesite="Strict", secure=secure())
        return response

    def checked(form: Any) -> tuple[str | None, AdminSession] | Response:
        sid, session = current()
        if session is None:
            return page(None, status=401, login_error="Your admin session has ended; log in again.")
        token = (form.get("csrf") or "").encode()
        if not hmac.compare_digest(token, session.csrf.encode()):
            return refused(403, "The form's CSRF token is missing or stale; reload the page and try again.")
        return sid, session

    async def logout() -> Response:
        if not settings.admin_secret:
            return admin_off()
        result = checked(await request.form)
        if isinstance(result, Response):
            return result
        sessions.drop(result[0])
        response = back_to_page()
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="Strict", secure=secure())
        return response

    async def action() -> Response:
        if not settings.admin_secret:
            return admin_off()
        form = await request.form
        result = checked(form)
        if isinstance(result, Response):
            return result
        session = result[1]
        name = form.get("action") or ""
        key = form.get("key") or ""
        try:
            session.flash.append(("ok", await perform(name, key, form)))
        except ApiError as exc:
            session.flash.append(("error", exc.message))
        return back_to_page()

    async def perform(name: str, key: str, form: Any) -> str:
        if name not in ACTIONS:
            raise ApiError(400, f"Unknown action {name[:40]!r}.", code="unknown_action")
        if name == "add":
            proxy = (form.get("proxy") or "").strip() or UNSET
            label = (form.get("label") or "").strip() or UNSET
            added = actions.add(pasted_entries(form.get("cookies") or ""), proxy=proxy, label=label)
            return "; ".join(f"{r['cookie']['cookie']} ({r['key']}): {r['outcome']}" for r in added)
        if name == "configure":
            # The proxy field starts empty (a proxy's password is never sent back to the page), so
            # empty keeps the proxy; `default` goes back to PROXY_URL.
            typed = (form.get("proxy") or "").strip()
            proxy = UNSET if not typed else (None if typed.lower() == "default" else typed)
            label = (form.get("label") or "").strip() or None
            actions.configure(key, proxy=proxy, label=label)
            return f"{key}: proxy and label saved."
        if name == "remove":
            actions.remove(key)
            return f"{key}: removed."
        if name == "probe":
            row = await actions.probe(key)
            probe = row["probe"] or {}
            if probe.get("logged_in"):
                return f"{key}: logged in, {probe.get('credits')} credits left."
            return f"{key}: probe says {'not logged in' if probe.get('logged_in') is False else 'unknown'}" \
                   f"{': ' + probe['error'] if probe.get('error') else ''}."
        handlers = {"disable": lambda: actions.set_disabled(key, True), "enable": lambda: actions.set_disabled(key, False),
                    "revive": lambda: actions.revive(key), "reset": lambda: actions.reset(key)}
        row = handlers[name]()
        return f"{key}: {name} done, now {row['state']}."

    roots = ("", prefix) if prefix else ("",)
    for root in roots:
        app.add_url_rule(root + "/", f"index{root}", index, methods=["GET"])
        app.add_url_rule(root + "/admin/login", f"admin_login{root}", login, methods=["POST"])
        app.add_url_rule(root + "/admin/logout", f"admin_logout{root}", logout, methods=["POST"])
        app.add_url_rule(root + "/admin/action", f"admin_action{root}", action, methods=["POST"])
    if prefix:
        app.add_url_rule(prefix, "index_bare", index, methods=["GET"])
