"""Today's ai_chat end to end (genspark-protocol.md §12), with the real `openai` SDK against a live
service on the simulator: server-side threads, in-band signals with one cookie, the per-cookie cap,
served-model substitutions.
"""

from __future__ import annotations

import json

import openai
import pytest
import trio
from conftest import ServiceFactory

from genspark2api.pool.cookies import cookie_key
from genspark2api.simulator import Simulator

ASK = "/api/agent/ask_proxy"
MODEL = "claude-4-5-haiku"


def bodies(sim: Simulator) -> list[dict]:
    return [r.json for r in sim.requests_to(ASK)]


async def say(client: openai.AsyncOpenAI, history: list[dict], text: str, *, stream: bool = False, model: str = MODEL) -> list[dict]:
    """One turn of a conversation as a chat client sends it: the whole history, then the answer."""
    messages = history + [{"role": "user", "content": text}]
    if stream:
        chunks = [c async for c in await client.chat.completions.create(model=model, messages=messages, stream=True)]
        answer = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        answer = (await client.chat.completions.create(model=model, messages=messages)).choices[0].message.content
    assert answer
    return messages + [{"role": "assistant", "content": answer}]


@pytest.mark.parametrize("stream", [False, True])
async def test_a_three_turn_conversation_continues_its_project_with_only_the_new_turn(
    make_service: ServiceFactory, sim: Simulator, stream: bool
) -> None:
    """§12.3 / §12.2.4: project_id + last_seen_event_index + the new user turn, on the owner cookie."""
    service = await make_service(cookies=["ok-a", "ok-b", "ok-c"])
    client = service.openai()
    history = await say(client, [{"role": "system", "content": "Be brief."}], "My name is Alaq.", stream=stream)
    history = await say(client, history, "What is my name?", stream=stream)
    history = await say(client, history, "And spell it.", stream=stream)
    first, second, third = bodies(sim)
    requests = sim.requests_to(ASK)
    assert first["project_id"] is None and first["last_seen_event_index"] == -1
    assert [m["role"] for m in first["messages"]] == ["system", "user"]   # a new thread: the whole transcript
    (project,) = sim.projects.values()
    assert second["project_id"] == third["project_id"] == project.id
    assert [m["content"] for m in second["messages"]] == ["What is my name?"]
    assert [m["content"] for m in third["messages"]] == ["And spell it."]
    # The index is the last one the project sent: it grows across turns (§12.4.1).
    assert 0 < second["last_seen_event_index"] < third["last_seen_event_index"]
    assert project.last_seen_event_indexes == [None if i == 0 else b["last_seen_event_index"]
                                               for i, b in enumerate((first, second, third))] or \
        project.last_seen_event_indexes[1:] == [second["last_seen_event_index"], third["last_seen_event_index"]]
    assert len({r.session_id for r in requests}) == 1 and requests[0].session_id == project.owner
    assert "Alaq" in history[-3]["content"]   # the server kept the thread: the answer uses turn one
    assert len(project.turns) == 3


async def test_a_regenerated_turn_starts_a_new_project_with_the_whole_transcript(
    make_service: ServiceFactory, sim: Simulator
) -> None:
    service = await make_service()
    client = service.openai()
    turn1 = await say(client, [], "Tell me a joke.")
    turn2 = await say(client, turn1, "Another one.")
    # The client regenerates the last answer: it resends turn1 + "Another one." again.
    await say(client, turn1, "Another one.")
    third = bodies(sim)[2]
    assert third["project_id"] is None
    assert [m["role"] for m in third["messages"]] == ["user", "assistant", "user"]
    assert len(sim.projects) == 2
    # And an edited earlier turn also starts over.
    await say(client, [{"role": "user", "content": "Tell me a pun."}, turn2[1]], "Another one.")
    assert bodies(sim)[3]["project_id"] is None and len(sim.projects) == 3


async def test_a_stale_project_recovers_on_a_new_thread_without_blaming_the_cookie(
    make_service: ServiceFactory, sim: Simulator
) -> None:
    """§12.5 E21: HTTP 500 for a deleted project; retry with project_id null and the whole transcript."""
    service = await make_service()
    client = service.openai()
    turn1 = await say(client, [], "Remember the number 7.")
    (project,) = list(sim.projects)
    sim.projects.pop(project)            # deleted upstream (from the web UI, or expired)
    turn2 = await say(client, turn1, "Which number?")
    stale, fresh = bodies(sim)[1:]
    assert stale["project_id"] == project and fresh["project_id"] is None
    assert [m["role"] for m in fresh["messages"]] == ["user", "assistant", "user"]
    pool = (await client.get("/pool", cast_to=object))["data"]
    assert pool[0]["state"] == "healthy" and pool[0]["failures"] == 0
    # The new project is now the conversation's: the next turn continues it.
    await say(client, turn2, "Sure?")
    (new_project,) = list(sim.projects)
    assert bodies(sim)[3]["project_id"] == new_project != project


