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


def mask_capability_path(path: str, marker: str = "/v1/media/") -> str:
    """`/v1/media/<token>.png` -> `/v1/media/Ab3d…` for logs: the token is the only authorisation."""
    head, sep, token = path.partition(marker)
    return f"{head}{sep}{token[:4]}{MASK}" if sep and token else path
