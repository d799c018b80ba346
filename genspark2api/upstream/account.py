"""Account probes: is a cookie still logged in, and how many credits has it left?

Only the account endpoints that spend no credits (genspark-protocol.md §12.5 notes, §12.9.4):

* `GET /api/user` -> `data.cogen.{email, plan}`. The login check must require the e-mail: an
  anonymous session is answered HTTP 200 `{"status":-5,"message":"user not found"}` (§12.5 E24).
* `GET /api/credit_audit/billing_cycle` -> `data.remaining` (int). A single `0` can be a stale
  read, so a zero is read once more (KE reads twice).

A probe never raises: what went wrong is in `error`, and `logged_in` is None when the answer did not
tell (the network failed, upstream changed shape). Only a clear "not logged in" is False.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import msgspec

from ..redact import mask_email
from .classify import FailureKind
from .events import UpstreamFailure

if TYPE_CHECKING:
    from .client import GensparkClient

USER_PATH = "/api/user"
BILLING_PATH = "/api/credit_audit/billing_cycle"


class AccountProbe(msgspec.Struct, frozen=True, kw_only=True):
    checked_at: float                 # unix seconds
    logged_in: bool | None            # None: the probe could not tell
    email: str | None = None          # masked (redact.mask_email)
    plan: str | None = None
    credits: int | None = None        # `remaining` of the billing cycle
    error: str | None = None


def _dict(value: Any, *path: str) -> Any:
    for name in path:
        if not isinstance(value, dict):
            return None
        value = value.get(name)
    return value


async def probe_account(client: GensparkClient, cookie: str, *, clock: Any = time.time) -> AccountProbe:
    """Ask upstream about one cookie's account (through that cookie's proxy, like its chats)."""
    checked_at = clock()
    try:
        user = await client.get_json(USER_PATH, cookie=cookie)
    except UpstreamFailure as exc:
        dead = exc.failure.kind is FailureKind.ACCOUNT_DEAD
        return AccountProbe(checked_at=checked_at, logged_in=False if dead else None, error=exc.failure.detail)
    email = _dict(user, "data", "cogen", "email")
    if not isinstance(email, str) or not email:
        status = _dict(user, "status")
        message = _dict(user, "message")
        return AccountProbe(
            checked_at=checked_at, logged_in=False,
            error=f"{USER_PATH} answered without an e-mail (status {status!r}, {str(message)[:80]!r}): not logged in.",
        )
    plan = _dict(user, "data", "cogen", "plan")
    plan = plan if isinstance(plan, str) else None
    credits: int | None = None
    error: str | None = None
    for _ in range(2):  # a single 0 can be stale (§12.5 notes, KE)
        try:
            billing = await client.get_json(BILLING_PATH, cookie=cookie)
        except UpstreamFailure as exc:
            error = f"{BILLING_PATH}: {exc.failure.detail}"
            break
        remaining = _dict(billing, "data", "remaining")
        if not isinstance(remaining, int) or isinstance(remaining, bool):
            error = f"{BILLING_PATH} answered without data.remaining."
            break
        credits = remaining
        if remaining:
            break
    return AccountProbe(checked_at=checked_at, logged_in=True, email=mask_email(email), plan=plan,
                        credits=credits, error=error)
