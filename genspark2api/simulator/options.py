"""Switches for the behaviours of genspark-protocol.md §12 that are inferred [I] or disputed.

Each default is the reading §12 recommends; the alternative stays selectable so a client can be
tested against both. A test may pass them to ``Simulator(...)`` or change ``sim.options`` between
requests (they are read per request).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ForeignProject = Literal["500", "empty", "403"]
ResentHistory = Literal["blank", "refusal"]
SearchVariant = Literal["content", "field"]


@dataclass
class SimOptions:
    # §12.5 E19c [I]: a request without Origin or Referer gets a Cloudflare-style 403.
    require_origin: bool = True
    # §12.5 E18 (SB [O]): a 3rd request in flight on one account gets 429; None = no limit.
    max_concurrent: int | None = 2
    # §12.5 E18: after such a 429 the account keeps getting 429 for this long ("~30 s").
    concurrency_penalty: float = 30.0
    # §12.5 E18 / §12.11 item 6: "6 requests/minute" per account; None = no rate gate.
    rate_per_minute: int | None = None
    # §12.3 / §12.12 q9: another account's project is a 500 (TT-1, P500), or AX-H's "empty" / "403".
    foreign_project: ForeignProject = "500"
    # §12.3 AX-H Bug #1: a whole transcript resent into an existing project gives an empty answer
    # ("blank") or a model-identity refusal ("refusal").
    resent_history: ResentHistory = "blank"
    # §12.11 item 2 [I]: the old habit of adopting an unknown project id as a new project
    # (MODEL_CHAT_MAP-style fixed ids); off = HTTP 500 (E21).
    adopt_unknown_projects: bool = False
    # §12.4.4: no readable reasoning on ai_chat; True streams `reasoning_content` deltas again.
    readable_reasoning: bool = False
    # §12.4.3 [I]: the search preamble and queries as `content` deltas (a) or on
    # `session_state.search_queries` (b).
    search_variant: SearchVariant = "content"
    # §12.11 item 8: asks per account per 5-hour window (chat and images together); None = off.
    five_hour_budget: int | None = None
    # §12.11 item 7: credits per account, 1 per chat ask; None = unlimited (billing says 100).
    credits: int | None = None
    # §12.6 / §12.11 item 9: image_generation_agent needs a fresh single-use reCAPTCHA token.
    image_captcha_strict: bool = True
    # §12.7.2: results come inline with SUCCESS (True) or PICKED with empty lists to poll (False).
    image_inline: bool = False
