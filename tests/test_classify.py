"""Every error signal of genspark-protocol.md §4.1 / §4.4, built from the doc's exact examples and
from variants upstream could send tomorrow (extra keys, other key order, other whitespace,
multi-line pages)."""

from __future__ import annotations

import json
import random

import httpx
import pytest
import trio

from genspark2api.upstream.classify import (
    EMPTY_ANSWER,
    TRUNCATED,
    Failure,
    FailureKind,
    classify_exception,
    classify_http,
    classify_result,
)

K = FailureKind

# §3.4.6, verbatim.
E5_LINE = (
    'data: {"id": "", "role": "assistant", "content": "You\'ve reached your free usage limit today", '
    '"action": {"type": "ACTION_QUOTA_EXCEEDED", "query_string": null, "update_flow_data": null, "label": null, '
    '"user_s_input": null, "action_params": null}, "recommend_actions": null, "is_prompt": true, '
    '"render_template": null, "session_state": {"consume_usage_quota_exceeded": true}, "message_type": null, '
    '"type": "message_result"}'
)
E6_OLD = (
    '{"id": "", "role": "assistant", "content": "Server overloaded, please try again later.", "action": null, '
    '"recommend_actions": null, "is_prompt": false, "render_template": null, "session_state": null, '
    '"message_type": null, "type": "message_result"}'
)
E6_MAY_2025 = (
    '{"id": "", "role": "assistant", "content": "Server overloaded, please try again later.", "action": null, '
    '"recommend_actions": null, "is_prompt": false, "render_template": null, "session_state": null, '
    '"message_type": null, "tool_calls": null, "tool_call_id": null, "thinking_blocks": null, '
    '"type": "message_result"}'
)
NOT_LOGIN = '{"status":-5,"message":"not login","data":{}}'
CF_CHALLENGE_ONE_LINE = (
    '<!DOCTYPE html><html lang="en-US"><head><title>Just a moment...</title>'
    '<meta http-equiv="refresh" content="390"></head><body><script>window._cf_chl_opt={cvId: "3"};'
    "</script></body></html>"
)
CF_CHALLENGE_MULTI_LINE = """<!DOCTYPE html>
<html lang="en-US">
  <head>
    <TITLE>Just   a moment...</TITLE>
  </head>
  <body>
    <script src="/cdn-cgi/challenge-platform/h/b/orchestrate/chl_page/v1?ray=8"></script>
  </body>
</html>
"""
CF_BLOCK = """<!DOCTYPE html>
<html><head><title>Attention Required! | Cloudflare</title></head>
<body><div class="cf-wrapper">
<h1 data-translate="block_headline">Sorry, you have been blocked</h1>
<h2 class="cf-subheadline">You are unable to access genspark.ai</h2>
</div></body></html>"""
UNAVAILABLE_ONE_LINE = (
    '<!doctype html><html><head><title>Genspark</title></head><body><div class="bb"><div class="s1"></div>'
    '<div class="s2"></div><div class="s3"></div></div><img src="https://gensparkpublicblob-cdn-e6g4btgjavb5a7gh'
    '.z03.azurefd.net/genspark_logo.png"><div class="tt">Service Unavailable</div></body></html>'
)
UNAVAILABLE_MULTI_LINE = """<!doctype html>
<html>
 <head><title>
   Genspark
 </title></head>
 <body>
   <img src="/static/genspark_logo.png">
   <div class="tt">Service
     Unavailable</div>
 </body>
</html>"""


def reorder(obj: dict, seed: int = 7) -> dict:
    items = list(obj.items())
    random.Random(seed).shuffle(items)
    return {k: reorder(v, seed) if isinstance(v, dict) else v for k, v in items}


def variants(line: str) -> list[dict]:
    """The doc's object, plus: compact spacing, shuffled keys, extra keys."""
    obj = json.loads(line.removeprefix("data: "))
    extra = dict(obj, new_upstream_key={"nested": [1, 2]}, another=None)
    if isinstance(extra.get("session_state"), dict):
        extra["session_state"] = dict(extra["session_state"], something_new=True)
    return [obj, reorder(obj), extra, reorder(extra, 3)]


