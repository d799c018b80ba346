"""In-band limit and failure signals that arrive as an ordinary-looking answer (pure).

genspark-protocol.md §12.5: on today's `ai_chat` most limits and failures are HTTP 200 streams with
a message id whose *answer text* is the signal: `AI Chat [5-hour limit](…) reached.` (E13),
`Approaching 5-hour limit.` (E14a), the placeholder `Sorry, I couldn't produce a response this
turn.` (E15), credit texts (E16, E16b), throttle texts (E17), `The model declined to answer` (E23).
Relayed as they are, the client would get the limit as the model's answer and the cookie would be
thanked with a success.

Two pieces, both pure:

* `classify_answer(text)`: the whole answer → a `Failure` or None. Only short answers count
  (KE's bound, 300 characters). The texts the sources quote verbatim are believed whenever they
  come; the looser lists (KE's) also describe real answers, so they are believed once per request
  and rest a cookie a minute at most. A false positive would otherwise cool a healthy cookie and
  retry the request on the next one, and so burn the pool on one ordinary question.
* `SignalGate`: holds the first answer text of a stream only while it could still be one of the
  known signals (its normalised text is a prefix of a signal's opening, or starts with one and is
  still short), the way `stop` strings are held. A normal answer diverges from every opening
  within its first few characters, so it waits for nothing more than that.

A signal that does not start the answer (rare: every recorded one is the whole answer) is still
caught by `classify_answer` at the final `message_result`; on a stream already under way the
client then gets an error event instead of the limit text being passed off as a success.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .classify import Failure, FailureKind, reset_time

SIGNAL_TEXT_MAX = 300        # KE: a placeholder is a text of at most 300 characters (§12.5 E15)
CAPTCHA_RESET_WINDOW = (85 * 60, 95 * 60)   # §12.5 E14b: the fake wall always resets "now + 90 min"

_F = re.IGNORECASE | re.DOTALL

# Exact signals: the texts the sources quote verbatim, anchored so that an answer that merely
# mentions them stays an answer. Believed whenever they come.
# §12.5 E13 / E14: the markdown link of the limit message, or the text starting "AI Chat/Image [5-hour limit]".
_FIVE_HOUR = re.compile(r"\[\s*5-hour\s+limit\s*\]\s*\(|^\W*AI\s+(?:Chat|Image)\s+\[?\s*5-hour\s+limit", _F)
# §12.5 E14a: the whole answer.
_APPROACHING = re.compile(r"\W*approaching\s+(?:your\s+|the\s+)?5-hour\s+limit\W*", _F)
# §12.5 E15: KE's placeholder, at the start.
_PLACEHOLDER = re.compile(r"^\W*sorry,?\s+i\s+(?:couldn['’]t|could\s+not|was\s+unable\s+to)\s+produce\s+a\s+response", _F)
# §12.5 E16 (the Chinese text every 2026 bridge matches) and E16b (PYI).
_CREDITS = re.compile(r"积分已用完|\bCREDIT_EXHAUSTED\b|you['’]ve\s+used\s+all\s+your\s+credits\s+for\s+this\s+genspark\s+account", _F)
# §12.5 E23.
_DECLINED = re.compile(r"^\W*the\s+model\s+declined\s+to\s+answer", _F)

# Fuzzy signals: KE's wider lists (§12.5 E15, E16, E17). They also describe ordinary answers
# ("What does 'out of credits' mean?"), so they are believed at most once per request
# (`ChatService` passes the texts already blamed on a cookie back in `accept`) and only rest a
# cookie briefly: a wrong guess costs one cookie a minute, never the pool a day.
_FUZZY = re.compile(
    r"^\W*(?:rate[\s_-]?limit(?:ed|\s+exceeded|\s+reached)\b|too\s+many\s+requests\W*$|请求过于频繁|频率限制)"
    r"|you['’]?(?:\s+a)?re\s+sending\s+(?:messages\s+|requests\s+)?too\s+(?:quickly|fast)"
    r"|^\W*(?:you['’]ve\s+run\s+out\s+of\s+credits|insufficient\s+credits?|credits?\s+exhausted|out\s+of\s+credits)\W*$"
    r"|^\W*(?:something\s+went\s+wrong|an\s+error\s+occurred|服务异常|出了点问题)[\W\s]*(?:please\s+try\s+again(?:\s+later)?|请稍后再试)?\W*$",
    _F,
)

# What a signal's answer begins with, normalised (see `_normalise`): the gate holds text that
# could still become one of these. Kept in step with the patterns above.
OPENINGS: tuple[str, ...] = tuple(
    sorted(
        {
            "ai chat [5-hour limit]", "ai image [5-hour limit]", "approaching 5-hour limit",
            "sorry, i couldn't produce a response", "sorry, i could not produce a response",
            "sorry, i was unable to produce a response", "sorry i couldn't produce a response",
            "the model declined to answer",
            "您的积分已用完", "积分已用完", "credit_exhausted", "you've used all your credits",
            "you've run out of credits", "credits exhausted", "credit exhausted", "out of credits", "insufficient credit",
            "you are sending messages too quickly", "you're sending messages too quickly",
            "rate limit", "too many requests", "请求过于频繁", "频率限制",
            "something went wrong", "an error occurred", "服务异常", "出了点问题",
        }
    )
)


def _normalise(text: str) -> str:
    return " ".join(text.replace("’", "'").split()).casefold()


def session_limit(text: str, *, now: float, image: bool = False, token_sent: bool = True) -> Failure:
    """A 5-hour-window text (E13/E14/E14a, or `session_state.session_limit_message`).

    E14b: on the image agent, a missing or rejected reCAPTCHA token is answered with the same
    text and a reset that is always now + 90 min. A wall we cannot tell from that one (no token
    sent, or a reset in that window) is reported as a reCAPTCHA problem, not parked for hours.
    """
    reset = reset_time(text)
    rolling = reset is not None and CAPTCHA_RESET_WINDOW[0] <= reset - now <= CAPTCHA_RESET_WINDOW[1]
    if image and (not token_sent or rolling):
        return Failure(
            FailureKind.OVERLOADED,
            "upstream_recaptcha_required",
            "Genspark refused the image request with its 5-hour-limit text and a rolling reset "
            "(genspark-protocol.md §12.5 E14b): this is the answer to a missing or rejected reCAPTCHA "
            "token, not a spent quota. Set RECAPTCHA_PROXY_URL to a working reCAPTCHA token service.",
        )
    when = "until the reset time Genspark gave" if reset is not None and reset > now else "for 30 min (no reset time given)"
    return Failure(
        FailureKind.SESSION_LIMIT,
        "upstream_5h_limit",
        f"This account reached Genspark's rolling 5-hour usage window (genspark-protocol.md §12.5 E13/E14: "
        f"'{_snippet(text)}'); it rests {when}.",
        reset,   # a reset already past is kept for the record; the pool then uses its own rest
    )


def normalise(text: str) -> str:
    """The form in which answers are compared (curly quotes, case and spacing folded)."""
    return _normalise(text)


def classify_answer(text: str, *, now: float, image: bool = False, token_sent: bool = True,
                    accept: frozenset[str] | set[str] = frozenset()) -> Failure | None:
    """A whole final answer → the §12.5 signal it is, or None for a real answer.

    `accept`: normalised answers this request already blamed on a cookie through a fuzzy pattern;
    the same text again from another account is taken for what the model really says.
    """
    stripped = text.strip()
    if not stripped or len(stripped) > SIGNAL_TEXT_MAX:
        return None
    if _FIVE_HOUR.search(stripped) or _APPROACHING.fullmatch(stripped):
        return session_limit(stripped, now=now, image=image, token_sent=token_sent)
    if _CREDITS.search(stripped):
        return Failure(
            FailureKind.QUOTA_EXHAUSTED,
            "upstream_credits_exhausted",
            f"This account has no Genspark credits left (genspark-protocol.md §12.5 E16: '{_snippet(stripped)}'); "
            "it rests for a day or until the reset Genspark gave. A free account gets 100 credits once.",
            reset_time(stripped),
        )
    if _DECLINED.search(stripped):
        return Failure(
            FailureKind.DECLINED,
            "upstream_declined",
            "Genspark's content filter declined this request instead of the model (genspark-protocol.md §12.5 "
            "E23); it is tried once more on a fresh thread. Rephrasing or another model may help.",
        )
    if _PLACEHOLDER.search(stripped):
        return _placeholder(stripped, "E15")
    if _FUZZY.search(stripped) and _normalise(stripped) not in accept:
        return _placeholder(stripped, "E15-E17, a looser match", evidence=stripped)
    return None


def _placeholder(text: str, which: str, evidence: str | None = None) -> Failure:
    return Failure(
        FailureKind.PLACEHOLDER,
        "upstream_placeholder",
        f"Genspark answered with a canned placeholder or throttle text instead of an answer "
        f"(genspark-protocol.md §12.5 {which}: '{_snippet(text)}'); the account rests a minute and another one "
        "is tried.",
        evidence=evidence,
    )


@dataclass(slots=True)
class SignalGate:
    """Holds the start of an answer while it could still be a §12.5 signal (see module docstring)."""

    held: list[str] = field(default_factory=list)
    open: bool = False          # True once the text can no longer be a signal: everything passes

    def feed(self, text: str) -> str:
        """The text that may go to the client now ("" while holding)."""
        if self.open:
            return text
        self.held.append(text)
        joined = "".join(self.held)
        if could_be_signal(joined):
            return ""
        return self.release()

    def release(self) -> str:
        """Open the gate and hand out what it held."""
        self.open = True
        out = "".join(self.held)
        self.held.clear()
        return out

    @property
    def holding(self) -> str:
        return "".join(self.held)


def could_be_signal(text: str) -> bool:
    """Whether an answer that starts with `text` may still turn out to be a signal."""
    norm = _normalise(text)
    if not norm:
        return True      # only whitespace so far: nothing decided yet
    if len(text.strip()) > SIGNAL_TEXT_MAX:
        return False
    return any(opening.startswith(norm) or norm.startswith(opening) for opening in OPENINGS)


def _snippet(text: str, limit: int = 80) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
