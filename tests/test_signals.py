"""§12.5 in-band signals and the ai_chat translator of §12.4 (pure: no network).

The streams here are the protocol doc's own examples (genspark-protocol.md §12.4.2, §12.5), typed
in by hand so the tests do not depend on the simulator.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from genspark2api.upstream.catalog import ModelKind, ModelRoute
from genspark2api.upstream.classify import FailureKind as K
from genspark2api.upstream.events import (
    AnswerDone,
    ModelServed,
    ProjectStarted,
    ReasoningDelta,
    TextDelta,
    ThreadPosition,
    UpstreamFailure,
    UsageReported,
)
from genspark2api.upstream.protocols import AiChat, ChatJob, Thread, UpstreamMessage
from genspark2api.upstream.signals import (
    SIGNAL_TEXT_MAX,
    SignalGate,
    classify_answer,
    could_be_signal,
    normalise,
)
from genspark2api.upstream.sse import decode_event

NOW = 1_790_000_000.0
E13 = "AI Chat [5-hour limit](https://www.genspark.ai/helpcenter/membership-plans#usage) reached."
E15 = "Sorry, I couldn't produce a response this turn."


@pytest.mark.parametrize(
    ("text", "kind", "code"),
    [
        (E13, K.SESSION_LIMIT, "upstream_5h_limit"),
        (E13 + " Resets {time:1790009999}", K.SESSION_LIMIT, "upstream_5h_limit"),
        ("Approaching 5-hour limit.", K.SESSION_LIMIT, "upstream_5h_limit"),
        (E15, K.PLACEHOLDER, "upstream_placeholder"),
        ("Sorry, I couldn’t produce a response this turn.", K.PLACEHOLDER, "upstream_placeholder"),
        ("Something went wrong, please try again.", K.PLACEHOLDER, "upstream_placeholder"),
        ("An error occurred. Please try again later.", K.PLACEHOLDER, "upstream_placeholder"),
        ("服务异常，请稍后再试", K.PLACEHOLDER, "upstream_placeholder"),
        ("您的积分已用完", K.QUOTA_EXHAUSTED, "upstream_credits_exhausted"),
        ("You've used all your credits for this Genspark account.", K.QUOTA_EXHAUSTED, "upstream_credits_exhausted"),
        ("CREDIT_EXHAUSTED", K.QUOTA_EXHAUSTED, "upstream_credits_exhausted"),
        # Looser matches (KE's lists): believed once per request, a minute's rest (see below).
        ("You are sending messages too quickly. Rate limit reached, please slow down.", K.PLACEHOLDER, "upstream_placeholder"),
        ("Rate limit exceeded", K.PLACEHOLDER, "upstream_placeholder"),
        ("请求过于频繁", K.PLACEHOLDER, "upstream_placeholder"),
        ("Out of credits.", K.PLACEHOLDER, "upstream_placeholder"),
        ("The model declined to answer this request.", K.DECLINED, "upstream_declined"),
    ],
)
def test_each_signal_text_is_classified(text: str, kind: K, code: str) -> None:
    failure = classify_answer(text, now=NOW)
    assert failure is not None and failure.kind is kind and failure.code == code


def test_a_loose_match_is_believed_once_per_request() -> None:
    """The same text from a second account is what the model says, not a signal."""
    first = classify_answer("Rate limit exceeded", now=NOW)
    assert first is not None and first.evidence == "Rate limit exceeded"
    assert classify_answer("Rate limit exceeded", now=NOW, accept=frozenset({normalise(first.evidence)})) is None
    # The verbatim texts are believed every time: every account may really be at its wall.
    assert classify_answer(E13, now=NOW, accept=frozenset({normalise(E13)})) is not None


def test_a_real_wall_rests_until_its_reset_and_a_rolling_image_wall_is_recaptcha() -> None:
    wall = classify_answer(E13 + " Resets {time:1790009999}", now=NOW)
    assert wall is not None and wall.reset_at == 1790009999
    assert classify_answer(E13, now=NOW).reset_at is None          # no time: the pool's 30 min
    # §12.5 E14b: the image agent's fake wall resets "now + 90 min" and means "send a token".
    rolling = f"AI Image [5-hour limit](x) reached. Resets {{time:{int(NOW) + 5400}}}"
    fake = classify_answer(rolling, now=NOW, image=True, token_sent=True)
    assert fake is not None and fake.kind is K.OVERLOADED and "RECAPTCHA_PROXY_URL" in fake.detail
    fixed = f"AI Image [5-hour limit](x) reached. Resets {{time:{int(NOW) + 3 * 3600}}}"
    assert classify_answer(fixed, now=NOW, image=True, token_sent=True).kind is K.SESSION_LIMIT
    assert classify_answer(fixed, now=NOW, image=True, token_sent=False).kind is K.OVERLOADED


@pytest.mark.parametrize(
    "text",
    [
        "Rate limiting is a way to control how many requests a client may send.",
        "Rate-limiting protects an API.",
        "The 5-hour limit on my parking meter was reached at noon? No, it's a 2-hour one.",
        "Sorry, I couldn't find that file in the repository; could you paste it?",
        "Credits: the film was directed by someone famous.",
        "Please try again later is a phrase; here is a longer answer that explains it in detail so that it is "
        "well over the short bound for vague phrases and therefore clearly an answer.",
        E15 + " " + "x" * SIGNAL_TEXT_MAX,   # a long answer is never a signal
        "",
        # Ordinary short answers a looser rule once took for signals (each would have cooled every
        # cookie in turn: the same question gets the same answer on every account).
        "It means you have used up your balance: 'out of credits' is what the app shows then.",
        "Too Many Requests: the client sent too many requests in a given amount of time.",
        "Rate limit: 60 requests per hour for unauthenticated clients.",
        'It means "insufficient credit": the card was declined.',
        "Please try again later.",
        "The build failed because an error occurred while linking libfoo.",
        "Approaching 5-hour limit — I will be brief.",
    ],
)
def test_answers_about_limits_stay_answers(text: str) -> None:
    assert classify_answer(text, now=NOW) is None


def test_the_gate_holds_only_while_a_signal_is_possible() -> None:
    gate = SignalGate()
    assert gate.feed("Sor") == "" and gate.feed("ry, I") == ""
    assert gate.feed(" can help.") == "Sorry, I can help."   # diverged: everything goes out at once
    assert gate.feed(" More") == " More"
    normal = SignalGate()
    assert normal.feed("Hello") == "Hello"                  # diverges at the first delta
    assert could_be_signal("AI Chat [5-hour") and could_be_signal("   ")
    assert not could_be_signal("AI Chat is great")


@given(st.lists(st.text(max_size=12), max_size=20), st.sampled_from(["", E15, E13, "Approaching 5-hour limit.", "Hi"]))
def test_the_gate_loses_and_reorders_nothing(pieces: list[str], prefix: str) -> None:
    """Whatever the split, released text + what is still held == everything fed, in order."""
    gate = SignalGate()
    fed = [prefix] + pieces
    out = "".join(gate.feed(p) for p in fed)
    assert out + gate.holding == "".join(fed)
    if gate.holding:
        assert could_be_signal(gate.holding)


# ------------------------------------------------------------------------------ the translator


def _events(lines: list[dict]) -> list:
    return [decode_event(json.dumps(line).encode()) for line in lines]


def _normal_stream(pid: str = "p1", text: str = "Hello! How can I help?") -> list[dict]:
    """The §12.4.2 example, key order and all."""
    mid = "m1"
    return [
        {"id": pid, "_event_index": 0, "type": "project_start"},
        {"notification_type": "keepalive", "_event_index": 1, "type": "agent_notification"},
        {"message_id": mid, "_event_index": 2, "type": "message_start"},
        {"message_id": mid, "field_name": "content", "delta": text[:5], "_event_index": 3, "type": "message_field_delta"},
        {"message_id": mid, "field_name": "content", "delta": text[5:], "_event_index": 4, "type": "message_field_delta"},
        {"message_id": mid, "field_name": "content", "field_value": text, "_event_index": 5, "type": "message_field"},
        {"type": "message_result", "message": {"id": mid, "role": "assistant", "content": text, "session_state": {
            "_llm_model": "claude-4-5-haiku", "_llm_usage": {"prompt_tokens": 812, "completion_tokens": 9, "total_tokens": 821},
            "_finish_reason": "stop"}}, "_event_index": 6},
        {"id": pid, "field_name": "name", "field_value": "Friendly greeting", "_event_index": 7, "type": "project_field"},
        {"id": pid, "field_name": "status", "field_value": "FINISHED", "_event_index": 8, "type": "project_field"},
    ]


def _translate(lines: list[dict], *, search: bool = False) -> list:
    route = ModelRoute("claude-4-5-haiku", ModelKind.TEXT, ("claude-4-5-haiku",), search)
    translator = AiChat().translator(ChatJob(route, [UpstreamMessage("user", "Hi")]), now=NOW)
    out: list = []
    for event in _events(lines):
        out += translator.feed(event)
        if translator.done:
            break
    out += translator.finish()
    return out


def test_a_normal_answer_ends_at_finished_with_model_usage_and_position() -> None:
    out = _translate(_normal_stream())
    assert out[0] == ProjectStarted("p1")
    assert "".join(e.text for e in out if isinstance(e, TextDelta)) == "Hello! How can I help?"
    assert ModelServed("claude-4-5-haiku") in out and UsageReported(812, 9) in out
    assert out[-2:] == [ThreadPosition(8), AnswerDone()]


def test_a_stream_cut_before_finished_keeps_its_answer_but_no_thread_position() -> None:
    out = _translate(_normal_stream()[:-1])
    assert "".join(e.text for e in out if isinstance(e, TextDelta)) == "Hello! How can I help?"
    assert out[-1] == AnswerDone() and not any(isinstance(e, ThreadPosition) for e in out)
    with pytest.raises(UpstreamFailure) as cut:   # no message_result at all: truncated
        _translate(_normal_stream()[:5])
    assert cut.value.failure.code == "upstream_truncated"


@pytest.mark.parametrize("text", [E13, E15, "您的积分已用完", "The model declined to answer this request."])
def test_a_signal_answer_raises_before_any_text_is_let_out(text: str) -> None:
    route = ModelRoute("m", ModelKind.TEXT, ("m",))
    translator = AiChat().translator(ChatJob(route, [UpstreamMessage("user", "Hi")]), now=NOW)
    emitted: list = []
    with pytest.raises(UpstreamFailure):
        for event in _events(_normal_stream(text=text)):
            emitted += translator.feed(event)
    assert not [e for e in emitted if isinstance(e, TextDelta)]


def test_the_limit_field_fails_the_answer_at_once() -> None:
    """§12.5's example stream: the limit field comes before the content."""
    stream = _normal_stream(text=E13)
    field = {"message_id": "m1", "field_name": "session_state.session_limit_message",
             "field_value": E13 + " Resets {time:1790595239}", "_event_index": 2, "type": "message_field"}
    with pytest.raises(UpstreamFailure) as limit:
        _translate(stream[:3] + [field] + stream[3:])
    assert limit.value.failure.kind is K.SESSION_LIMIT and limit.value.failure.reset_at == 1790595239


