"""Cookie -> abnormal upstream condition, and the canned non-stream bodies (genspark-protocol.md §4.4).

A test picks a condition by the *prefix* of the cookie's ``session_id`` (``rate-limited-2`` is
rate limited too), so several distinct cookies can share one behaviour in a cookie pool. Anything
that matches no prefix (``demo``, ``ok-1``, a uuid) behaves normally. A prefix counts only as a
whole word: the id is the prefix itself or goes on with a character that is not a letter or digit.
So ``bad-request-cf3a…`` (a random hex tail) is ``bad-request``, not ``bad-request-cf``, while
``bad-request-cf-3a…`` is ``bad-request-cf``; the longest matching prefix wins.

Which endpoints honour which scenario:

* "edge" scenarios (Cloudflare and the load balancer answer before the app): rate-limited,
  cf-challenge, cf-block, internal-error, service-unavailable apply to both chat generations,
  images and videos; so does ``flaky`` (backend.py), but only on the first ask of its session id;
* bad-request: the app refuses the body itself (a request-scoped 4xx, not the cookie's fault) with
  HTTP 400 and compact JSON ``{"status":400,"message":"invalid request: messages"}`` on both chat
  generations, images and videos [I: nobody recorded such a refusal; the shape mirrors the
  backend's other JSON answers, ``status`` + ``message``];
* not-login applies to every call that takes a cookie (also polling, upload slots, delete);
  ``anonymous`` (§12.5 E24) gets the same not-login body on ask_proxy and the account calls,
  except ``/api/user`` (``{"status":-5,"message":"user not found"}``) and ``/api/is_login``
  (``is_login: false``), see app.py;
* ask_proxy checks, before any cookie scenario, that a ``User-Agent`` is present (else 400
  ``bad request cf``, §12.5 E22) and, with ``require_origin``, ``Origin`` and ``Referer`` (else
  the Cloudflare block page as a 403, §12.5 E19c [I: body not recorded]); a missing session id
  is then the not-login body (it was ``bad request cf`` in the §2.9 reading, superseded by §12.5);
* ``bad-request-cf`` still forces the E22 answer on ask_proxy (with a User-Agent present);
* the stream scenarios (free-limit, session-limit, cut-stream, …) are played by backend.py on
  copilot and by agent.py on ask_proxy, which also plays the §12.5 in-band signals
  (chat-5h-limit, chat-5h-limit-reset, image-5h-limit, approaching-limit, placeholder,
  placeholder-sometimes, credits-gone, throttle-text, declined, cut-before-finished).

HTTP statuses and content types are [I] (§10.1: nobody recorded them); the bodies are the exact
strings the detectors of §4.1 look for.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Scenario(enum.StrEnum):
    NORMAL = "normal"
    RATE_LIMITED = "rate-limited"
    NOT_LOGIN = "not-login"
    FREE_LIMIT = "free-limit"
    FREE_LIMIT_RESET = "free-limit-reset"
    SESSION_LIMIT = "session-limit"
    CF_CHALLENGE = "cf-challenge"
    CF_BLOCK = "cf-block"
    INTERNAL_ERROR = "internal-error"
    SERVICE_UNAVAILABLE = "service-unavailable"
    BAD_REQUEST_CF = "bad-request-cf"
    BAD_REQUEST = "bad-request"
    FLAKY = "flaky"
    RETIRED = "retired"
    CUT_STREAM = "cut-stream"
    EMPTY_ANSWER = "empty-answer"
    SLOW_FIRST_BYTE = "slow-first-byte"
    STALL = "stall"
    OVERLOADED = "overloaded"
    DEGRADED = "degraded"
    ERROR_EVENT = "error-event"
    # Not failures of the upstream itself: reCAPTCHA behaviour (§2.8).
    NEEDS_CAPTCHA = "needs-captcha"  # chat/image/video check g_recaptcha_token
    CAPTCHA_FAIL = "captcha-fail"  # the token service cannot produce a token
    # ask_proxy in-band signals of §12.5 (HTTP 200 answers; backend.py / agent.py play them).
    CHAT_5H_LIMIT = "chat-5h-limit"  # E13, no reset
    CHAT_5H_LIMIT_RESET = "chat-5h-limit-reset"  # E13 + session_limit_message, fixed Resets {time:N}
    IMAGE_5H_LIMIT = "image-5h-limit"  # E14 on images, fixed Resets {time:N}
    APPROACHING_LIMIT = "approaching-limit"  # E14a
    PLACEHOLDER = "placeholder"  # E15 on every ask
    PLACEHOLDER_SOMETIMES = "placeholder-sometimes"  # E15 on every 3rd ask of the session id
    CREDITS_GONE = "credits-gone"  # E16 (chat), E16b (images)
    THROTTLE_TEXT = "throttle-text"  # E17
    DECLINED = "declined"  # E23
    CUT_BEFORE_FINISHED = "cut-before-finished"  # message_result, then the body ends
    ANONYMOUS = "anonymous"  # E24: a dead cookie that /api/user answers with status -5
    # How well the simulated model keeps to a structured-output instruction (structured.py,
    # issue #11): answers for the service's extraction, validation and repair turn.
    JSON_FENCED = "json-fenced"
    JSON_BROKEN_FIRST = "json-broken-first"
    JSON_MISFIT_FIRST = "json-misfit-first"
    JSON_MISFIT = "json-misfit"
    JSON_PROSE = "json-prose"


# Longest prefix first, so that "bad-request-cf" is not shadowed by "bad-request".
_BY_PREFIX = sorted((s for s in Scenario if s is not Scenario.NORMAL), key=lambda s: -len(s.value))


def _selects(session_id: str, prefix: str) -> bool:
    """``prefix`` starts ``session_id`` as a whole word (see the module docstring)."""
    return session_id.startswith(prefix) and not session_id[len(prefix) : len(prefix) + 1].isalnum()


def scenario_for(session_id: str | None) -> Scenario:
    """The condition a cookie selects. A missing cookie is treated as not logged in."""
    if session_id is None:
        return Scenario.NOT_LOGIN
    return next((s for s in _BY_PREFIX if _selects(session_id, s.value)), Scenario.NORMAL)


class Endpoint(enum.Enum):
    COPILOT = "copilot"  # POST /api/copilot/ask, every type (G1)
    AGENT = "agent"  # POST /api/agent/ask_proxy (G2)
    ACCOUNT = "account"  # polling, upload slots, delete, legacy task status: not-login only


@dataclass(frozen=True)
class CannedResponse:
    status: int
    content_type: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


# §4.1 E4: compact JSON, unlike the SSE events (the backend's plain JSON responses are compact).
NOT_LOGIN_BODY = b'{"status":-5,"message":"not login","data":{}}'

_CLOUDFLARE = {"server": "cloudflare", "cf-ray": "8f00000000000000-SIM"}

# §4.1 E1: the whole page on ONE line (Go's `.` does not cross newlines), plus the markers.
CF_CHALLENGE_HTML = (
    '<!DOCTYPE html><html lang="en-US"><head><title>Just a moment...</title>'
    '<meta http-equiv="Content-Type" content="text/html; charset=UTF-8">'
    '<meta name="robots" content="noindex,nofollow"></head><body>'
    '<div class="main-wrapper" role="main"><div class="main-content">'
    '<h1 class="zone-name-title h1">www.genspark.ai</h1>'
    "<p>Verifying you are human. This may take a few seconds.</p></div></div>"
    "<script>(function(){window._cf_chl_opt={cvId: '3',cZone: \"www.genspark.ai\",cType: 'managed'};"
    "var a=document.createElement('script');"
    "a.src='/cdn-cgi/challenge-platform/h/b/orchestrate/chl_page/v1?ray=sim';"
    "document.getElementsByTagName('head')[0].appendChild(a);}());</script></body></html>"
)

# §4.1 E2: real block pages are multi-line; only the headline is matched.
CF_BLOCK_HTML = """<!DOCTYPE html>
<html lang="en-US">
<head><title>Attention Required! | Cloudflare</title></head>
<body>
<div id="cf-wrapper">
  <h1 data-translate="block_headline">Sorry, you have been blocked</h1>
  <h2 class="cf-subheadline"><span data-translate="unable_to_access">You are unable to access</span> genspark.ai</h2>
  <p>Cloudflare Ray ID: <strong>8f00000000000000</strong></p>
