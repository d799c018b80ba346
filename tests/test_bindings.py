"""Conversation bindings (and the redaction helpers they share the log with)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import FAKE_T0, FakeClock
from hypothesis import assume, given
from hypothesis import strategies as st

from genspark2api.pool.bindings import Binding, ConversationBindings, conversation_key
from genspark2api.redact import mask_cookie, mask_secret

T0 = FAKE_T0

TURN1 = [("system", "Be brief."), ("user", "Hi!")]
ANSWER1 = ("assistant", "Hello! How can I help?")
BINDING = Binding(cookie_key="c1", project_id="p1", created=T0)


def make(**kwargs) -> tuple[ConversationBindings, FakeClock]:
    clock = FakeClock()
    return ConversationBindings(clock=clock, **kwargs), clock


# ------------------------------------------------------------------------------ keys


def test_key_canonicalises_line_endings_and_outer_whitespace() -> None:
    a = conversation_key("m", [("user", "line one\r\nline two  "), ("assistant", " ok")])
    b = conversation_key("m", [("user", "line one\nline two"), ("assistant", "ok\n")])
    assert a == b
    assert a != conversation_key("m", [("user", "line one\n\nline two"), ("assistant", "ok")])
    assert a != conversation_key("m2", [("user", "line one\nline two"), ("assistant", "ok")])


def test_key_is_unambiguous_about_message_boundaries() -> None:
    assert conversation_key("m", [("user", "a"), ("user", "b")]) != conversation_key("m", [("user", "a\nb")])
    assert conversation_key("m", [("user", "a")]) != conversation_key("m", [("assistant", "a")])


def test_key_stable_across_processes() -> None:
    code = "from genspark2api.pool.bindings import conversation_key as k; print(k('m', [('user', 'héllo')]))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert other == conversation_key("m", [("user", "héllo")])
    assert len(other) == 64


# ------------------------------------------------------------------------------ lookups


def test_follow_up_turn_finds_the_previous_binding() -> None:
    bindings, _ = make()
    assert bindings.lookup("claude", TURN1[:1]) is None
    bindings.remember("claude", [*TURN1, ANSWER1], BINDING)
    # Turn 2 sends TURN1 + ANSWER1 + a new user message; its history is everything before that.
    assert bindings.lookup("claude", [*TURN1, ANSWER1]) == BINDING
    # The client may re-send with \r\n or trailing spaces.
    assert bindings.lookup("claude", [("system", "Be brief.\r\n"), ("user", "Hi! "), ANSWER1]) == BINDING


@pytest.mark.parametrize(
    ("model", "history"),
    [
        ("gpt-5", [*TURN1, ANSWER1]),                                # other model
        ("claude", TURN1),                                           # answer missing
        ("claude", [*TURN1, ("assistant", "A different answer")]),   # other branch
        ("claude", [("user", "Hi!"), ANSWER1]),                      # other earlier messages
        ("claude", []),
    ],
)
def test_other_conversations_miss(model: str, history: list[tuple[str, str]]) -> None:
    bindings, _ = make()
    bindings.remember("claude", [*TURN1, ANSWER1], BINDING)
    assert bindings.lookup(model, history) is None


def test_lru_bound() -> None:
    bindings, _ = make(max_entries=3)
    convs = [[("user", f"q{i}"), ("assistant", f"a{i}")] for i in range(4)]
    for i, conv in enumerate(convs[:3]):
        bindings.remember("m", conv, Binding("c", f"p{i}", T0))
    assert bindings.lookup("m", convs[0]) is not None  # conversation 0 becomes most recently used
    bindings.remember("m", convs[3], Binding("c", "p3", T0))
    assert len(bindings) == 3
    assert bindings.lookup("m", convs[1]) is None  # the least recently used went
    assert all(bindings.lookup("m", convs[i]) is not None for i in (0, 2, 3))


def test_age_expiry_on_lookup_insert_and_len() -> None:
    bindings, clock = make(max_age=100.0)
    old = [("user", "old"), ("assistant", "a")]
    bindings.remember("m", old, Binding("c", "p-old", T0))
    clock.advance(60)
    new = [("user", "new"), ("assistant", "b")]
    bindings.remember("m", new, Binding("c", "p-new", T0 + 60))
    assert bindings.lookup("m", old) is not None  # 60 s old: alive (and now most recently used)
    clock.advance(40)
    assert len(bindings) == 1  # the old one reached 100 s
    assert bindings.lookup("m", old) is None
    assert bindings.bound_projects() == {"p-new"}
    clock.advance(100)
    assert bindings.lookup("m", new) is None
    assert len(bindings) == 0


def test_expired_entries_dropped_on_insert() -> None:
    bindings, clock = make(max_age=10.0)
    for i in range(5):
        bindings.remember("m", [("user", str(i)), ("assistant", "x")], Binding("c", f"p{i}", T0))
    clock.advance(11)
    bindings.remember("m", [("user", "fresh"), ("assistant", "x")], Binding("c", "pf", clock.now))
    assert len(bindings._entries) == 1


def test_forget_project_and_bound_projects() -> None:
    bindings, _ = make()
    bindings.remember("m", [("user", "1"), ("assistant", "a")], Binding("c1", "p1", T0))
    bindings.remember("m", [("user", "2"), ("assistant", "a")], Binding("c2", "p2", T0))
    bindings.remember("m", [("user", "3"), ("assistant", "a")], Binding("c1", "p3", T0))
    assert bindings.bound_projects() == {"p1", "p2", "p3"}
    bindings.forget_project("p1")   # §12.5 E21: upstream answered 500 for it
    assert bindings.bound_projects() == {"p2", "p3"}
    assert len(bindings) == 2
    assert bindings.lookup("m", [("user", "1"), ("assistant", "a")]) is None


def test_only_the_projects_head_continues_it() -> None:
    """§12.3: once a turn is added on top, the older state of the conversation is another branch."""
    bindings, _ = make()
    turn1 = [("user", "q1"), ("assistant", "a1")]
    turn2 = turn1 + [("user", "q2"), ("assistant", "a2")]
    bindings.remember("m", turn1, Binding("c1", "p1", T0, 5))
    assert bindings.lookup("m", turn1) == Binding("c1", "p1", T0, 5)
    bindings.remember("m", turn2, Binding("c1", "p1", T0, 11))
    # A client regenerating a2 resends turn1 + [q2]: the project already holds a2, so no binding.
    assert bindings.lookup("m", turn1) is None
    assert bindings.lookup("m", turn2) == Binding("c1", "p1", T0, 11)
    assert bindings.bound_projects() == {"p1"} and len(bindings) == 1


def test_remember_replaces_a_binding() -> None:
    bindings, _ = make()
    conv = [("user", "q"), ("assistant", "a")]
    bindings.remember("m", conv, BINDING)
    bindings.remember("m", conv, Binding("c2", "p2", T0))
    assert bindings.lookup("m", conv) == Binding("c2", "p2", T0)
    assert len(bindings) == 1


# ------------------------------------------------------------------------------ redaction


def test_mask_examples() -> None:
    value = "aed9196b-1234-4567-89ab-ed6e32f7e4d"
    assert mask_secret(value) == "aed9…e4d"
    assert mask_cookie("session_id=" + value) == "session_id=aed9…e4d"
    assert mask_cookie(f"agree_terms=1; session_id={value}; from_auth=") == "session_id=aed9…e4d (+2 more)"
    assert mask_secret("abc") == "***"
    assert mask_secret("") == "***"
    assert mask_secret("abcdef") == "a…f"


@given(st.text(min_size=1, max_size=200), st.integers(0, 10))
def test_mask_secret_never_reveals_the_value(value: str, keep: int) -> None:
    masked = mask_secret(value, keep)
    assume(set(value) - set("*…"))  # a value made only of mask characters trivially "appears"
    assert value not in masked
    if masked == "***":
        return
    shown = len(masked) - 1
    assert shown <= len(value) // 3
    # masked is a prefix of the value, the ellipsis, and a suffix of the value.
    assert any(
        masked == value[:head] + "…" + value[len(value) - (shown - head):] for head in range(shown + 1)
    )


@given(st.text(alphabet=st.characters(blacklist_characters=";,\r\n"), min_size=1, max_size=80))
def test_mask_cookie_never_reveals_the_session_id(session: str) -> None:
    session = session.strip()
    assume(len(session) >= 4 and set(session) - set("*…"))
    # The fixed words of the mask ("session_id=", "(+2 more)") are no leak, even when the value is "sess".
    assume(session not in "session_id= (+2 more)")
    for cookie in (f"session_id={session}", f"a=1; session_id={session}; b=2", session):
        assert session not in mask_cookie(cookie)