def test_search_preamble_becomes_reasoning() -> None:
    """§12.4.3 variant (a): the preamble and the queries are not the answer."""
    answer = "Paris is the capital of France."
    preamble = 'I\'ll search for "capital of France".\n{"queries": ["capital of France"]}\n'
    stream = _normal_stream(text=answer)
    stream[3]["delta"], stream[4]["delta"] = preamble[:20], preamble[20:] + answer
    out = _translate(stream, search=True)
    assert "".join(e.text for e in out if isinstance(e, TextDelta)) == answer
    assert any(isinstance(e, ReasoningDelta) and "capital of France" in e.text for e in out)


def test_followup_body_has_only_the_new_turn_and_the_thread() -> None:
    """§12.2.4: project_id, last_seen_event_index and one user message with its UI fields."""
    route = ModelRoute("gpt-6-sol", ModelKind.TEXT, ("gpt-6-sol",))
    body = AiChat().body(ChatJob(route, [UpstreamMessage("user", "And now?")]), Thread("p1", 48), None)
    assert body["project_id"] == "p1" and body["last_seen_event_index"] == 48
    (message,) = body["messages"]
    assert message["content"] == "And now?" and message["pending"] is True and message["sendStatus"] == "sending"
    assert body["client_message_id"] == message["id"] and body["session_state"]["messages"] == body["messages"]
    assert body["sas_ask_origin"] == "typed" and body["chat_session_id"] is None and body["g_recaptcha_token"] == ""
    assert not body["use_moa_proxy"] and body["moa_models"] == [] and "models" not in body