def assert_kind(failure: Failure | None, kind: FailureKind, code: str | None = None) -> Failure:
    assert failure is not None, "expected a failure"
    assert failure.kind is kind, failure
    if code is not None:
        assert failure.code == code, failure
    assert failure.detail
    return failure


# ------------------------------------------------------------------------------ classify_result


@pytest.mark.parametrize("obj", variants(E5_LINE))
def test_free_usage_limit_from_fields(obj: dict) -> None:
    assert_kind(classify_result(obj), K.QUOTA_EXHAUSTED, "upstream_account_exhausted")


def test_free_usage_limit_from_either_flag_alone() -> None:
    obj = json.loads(E5_LINE.removeprefix("data: "))
    only_action = dict(obj, session_state=None, content="")
    only_state = dict(obj, action=None, content="", id="a-real-id")
    assert_kind(classify_result(only_action), K.QUOTA_EXHAUSTED)
    assert_kind(classify_result(only_state), K.QUOTA_EXHAUSTED)


@pytest.mark.parametrize("line", [E6_OLD, E6_MAY_2025])
def test_server_overloaded_both_forms(line: str) -> None:
    for obj in variants(line):
        failure = assert_kind(classify_result(obj), K.OVERLOADED, "upstream_overloaded")
        assert "RECAPTCHA_PROXY_URL" in failure.detail
        assert failure.retry_elsewhere and not failure.account_scoped


def test_overloaded_text_in_a_real_answer_is_an_answer() -> None:
    obj = json.loads(E6_MAY_2025)
    obj["id"] = "71701915-0c6f-4d2a-9d1e-5bb0d2b3c001"
    assert classify_result(obj) is None


def test_session_limit_with_reset_time() -> None:
    obj = {
        "id": "",
        "role": "assistant",
        "content": "You have reached the session limit. Resets at {time:1770030184}.",
        "action": {"type": "ACTION_SESSION_LIMIT", "label": None},
        "session_state": {"session_limit_exceeded": True},
        "type": "message_result",
    }
    for variant in [obj, reorder(obj), dict(obj, action=None), dict(obj, session_state=None)]:
        failure = assert_kind(classify_result(variant), K.SESSION_LIMIT, "upstream_session_limit")
        assert failure.reset_at == 1770030184.0


def test_session_limit_reset_time_anywhere_and_tolerant() -> None:
    obj = {
        "type": "message_result",
        "message": {
            "id": "x",
            "content": "",
            "session_state": {"session_limit_message": "limit hit { time : 1770030184000 }"},
        },
    }
    failure = assert_kind(classify_result(obj), K.SESSION_LIMIT)
    assert failure.reset_at == 1770030184.0  # milliseconds tolerated


def test_session_limit_without_time() -> None:
    obj = {"id": "m", "content": "", "action": {"type": "ACTION_SESSION_LIMIT"}, "type": "message_result"}
    assert assert_kind(classify_result(obj), K.SESSION_LIMIT).reset_at is None


def test_g2_nested_message_flags() -> None:
    obj = {
        "type": "message_result",
        "message": {
            "id": "8e1f",
            "role": "assistant",
            "content": "You've reached your free usage limit today",
            "action": {"type": "ACTION_QUOTA_EXCEEDED"},
        },
    }
    assert_kind(classify_result(obj), K.QUOTA_EXHAUSTED)


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("You are sending messages too quickly. Please slow down.", K.RATE_LIMITED),
        ("Rate limit reached for this account", K.RATE_LIMITED),
        ("rate_limit_exceeded", K.RATE_LIMITED),
        ("积分已用完", K.QUOTA_EXHAUSTED),
        ("This feature has been retired. Please use AI Chat instead.", K.UPSTREAM_WIDE),
        ("Server overloaded, please try again later.", K.OVERLOADED),
        ("not login", K.ACCOUNT_DEAD),
    ],
)
def test_g2_error_event_texts(text: str, kind: FailureKind) -> None:
    for obj in (
        {"type": "error", "error": text},
        {"type": "error", "message": text, "extra": 1},
        {"error": {"message": text, "code": None}, "type": "error"},
    ):
        assert_kind(classify_result(obj), kind)