async def test_a_follow_up_on_another_cookie_starts_over_when_the_owner_is_cooling(
    make_service: ServiceFactory, sim: Simulator
) -> None:
    """§12.3: a thread cannot be continued by another account; move with the whole transcript."""
    service = await make_service(cookies=["ok-a", "ok-b"])
    client = service.openai()
    turn1 = await say(client, [], "Hello")
    owner = sim.requests_to(ASK)[0].session_id
    service.runtime.pool.cool(cookie_key(f"session_id={owner}"), 600, "test", "cooling for the test")
    await say(client, turn1, "Again")
    second = sim.requests_to(ASK)[1]
    assert second.session_id != owner and second.json["project_id"] is None
    assert [m["role"] for m in second.json["messages"]] == ["user", "assistant", "user"]


SIGNALS = [
    ("chat-5h-limit", 429, "accounts_cooling"),
    ("placeholder", 429, "accounts_cooling"),
    ("credits-gone", 429, "accounts_cooling"),
    ("throttle-text", 429, "accounts_cooling"),
]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("scenario", "status", "code"), SIGNALS)
async def test_with_one_cookie_a_signal_is_an_openai_error_not_the_answer(
    make_service: ServiceFactory, sim: Simulator, scenario: str, status: int, code: str, stream: bool
) -> None:
    service = await make_service(cookies=[f"{scenario}-1"])
    async with service.http() as http:
        response = await http.post(
            f"{service.base}/chat/completions",
            json={"model": MODEL, "stream": stream, "messages": [{"role": "user", "content": "Hi"}]},
        )
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and "retry-after" in response.headers
    assert "choices" not in response.json() and "data:" not in response.text   # never relayed as an answer


async def test_a_declined_answer_blames_no_cookie(
    make_service: ServiceFactory, sim: Simulator
) -> None:
    """declined (E23) blames no cookie; the answer says what happened."""
    service = await make_service(cookies=["declined-1"])
    async with service.http() as http:
        response = await http.post(f"{service.base}/chat/completions",
                                   json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]})
    assert response.status_code == 502 and response.json()["error"]["code"] == "upstream_declined"
    assert service.runtime.pool.snapshot()[0].state == "healthy"


async def test_a_placeholder_now_and_then_is_retried_on_another_cookie(make_service: ServiceFactory, sim: Simulator) -> None:
    """§12.5 E15 on some requests: never relayed, the request moves on."""
    service = await make_service(cookies=["placeholder-sometimes-1", "ok-2"])
    client = service.openai()
    for n in range(6):
        result = await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": f"q{n}"}])
        assert "couldn't produce" not in result.choices[0].message.content


async def test_the_per_cookie_cap_holds_under_twenty_concurrent_requests(make_service: ServiceFactory, sim: Simulator) -> None:
    """§12.5 E18: a 3rd request in flight on one account gets 429; we never send it."""
    sim.answer_delay = 0.02
    service = await make_service(cookies=["ok-a", "ok-b"], POOL_WAIT_SECONDS="20")
    client = service.openai()
    answers: list[str] = []

    async def one(n: int) -> None:
        result = await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": f"question {n}"}])
        answers.append(result.choices[0].message.content)

    async with trio.open_nursery() as nursery:
        for n in range(20):
            nursery.start_soon(one, n)
    assert len(answers) == 20 and all(answers)
    assert max(sim.ledger.peak_in_flight.values()) == 2   # per account, as the simulator counted it
    assert all(s.failures == 0 for s in service.runtime.pool.snapshot())