def test_moa_body_puts_the_lead_in_ai_chat_model() -> None:
    """§12.2.5: use_moa_proxy + moa_models + models, ai_chat_model = the lead."""
    members = ("gpt-5.1-low", "claude-sonnet-4-6", "gemini-3.1-pro-preview")
    route = ModelRoute("moa-classic", ModelKind.MIXTURE, members)
    body = AiChat().body(ChatJob(route, [UpstreamMessage("user", "Hi")]), Thread(), None)
    assert body["use_moa_proxy"] is True and body["ai_chat_model"] == "gpt-5.1-low"
    assert body["moa_models"] == body["models"] == list(members)
    assert body["project_id"] is None and body["last_seen_event_index"] == -1


def test_held_text_is_delivered_when_the_result_has_no_content() -> None:
    """§12.10: message.content, else the joined deltas, including what the gate was holding."""
    for held in ("A", "Sorry"):
        stream = _normal_stream(text=held)
        stream[4]["delta"] = ""
        stream[5]["field_value"] = ""
        stream[6]["message"]["content"] = ""
        out = _translate(stream)
        assert "".join(e.text for e in out if isinstance(e, TextDelta)) == held


def test_a_search_preamble_repeated_in_the_final_content_is_not_answer() -> None:
    preamble = 'I\'ll search for "x".\n{"queries": ["x"]}\n'
    stream = _normal_stream(text=preamble + "A")
    stream[3]["delta"], stream[4]["delta"] = preamble, "A"
    out = _translate(stream, search=True)
    assert "".join(e.text for e in out if isinstance(e, TextDelta)) == "A"
    # The note comes right before the first answer text, never before the gate has decided.
    kinds = [type(e).__name__ for e in out if isinstance(e, TextDelta | ReasoningDelta)]
    assert kinds == ["ReasoningDelta", "TextDelta"]