def test_g2_unknown_error_event_is_a_network_failure_with_the_text() -> None:
    failure = assert_kind(classify_result({"type": "error", "error": "something odd"}), K.NETWORK)
    assert failure.code == "upstream_error_event"
    assert "something odd" in failure.detail


def test_retired_text_in_anonymous_result() -> None:
    obj = {"id": "", "role": "assistant", "content": "Sorry, this feature has been retired. Try AI Chat.", "type": "message_result"}
    failure = assert_kind(classify_result(obj), K.UPSTREAM_WIDE, "upstream_retired")
    assert "GENSPARK_CHAT_PROTOCOL" in failure.detail
    assert not failure.retry_elsewhere


@pytest.mark.parametrize(
    "obj",
    [
        # §3.2 message_result of a normal answer, with the May 2025 keys.
        {
            "id": "71701915-aaaa-bbbb-cccc-000000000001",
            "role": "assistant",
            "content": "Hello! How can I help you today?",
            "action": None,
            "recommend_actions": None,
            "is_prompt": False,
            "render_template": None,
            "session_state": {"models": ["claude-sonnet-4-5"], "layers": 1, "answer": "Hello!", "answer_is_finished": True},
            "message_type": None,
            "tool_calls": None,
            "tool_call_id": None,
            "thinking_blocks": None,
            "type": "message_result",
        },
        # §2.9 G2 nested message.
        {
            "type": "message_result",
            "message": {"id": "8e1f", "role": "assistant", "content": "Hello! How can I help?", "reasoning_id": None},
        },
        # An answer that talks about rate limits and quotas is still an answer.
        {
            "id": "abc",
            "content": "Rate limit exceeded cf1 means you are sending too quickly; 积分已用完 means credits are gone.",
            "type": "message_result",
        },
        {"type": "message_result", "message": {"id": "m1", "content": "Server overloaded is a common error."}},
        # An anonymous but long answer is not scanned for markers.
        {"id": "", "content": "rate limit " + "x" * 5000, "type": "message_result"},
        {"id": "", "content": "", "type": "message_result"},
    ],
)
def test_normal_results_are_not_failures(obj: dict) -> None:
    assert classify_result(obj) is None
    assert classify_result(reorder(obj)) is None


# ------------------------------------------------------------------------------ classify_http


@pytest.mark.parametrize("body", ["Rate limit exceeded cf1", "Rate limit exceeded cf2", "  rate limit exceeded   CF1\n"])
@pytest.mark.parametrize("status", [429, 200])
def test_rate_limit_plain_text(body: str, status: int) -> None:
    failure = assert_kind(classify_http(status, "text/plain", body.encode()), K.RATE_LIMITED, "upstream_rate_limited")
    assert failure.account_scoped and not failure.permanent and failure.retry_elsewhere


def test_any_429_is_a_short_throttle() -> None:
    """§12.5 E18: a bare 429 is concurrency or rate on the account, ~30 s, no Retry-After."""
    failure = assert_kind(classify_http(429, None, b""), K.THROTTLED, "upstream_throttled")
    assert failure.account_scoped and failure.retry_elsewhere and not failure.permanent
    assert_kind(classify_http(429, "application/json", b'{"error": "slow down"}'), K.THROTTLED)
    # A 429 whose text is a §4.1 E3 / §12.5 E17 throttle text keeps the longer rate-limit rest.
    assert_kind(classify_http(429, "text/plain", b"Rate limit exceeded cf1"), K.RATE_LIMITED)


