"""Token counting: the tiktoken path from local files, the estimate, and never the network."""

from __future__ import annotations

import os
import shutil
import socket
import sys
import threading
import time
from pathlib import Path

import pytest
import tiktoken.load
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from genspark2api.core import usage
from genspark2api.core.usage import (
    ESTIMATE_DESCRIPTION,
    TokenCounter,
    count_messages_async,
    default_data_dir,
    pinned_tiktoken_file,
)

DATA_DIR = Path(__file__).resolve().parent.parent / "tiktoken-data"
O200K_FILE = "fb374d419588a4632f3f557e76b4b70aebbca790"

# Letters, digits, spaces, punctuation, apostrophes, newlines, combining marks, CJK, kana, Hangul,
# emoji and full-width forms: the characters where tokenizers and the estimate disagree most.
TEXT = st.text(
    alphabet=st.sampled_from(
        [*"abcXYZ 0129.,;:'\"!?()/\\\n\t-_*#", *"你好世界，。カタ한글Ａ", "\u0301", "\u00a0", "😀"]
    ),
    max_size=40,
)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if anything opens a connection or asks tiktoken to fetch a file."""

    def refuse(*args: object, **kwargs: object) -> None:
        pytest.fail(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(tiktoken.load, "read_file", refuse)


@pytest.fixture(scope="module")
def exact() -> TokenCounter:
    counter = TokenCounter(data_dir=DATA_DIR)
    if not counter.exact:
        reason = (
            f"TIKTOKEN DATA MISSING in {DATA_DIR}: the exact-count tests did not run; "
            "run `python scripts/fetch_tiktoken_data.py` first"
        )
        if os.environ.get("GENSPARK2API_REQUIRE_TIKTOKEN"):
            pytest.fail(reason)
        pytest.skip(reason)
    return counter


@pytest.fixture(scope="module")
def estimate(tmp_path_factory: pytest.TempPathFactory) -> TokenCounter:
    return TokenCounter(data_dir=tmp_path_factory.mktemp("empty"))


# --- the estimate ------------------------------------------------------------------------------


def test_estimate_when_the_data_dir_is_empty_is_fast_and_offline(
    tmp_path: Path, no_network: None
) -> None:
    started = time.perf_counter()
    counter = TokenCounter(data_dir=tmp_path)
    counter.count("hello world " * 100)
    elapsed = time.perf_counter() - started
    assert not counter.exact
    assert counter.description == ESTIMATE_DESCRIPTION
    assert elapsed < 0.05


def test_a_corrupt_file_is_left_alone_and_not_downloaded_again(
    tmp_path: Path, no_network: None
) -> None:
    # tiktoken itself would delete a file with the wrong hash and download it again.
    bad = tmp_path / O200K_FILE
    bad.write_bytes(b"not a tiktoken file\n")
    counter = TokenCounter(data_dir=tmp_path)
    assert not counter.exact
    assert bad.read_bytes() == b"not a tiktoken file\n"


def test_estimate_when_tiktoken_is_not_installed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "tiktoken", None)
    monkeypatch.setitem(sys.modules, "tiktoken_ext", None)
    # An earlier test may have imported the real submodule; hide it too.
    monkeypatch.setitem(sys.modules, "tiktoken_ext.openai_public", None)
    if DATA_DIR.is_dir():
        shutil.copytree(DATA_DIR, tmp_path, dirs_exist_ok=True)
    assert pinned_tiktoken_file("o200k_base") is None
    assert not TokenCounter(data_dir=tmp_path).exact


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("", 0),
        ("a", 1),
        ("abcd", 1),
        ("abcde", 2),
        ("你好", 2),
        ("hi 你好", 3),  # ceil(3 / 4) + 2
        ("こんにちは、世界", 8),
        ("<|endoftext|>", 4),
    ],
)
def test_estimate_formula(estimate: TokenCounter, text: str, tokens: int) -> None:
    assert estimate.count(text) == tokens


@given(text=TEXT, limit=st.integers(0, 12))
def test_estimate_truncate_is_the_longest_prefix_that_fits(
    estimate: TokenCounter, text: str, limit: int
) -> None:
    cut = estimate.truncate(text, limit)
    assert text.startswith(cut)
    assert estimate.count(cut) <= limit
    if cut != text:
        assert estimate.count(text[: len(cut) + 1]) > limit


# --- tiktoken from local files -----------------------------------------------------------------


def test_tiktoken_loads_from_the_data_dir_offline(exact: TokenCounter, no_network: None) -> None:
    for name in ("o200k_base", "cl100k_base"):
        counter = TokenCounter(name, data_dir=str(DATA_DIR))
        assert counter.exact
        assert counter.description == f"tiktoken {name}"
        assert counter.count("hello world") == 2


async def test_a_background_load_lets_the_service_start_and_the_first_count_waits(
    exact: TokenCounter, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The service builds its counter with background=True and runs load() once it serves, so
    # start-to-ready does not include the tokenizer load; a count before the load is done waits
    # for it and is still exact.
    release = threading.Event()
    real = usage._load_offline

    def slow_load(name: str, directory: Path | None):
        assert release.wait(10)
        return real(name, directory)

    monkeypatch.setattr(usage, "_load_offline", slow_load)
    counter = TokenCounter(data_dir=str(DATA_DIR), background=True)   # returns without loading
    assert counter.description.startswith("loading tiktoken o200k_base")
    counted: list[int] = []
    waiter = threading.Thread(target=lambda: counted.append(counter.count("hello world")))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(counter.load)
        await trio.sleep(0.05)
        waiter.start()
        waiter.join(0.2)
        assert waiter.is_alive() and not counted       # the count waits for the load ...
        release.set()
    waiter.join(10)
    assert counted == [exact.count("hello world")] == [2]   # ... and is tiktoken's
    assert counter.exact and counter.description == "tiktoken o200k_base"


def test_a_deferred_load_nobody_started_happens_at_the_first_count() -> None:
    counter = TokenCounter(data_dir=str(DATA_DIR), background=True)
    assert counter.count("hello world") == 2 and counter.exact   # loads itself: never a hang


def test_known_counts(exact: TokenCounter) -> None:
    assert exact.description == "tiktoken o200k_base"
    assert exact.count("hello world") == 2
    assert exact.count("") == 0
    # User text containing a special token's spelling is ordinary text, not an error.
    assert exact.count("<|endoftext|>") > 1


def test_count_messages_follows_the_cookbook(exact: TokenCounter) -> None:
    messages = [
        ("system", "You are a helpful assistant.", None),
        ("user", "What is 2 + 2?", "alice"),
    ]
    expected = (
        (3 + exact.count("system") + exact.count("You are a helpful assistant."))
        + (3 + exact.count("user") + exact.count("What is 2 + 2?") + 1 + exact.count("alice"))
        + 3
    )
    assert exact.count_messages(messages) == expected
    assert exact.count_messages([]) == 3


def test_truncate_keeps_whole_tokens_and_whole_characters(exact: TokenCounter) -> None:
    assert exact.truncate("hello world", 1) == "hello"
    assert exact.truncate("hello world", 2) == "hello world"
    assert exact.truncate("hello world", 0) == ""
    # An emoji takes more than one o200k token: a cut inside it drops it whole.
    emoji = "🦜"
    assert len(exact._encoding.encode_ordinary(emoji)) > 1  # type: ignore[union-attr]
    assert exact.truncate("a " + emoji, 2) == "a "
    assert exact.truncate("a " + emoji, 3) == "a "
    assert exact.truncate("a " + emoji, 4) == "a " + emoji


@settings(max_examples=300)
@given(text=TEXT, limit=st.integers(0, 12))
def test_truncate_fits_and_is_a_prefix(exact: TokenCounter, text: str, limit: int) -> None:
    cut = exact.truncate(text, limit)
    assert text.startswith(cut)
    assert exact.count(cut) <= limit
    assert (cut == text) == (exact.count(text) <= limit)


@settings(max_examples=300)
@given(text=TEXT, more=TEXT)
def test_stable_prefix_splits_counts_exactly(
    exact: TokenCounter, estimate: TokenCounter, text: str, more: str
) -> None:
    for counter in (exact, estimate):
        cut = counter.stable_prefix(text)
        assert 0 <= cut <= len(text)
        whole = counter.count(text + more)
        assert whole == counter.count(text[:cut]) + counter.count(text[cut:] + more)


# --- where the data lives ----------------------------------------------------------------------


def test_default_data_dir_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    repo, container = tmp_path / "repo", tmp_path / "container"
    monkeypatch.setattr(usage, "REPO_DATA_DIR", repo)
    monkeypatch.setattr(usage, "CONTAINER_DATA_DIR", container)
    assert default_data_dir({}) is None
    container.mkdir()
    assert default_data_dir({}) == container
    repo.mkdir()
    assert default_data_dir({}) == repo
    assert default_data_dir({"TIKTOKEN_CACHE_DIR": ""}) == repo
    assert default_data_dir({"TIKTOKEN_CACHE_DIR": "/elsewhere"}) == Path("/elsewhere")


# --- offloading large prompts ------------------------------------------------------------------


async def test_large_prompts_are_counted_in_a_thread(
    estimate: TokenCounter, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[int] = []
    count_messages = estimate.count_messages

    def spy(messages: list[tuple[str, str, str | None]]) -> int:
        threads.append(threading.get_ident())
        return count_messages(messages)

    monkeypatch.setattr(estimate, "count_messages", spy)
    small = [("user", "x" * 199_995, None)]  # 4 + 199,995 characters: just under the limit
    large = [("user", "x" * 199_996, None)]
    assert await count_messages_async(estimate, small) == count_messages(small)
    assert await count_messages_async(estimate, large) == count_messages(large)
    assert threads[0] == threading.get_ident()
    assert threads[1] != threading.get_ident()

    threads.clear()
    await count_messages_async(estimate, [("user", "hi", "bob")], offload_chars=5)
    assert threads[0] != threading.get_ident()


def test_the_encoding_does_not_keep_its_pickling_copy_of_the_ranks(exact: TokenCounter) -> None:
    # tiktoken keeps the rank dict it built the Rust BPE from (only for pickling): ~23 MiB of RSS.
    assert exact._encoding._mergeable_ranks == {}
    assert exact.count("hello world") == 2 and exact.truncate("hello world", 1) == "hello"
