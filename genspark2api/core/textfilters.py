"""Pure filters over the answer text as it streams: OpenAI `stop` strings and `max_tokens`.

Genspark honours neither, so we apply both to its output ourselves (openai-compat.md §1a: grok2api
emulates `stop` with a withholding filter, chat2api emulates `max_tokens` by counting). Text goes
in delta by delta; what comes out is safe to send to the client now.
"""

from __future__ import annotations

from collections.abc import Sequence

from .usage import TokenCounter


class StopFilter:
    """Cuts the text at the first occurrence of any stop string, across delta boundaries.

    "First" is by start position, whatever the split into deltas: with stops "b" and "aba",
    "aba" stops before the "a". So text that could be the start of a stop string is withheld
    until the following text decides it: released if the stop string does not follow, dropped
    with everything after it if it does. Empty stop strings are ignored; a single string is one
    stop string, not a sequence of characters. The count limit (4 in OpenAI's API) is the
    request parser's to enforce, not this filter's.
    """

    def __init__(self, stops: str | Sequence[str] | None) -> None:
        if isinstance(stops, str):
            stops = [stops]
        self._stops = tuple(dict.fromkeys(stop for stop in stops or () if stop))
        self._withheld = ""
        self._stopped = False
        self.matched: str | None = None   # the stop string that ended the text

    @property
    def stopped(self) -> bool:
        """A stop string was found: the text from it on is dropped, and so is any later delta."""
        return self._stopped

    def feed(self, text: str) -> str:
        """Take the next delta; return the text that can be emitted now."""
        if self._stopped:
            return ""
        if not self._stops:
            return text
        # Text before `pending` went out only once no stop string could start in it, so the
        # first stop string in the whole text starts in `pending`.
        pending = self._withheld + text
        first = self._first_stop(pending)
        # From here on, a stop string may have begun that the next delta would complete.
        undecided = len(pending) - self._partial_stop_length(pending)
        if first is not None and first <= undecided:
            return self._stop_at(pending, first)
        release = undecided if first is None else min(first, undecided)
        self._withheld = pending[release:]
        return pending[:release]

    def flush(self) -> str:
        """End of the stream: release what is withheld, up to a stop string found in it."""
        if self._stopped:
            return ""
        pending, self._withheld = self._withheld, ""
        first = self._first_stop(pending)
        return pending if first is None else self._stop_at(pending, first)

    def _stop_at(self, pending: str, at: int) -> str:
        self._stopped = True
        self._withheld = ""
        # Of the stop strings starting here, the shortest is the one found first as text arrived.
        self.matched = min((s for s in self._stops if pending.startswith(s, at)), key=len)
        return pending[:at]

    def _first_stop(self, text: str) -> int | None:
        found = [at for at in (text.find(stop) for stop in self._stops) if at >= 0]
        return min(found, default=None)

    def _partial_stop_length(self, text: str) -> int:
        """Length of the longest end of `text` that is a proper beginning of some stop string."""
        longest = 0
        for stop in self._stops:
            for length in range(min(len(stop) - 1, len(text)), longest, -1):
                if text.endswith(stop[:length]):
                    longest = length
                    break
        return longest


# TokenBudget counts the emitted text piecewise: the tokens of a settled head plus the tokens of
# a short unsettled tail. The tail is cut at a point where counts add up exactly
# (TokenCounter.stable_prefix); when the text offers none for this many characters (one
# 1,000-letter word, a long run of CJK letters with no punctuation), the tail is cut anyway and
# the count becomes approximate (over, in the estimate) instead of costing a recount per delta.
_MAX_TAIL = 1024
_FORCED_KEEP = 256


class TokenBudget:
    """Emits the answer until `max_tokens` tokens, then cuts it (finish_reason "length").

    `used` is the tokens of the text emitted so far, also when `max_tokens` is None. With a
    limit each `take` costs time in proportion to its delta (plus a bounded tail), never to the
    whole answer: the emitted text is not counted again for every chunk. Without one there is
    nothing to decide per delta, so `take` counts nothing and `used` counts the text once when
    asked (the usage object is counted once at the end anyway, compose.completion_tokens).

    Each delta is judged on the text seen so far. A delta that ends inside a word can count a
    token more than the finished word will, so an answer that would end exactly at the limit
    may, rarely, lose its last token and finish with "length".
    """

    def __init__(self, counter: TokenCounter, max_tokens: int | None) -> None:
        self._counter = counter
        self._max_tokens = max_tokens
        self._settled_tokens = 0  # tokens of the emitted text before self._tail
        self._tail = ""  # emitted text since the last settled cut point
        self._exhausted = False
        self._used = 0
        self._unlimited: list[str] | None = [] if max_tokens is None else None  # the emitted text

    @property
    def used(self) -> int:
        if self._unlimited is not None:
            return self._counter.count("".join(self._unlimited))
        return self._used

    @property
    def exhausted(self) -> bool:
        """Text was dropped for lack of budget: the answer is cut and the stream should finish."""
        return self._exhausted

    def take(self, text: str) -> str:
        """Take the next delta; return the part of it that fits in the budget."""
        if self._exhausted or not text:
            return ""
        if self._unlimited is not None:
            self._unlimited.append(text)
            return text
        tail = self._tail + text
        used = self._settled_tokens + self._counter.count(tail)
        if self._max_tokens is not None and used > self._max_tokens:
            self._exhausted = True
            fitting = self._counter.truncate(tail, self._max_tokens - self._settled_tokens)
            # Tokens can merge across the delta boundary, so the fitting text may even end
            # inside what was already sent; nothing more can go out then.
            if len(fitting) <= len(self._tail):
                return ""
            text = fitting[len(self._tail) :]
            tail = fitting
            used = self._settled_tokens + self._counter.count(tail)
        self._tail = tail
        self._used = used
        self._settle()
        return text

    def _settle(self) -> None:
        cut = self._counter.stable_prefix(self._tail)
        forced = not cut and len(self._tail) > _MAX_TAIL
        if forced:
            cut = len(self._tail) - _FORCED_KEEP
        if cut:
            self._settled_tokens += self._counter.count(self._tail[:cut])
            self._tail = self._tail[cut:]
            if forced:
                # The two halves may count a token off the whole; from now on they are the basis.
                self._used = self._settled_tokens + self._counter.count(self._tail)