@pytest.mark.parametrize(
    "body",
    [
        NOT_LOGIN,
        '{"status": -5, "message": "not login", "data": {}}',
        '{"data": {}, "message": "not login", "status": -5, "request_id": "r1"}',
        '{\n  "status" : -5,\n  "message" : "not login"\n}',
        '{"status": "-5"}',
        "data: " + NOT_LOGIN,
        "some preamble\n" + NOT_LOGIN + "\ntrailer",
    ],
)
@pytest.mark.parametrize("status", [200, 401, 403])
def test_not_logged_in_any_status_any_layout(body: str, status: int) -> None:
    failure = assert_kind(classify_http(status, "application/json", body.encode()), K.ACCOUNT_DEAD, "upstream_not_logged_in")
    assert failure.permanent and failure.account_scoped and failure.retry_elsewhere


@pytest.mark.parametrize("body", [CF_CHALLENGE_ONE_LINE, CF_CHALLENGE_MULTI_LINE, CF_CHALLENGE_MULTI_LINE.upper()])
@pytest.mark.parametrize("status", [403, 503, 200])
def test_cloudflare_challenge(body: str, status: int) -> None:
    failure = assert_kind(classify_http(status, "text/html; charset=UTF-8", body.encode()), K.NETWORK)
    assert failure.code == "upstream_cloudflare_challenge"
    assert failure.retry_elsewhere and not failure.account_scoped


def test_cloudflare_challenge_without_content_type() -> None:
    body = "<html><head><title>Just a moment...</title></head><body></body></html>"
    assert_kind(classify_http(403, None, body.encode()), K.NETWORK, "upstream_cloudflare_challenge")


def test_just_a_moment_in_plain_text_is_not_a_challenge() -> None:
    assert classify_http(200, "text/plain", b"just a moment please") is None


@pytest.mark.parametrize(
    "body",
    [
        CF_BLOCK,
        " ".join(CF_BLOCK.split()),
        '<html><body><h1 data-translate = "block_headline">Blocked</h1></body></html>',
    ],
)
def test_cloudflare_block(body: str) -> None:
    assert_kind(classify_http(403, "text/html", body.encode()), K.NETWORK, "upstream_cloudflare_block")


def test_cloudflare_plain_error_code() -> None:
    assert_kind(classify_http(403, "text/plain", b"error code: 1020"), K.NETWORK, "upstream_cloudflare_block")


@pytest.mark.parametrize("body", [UNAVAILABLE_ONE_LINE, UNAVAILABLE_MULTI_LINE])
@pytest.mark.parametrize("status", [503, 200, 502])
def test_genspark_service_unavailable_page(body: str, status: int) -> None:
    failure = assert_kind(classify_http(status, "text/html", body.encode()), K.UPSTREAM_WIDE, "upstream_unavailable")
    assert not failure.retry_elsewhere


def test_one_unavailable_marker_is_not_enough_at_200() -> None:
    assert classify_http(200, "text/html", b"<html><body>genspark_logo.png</body></html>") is None


@pytest.mark.parametrize("body", [b"Internal Server Error", b"internal server error\n", b"  Internal  Server Error  "])
def test_internal_server_error(body: bytes) -> None:
    assert_kind(classify_http(500, "text/plain", body), K.UPSTREAM_WIDE, "upstream_internal_error")
    assert_kind(classify_http(200, None, body), K.UPSTREAM_WIDE, "upstream_internal_error")


@pytest.mark.parametrize("status", [500, 502, 503, 504, 520])
def test_any_5xx_is_upstream_wide(status: int) -> None:
    failure = assert_kind(classify_http(status, "text/html", b"<html><body>oops</body></html>"), K.UPSTREAM_WIDE)
    assert not failure.retry_elsewhere and not failure.account_scoped


@pytest.mark.parametrize("body", [b"bad request cf", b"Bad Request CF\n", b"  bad  request cf  "])
def test_bad_request_cf_is_a_missing_user_agent_not_a_dead_cookie(body: bytes) -> None:
    """§12.5 E22 (SB, 2026-09-23) supersedes §4.1 E11: never kill a cookie on it."""
    failure = assert_kind(classify_http(400, "text/plain", body), K.NETWORK, "upstream_missing_user_agent")
    assert not failure.permanent and not failure.account_scoped
    assert "UPSTREAM_USER_AGENT" in failure.detail