</div>
</body>
</html>
"""

# §4.1 E8: one line, lower-case doctype, and all six of the detector's patterns.
SERVICE_UNAVAILABLE_HTML = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Genspark</title>'
    "<style>.bb{text-align:center}.tt{font-size:24px}</style></head><body>"
    '<div class="bb"><img src="https://gensparkpublicblob-cdn-sim.azurefd.net/static/genspark_logo.png" alt="Genspark">'
    '<div class="tt">Service Unavailable</div>'
    '<div class="s1">We are performing maintenance.</div>'
    '<div class="s2">Please try again in a few minutes.</div>'
    '<div class="s3">Thank you for your patience.</div></div></body></html>'
)


def _text(status: int, body: str, headers: dict[str, str] | None = None) -> CannedResponse:
    return CannedResponse(status, "text/plain; charset=utf-8", body.encode(), headers or {})


def _html(status: int, body: str, headers: dict[str, str] | None = None) -> CannedResponse:
    return CannedResponse(status, "text/html; charset=UTF-8", body.encode(), headers or {})


NOT_LOGIN = CannedResponse(200, "application/json", NOT_LOGIN_BODY)
BAD_REQUEST_CF = _text(400, "bad request cf")
BAD_REQUEST = CannedResponse(400, "application/json", b'{"status":400,"message":"invalid request: messages"}')
RATE_LIMITED = _text(429, "Rate limit exceeded cf1")

_EDGE: dict[Scenario, CannedResponse] = {
    Scenario.RATE_LIMITED: RATE_LIMITED,
    Scenario.CF_CHALLENGE: _html(403, CF_CHALLENGE_HTML, {**_CLOUDFLARE, "cf-mitigated": "challenge"}),
    Scenario.CF_BLOCK: _html(403, CF_BLOCK_HTML, _CLOUDFLARE),
    Scenario.INTERNAL_ERROR: _text(500, "Internal Server Error"),
    Scenario.SERVICE_UNAVAILABLE: _html(503, SERVICE_UNAVAILABLE_HTML),
}


# §12.5 E19c [I]: AX-A says Cloudflare answers a request without Origin/Referer with 403.
ORIGIN_MISSING = _html(403, CF_BLOCK_HTML, _CLOUDFLARE)
# §12.5 E21: an unknown, deleted or foreign project [I: the plain body of §4.1 E7].
PROJECT_ERROR = _text(500, "Internal Server Error")
# §12.3 AX-H "403 errors" for a foreign project (option foreign_project="403"): no Cloudflare
# markers, so it reads as E19a [I: body].
FOREIGN_PROJECT_FORBIDDEN = _text(403, "Forbidden")
# §12.5 E20: tool-protocol messages [I: body; SB records only the status].
TOOL_MESSAGES = CannedResponse(
    422, "application/json", b'{"detail":"messages: role tool and assistant tool_calls are not supported"}'
)
# §12.5 E18: concurrency or rate, no Retry-After [I: body].
TOO_MANY_REQUESTS = _text(429, "Too Many Requests")


def is_logged_out(session_id: str | None) -> bool:
    """No cookie, ``not-login`` or ``anonymous`` (§12.5 E24, E25)."""
    return scenario_for(session_id) in (Scenario.NOT_LOGIN, Scenario.ANONYMOUS)


def canned_response(session_id: str | None, endpoint: Endpoint) -> CannedResponse | None:
    """The non-stream answer this cookie gets on ``endpoint``, or None to carry on normally."""
    if is_logged_out(session_id):
        return NOT_LOGIN
    scenario = scenario_for(session_id)
    if endpoint is Endpoint.ACCOUNT:
        return None
    if scenario is Scenario.BAD_REQUEST_CF:
        return BAD_REQUEST_CF if endpoint is Endpoint.AGENT else None
    if scenario is Scenario.BAD_REQUEST:
        return BAD_REQUEST
    return _EDGE.get(scenario)
