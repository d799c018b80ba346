"""Every upstream outcome, sorted into what it means for the cookie and for the client.

Pure: bytes, parsed events or exceptions in, a `Failure` (or None for "not a failure") out.

The old project matched whole lines byte for byte and went blind when upstream added three keys
to a JSON line (genspark-protocol.md §4.1 E6, §4.3). Here every decision comes from the status
code, the content type and *parsed* JSON fields; free-text markers are searched case-insensitively
with any whitespace, and only in the places an error can be (an error page, an error event, a
result without a message id), never in a real answer.

The kinds follow openai-compat.md §5 item 2 (account-scoped temporary / permanent, transport,
request-scoped) plus two of our own: OVERLOADED (a reCAPTCHA failure in disguise, §4.1 E6) and
UPSTREAM_WIDE (Genspark itself is down or the endpoint is gone: no cookie is to blame).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec


class FailureKind(enum.StrEnum):
    RATE_LIMITED = "rate_limited"          # §4.1 E3, E12, §12.5 E17 throttle texts: account, temporary
    THROTTLED = "throttled"                # §12.5 E18 HTTP 429 (concurrency/rate): account, short, growing
    PLACEHOLDER = "placeholder"            # §12.5 E15 canned non-answer: account, a minute
    QUOTA_EXHAUSTED = "quota_exhausted"    # §4.1 E5, E12 "积分已用完": account, temporary
    SESSION_LIMIT = "session_limit"        # §4.1 E9: account, temporary, reset time given
    ACCOUNT_DEAD = "account_dead"          # §4.1 E4, E11: account, permanent
    NETWORK = "network"                    # §4.1 E1, E2, transport errors, truncated/empty answers
    OVERLOADED = "overloaded"              # §4.1 E6: in practice a failed reCAPTCHA check
    UPSTREAM_WIDE = "upstream_wide"        # §4.1 E7, E8, E10, any 5xx: nobody's cookie to blame
    REQUEST = "request"                    # the request itself was refused: back to the client
    DECLINED = "declined"                  # §12.5 E23 content filter: nobody's fault, try a fresh thread


_ACCOUNT_KINDS = frozenset(
    {FailureKind.RATE_LIMITED, FailureKind.THROTTLED, FailureKind.PLACEHOLDER, FailureKind.QUOTA_EXHAUSTED,
     FailureKind.SESSION_LIMIT, FailureKind.ACCOUNT_DEAD}
)
_RETRY_ELSEWHERE_KINDS = _ACCOUNT_KINDS | {FailureKind.NETWORK, FailureKind.OVERLOADED, FailureKind.DECLINED}
# Kinds that cost the cookie nothing: not its fault.
BLAMELESS_KINDS = frozenset({FailureKind.UPSTREAM_WIDE, FailureKind.REQUEST, FailureKind.DECLINED})


@dataclass(frozen=True, slots=True)
class Failure:
    """One failed upstream attempt.

    `code` is stable and machine-readable (`upstream_*`); `detail` is for the operator: what
    happened and what to do. `reset_at` (unix seconds) is set when upstream said when the account
    recovers (§4.1 E9 `{time:<unix>}`).
    """

    kind: FailureKind
    code: str
    detail: str
    reset_at: float | None = None
    evidence: str | None = None   # the answer text a loose in-band match blamed (signals.py)

    @property
    def account_scoped(self) -> bool:
        """The account (cookie) is at fault, not the network, Genspark or the request."""
        return self.kind in _ACCOUNT_KINDS

    @property
    def permanent(self) -> bool:
        """The cookie will not recover by waiting."""
        return self.kind is FailureKind.ACCOUNT_DEAD

    @property
    def retry_elsewhere(self) -> bool:
        """Another cookie may well succeed where this one failed."""
        return self.kind in _RETRY_ELSEWHERE_KINDS


TRUNCATED = Failure(
    FailureKind.NETWORK,
    "upstream_truncated",
    "The Genspark stream ended before its final message_result event (genspark-protocol.md §3.1): "
    "the connection was cut or the request was silently dropped.",
)
EMPTY_ANSWER = Failure(
    FailureKind.NETWORK,
    "upstream_empty_answer",
    "Genspark finished without any answer text. This is how an unrecognised upstream refusal "
    "usually looks (genspark-protocol.md §4.2 'empty answer'); another cookie is tried.",
)

# ------------------------------------------------------------------------------------ markers

_FLAGS = re.IGNORECASE | re.DOTALL

# §4.1 E1: the Cloudflare challenge page. Any one marker suffices; "Just a moment" only counts
# on an HTML page because it is ordinary English.
_CF_CHALLENGE = re.compile(r"_cf_chl_opt|cf_chl_|challenge-platform|cf-browser-verification", _FLAGS)
# §12.5 E19b: TT's markers of a Cloudflare 403 (fingerprint or IP, not the cookie).
_CF_ATTENTION = re.compile(r"attention\s+required", _FLAGS)
_CF_JUST_A_MOMENT = re.compile(r"just\s+a\s+moment", _FLAGS)
# §4.1 E2: the Cloudflare block (WAF) page.
_CF_BLOCK = re.compile(
    r"sorry,?\s+you\s+have\s+been\s+blocked|data-translate\s*=\s*[\"']?block_headline", _FLAGS
)
# §4.1 E8: Genspark's own Service Unavailable page. The old detector wanted 3 of 6 on a one-line
# page; we want 2, in any case, across lines.
_UNAVAILABLE_MARKERS = tuple(
    re.compile(pattern, _FLAGS)
    for pattern in (
        r"<title>\s*genspark\s*</title>",
        r"service\s+unavailable",
        r"class\s*=\s*[\"']bb[\"'].*?class\s*=\s*[\"']s1[\"'].*?class\s*=\s*[\"']s2[\"']",
        r"genspark_logo\.png",
        r"gensparkpublicblob-cdn[^\s\"']*\.azurefd\.net",
        r"class\s*=\s*[\"']tt[\"']\s*>\s*service\s+unavailable",
    )
)
# Cloudflare's plain-text refusals, e.g. "error code: 1020" (access denied), "1015" (IP throttled).
_CF_ERROR_CODE = re.compile(r"^\s*error\s+code:\s*10\d\d\s*$", _FLAGS)
_HTML = re.compile(r"<!doctype\s+html|<html[\s>]|<body[\s>]", re.IGNORECASE)
_RATE_LIMIT_CF = re.compile(r"rate\s+limit\s+exceeded\s+cf\d*", _FLAGS)   # §4.1 E3
_BAD_REQUEST_CF = re.compile(r"^\s*bad\s+request\s+cf\w*\s*$", _FLAGS)    # §4.1 E11
_RETIRED = re.compile(r"feature\s+has\s+been\s+retired", _FLAGS)          # §4.1 E10
_INTERNAL_ERROR = re.compile(r"^\s*internal\s+server\s+error\s*$", _FLAGS)  # §4.1 E7
_THROTTLE = re.compile(r"too\s+quickly|too\s+many\s+requests|rate[\s_-]?limit", _FLAGS)  # §4.1 E12
_CREDITS_GONE = re.compile(r"积分已用完|free\s+usage\s+limit", _FLAGS)     # §4.1 E12, §3.4.6
_OVERLOADED = re.compile(r"server\s+overloaded", _FLAGS)                  # §4.1 E6
_SESSION_LIMIT_TEXT = re.compile(r"session\s+limit", _FLAGS)
_RESET_TIME = re.compile(r"\{\s*time\s*:\s*(\d{9,13})\s*\}")               # §4.1 E9

# A result without a message id may be an error dressed as an answer (§3.4.6: both E5 and E6
# carry `"id": ""`); text markers are only trusted in such results when they are short.
_SUSPECT_TEXT_MAX = 1000
SNIPPET_MAX = 200

_decoder = msgspec.json.Decoder()

# ------------------------------------------------------------------------------ ready-made details


def _rate_limited(how: str, reset_at: float | None = None) -> Failure:
    return Failure(
        FailureKind.RATE_LIMITED,
        "upstream_rate_limited",
        f"Genspark rate-limited this cookie ({how}). It cools down for RATE_LIMIT_COOKIE_LOCK_DURATION "
        "seconds; more cookies or fewer parallel requests help.",
        reset_at,
    )


def _exhausted(how: str, reset_at: float | None) -> Failure:
    return Failure(
        FailureKind.QUOTA_EXHAUSTED,
        "upstream_account_exhausted",
        f"This account has used up its free usage for now ({how}); it rests until upstream resets it "
        "(24 h when upstream gives no time).",
        reset_at,
    )


def _session_limit(how: str, reset_at: float | None) -> Failure:
    when = "at the time upstream gave" if reset_at is not None else "for 5 h (upstream gave no time)"
    return Failure(
        FailureKind.SESSION_LIMIT,
        "upstream_session_limit",
        f"This account hit its session/plan limit ({how}); it rests {when}.",
        reset_at,
    )


def _not_logged_in(how: str) -> Failure:
    return Failure(
        FailureKind.ACCOUNT_DEAD,
        "upstream_not_logged_in",
        f"Genspark does not accept this cookie's session ({how}): the session_id is invalid or expired. "
        "Log in again in a browser and replace the cookie in GS_COOKIE; it stays disabled until then.",
    )


_OVERLOADED_FAILURE = Failure(
    FailureKind.OVERLOADED,
    "upstream_overloaded",
    "Genspark answered 'Server overloaded, please try again later.' (genspark-protocol.md §4.1 E6). "
    "In practice this is a failed reCAPTCHA check: if it keeps happening, set RECAPTCHA_PROXY_URL "
    "to a working reCAPTCHA token service.",
)
_RETIRED_FAILURE = Failure(
    FailureKind.UPSTREAM_WIDE,
    "upstream_retired",
    "Genspark says this feature has been retired (genspark-protocol.md §4.1 E10): the chat endpoint "
    "of the selected protocol generation is gone. Set GENSPARK_CHAT_PROTOCOL to the other "
    "generation (ai_chat uses /api/agent/ask_proxy).",
)
_UNAVAILABLE_PAGE = Failure(
    FailureKind.UPSTREAM_WIDE,
    "upstream_unavailable",
    "Genspark shows its 'Service Unavailable' page (maintenance or outage, genspark-protocol.md §4.1 E8). "
    "No cookie is to blame; try again later.",
)

# ------------------------------------------------------------------------------------ helpers


def _snippet(text: str, limit: int = SNIPPET_MAX) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def reset_time(text: str) -> float | None:
    """The unix time of a `{time:N}` marker in `text` (§4.1 E9, §12.5 E14), or None."""
    return _reset_at(iter((text,)))


def _reset_at(strings: Iterator[str]) -> float | None:
    for text in strings:
        match = _RESET_TIME.search(text)
        if match:
            value = float(match.group(1))
            return value / 1000.0 if value > 1e12 else value   # tolerate milliseconds
    return None


def _all_strings(value: Any, depth: int = 0) -> Iterator[str]:
    """Every string inside a parsed JSON value (bounded depth), for the `{time:…}` marker."""
    if isinstance(value, str):
        yield value
    elif depth < 6 and isinstance(value, Mapping):
        for item in value.values():
            yield from _all_strings(item, depth + 1)
    elif depth < 6 and isinstance(value, list):
        for item in value:
            yield from _all_strings(item, depth + 1)


def _message_texts(obj: Mapping[str, Any]) -> list[str]:
    """The human-readable error-ish strings of a JSON object: message/error/detail/content/msg."""
    out: list[str] = []
    for key in ("content", "message", "error", "detail", "msg", "code", "session_limit_message"):
        value = obj.get(key)
        if isinstance(value, str):
            out.append(value)
        elif isinstance(value, Mapping):
            out += [v for k in ("message", "error", "detail", "code", "type") if isinstance(v := value.get(k), str)]
    state = obj.get("session_state")
    if isinstance(state, Mapping) and isinstance(state.get("session_limit_message"), str):
        out.append(state["session_limit_message"])
    return out


def _is_not_login(obj: Mapping[str, Any]) -> bool:
    """§4.1 E4: `{"status": -5, "message": "not login", ...}`, any spacing, key order or extras."""
    status = obj.get("status")
    if status == -5 or status == "-5":
        return True
    message = obj.get("message")
    return isinstance(message, str) and re.fullmatch(r"\s*not\s+login\s*", message, re.IGNORECASE) is not None


def _true(value: Any) -> bool:
    return value is True or value == "true"


# ------------------------------------------------------------------------------------ results


def classify_result(result: Mapping[str, Any]) -> Failure | None:
    """A parsed final event: G1 `message_result`, G2 `message_result` (nested `message`) or a G2
    `{"type": "error", ...}` event (genspark-protocol.md §2.9, §3.2). None for a normal answer.

    Structural signals (action type, session_state flags, status -5) count anywhere. Text markers
    count only in an error event or in a short result without a message id, so an answer that
    merely talks about rate limits stays an answer.
    """
    is_error_event = result.get("type") == "error"
    nested = result.get("message")
    layers: list[Mapping[str, Any]] = [result] + ([nested] if isinstance(nested, Mapping) else [])

    for layer in layers:
        action = layer.get("action")
        action_type = action.get("type") if isinstance(action, Mapping) else None
        state = layer.get("session_state")
        state = state if isinstance(state, Mapping) else {}
        # §3.4.6 / §4.1 E5: the free-usage limit.
        if action_type == "ACTION_QUOTA_EXCEEDED" or _true(state.get("consume_usage_quota_exceeded")):
            return _exhausted("free usage limit reached", _reset_at(_all_strings(result)))
        # §4.1 E9 (mc5024, 2026), §2.9 `session_limit_message`.
        if (
            action_type == "ACTION_SESSION_LIMIT"
            or _true(state.get("session_limit_exceeded"))
            or state.get("session_limit_message")
        ):
            return _session_limit("upstream session limit", _reset_at(_all_strings(result)))
        if _is_not_login(layer):
            return _not_logged_in("status -5 'not login'")

    text = "\n".join(t for layer in layers for t in _message_texts(layer))
    anonymous = not layers[-1].get("id")
    if not is_error_event and not (anonymous and len(text) <= _SUSPECT_TEXT_MAX):
        return None
    failure = _classify_text(text, reset_at=_reset_at(_all_strings(result)))
    if failure is not None:
        return failure
    if is_error_event:
        return Failure(
            FailureKind.NETWORK,
            "upstream_error_event",
            f"Genspark sent an error event that is not a known signal: {_snippet(text) or 'no message'}",
        )
    return None


def _classify_text(text: str, *, reset_at: float | None = None) -> Failure | None:
    """Free-text markers of an error message (never of an answer)."""
    if not text.strip():
        return None
    if _OVERLOADED.search(text):
        return _OVERLOADED_FAILURE
    if _RETIRED.search(text):
        return _RETIRED_FAILURE
    if _SESSION_LIMIT_TEXT.search(text):
        return _session_limit(f"'{_snippet(text, 80)}'", reset_at)
    if _CREDITS_GONE.search(text):
        return _exhausted(f"'{_snippet(text, 80)}'", reset_at)
    if _RATE_LIMIT_CF.search(text) or _THROTTLE.search(text):
        return _rate_limited(f"'{_snippet(text, 80)}'", reset_at)
    if re.fullmatch(r"\s*not\s+login\s*", text, re.IGNORECASE):
        return _not_logged_in("'not login'")
    return None


# ------------------------------------------------------------------------------------ HTTP bodies


def _parse_json_documents(text: str) -> tuple[list[Any], list[str]]:
    """The JSON values of a body (whole, or one per line, `data:` prefix allowed) and the other lines."""
    stripped = text.strip()
    if stripped[:1] in ("{", "["):
        try:
            return [_decoder.decode(stripped)], []
        except msgspec.DecodeError:
            pass
    documents: list[Any] = []
    plain: list[str] = []
    for line in stripped.splitlines():
        candidate = line.strip()
        if candidate.startswith("data:"):
            candidate = candidate[5:].strip()
        if candidate[:1] == "{":
            try:
                documents.append(_decoder.decode(candidate))
                continue
            except msgspec.DecodeError:
                pass
        if line.strip():
            plain.append(line)
    return documents, plain


def classify_http(status: int, content_type: str | None, body: bytes) -> Failure | None:
    """A non-SSE response body, or the non-`data:` text collected from an SSE body (pass status 200).

    None when nothing in it is a failure signal (a 2xx/3xx body without markers); the caller
    decides what an unexpected but signal-free body means.
    """
    raw = body.decode("utf-8", "replace")
    ctype = (content_type or "").lower()
    documents, plain = _parse_json_documents(raw)
    objects = [d for d in documents if isinstance(d, Mapping)]

    # §4.1 E4, at any status and in any JSON layout.
    for obj in objects:
        if _is_not_login(obj):
            return _not_logged_in(f"HTTP {status}, status -5 'not login'")
    # Whole-body readers (images, videos, non-stream) may hand us result events (§4.2).
    for obj in objects:
        if obj.get("type") in ("message_result", "error") or "action" in obj or "session_state" in obj:
            failure = classify_result(obj)
            if failure is not None:
                return failure

    is_html = _HTML.search(raw) is not None or ("html" in ctype and "<" in raw)
    # §4.1 E2 before E1: a block page also links the challenge platform.
    if _CF_BLOCK.search(raw):
        return Failure(
            FailureKind.NETWORK,
            "upstream_cloudflare_block",
            f"Cloudflare blocked the request (HTTP {status}, 'Sorry, you have been blocked'; genspark-protocol.md "
            "§4.1 E2). The egress IP is blocked: use another PROXY_URL.",
        )
    if _CF_CHALLENGE.search(raw) or (is_html and (_CF_JUST_A_MOMENT.search(raw) or _CF_ATTENTION.search(raw))):
        return Failure(
            FailureKind.NETWORK,
            "upstream_cloudflare_challenge",
            f"Cloudflare answered with a challenge page (HTTP {status}, genspark-protocol.md §4.1 E1): this IP "
            "or TLS fingerprint is being challenged. Use another PROXY_URL or wait.",
        )
    if is_html and sum(1 for marker in _UNAVAILABLE_MARKERS if marker.search(raw)) >= 2:
        return _UNAVAILABLE_PAGE
    if _RETIRED.search(raw):
        return _RETIRED_FAILURE
    if match := _CF_ERROR_CODE.search(raw):
        return Failure(
            FailureKind.NETWORK,
            "upstream_cloudflare_block",
            f"Cloudflare refused the request (HTTP {status}, '{match.group(0)}'): the egress IP is blocked or "
            "throttled by Cloudflare. Use another PROXY_URL or wait.",
        )

    # Plain text, or the message fields of JSON error bodies: never a whole JSON line compared.
    text = "\n".join(plain + [t for obj in objects for t in _message_texts(obj)])
    if is_html:
        text = ""   # the words of an unknown HTML page are no signal; its status decides below
    if _BAD_REQUEST_CF.search(text) and status in (200, 400, 401, 403):
        # §12.5 E22 (SB, 2026-09-23, newer than §4.1 E11's "bad session" reading): an application
        # check for a missing User-Agent. The same for every cookie, and never a dead one.
        # A brief NETWORK rest, not UPSTREAM_WIDE: a proxy may strip headers on one egress only.
        return Failure(
            FailureKind.NETWORK,
            "upstream_missing_user_agent",
            f"Genspark answered HTTP {status} 'bad request cf' (genspark-protocol.md §12.5 E22): the request "
            "reached it without a User-Agent. Check UPSTREAM_USER_AGENT and any proxy that strips headers; "
            "no cookie is to blame.",
        )
    if match := _RATE_LIMIT_CF.search(text):
        return _rate_limited(f"HTTP {status} '{_snippet(match.group(0))}'")
    if _INTERNAL_ERROR.search(text):
        return Failure(
            FailureKind.UPSTREAM_WIDE,
            "upstream_internal_error",
            f"Genspark answered HTTP {status} 'Internal Server Error' (genspark-protocol.md §4.1 E7). "
            "No cookie is to blame; try again later.",
        )
    failure = _classify_text(text)
    if failure is not None:
        return failure

    if status == 429:
        # §12.5 E18: concurrency (3+ in flight) or rate (6/min); recovers in ~30 s, no Retry-After.
        return Failure(
            FailureKind.THROTTLED,
            "upstream_throttled",
            f"Genspark answered HTTP 429 {_snippet(raw, 80)!r} (genspark-protocol.md §12.5 E18: too many "
            "requests in flight or per minute on this account); it cools down briefly, longer on repeats. "
            "COOKIE_MAX_IN_FLIGHT keeps it from happening.",
        )
    if status == 422:
        # §12.5 E20: tool-protocol messages in the body. We flatten them, so this is our bug.
        return Failure(
            FailureKind.UPSTREAM_WIDE,
            "upstream_unprocessable",
            f"Genspark refused the request body with HTTP 422 (genspark-protocol.md §12.5 E20): "
            f"{_snippet(raw) or 'empty body'}. No cookie is to blame; please report it.",
        )
    if status >= 500:
        code = "upstream_internal_error" if status == 500 else "upstream_unavailable"
        return Failure(
            FailureKind.UPSTREAM_WIDE,
            code,
            f"Genspark answered HTTP {status}: {_snippet(raw) or 'empty body'}. No cookie is to blame.",
        )
    if status == 401 or (status == 403 and not is_html):
        # §12.5 E19a: a 401, or a 403 without Cloudflare markers, is the cookie.
        return _not_logged_in(f"HTTP {status} {_snippet(raw, 80)!r}")
    if status == 403 and is_html:
        return Failure(
            FailureKind.NETWORK,
            "upstream_forbidden",
            f"Genspark (or its CDN) refused the request with an HTML page (HTTP 403): {_snippet(raw)}. "
            "Probably anti-bot filtering of the egress IP; another cookie or PROXY_URL may pass.",
        )
    if status == 408:
        return Failure(FailureKind.NETWORK, "upstream_timeout", "Genspark answered HTTP 408 Request Timeout.")
    if 400 <= status < 500:
        shown = _snippet(text if text.strip() else raw)
        return Failure(
            FailureKind.REQUEST,
            "upstream_bad_request",
            f"Genspark refused the request with HTTP {status}: {shown or 'empty body'}",
        )
    return None


# ------------------------------------------------------------------------------------ exceptions

_TIMEOUT_NAMES = frozenset({"TimeoutException", "TooSlowError", "TimeoutError"})


def classify_exception(exc: BaseException) -> Failure:
    """A transport exception: always NETWORK (`upstream_timeout`, `upstream_proxy_error` or
    `upstream_network_error`).

    Decided by class names along the MRO (httpx.TimeoutException and its Connect/Read/Write/Pool
    subclasses, trio.TooSlowError, TimeoutError, httpx.ProxyError), so this module imports
    neither httpx nor trio.
    """
    names = {cls.__name__ for cls in type(exc).__mro__}
    what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if names & _TIMEOUT_NAMES:
        phase = "connecting to" if "ConnectTimeout" in names else "waiting for"
        return Failure(FailureKind.NETWORK, "upstream_timeout", f"Timed out {phase} Genspark ({what}).")
    if "ProxyError" in names:
        return Failure(
            FailureKind.NETWORK,
            "upstream_proxy_error",
            f"The egress proxy failed ({what}); check PROXY_URL.",
        )
    return Failure(FailureKind.NETWORK, "upstream_network_error", f"Network error talking to Genspark ({what}).")
