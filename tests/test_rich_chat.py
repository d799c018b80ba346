"""Rich chat end to end: the openai SDK → live service → live simulator.

Images and files in messages, web search with sources, reasoning in its three presentations,
`stop` and `max_tokens`, PRE_MESSAGES_JSON, the answering-model header and usage numbers. Every
assertion about what went upstream reads the simulator's recording of the request body.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import openai
import pytest
import trio
from conftest import ServiceFactory, free_port, read_request_head

from genspark2api.core.compose import AnswerComposer, ComposeOptions
from genspark2api.core.usage import TokenCounter
from genspark2api.simulator import key_of_storage_url
from genspark2api.simulator.media import solid_png
from genspark2api.simulator.streams import split_deltas
from genspark2api.upstream.events import ReasoningDelta, TextDelta

PROTOCOLS = ["ai_chat", "copilot"]
CHAT_PATH = {"ai_chat": "/api/agent/ask_proxy", "copilot": "/api/copilot/ask"}
MIXTURE = ["gpt-5.1-low", "claude-sonnet-4-6", "gemini-3.1-pro-preview"]

PNG = solid_png((200, 30, 30))
GIF = (  # a 1x1 GIF89a
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
PDF = b"%PDF-1.4\n1 0 obj <</Type /Catalog>> endobj\ntrailer <</Root 1 0 R>>\n%%EOF\n"
WAV = b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(28)
REASONING_MODEL = "gpt-5.4-pro"  # the simulator thinks for any "-pro" model


@pytest.fixture(scope="module")
def counter() -> TokenCounter:
    return TokenCounter()


# ------------------------------------------------------------------------------ helpers


def data_uri(mime: str, data: bytes) -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


@dataclass
class FileServer:
    """A loopback HTTP server answering every GET with one body; `hits` are the request lines."""

    url: str
    hits: list[bytes] = field(default_factory=list)


async def serve_bytes(nursery: trio.Nursery, body: bytes, content_type: str) -> FileServer:
    server = FileServer("")

    async def handle(stream: trio.SocketStream) -> None:
        request = await read_request_head(stream)
        if request is None:
            return
        server.hits.append(request.split(b"\r\n", 1)[0])
        head = f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        await stream.send_all(head.encode() + body)
        await stream.aclose()

    listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
    server.url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
    return server


def dead_url() -> str:
    """A loopback URL where nothing listens: the connection is refused at once."""
    return f"http://127.0.0.1:{free_port()}/gone.png"


def chat_body(sim: Any, protocol: str) -> dict[str, Any]:
    requests = sim.requests_to(CHAT_PATH[protocol])
    assert requests, "nothing reached upstream"
    return requests[-1].json


def upstream_messages(sim: Any, protocol: str) -> list[dict[str, Any]]:
    return chat_body(sim, protocol)["messages"]


def text_of(content: Any) -> str:
    """The text of an upstream message, as the service counts it (protocols.content_text)."""
    if isinstance(content, str):
        return content
    return "\n".join(p.get("text", "") for p in content if p.get("type") == "text")


@dataclass
class Answer:
    """One answer, from a stream or a whole completion, in the same shape."""

    content: str
    reasoning: str
    finish_reason: str | None
    usage: Any
    chunks: list[Any] = field(default_factory=list)


async def ask(client: openai.AsyncOpenAI, *, stream: bool, **kwargs: Any) -> Answer:
    if not stream:
        result = await client.chat.completions.create(stream=False, **kwargs)
        message = result.choices[0].message
        return Answer(message.content or "", getattr(message, "reasoning_content", None) or "",
                      result.choices[0].finish_reason, result.usage)
    response = await client.chat.completions.create(
        stream=True, stream_options={"include_usage": True}, **kwargs
    )
    chunks = [chunk async for chunk in response]
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finishes) == 1, finishes
    # Nothing after the finish chunk but the usage chunk.
    last = max(i for i, c in enumerate(chunks) if c.choices and c.choices[0].finish_reason)
    assert [c.choices for c in chunks[last + 1:]] == [[]]
    assert chunks[last].choices[0].delta.content in (None, "")
    return Answer(
        "".join(d.content or "" for d in deltas),
        "".join(getattr(d, "reasoning_content", None) or "" for d in deltas),
        finishes[0],
        chunks[-1].usage,
        chunks,
    )


def user(*parts: dict[str, Any]) -> dict[str, Any]:
    return {"role": "user", "content": list(parts)}


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def image(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


def file(data: str, filename: str | None = None) -> dict[str, Any]:
    inner = {"file_data": data} | ({"filename": filename} if filename else {})
    return {"type": "file", "file": inner}


# ------------------------------------------------------------------------------ images and files


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_images_go_up_inline_with_their_true_mime(
    make_service: ServiceFactory, sim, nursery: trio.Nursery, counter: TokenCounter, protocol: str
) -> None:
    server = await serve_bytes(nursery, GIF, "application/octet-stream")
    service = await make_service(GENSPARK_CHAT_PROTOCOL=protocol, FETCH_ALLOW_PRIVATE="1")
    question = user(
        text("What is in these pictures?"),
        image(data_uri("image/jpeg", PNG)),     # a PNG labelled JPEG
        image(server.url + "/pictures/cat"),   # a GIF served as octet-stream
    )
    result = await service.openai().chat.completions.create(model="gpt-5.4", messages=[question])

    assert server.hits == [b"GET /pictures/cat HTTP/1.1"]
    sent = upstream_messages(sim, protocol)
    assert len(sent) == 1 and sent[0]["role"] == "user"
    assert sent[0]["content"] == [
        {"type": "text", "text": "What is in these pictures?"},
        {"type": "image_url", "image_url": {"url": data_uri("image/png", PNG)}},
        {"type": "image_url", "image_url": {"url": data_uri("image/gif", GIF)}},
    ]
    assert sim.uploads == {}  # images are inline, never uploaded
    answer = result.choices[0].message.content
    assert f"image ({len(PNG)} bytes); image ({len(GIF)} bytes)" in answer
    # Each image is billed as an estimate of 765 tokens on top of the text (media_prep.py).
    text_tokens = counter.count_messages([("user", "What is in these pictures?", None)])
    if protocol == "copilot":
        assert result.usage.prompt_tokens == text_tokens + 2 * 765
    else:  # §12.4.2: ai_chat reports its own counts in `_llm_usage`, and those win
        assert result.usage.prompt_tokens == sim.results[-1]["session_state"]["_llm_usage"]["prompt_tokens"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_files_go_through_the_upload_flow(make_service: ServiceFactory, sim, protocol: str) -> None:
    service = await make_service(GENSPARK_CHAT_PROTOCOL=protocol)
    notes = "line one\nline two\n".encode()
    question = user(
        text("Summarise these"),
        file(data_uri("application/pdf", PDF), "report.pdf"),
        file(data_uri("text/plain;charset=utf-8", notes)),
    )
    result = await service.openai().chat.completions.create(model="claude-sonnet-4-6", messages=[question])

    puts = [r for r in sim.requests if r.method == "PUT"]
    assert sorted(r.body for r in puts) == sorted([PDF, notes])
    assert all(r.headers["x-ms-blob-type"] == "BlockBlob" and "cookie" not in r.headers for r in puts)
    content = upstream_messages(sim, protocol)[-1]["content"]
    assert content[0] == {"type": "text", "text": "Summarise these"}
    pdf, txt = content[1]["private_file"], content[2]["private_file"]
    assert content[1]["type"] == content[2]["type"] == "private_file"
    assert {k: pdf[k] for k in ("name", "type", "ext", "size")} == {
        "name": "report.pdf", "type": "application/pdf", "ext": "pdf", "size": len(PDF),
    }
    assert {k: txt[k] for k in ("name", "type", "ext", "size")} == {
        "name": "file.txt", "type": "text/plain", "ext": "txt", "size": len(notes),
    }
    # The storage URL is the one the simulator handed out, and names the blob that was PUT.
    assert sim.uploads[key_of_storage_url(pdf["private_storage_url"])] == PDF
    assert sim.uploads[key_of_storage_url(txt["private_storage_url"])] == notes
    answer = result.choices[0].message.content
    assert f"file report.pdf ({len(PDF)} bytes uploaded); file file.txt ({len(notes)} bytes uploaded)" in answer


# (id, env, messages built from (server url, dead url), param, words in the message)
REFUSED = [
    ("loopback-url", {}, lambda ok, dead: [user(text("x"), image(ok + "/a.gif"))],
     "messages[0].content[1]", "refused"),
    ("unreachable-url", {"FETCH_ALLOW_PRIVATE": "1"}, lambda ok, dead: [user(text("x"), image(dead))],
     "messages[0].content[1]", "could not be fetched"),
    ("oversized-url", {"FETCH_ALLOW_PRIVATE": "1", "MAX_FETCH_BYTES": "16"},
     lambda ok, dead: [user(text("x"), image(ok + "/a.gif"))], "messages[0].content[1]", "MAX_FETCH_BYTES"),
    ("oversized-data", {"MAX_FETCH_BYTES": "64"},
     lambda ok, dead: [user(text("x"), image(data_uri("image/png", PNG)))], "messages[0].content[1]", "MAX_FETCH_BYTES"),
    ("bad-base64", {}, lambda ok, dead: [user(text("x"), text("y"), image("data:image/png;base64,iVBOR*w0K!!"))],
     "messages[0].content[2]", "base64"),
    ("bad-file-base64", {}, lambda ok, dead: [user(file("data:application/pdf;base64,%%%%", "a.pdf"))],
     "messages[0].content[0]", "base64"),
    ("audio-part", {}, lambda ok, dead: [
        {"role": "system", "content": "s"},
        user(text("x"), {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}),
    ], "messages[1].content[1]", "not supported"),
    ("audio-file", {}, lambda ok, dead: [user(text("x"), file(data_uri("application/octet-stream", WAV), "a.bin"))],
     "messages[0].content[1]", "not supported"),
    ("image-in-system", {}, lambda ok, dead: [
        {"role": "system", "content": [text("s"), image(data_uri("image/png", PNG))]}, user(text("x")),
    ], "messages[0].content[1]", "only accepted in user messages"),
    ("image-in-assistant", {}, lambda ok, dead: [
        user(text("x")), {"role": "assistant", "content": [image(data_uri("image/png", PNG))]}, user(text("y")),
    ], "messages[1].content[0]", "only accepted in user messages"),
]


@pytest.mark.parametrize(("env", "build", "param", "words"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
@pytest.mark.parametrize("stream", [False, True])
async def test_refused_media_is_a_400_naming_the_part(
    make_service: ServiceFactory, sim, nursery: trio.Nursery,
    env: dict[str, str], build: Any, param: str, words: str, stream: bool,
) -> None:
    server = await serve_bytes(nursery, GIF, "image/gif")
    service = await make_service(**env)
    with pytest.raises(openai.BadRequestError) as info:
        await service.openai().chat.completions.create(
            model="gpt-5.4", messages=build(server.url, dead_url()), stream=stream
        )
    error = info.value.body
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert error["message"].startswith(param + ": ") and words in error["message"], error["message"]
    assert sim.requests == []  # no chat, no upload slot: nothing reached upstream
    if "FETCH_ALLOW_PRIVATE" not in env:
        assert server.hits == []  # a refused URL is refused before it is dialled


# ------------------------------------------------------------------------------ web search


def search_links(answer: str) -> list[tuple[str, str]]:
    return re.findall(r"^\d+\. \[(.+)\]\((https://[^)]+)\)$", answer, re.M)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("stream", [False, True])
async def test_search_answer_ends_with_sources(make_service: ServiceFactory, sim, protocol: str, stream: bool) -> None:
    service = await make_service(GENSPARK_CHAT_PROTOCOL=protocol)
    question = "Latest Python release"
    answer = await ask(service.openai(), stream=stream, model="gpt-5.4-search",
                       messages=[{"role": "user", "content": question}])
    request = chat_body(sim, protocol)
    assert request.get("ai_chat_enable_search", request.get("extra_data", {}).get("request_web_knowledge")) is True
    if protocol == "ai_chat":
        # §12.4.3: no citation objects; the "I'll search for …" preamble and the queries are
        # the model's search step, shown as reasoning, never as the answer.
        assert answer.content == f"[simulated gpt-5.4] You said: {question}"
        assert "I'll search for" not in answer.content and "queries" not in answer.content
        assert answer.reasoning.startswith("Searching the web: ") and question in answer.reasoning
        return
    body, _, sources = answer.content.partition("\n\n**Sources**\n")
    assert body == f"[simulated gpt-5.4] You said: {question} [1](https://example.org/sim/latest-python-release/1)"
    assert search_links(sources) == [
        (f"Simulated source {n} about {question}", f"https://example.org/sim/latest-python-release/{n}")
        for n in (1, 2, 3)
    ]
    # Neither the mind map nor the detail answer joins the answer (§3.4.3).
    assert "Simulated sources" not in answer.content and "Detail:" not in answer.content
    assert answer.finish_reason == "stop"


@pytest.mark.parametrize("stream", [False, True])
async def test_search_sources_can_be_switched_off(make_service: ServiceFactory, stream: bool) -> None:
    service = await make_service(GENSPARK_CHAT_PROTOCOL="copilot", SEARCH_SOURCES="0")
    answer = await ask(service.openai(), stream=stream, model="gpt-5.4-search",
                       messages=[{"role": "user", "content": "Latest Python release"}])
    assert answer.content == (
        "[simulated gpt-5.4] You said: Latest Python release [1](https://example.org/sim/latest-python-release/1)"
    )


@pytest.mark.parametrize("stream", [False, True])
async def test_o1_search_detail_answer_is_unpacked(make_service: ServiceFactory, sim, stream: bool) -> None:
    # G1 only (§3.4.3): message_result.content holds a detailAnswer document. `o1` is retired on
    # the web (§12.8.5), so it is reached through EXTRA_MODELS, as an operator would.
    protocol = "copilot"
    service = await make_service(GENSPARK_CHAT_PROTOCOL=protocol, EXTRA_MODELS="o1")
    answer = await ask(service.openai(), stream=stream, model="o1-search",
                       messages=[{"role": "user", "content": "Who won the match"}])
    body, _, sources = answer.content.partition("\n\n**Sources**\n")
    assert body == "[simulated o1] You said: Who won the match [1](https://example.org/sim/who-won-the-match/1)"
    assert len(search_links(sources)) == 3
    assert "detailAnswer" not in answer.content and "{" not in answer.content
    request = chat_body(sim, protocol)
    assert request.get("ai_chat_model", request.get("extra_data", {}).get("models")) in ("o1", ["o1"])


# ------------------------------------------------------------------------------ reasoning


def expected_reasoning(question: str) -> str:
    return f"Simulated reasoning: the question has {len(question.split())} words. Echo it back faithfully."


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("mode", ["reasoning_content", "think", "hidden"])
async def test_reasoning_presentations(
    make_service: ServiceFactory, sim, protocol: str, stream: bool, mode: str
) -> None:
    env = {"reasoning_content": {}, "think": {"REASONING_FORMAT": "think"}, "hidden": {"REASONING_HIDE": "1"}}[mode]
    service = await make_service(GENSPARK_CHAT_PROTOCOL=protocol, **env)
    sim.options.readable_reasoning = True   # §12.4.4: ai_chat sends none by default
    question = "Is 1001 prime"
    answer = await ask(service.openai(), stream=stream, model=REASONING_MODEL,
                       messages=[{"role": "user", "content": question}])
    reply = f"[simulated {REASONING_MODEL}] You said: {question}"
    thinking = expected_reasoning(question)
    if mode == "reasoning_content":
        assert answer.content == reply and answer.reasoning == thinking
        assert answer.usage.completion_tokens_details.reasoning_tokens > 0
    elif mode == "think":
        assert answer.content == f"<think>\n{thinking}\n</think>\n\n{reply}" and answer.reasoning == ""
        assert answer.usage.completion_tokens_details.reasoning_tokens > 0
    else:
        assert answer.content == reply and answer.reasoning == ""
        assert "reasoning" not in answer.content.lower()
        assert answer.usage.completion_tokens_details.reasoning_tokens == 0
    if stream and mode != "reasoning_content":
        assert all(getattr(c.choices[0].delta, "reasoning_content", None) is None for c in answer.chunks if c.choices)


@pytest.mark.parametrize("stream", [False, True])
async def test_mixture_of_agents_layers_are_reasoning(make_service: ServiceFactory, sim, stream: bool) -> None:
    service = await make_service(GENSPARK_CHAT_PROTOCOL="copilot")
    answer = await ask(service.openai(), stream=stream, model="moa-classic",
                       messages=[{"role": "user", "content": "Hello all"}])
    assert chat_body(sim, "copilot")["extra_data"]["models"] == MIXTURE
    assert answer.content == f"[simulated mixture-of-agents: {', '.join(MIXTURE)}] You said: Hello all"
    # One paragraph per layer; gemini-3.1-pro-preview also thinks, after the drafts.
    drafts = [f"[simulated {m} draft] You said: Hello all" for m in MIXTURE]
    assert answer.reasoning == "\n\n".join([*drafts, expected_reasoning("Hello all")])
    assert answer.usage.completion_tokens_details.reasoning_tokens > 0


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("stream", [False, True])
async def test_think_tags_stay_balanced_when_max_tokens_cuts_the_reasoning(
    make_service: ServiceFactory, sim, protocol: str, stream: bool
) -> None:
    service = await make_service(GENSPARK_CHAT_PROTOCOL=protocol, REASONING_FORMAT="think")
    sim.options.readable_reasoning = True
    answer = await ask(service.openai(), stream=stream, model=REASONING_MODEL, max_tokens=8,
                       messages=[{"role": "user", "content": "Is 1001 prime"}])
    content = answer.content
    assert content.count("<think>") == 1 and content.count("</think>") == 1
    assert content.startswith("<think>\n") and content.index("<think>") < content.index("</think>")
    inner = content[len("<think>\n"):content.index("\n</think>")]
    assert inner and expected_reasoning("Is 1001 prime").startswith(inner) and inner != expected_reasoning("Is 1001 prime")
    assert "You said" not in content  # the answer never started
    assert answer.finish_reason == "length"
    assert 0 < answer.usage.completion_tokens <= 8


@pytest.mark.parametrize("max_tokens", range(1, 60))
def test_think_block_fits_max_tokens_wherever_it_is_cut(counter: TokenCounter, max_tokens: int) -> None:
    """The composer alone, every cut point: tags balanced, completion_tokens <= max_tokens."""
    composer = AnswerComposer(ComposeOptions(reasoning_format="think", max_tokens=max_tokens), counter)
    for piece in ["Simulated reasoning: the question", " has 3 words.", " Étape 2 : 計算します!\n- done."]:
        composer.feed(ReasoningDelta(piece))
    for piece in ["[simulated x] ", "You said: ", "Is 1001 prime"]:
        composer.feed(TextDelta(piece))
    composer.finish()
    content = composer.content_text
    if content:  # too small a budget for the two tags: nothing at all
        assert content.startswith("<think>\n") and content.count("<think>") == content.count("</think>") == 1
    assert composer.completion_tokens()[0] <= max_tokens
    assert composer.finish_reason == ("stop" if content.endswith("Is 1001 prime") else "length")


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_reasoning_content_in_history_is_accepted_and_not_sent(
    make_service: ServiceFactory, sim, protocol: str
) -> None:
    service = await make_service(GENSPARK_CHAT_PROTOCOL=protocol)
    messages = [
        {"role": "user", "content": "First"},
        {"role": "assistant", "content": "Answer one", "reasoning_content": "SECRET-THOUGHTS"},
        {"role": "user", "content": "Second"},
    ]
    await service.openai().chat.completions.create(model=REASONING_MODEL, messages=messages)
    sent = upstream_messages(sim, protocol)
    assert [(m["role"], m["content"]) for m in sent] == [("user", "First"), ("assistant", "Answer one"), ("user", "Second")]
    assert b"SECRET-THOUGHTS" not in sim.requests_to(CHAT_PATH[protocol])[-1].body
    assert all("reasoning_content" not in m for m in sent)


# ------------------------------------------------------------------------------ stop and max_tokens


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("as_list", [False, True])
async def test_stop_string_split_across_upstream_deltas(
    make_service: ServiceFactory, protocol: str, stream: bool, as_list: bool
) -> None:
    full = "[simulated gpt-5.4] You said: Hello there my friend"
    stop_string = "] You sa"
    # The simulator sends "... gpt-5.4] " and "You said: " as separate deltas: the stop string
    # starts in one and ends in the next.
    assert all(stop_string not in piece for piece in split_deltas(full)) and stop_string in full
    service = await make_service(GENSPARK_CHAT_PROTOCOL=protocol)
    stop: Any = ["never appears", stop_string] if as_list else stop_string
    answer = await ask(service.openai(), stream=stream, model="gpt-5.4", stop=stop,
                       messages=[{"role": "user", "content": "Hello there my friend"}])
    assert answer.content == "[simulated gpt-5.4"
    assert answer.finish_reason == "stop"


@pytest.mark.parametrize("stream", [False, True])
async def test_stop_also_drops_the_sources_list(make_service: ServiceFactory, stream: bool) -> None:
    service = await make_service(GENSPARK_CHAT_PROTOCOL="copilot")
    answer = await ask(service.openai(), stream=stream, model="gpt-5.4-search", stop="You said",
                       messages=[{"role": "user", "content": "Latest Python release"}])
    assert answer.content == "[simulated gpt-5.4] " and answer.finish_reason == "stop"


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("param", ["max_tokens", "max_completion_tokens"])
async def test_max_tokens_cuts_with_finish_reason_length(
    make_service: ServiceFactory, protocol: str, stream: bool, param: str
) -> None:
    service = await make_service(GENSPARK_CHAT_PROTOCOL=protocol)
    question = "Tell me a long story about a dragon and a knight"
    answer = await ask(service.openai(), stream=stream, model="gpt-5.4",
                       messages=[{"role": "user", "content": question}], **{param: 5})
    full = f"[simulated gpt-5.4] You said: {question}"
    assert answer.content and full.startswith(answer.content) and answer.content != full
    assert answer.finish_reason == "length"
    assert 0 < answer.usage.completion_tokens <= 5


async def test_n_above_one_is_refused(make_service: ServiceFactory, sim) -> None:
    service = await make_service()
    with pytest.raises(openai.BadRequestError) as info:
        await service.openai().chat.completions.create(model="gpt-5.4", n=2, messages=[{"role": "user", "content": "x"}])
    assert info.value.body["param"] == "n"
    assert sim.requests == []


# ------------------------------------------------------------------------------ PRE_MESSAGES_JSON


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_pre_messages_follow_the_last_system_message(make_service: ServiceFactory, sim, protocol: str) -> None:
    pre = [{"role": "user", "content": "PRE one"}, {"role": "assistant", "content": "PRE two"}]
    service = await make_service(GENSPARK_CHAT_PROTOCOL=protocol, PRE_MESSAGES_JSON=json.dumps(pre))
    client = service.openai()
    await client.chat.completions.create(model="gpt-5.4", messages=[
        {"role": "system", "content": "S1"},
        {"role": "user", "content": "U1"},
        {"role": "assistant", "content": "A1"},
        {"role": "developer", "content": "S2"},
        {"role": "user", "content": "U2"},
    ])
    assert [(m["role"], m["content"]) for m in upstream_messages(sim, protocol)] == [
        ("system", "S1"), ("user", "U1"), ("assistant", "A1"), ("system", "S2"),
        ("user", "PRE one"), ("assistant", "PRE two"), ("user", "U2"),
    ]
    # Without a system message they come first.
    await client.chat.completions.create(model="gpt-5.4", messages=[{"role": "user", "content": "U"}])
    assert [m["content"] for m in upstream_messages(sim, protocol)] == ["PRE one", "PRE two", "U"]


# ------------------------------------------------------------------------------ answering model


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("cookie", ["ok-1", "degraded-1"])
async def test_answering_model_header(make_service: ServiceFactory, cookie: str, protocol: str) -> None:
    service = await make_service(cookies=[cookie], GENSPARK_CHAT_PROTOCOL=protocol)
    client = service.openai()
    # ai_chat names the served model in `_llm_model` (§12.4.2): the header carries it on whole
    # answers; G1 names it in `session_state.models` at the start, so its streams carry it too.
    expected = "gpt-5.4" if cookie == "ok-1" else ("gpt-4o-mini" if protocol == "copilot" else "gpt-5.4-nano")
    messages = [{"role": "user", "content": "Which model are you"}]
    whole = await client.chat.completions.with_raw_response.create(model="gpt-5.4", messages=messages)
    assert whole.headers["x-genspark-model"] == expected
    assert whole.parse().choices[0].message.content.startswith(f"[simulated {expected}]")
    streamed = await client.chat.completions.with_raw_response.create(model="gpt-5.4", messages=messages, stream=True)
    assert streamed.headers.get("x-genspark-model") == (expected if protocol == "copilot" else None)
    chunks = [c async for c in streamed.parse()]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).startswith(f"[simulated {expected}]")
    assert {c.model for c in chunks} == {"gpt-5.4"}  # the client still sees the model it asked for


# ------------------------------------------------------------------------------ usage


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_usage_is_the_same_streamed_or_whole(
    make_service: ServiceFactory, sim, counter: TokenCounter, protocol: str
) -> None:
    service = await make_service(GENSPARK_CHAT_PROTOCOL=protocol)
    sim.options.readable_reasoning = True
    client = service.openai()
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Count the primes below ten"},
        {"role": "assistant", "content": "Four."},
        {"role": "user", "content": [text("Name them"), text("in order")]},
    ]
    whole = await ask(client, stream=False, model=REASONING_MODEL, messages=messages)
    sent_whole = upstream_messages(sim, protocol)
    streamed = await ask(client, stream=True, model=REASONING_MODEL, messages=messages)
    sent_streamed = upstream_messages(sim, protocol)

    assert (streamed.content, streamed.reasoning) == (whole.content, whole.reasoning)
    for usage in (whole.usage, streamed.usage):
        assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
        assert usage.completion_tokens_details.reasoning_tokens > 0
    assert streamed.usage.prompt_tokens == whole.usage.prompt_tokens
    assert streamed.usage.completion_tokens == whole.usage.completion_tokens > 0
    assert (streamed.usage.completion_tokens_details.reasoning_tokens
            == whole.usage.completion_tokens_details.reasoning_tokens)

    # Prompt tokens: the cookbook recipe over what went upstream; completion: content + reasoning.
    upstream = [(m["role"], text_of(m["content"]), None) for m in sent_streamed]
    assert upstream == [(m["role"], text_of(m["content"]), None) for m in sent_whole]
    assert upstream[-1] == ("user", "Name them\nin order", None)
    if protocol == "ai_chat":   # §12.4.2: Genspark's own `_llm_usage` wins over our estimate
        reported = sim.results[-1]["session_state"]["_llm_usage"]
        assert (whole.usage.prompt_tokens, whole.usage.completion_tokens) == (
            reported["prompt_tokens"], reported["completion_tokens"])
        return
    assert whole.usage.prompt_tokens == counter.count_messages(upstream)
    assert whole.usage.completion_tokens == counter.count(whole.content) + counter.count(whole.reasoning)
    assert whole.usage.completion_tokens_details.reasoning_tokens == counter.count(whole.reasoning)
