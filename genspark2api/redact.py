"""Masking of secrets for logs, the status page and error details.

A cookie is an account: it never appears whole anywhere we write (openai-compat.md §1d, chat2api
printing every secret at start-up is the counter-example). A masked value keeps a few characters
at each end so an operator can tell two cookies apart and find one in `GS_COOKIE`.
"""

from __future__ import annotations

import re

MASK = "…"
SHORT_MASK = "***"

_SESSION_ID = re.compile(r"(?:^|;)\s*session_id=([^;]*)")


def mask_secret(value: str, keep: int = 4) -> str:
    """`aed9196b-…-ed6e32f7e4d` -> `aed9…e4d`.

    At most `keep` characters at the start and `keep - 1` at the end are shown, and never more than
    a third of the value in total; a value too short to show two characters becomes `***`.
    """
    budget = min(2 * keep - 1, len(value) // 3)
    if budget < 2:
        return SHORT_MASK
    head = (budget + 1) // 2
    tail = budget // 2
    return f"{value[:head]}{MASK}{value[len(value) - tail:]}"


def mask_cookie(cookie: str) -> str:
    """`session_id=<uuid>; agree_terms=1` -> `session_id=aed9…e4d (+1 more)`.

    Only the session id is shown (masked); other cookies of a pasted browser string are counted,
    not shown, since they may hold secrets of their own (genspark-protocol.md §1.3). A string
    without `session_id=` is masked as a whole.
    """
    match = _SESSION_ID.search(cookie)
    if match is None:
        return mask_secret(cookie.strip())
    masked = f"session_id={mask_secret(match.group(1).strip())}"
    others = sum(1 for part in cookie.split(";") if part.strip()) - 1
    return f"{masked} (+{others} more)" if others > 0 else masked


def mask_proxy(url: str) -> str:
    """`socks5://user:pass@host:1080` -> `socks5://user:***@host:1080`: a proxy's password is a
    secret, its host is what an operator needs to see."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    userinfo, at, hostpart = rest.rpartition("@")
    if not at:
        return url
    user, colon, _password = userinfo.partition(":")
    return f"{scheme}://{user}{':' + SHORT_MASK if colon else ''}@{hostpart}"


def mask_email(address: str) -> str:
    """`alice.smith@example.com` -> `al…h@example.com`: enough to tell accounts apart, not to
    read the address off a screenshot of the status page."""
    local, at, domain = address.rpartition("@")
    if not at:
        return mask_secret(address)
    return f"{mask_secret(local)}@{domain}"


def mask_capability_path(path: str, marker: str = "/v1/media/") -> str:
    """`/v1/media/<token>.png` -> `/v1/media/Ab3d…` for logs: the token is the only authorisation."""
    head, sep, token = path.partition(marker)
    return f"{head}{sep}{token[:4]}{MASK}" if sep and token else path


# ------------------------------------------------------------------ recorded exchanges, drift samples

REDACTED = "[redacted]"

# Keys whose value is a secret wherever they appear in a JSON body or a header set: the account
# (cookies, session ids), single-use reCAPTCHA tokens (§12.6.1) and API keys. `chat_session_id`
# (§12.2) is a random uuid the client makes up, but it is cheap to hide and a reader cannot tell.
# `*_tokens` (plural) are usage counts (§12.4.2 `_llm_usage`) and stay.
_SECRET_KEY = re.compile(
    r"(?:^|_|-)(?:cookies?|session_id|sessionid|token|recaptcha|authorization|api[-_]?key|secret|password)$"
    r"|^g_recaptcha_token$|^x-api-key$|^proxy-authorization$",
    re.IGNORECASE,
)
# A secret inside a string: `session_id=…` in a pasted cookie, `Bearer …`, a URL's `token=` query.
_SECRET_IN_TEXT = re.compile(
    r"(?P<key>(?:session_id|g_recaptcha_token|token|api_key|cf_clearance|__cf_bm)=)(?P<value>[^;&\s\"']+)"
    r"|(?P<bearer>Bearer\s+)(?P<bvalue>[^\s\"']+)",
    re.IGNORECASE,
)


def is_secret_key(key: str) -> bool:
    return _SECRET_KEY.search(key) is not None


def redact_text(text: str) -> str:
    """`session_id=abc; x=1` -> `session_id=[redacted]; x=1`; `Bearer sk-…` -> `Bearer [redacted]`."""

    def swap(match: re.Match[str]) -> str:
        if match.group("key"):
            return match.group("key") + REDACTED
        return match.group("bearer") + REDACTED

    return _SECRET_IN_TEXT.sub(swap, text)


def redact_json(value: object) -> object:
    """A copy of a decoded JSON value with every secret-named key's value and every secret inside
    a string replaced; shapes and other values stay, so a redacted body still replays."""
    if isinstance(value, dict):
        return {
            k: (REDACTED if isinstance(k, str) and is_secret_key(k) and v not in (None, "") else redact_json(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact_json(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


def redact_headers(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(k, REDACTED if is_secret_key(k) else redact_text(v)) for k, v in headers]
