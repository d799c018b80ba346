"""`stop` strings and the `max_tokens` budget over a streamed answer, split every which way."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genspark2api.core.textfilters import _MAX_TAIL, StopFilter, TokenBudget
from genspark2api.core.usage import TokenCounter

DATA_DIR = Path(__file__).resolve().parent.parent / "tiktoken-data"


@st.composite
def split(draw: st.DrawFn, text: str) -> list[str]:
    """`text` cut into deltas at random points (empty deltas included)."""
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=12)))
    bounds = [0, *cuts, len(text)]
    return [text[start:end] for start, end in zip(bounds, bounds[1:])]


def run_stop(stops: list[str] | str, deltas: list[str]) -> tuple[list[str], StopFilter]:
    stop = StopFilter(stops)
    out = [stop.feed(delta) for delta in deltas]
    out.append(stop.flush())
    return out, stop


def run_budget(
    counter: TokenCounter, limit: int | None, deltas: list[str]
) -> tuple[str, TokenBudget]:
    budget = TokenBudget(counter, limit)
    return "".join(budget.take(delta) for delta in deltas), budget


@pytest.fixture(scope="module")
def estimate(tmp_path_factory: pytest.TempPathFactory) -> TokenCounter:
    return TokenCounter(data_dir=tmp_path_factory.mktemp("empty"))


@pytest.fixture(scope="module")
def exact() -> TokenCounter:
    counter = TokenCounter(data_dir=DATA_DIR)
    if not counter.exact:
        pytest.skip("tiktoken data absent (test_usage.py says how to get it)")
    return counter


# --- StopFilter --------------------------------------------------------------------------------


def test_no_stops_pass_everything_through() -> None:
    assert run_stop([], ["a", "b"])[0] == ["a", "b", ""]
    assert run_stop(["", ""], ["a"])[0] == ["a", ""]


def test_a_single_string_is_one_stop_string() -> None:
    out, stop = run_stop("END", ["bEND", "x"])
    assert out == ["b", "", ""]
    assert stop.stopped


def test_a_stop_string_split_across_deltas_is_withheld_then_cut() -> None:
    stop = StopFilter(["END"])
    assert stop.feed("Hello E") == "Hello "
    assert stop.feed("N") == ""
    assert not stop.stopped
    assert stop.feed("D and more") == ""
    assert stop.stopped
    assert stop.feed("later") == ""
    assert stop.flush() == ""


def test_withheld_text_is_released_when_it_turns_out_not_to_stop() -> None:
    stop = StopFilter(["END"])
    assert stop.feed("Hello E") == "Hello "
    assert stop.feed("xit") == "Exit"
    assert stop.feed(" EN") == " "
    assert stop.flush() == "EN"
    assert not stop.stopped


def test_the_earliest_starting_stop_string_wins() -> None:
    out, stop = run_stop(["bcd", "abcz"], ["ab", "cd"])
    assert out == ["", "a", ""]
    assert stop.stopped
    assert run_stop(["abcd", "bc"], ["xabcd"])[0] == ["x", ""]
    # "b" is complete first, but "aba" may still start earlier: wait for the next delta.
    stop = StopFilter(["b", "aba"])
    assert stop.feed("ab") == ""
    assert not stop.stopped
    assert stop.feed("a") == ""
    assert stop.stopped


def test_a_stop_string_decided_only_at_the_end_of_the_stream() -> None:
    stop = StopFilter(["b", "abc"])
    assert stop.feed("xab") == "x"
    assert stop.flush() == "a"
    assert stop.stopped


STOP_ALPHABET = "ab\n "


@settings(max_examples=500)
@given(
    data=st.data(),
    text=st.text(alphabet=STOP_ALPHABET, max_size=30),
    stops=st.lists(st.text(alphabet=STOP_ALPHABET, max_size=4), max_size=4),
)
def test_stop_filter_cuts_at_the_first_stop_string(
    data: st.DataObject, text: str, stops: list[str]
) -> None:
    deltas = data.draw(split(text))
    out, stop = run_stop(stops, deltas)
    emitted = "".join(out)
    found = [at for at in (text.find(s) for s in stops if s) if at >= 0]
    assert emitted == (text[: min(found)] if found else text)
    assert stop.stopped == bool(found)
    for s in filter(None, stops):
        assert s not in emitted


# --- TokenBudget -------------------------------------------------------------------------------


def test_budget_cuts_at_max_tokens(exact: TokenCounter) -> None:
    emitted, budget = run_budget(exact, 3, ["Hello", " world", ", how", " are you?"])
    assert emitted == "Hello world,"
    assert budget.used == 3
    assert budget.exhausted
    assert budget.take("more") == ""


def test_budget_emits_everything_that_fits(exact: TokenCounter) -> None:
    text = "Hello world, how are you?"
    deltas = ["Hello", " world", ", how", " are you?"]
    emitted, budget = run_budget(exact, exact.count(text), deltas)
    assert emitted == text
    assert budget.used == exact.count(text)
    assert not budget.exhausted


def test_budget_zero_emits_nothing(estimate: TokenCounter) -> None:
    emitted, budget = run_budget(estimate, 0, ["", "abc"])
    assert emitted == ""
    assert budget.exhausted


def test_no_budget_only_counts(estimate: TokenCounter) -> None:
    emitted, budget = run_budget(estimate, None, ["abcd", "你好", "e"])
    assert emitted == "abcd你好e"
    assert budget.used == estimate.count("abcd你好e")
    assert not budget.exhausted


BUDGET_TEXT = st.text(
    alphabet=st.sampled_from([*"abcXYZ 019.,;:'!?()/\n-_", *"你好世界，。カ한", "😀", "\u0301"]),
    max_size=60,
)


def check_budget(counter: TokenCounter, text: str, deltas: list[str], limit: int | None) -> None:
    emitted, budget = run_budget(counter, limit, deltas)
    assert text.startswith(emitted)
    # Short texts never force a cut inside a piece, so the running count is exact.
    assert budget.used == counter.count(emitted)
    if limit is not None:
        assert budget.used <= limit
    assert budget.exhausted == (emitted != text)
    # Each delta is judged on the text seen so far: everything goes out if no prefix at a delta
    # boundary overflows. (A partial word can count more tokens than the whole word.)
    seen = [counter.count("".join(deltas[: i + 1])) for i in range(len(deltas))]
    if limit is None or all(tokens <= limit for tokens in seen):
        assert emitted == text


@settings(max_examples=300)
@given(data=st.data(), text=BUDGET_TEXT, limit=st.one_of(st.none(), st.integers(0, 25)))
def test_budget_property_estimate(
    estimate: TokenCounter, data: st.DataObject, text: str, limit: int | None
) -> None:
    check_budget(estimate, text, data.draw(split(text)), limit)
    # The estimate only grows with the text, so "fits" is simply the whole count.
    if limit is not None and estimate.count(text) <= limit:
        assert run_budget(estimate, limit, data.draw(split(text)))[0] == text


@settings(max_examples=300)
@given(data=st.data(), text=BUDGET_TEXT, limit=st.one_of(st.none(), st.integers(0, 25)))
def test_budget_property_exact(
    exact: TokenCounter, data: st.DataObject, text: str, limit: int | None
) -> None:
    check_budget(exact, text, data.draw(split(text)), limit)


class SpyCounter:
    """Wraps a counter and records the longest text it was asked to count."""

    def __init__(self, counter: TokenCounter) -> None:
        self.counter = counter
        self.longest = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.counter, name)

    def count(self, text: str) -> int:
        self.longest = max(self.longest, len(text))
        return self.counter.count(text)


@pytest.mark.parametrize("which", ["estimate", "exact"])
@pytest.mark.parametrize(
    "text",
    [
        "The quick brown fox, jumps over the lazy dog. " * 2000,
        "a" * 30_000,  # no cut point at all: forced cuts
        "ab" + "中" * 30_000,  # the estimate cannot cut after 2 non-CJK characters
    ],
    ids=["prose", "one-word", "cjk"],
)
def test_budget_work_per_delta_is_bounded(
    request: pytest.FixtureRequest, which: str, text: str
) -> None:
    counter: TokenCounter = request.getfixturevalue(which)
    spy = SpyCounter(counter)
    deltas = [text[i : i + 7] for i in range(0, len(text), 7)]
    # A limit that the whole text stays under: every delta is judged, none recounts the answer.
    budget = TokenBudget(spy, counter.count(text) + len(text))  # type: ignore[arg-type]
    emitted = "".join(budget.take(delta) for delta in deltas)
    assert emitted == text
    assert spy.longest <= _MAX_TAIL + 7
    # Forced cuts may miss by a token each, and only rarely; clean cuts are exact.
    assert abs(budget.used - counter.count(text)) <= len(text) // _MAX_TAIL + 1

    limited = TokenBudget(counter, 1000)
    emitted = "".join(limited.take(delta) for delta in deltas)
    assert counter.count(emitted) <= 1000
    assert limited.exhausted


def test_without_a_limit_no_delta_is_counted(exact: TokenCounter) -> None:
    spy = SpyCounter(exact)
    budget = TokenBudget(spy, None)  # type: ignore[arg-type]
    text = "The quick brown fox, jumps over the lazy dog. " * 50
    assert "".join(budget.take(text[i : i + 7]) for i in range(0, len(text), 7)) == text
    assert spy.longest == 0  # nothing to decide per delta, so nothing was counted
    assert budget.used == exact.count(text)  # and the count, when asked, is exact
    assert not budget.exhausted