async def test_a_substituted_model_shows_in_the_header_and_the_pool(make_service: ServiceFactory, sim: Simulator) -> None:
    """§12.8.3: `degraded` is served by another model, named only in `_llm_model`."""
    service = await make_service(cookies=["degraded-1"])
    client = service.openai()
    raw = await client.chat.completions.with_raw_response.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}])
    served = raw.headers["x-genspark-model"]
    assert served and served != MODEL
    pool = (await client.get("/pool", cast_to=object))["data"]
    assert pool[0]["substitutions"] == {f"{MODEL} -> {served}": 1}
    honoured = await make_service(cookies=["ok-1"])
    raw = await honoured.openai().chat.completions.with_raw_response.create(
        model="claude-opus-4-8", messages=[{"role": "user", "content": "Hi"}])
    # §12.8.3: a variant of the asked id is honoured, not a substitution.
    assert raw.headers["x-genspark-model"] == "claude-opus-4-8-extended-cache"
    assert (await honoured.openai().get("/pool", cast_to=object))["data"][0]["substitutions"] == {}


async def test_substitution_failover_moves_a_whole_answer_to_another_cookie(make_service: ServiceFactory, sim: Simulator) -> None:
    service = await make_service(cookies=["degraded-1", "ok-2"], MODEL_SUBSTITUTION="failover")
    raw = await service.openai().chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}])
    assert raw.headers["x-genspark-model"] == MODEL
    assert [r.session_id for r in sim.requests_to(ASK)] == ["degraded-1", "ok-2"]


async def test_moa_sends_the_new_body_and_names_the_lead(make_service: ServiceFactory, sim: Simulator) -> None:
    service = await make_service()
    raw = await service.openai().chat.completions.with_raw_response.create(
        model="moa-live", messages=[{"role": "user", "content": "Hi"}])
    body = bodies(sim)[-1]
    assert body["use_moa_proxy"] is True and body["ai_chat_model"] == "gpt-5.6-luna"
    assert body["moa_models"] == body["models"] == ["gpt-5.6-luna", "gpt-6.1-sol", "gemini-3.7-flash"]
    assert raw.headers["x-genspark-model"] == "gpt-5.6-luna"
    assert json.loads(raw.text)["model"] == "moa-live"


async def test_a_request_that_finds_every_cookie_full_waits_then_gets_accounts_busy(
    make_service: ServiceFactory, sim: Simulator
) -> None:
    sim.answer_delay = 0.1   # the first answer holds the only slot for a second or so
    service = await make_service(COOKIE_MAX_IN_FLIGHT="1", POOL_WAIT_SECONDS="0.3")
    replies: dict[str, object] = {}

    async def first() -> None:
        async with service.http() as http:
            replies["first"] = await http.post(f"{service.base}/chat/completions", json={
                "model": MODEL, "messages": [{"role": "user", "content": "a long question " * 5}]})

    async with trio.open_nursery() as nursery:
        nursery.start_soon(first)
        await trio.sleep(0.15)
        async with service.http() as http:
            started = trio.current_time()
            second = await http.post(f"{service.base}/chat/completions", json={
                "model": MODEL, "messages": [{"role": "user", "content": "second"}]})
            waited = trio.current_time() - started
    assert second.status_code == 429 and second.json()["error"]["code"] == "accounts_busy"
    assert second.headers["retry-after"] and 0.25 <= waited < 3
    assert replies["first"].status_code == 200   # type: ignore[attr-defined]


# ------------------------------------------------------------------------------ review regressions


async def test_a_loose_signal_match_is_believed_once_per_request(make_service: ServiceFactory, sim: Simulator) -> None:
    """A loose §12.5 match (KE's throttle/credit/placeholder words) also reads like an ordinary
    answer, and the same question gets the same answer on every account: it is blamed on one
    cookie at most, and the same text from the next account is delivered as the answer. (The
    `throttle-text` cookies answer such a text on every request.)"""
    service = await make_service(cookies=["throttle-text-a", "throttle-text-b", "throttle-text-c"])
    result = await service.openai().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}])
    assert "too quickly" in result.choices[0].message.content
    states = [s.state for s in service.runtime.pool.snapshot()]
    assert states.count("cooling") == 1 and len(sim.requests_to(ASK)) == 2


async def test_two_follow_ups_of_the_same_state_do_not_share_a_project(make_service: ServiceFactory, sim: Simulator) -> None:
    service = await make_service(cookies=["ok-a", "ok-b"])
    client = service.openai()
    turn1 = await say(client, [], "Hello")
    sim.answer_delay = 0.02
    async with trio.open_nursery() as nursery:
        nursery.start_soon(say, client, turn1, "secret of A")
        nursery.start_soon(say, client, turn1, "question of B")
    followups = bodies(sim)[1:]
    continued = [b for b in followups if b["project_id"] is not None]
    assert len(continued) == 1    # one continues the project; the other starts its own with the transcript
    fresh = next(b for b in followups if b["project_id"] is None)
    assert [m["role"] for m in fresh["messages"]] == ["user", "assistant", "user"]


