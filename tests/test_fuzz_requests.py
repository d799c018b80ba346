"""Never a 500 for a client mistake: random request bodies against the live service.

Hypothesis builds bodies that are almost right (real field names, wrong shapes and values) and
posts them to every JSON endpoint (the Responses door's included); each answer must be a success or an OpenAI-shaped 4xx.
Bounded: 50 examples of 40 requests (2,000), loopback only. Bodies are also damaged at the byte
level (invalid UTF-8 inside a string, deep nesting, truncation) and values include Unicode digits.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import httpx
import pytest
import trio
from conftest import start_service
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genspark2api.core.usage import TokenCounter, default_data_dir
from genspark2api.simulator import Simulator, serve_simulator

scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 5), st.floats(allow_nan=False, allow_infinity=False),
                    st.text(max_size=12), st.sampled_from(["user", "system", "tool", "assistant", "gpt-5.4", "image_url"]),
                    # str.isdigit() accepts these, int() refuses the first two (issue #10 item 2)
                    st.sampled_from(["²", "①", "٣", "１２", " 3 ", "2"]))
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                              st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                           max_leaves=8)
parts = st.one_of(
    st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url", "file", "input_audio", "video"])},
                          optional={"text": json_values, "image_url": json_values, "file": json_values}),
    json_values,
)
messages = st.lists(
    st.fixed_dictionaries({}, optional={
        "role": st.one_of(st.sampled_from(["user", "system", "developer", "assistant", "tool", "function"]), json_values),
        "content": st.one_of(st.text(max_size=20), st.lists(parts, max_size=3), json_values),
        "tool_calls": json_values, "tool_call_id": json_values, "name": json_values,
    }),
    max_size=3,
)
chat_bodies = st.fixed_dictionaries({}, optional={
    "model": st.one_of(st.sampled_from(["gpt-5.4", "nano-banana-pro", "sora-2", "x-search"]), json_values),
    "messages": st.one_of(messages, json_values),
    "stream": st.one_of(st.booleans(), json_values),
    "stream_options": json_values, "max_tokens": json_values, "stop": json_values, "n": json_values,
    "tools": json_values, "tool_choice": json_values, "functions": json_values, "response_format": json_values,
})
generation_bodies = st.fixed_dictionaries({}, optional={
    "model": st.one_of(st.sampled_from(["nano-banana-pro", "sora-2", "gpt-5.4"]), json_values),
    "prompt": json_values, "n": json_values, "size": json_values, "response_format": json_values,
    "image": json_values, "images": json_values, "style": json_values, "aspect_ratio": json_values,
    "duration": json_values, "seconds": json_values,
})
# Nearly valid bodies, so the success paths (and their validation of optional fields) get hit too.
valid_messages = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "developer"]),
                                                 "content": st.text(min_size=1, max_size=20)}),
                          min_size=1, max_size=3).map(lambda ms: ms + [{"role": "user", "content": "hi"}])
# Structured outputs (issue #11): real format types, schemas that are valid, broken or not schemas at all.
response_formats = st.one_of(json_values, st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "json_object", "json_schema", "xml"])},
    optional={"json_schema": st.fixed_dictionaries({}, optional={
        "name": st.one_of(st.sampled_from(["Person", "bad name", ""]), json_values),
        "schema": st.one_of(json_values, st.sampled_from([
            {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
            {"type": "nope"}, {"$ref": "#/$defs/x"}, {"$ref": "http://example.org/x"}, {"$schema": []},
            {"$defs": {"x": {"$ref": "#/$defs/x"}}, "$ref": "#/$defs/x"}])),
        "strict": json_values, "description": json_values})}))
nearly_valid_chat = st.fixed_dictionaries(
    {"model": st.sampled_from(["gpt-5.4", "claude-sonnet-4-6-search", "o3-pro", "nano-banana-pro", "unknown-x"]),
     "messages": valid_messages},
    optional={"stream": st.booleans(), "max_tokens": st.integers(-1, 50), "stop": st.one_of(st.text(max_size=3), json_values),
              "n": st.integers(0, 2), "temperature": json_values, "stream_options": json_values,
              "tool_choice": json_values, "tools": json_values, "response_format": response_formats},
)
nearly_valid_generation = st.fixed_dictionaries(
    {"prompt": st.text(min_size=1, max_size=20)},
    optional={"model": st.sampled_from(["nano-banana-pro", "sora-2", "gpt-5.4"]), "n": st.integers(0, 5),
              "size": st.sampled_from(["1024x1024", "1792x1024", "auto", "big", "0x0"]),
              "response_format": st.sampled_from(["url", "b64_json", "gif"]), "style": json_values},
)
chat_bodies = st.one_of(chat_bodies, nearly_valid_chat)
generation_bodies = st.one_of(generation_bodies, nearly_valid_generation)
# The Responses door: items, parts and tools of every type it knows and some it does not.
response_parts = st.one_of(
    st.fixed_dictionaries({"type": st.sampled_from(["input_text", "input_image", "input_file", "output_text",
                                                    "refusal", "input_audio", "video"])},
                          optional={"text": json_values, "image_url": json_values, "file_id": json_values,
                                    "file_data": json_values, "file_url": json_values}),
    json_values,
)
response_items = st.lists(
    st.fixed_dictionaries({}, optional={
        "type": st.one_of(st.sampled_from(["message", "function_call", "function_call_output", "reasoning",
                                           "local_shell_call"]), json_values),
        "role": st.one_of(st.sampled_from(["user", "developer", "assistant", "system", "tool"]), json_values),
        "content": st.one_of(st.text(max_size=20), st.lists(response_parts, max_size=3), json_values),
        "call_id": json_values, "name": json_values, "arguments": json_values, "output": json_values, "id": json_values,
    }),
    max_size=3,
)
response_tools = st.lists(st.fixed_dictionaries(
    {"type": st.sampled_from(["function", "web_search", "namespace", "custom"])},
    optional={"name": st.one_of(st.sampled_from(["f", "g"]), json_values), "parameters": json_values,
              "external_web_access": json_values}), max_size=2)
responses_bodies = st.one_of(
    st.fixed_dictionaries({}, optional={
        "model": st.one_of(st.sampled_from(["gpt-5.4", "nano-banana-pro", "x-search"]), json_values),
        "input": st.one_of(st.text(max_size=20), response_items, json_values),
        "instructions": json_values, "tools": st.one_of(response_tools, json_values), "tool_choice": json_values,
        "text": json_values, "reasoning": json_values, "max_output_tokens": json_values,
        "previous_response_id": json_values, "stream": json_values, "store": json_values, "metadata": json_values,
    }),
    st.fixed_dictionaries(
        {"model": st.sampled_from(["gpt-5.4", "claude-sonnet-4-6-search", "o3-pro", "nano-banana-pro"]),
         "input": st.one_of(st.text(min_size=1, max_size=20), response_items.map(
             lambda items: [*items, {"role": "user", "content": "hi"}]))},
        optional={"stream": st.booleans(), "max_output_tokens": st.integers(-1, 50), "tools": response_tools,
                  "tool_choice": json_values, "text": json_values, "reasoning": json_values,
                  "previous_response_id": st.sampled_from(["resp_nope", ""])},
    ),
)
PATHS = ["/v1/chat/completions", "/v1/responses", "/v1/images/generations", "/v1/images/edits",
         "/v1/videos/generations", "/v1/videos"]
BODIES = {"/v1/chat/completions": chat_bodies, "/v1/responses": responses_bodies}


def damage(body: bytes, how: str, at: int) -> bytes:
    """Byte-level damage JSON decoders trip over: invalid UTF-8 inside a string, deep nesting."""
    if how == "utf8":
        quote = body.find(b'"', at % max(len(body), 1))
        return body if quote < 0 else body[:quote + 1] + b"\xff\xc3(" + body[quote + 1:]
    if how == "deep":
        return b'{"x": ' + b"[" * 1500 + b"]" * 1500 + b', "y": ' + body + b"}"
    if how == "truncated":
        return body[: at % max(len(body), 1)]
    return body


raw = st.tuples(st.sampled_from(["none"] * 6 + ["utf8", "deep", "truncated"]), st.integers(0, 400))
requests = st.sampled_from(PATHS).flatmap(
    lambda path: st.tuples(st.just(path), BODIES.get(path, generation_bodies), raw)
).map(lambda r: (r[0], damage(json.dumps(r[1]).encode(), *r[2])))
CONCURRENCY = 25


class FuzzTarget:
    """One simulator and one service for all examples, run by trio in a thread of its own
    (starting them per example is slow); each example's batch is posted there, 25 at a time."""

    def __init__(self) -> None:
        self.token: trio.lowlevel.TrioToken | None = None
        self.http: httpx.AsyncClient | None = None
        self.stop: trio.Event | None = None
        self.ready = threading.Event()

    async def serve(self) -> None:
        self.token = trio.lowlevel.current_trio_token()
        self.stop = trio.Event()
        async with trio.open_nursery() as nursery:
            sim = Simulator()
            sim_url = await nursery.start(serve_simulator, sim, "127.0.0.1", 0)
            service = await start_service(nursery, {
                "GENSPARK_BASE_URL": sim_url, "GS_COOKIE": "ok-1,ok-2", "REQUEST_RATE_LIMIT": "0",
                "IMAGE_TIMEOUT": "2", "VIDEO_TIMEOUT": "2", "FIRST_BYTE_HOLD_SECONDS": "2",
            }, counter=COUNTER)
            async with service.http(limits=httpx.Limits(max_connections=CONCURRENCY)) as self.http:
                self.ready.set()
                await self.stop.wait()
            nursery.cancel_scope.cancel()

    async def post_all(self, batch: list[tuple[str, bytes]]) -> list[tuple[str, bytes, int, str]]:
        answers = []
        limiter = trio.Semaphore(CONCURRENCY)

        async def one(path: str, body: bytes) -> None:
            async with limiter:
                with trio.fail_after(30):
                    response = await self.http.post(path, content=body, headers={"Content-Type": "application/json"})
                answers.append((path, body, response.status_code, response.text))

        async with trio.open_nursery() as posts:
            for path, body in batch:
                posts.start_soon(one, path, body)
        return answers

    def run(self, batch: list[tuple[str, bytes]]) -> list[tuple[str, bytes, int, str]]:
        return trio.from_thread.run(self.post_all, batch, trio_token=self.token)


COUNTER = TokenCounter(data_dir=default_data_dir())


@pytest.fixture(scope="module")
def target() -> Iterator[FuzzTarget]:
    fuzz = FuzzTarget()
    thread = threading.Thread(target=trio.run, args=(fuzz.serve,), daemon=True)
    thread.start()
    assert fuzz.ready.wait(30)
    yield fuzz
    trio.from_thread.run_sync(fuzz.stop.set, trio_token=fuzz.token)
    thread.join(10)


# 50 batches of 40: 2,000 requests per run (issue #10: a fuzz of at least 2,000, no 500).
@settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
@given(batch=st.lists(requests, min_size=40, max_size=40))
def test_random_bodies_never_get_a_500(target: FuzzTarget, batch: list[tuple[str, bytes]]) -> None:
    answers = target.run(batch)
    assert len(answers) == len(batch)
    for path, body, status, text in answers:
        assert status < 500 or status in (502, 503, 504), (path, body, text)
        if status >= 400:
            error = json.loads(text)["error"]
            assert set(error) == {"message", "type", "param", "code"} and error["message"], (path, body, error)