def test_retired_page() -> None:
    body = b'{"status": 1, "message": "This feature has been retired. Please use AI Chat."}'
    assert_kind(classify_http(200, "application/json", body), K.UPSTREAM_WIDE, "upstream_retired")
    assert_kind(classify_http(410, "text/html", b"<html><body>This feature has\n been retired</body></html>"), K.UPSTREAM_WIDE)


def test_other_4xx_is_the_requests_fault_with_a_trimmed_snippet() -> None:
    body = json.dumps({"detail": "Invalid model " + "y" * 500, "code": 12}).encode()
    failure = assert_kind(classify_http(409, "application/json", body), K.REQUEST, "upstream_bad_request")
    assert "Invalid model" in failure.detail
    assert len(failure.detail) < 300
    assert not failure.retry_elsewhere and not failure.account_scoped
    assert_kind(classify_http(404, "text/plain", b"Not Found"), K.REQUEST)
    assert_kind(classify_http(413, None, b""), K.REQUEST)


def test_401_and_login_ish_403() -> None:
    assert_kind(classify_http(401, "text/plain", b"Unauthorized"), K.ACCOUNT_DEAD)
    assert_kind(classify_http(403, "application/json", b'{"message": "Please log in"}'), K.ACCOUNT_DEAD)
    # §12.5 E19a: a 403 without Cloudflare markers is the cookie, whatever its message says.
    assert_kind(classify_http(403, "application/json", b'{"message": "model not allowed"}'), K.ACCOUNT_DEAD)
    assert_kind(classify_http(403, "text/plain", b"Forbidden"), K.ACCOUNT_DEAD)
    # An HTML 403 is a CDN page: E19b markers make it a Cloudflare challenge, others stay "forbidden".
    assert_kind(classify_http(403, "text/html", b"<html><body>Forbidden</body></html>"), K.NETWORK, "upstream_forbidden")
    page = b"<!DOCTYPE html><html><head><title>Attention Required! | Cloudflare</title></head><body>x</body></html>"
    assert_kind(classify_http(403, "text/html", page), K.NETWORK, "upstream_cloudflare_challenge")


def test_422_is_a_tool_protocol_body_not_the_cookie() -> None:
    """§12.5 E20: tool-protocol messages in the body; we flatten them, so it is ours to fix."""
    failure = assert_kind(classify_http(422, "application/json", b'{"detail": "tool"}'), K.UPSTREAM_WIDE, "upstream_unprocessable")
    assert not failure.account_scoped


def test_plain_signal_under_a_wrong_content_type() -> None:
    assert_kind(classify_http(400, "text/html", b"bad request cf"), K.NETWORK)
    assert_kind(classify_http(429, "text/html", b"Rate limit exceeded cf2"), K.RATE_LIMITED)


def test_in_band_results_in_a_whole_body() -> None:
    """Image/video and non-stream readers see the whole SSE body (§4.2)."""
    updatetime = '{"message_id": "d0938794", "field_name": "_updatetime", "field_value": "2025-05-05T14:33:48.992304", "type": "message_field"}'
    body = f"data: {updatetime}\n\ndata: {E6_MAY_2025}\n\n".encode()
    assert_kind(classify_http(200, "text/event-stream", body), K.OVERLOADED)
    body = f'data: {{"id": "p1", "type": "project_start"}}\n\n{E5_LINE}\n\n'.encode()
    assert_kind(classify_http(200, "text/event-stream", body), K.QUOTA_EXHAUSTED)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\n\n",
        b'{"status": 0, "message": "success", "data": {"upload_image_url": "https://x"}}',
        b'data: {"id": "p1", "type": "project_start"}\n\n',
        b": keep-alive comment\n",
    ],
)
def test_success_bodies_are_not_failures(body: bytes) -> None:
    assert classify_http(200, "application/json", body) is None