async def test_a_continue_request_starts_a_new_project_instead_of_resending_into_one(
    make_service: ServiceFactory, sim: Simulator
) -> None:
    service = await make_service()
    client = service.openai()
    turn1 = await say(client, [{"role": "system", "content": "Be a pirate"}], "Hello")
    await client.chat.completions.create(model=MODEL, messages=turn1)   # ends with the assistant's answer
    body = bodies(sim)[1]
    assert body["project_id"] is None and [m["role"] for m in body["messages"]] == ["system", "user", "assistant"]


@pytest.mark.parametrize("reading", ["403", "500", "empty"])
async def test_a_pinned_project_of_another_account_never_kills_a_cookie(
    make_service: ServiceFactory, sim: Simulator, reading: str
) -> None:
    """§12.3: a project belongs to one account; a foreign one answers 500, 403 or empty (sim options)."""
    sim.options.adopt_unknown_projects = True
    sim.options.foreign_project = reading  # type: ignore[assignment]
    service = await make_service(cookies=["ok-a", "ok-b"], MODEL_CHAT_MAP=f"{MODEL}=pinned-1")
    for n in range(3):
        result = await service.openai().chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": f"q{n}"}])
        assert result.choices[0].message.content
    assert all(s.state == "healthy" for s in service.runtime.pool.snapshot())


def _image(colour: tuple[int, int, int]) -> dict:
    import base64

    from genspark2api.simulator.media import solid_png

    return {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(solid_png(colour)).decode()}}


async def test_same_words_about_different_images_are_two_conversations(make_service: ServiceFactory, sim: Simulator) -> None:
    # The review's reproduction: same text, same answer, different pictures. The binding key saw
    # only the text, so A's follow-up continued B's project (and B's image).
    service = await make_service()
    client = service.openai()
    histories = []
    for colour in ((255, 0, 0), (0, 0, 255)):
        content = [_image(colour), {"type": "text", "text": "Is this image red? One word."}]
        history = [{"role": "user", "content": content}]
        answer = (await client.chat.completions.create(model=MODEL, messages=history)).choices[0].message.content
        histories.append(history + [{"role": "assistant", "content": answer}])
    first_a, first_b = bodies(sim)[:2]
    await say(client, histories[0], "And what colour is it really?")
    await say(client, histories[1], "And what colour is it really?")
    follow_a, follow_b = bodies(sim)[2:]
    projects = [p.id for p in sim.projects.values()]
    assert len(projects) == 2 and follow_a["project_id"] != follow_b["project_id"]
    assert {follow_a["project_id"], follow_b["project_id"]} == set(projects)
    assert first_a["project_id"] is None and first_b["project_id"] is None


async def test_two_client_keys_never_continue_each_others_projects(make_service: ServiceFactory, sim: Simulator) -> None:
    service = await make_service(API_SECRET="alice:sk-alice-0001,bob:sk-bob-0002")
    alice, bob = service.openai(api_key="sk-alice-0001"), service.openai(api_key="sk-bob-0002")
    history = await say(alice, [], "Hello")
    await say(bob, history, "Go on.")      # the same transcript, sent with another key
    await say(alice, history, "Go on.")
    _, bob_turn, alice_turn = bodies(sim)
    assert bob_turn["project_id"] is None                     # bob started a thread of his own
    assert alice_turn["project_id"] is not None               # alice's follow-up continued hers


async def test_a_follow_up_that_got_no_answer_keeps_its_thread_for_the_retry(make_service: ServiceFactory, sim: Simulator) -> None:
    service = await make_service(POOL_WAIT_SECONDS="0")
    client = service.openai()
    history = await say(client, [], "My name is Alaq.")
    (key,) = [s.key for s in service.runtime.pool.snapshot()]
    service.runtime.pool.set_disabled(key, True)              # the pool cannot take the follow-up
    with pytest.raises(openai.APIStatusError):
        await say(client, history, "What is my name?")
    service.runtime.pool.set_disabled(key, False)
    await say(client, history, "What is my name?")           # the client's retry
    first, retry = bodies(sim)
    assert retry["project_id"] == next(iter(sim.projects.values())).id
    assert [m["content"] for m in retry["messages"]] == ["What is my name?"]