# ------------------------------------------------------------------------------ exceptions


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (httpx.ConnectTimeout("t"), "upstream_timeout"),
        (httpx.ReadTimeout("t"), "upstream_timeout"),
        (httpx.PoolTimeout("t"), "upstream_timeout"),
        (trio.TooSlowError(), "upstream_timeout"),
        (TimeoutError(), "upstream_timeout"),
        (httpx.ConnectError("refused"), "upstream_network_error"),
        (httpx.ReadError("reset"), "upstream_network_error"),
        (httpx.RemoteProtocolError("peer closed"), "upstream_network_error"),
        (httpx.ProxyError("407"), "upstream_proxy_error"),
        (ConnectionResetError(104, "reset"), "upstream_network_error"),
        (OSError("unreachable"), "upstream_network_error"),
        (trio.BrokenResourceError(), "upstream_network_error"),
    ],
)
def test_exceptions_are_network_failures(exc: BaseException, code: str) -> None:
    failure = classify_exception(exc)
    assert failure.kind is K.NETWORK and failure.code == code
    assert failure.retry_elsewhere


def test_ready_made_failures() -> None:
    assert TRUNCATED.kind is K.NETWORK and TRUNCATED.code == "upstream_truncated"
    assert EMPTY_ANSWER.kind is K.NETWORK and EMPTY_ANSWER.code == "upstream_empty_answer"


def test_kind_properties_table() -> None:
    table = {
        K.RATE_LIMITED: (True, False, True),
        K.QUOTA_EXHAUSTED: (True, False, True),
        K.SESSION_LIMIT: (True, False, True),
        K.ACCOUNT_DEAD: (True, True, True),
        K.NETWORK: (False, False, True),
        K.OVERLOADED: (False, False, True),
        K.UPSTREAM_WIDE: (False, False, False),
        K.REQUEST: (False, False, False),
    }
    for kind, expected in table.items():
        failure = Failure(kind, "c", "d")
        assert (failure.account_scoped, failure.permanent, failure.retry_elsewhere) == expected, kind


# ------------------------------------------------------------------------------ simulator contract


@pytest.mark.parametrize(
    ("scenario", "endpoint", "kind"),
    [
        ("rate-limited", "COPILOT", K.RATE_LIMITED),
        ("not-login", "ACCOUNT", K.ACCOUNT_DEAD),
        ("cf-challenge", "COPILOT", K.NETWORK),
        ("cf-block", "AGENT", K.NETWORK),
        ("internal-error", "COPILOT", K.UPSTREAM_WIDE),
        ("service-unavailable", "COPILOT", K.UPSTREAM_WIDE),
        ("bad-request-cf", "AGENT", K.NETWORK),
    ],
)
def test_simulator_canned_responses_classify_as_intended(scenario: str, endpoint: str, kind: FailureKind) -> None:
    """The fake upstream (genspark2api.simulator) and the classifier agree on every §4.4 body."""
    from genspark2api.simulator.scenarios import Endpoint, canned_response

    canned = canned_response(f"{scenario}-1", Endpoint[endpoint])
    assert canned is not None
    assert_kind(classify_http(canned.status, canned.content_type, canned.body), kind)


def test_simulator_in_band_results_classify_as_intended() -> None:
    from genspark2api.simulator import events as ev

    assert_kind(classify_result(ev.quota_exceeded_result()), K.QUOTA_EXHAUSTED)
    assert classify_result(ev.session_limit_result(1770030184)).reset_at == 1770030184.0
    assert_kind(classify_result(ev.overloaded_result()), K.OVERLOADED)
    assert_kind(classify_result(ev.retired_result()), K.UPSTREAM_WIDE, "upstream_retired")
    assert_kind(classify_result(ev.g2_error("Rate limit exceeded, you are sending requests too quickly")), K.RATE_LIMITED)
    assert classify_result(ev.g2_message_result("m1", "Hello! How can I help?")) is None
