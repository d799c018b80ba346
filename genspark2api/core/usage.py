"""Token counts for the `usage` object: tiktoken when its data is on disk, a labelled estimate else.

Genspark never reports token usage, so every number here is ours (openai-compat.md §5 item 5).
With tiktoken the counts are those of `o200k_base`, the encoding of gpt-4o and later: exact for
that encoding, an approximation for whatever model Genspark really ran.

tiktoken downloads its encoding files on first use, and the machines that run us are often
offline: it would then raise or hang inside a request (python-stack.md §6). So we hand tiktoken an
encoding only when its cache file is already on disk *and* matches the sha256 tiktoken pins;
otherwise tiktoken would delete the file and download it again. Anything short of that, and
`TokenCounter` falls back to the estimate below, without ever touching the network.
`scripts/fetch_tiktoken_data.py` puts the files in place.

The estimate, when tiktoken cannot be used::

    tokens(text) = ceil(non_cjk_chars / 4) + cjk_chars

English averages about 4 characters per token in o200k and cl100k; Chinese, Japanese and Korean
characters come out near one token each. Code and mixed text land in between, on the high side.
Any non-empty text counts as at least one token.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import math
import os
import re
import threading
import time
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    import tiktoken

log = logging.getLogger("genspark2api.usage")

ESTIMATE_DESCRIPTION = "estimate (~4 chars/token, 1 token per CJK char)"

# Han (with extensions and compatibility ideographs), kana, Hangul, Bopomofo, CJK punctuation and
# full-width forms: the scripts where one character is about one token.
_CJK = re.compile(
    "[\u1100-\u11ff\u2e80-\u9fff\ua960-\ua97f\uac00-\ud7ff\uf900-\ufaff\ufe30-\ufe4f"
    "\uff00-\uffef\U00020000-\U0003ffff]"
)

# The cache file and hash of each encoding, as pinned in tiktoken_ext/openai_public.py:
#   load_tiktoken_bpe("https://.../o200k_base.tiktoken", expected_hash="446a...")
_PIN = re.compile(
    r'"(?P<url>https://[^"]+/(?P<name>\w+)\.tiktoken)",\s*expected_hash="(?P<sha256>[0-9a-f]{64})"'
)

# tiktoken reads TIKTOKEN_CACHE_DIR at call time and we set it just for our call; the lock keeps
# two counters being built at once from restoring each other's value.
_LOAD_LOCK = threading.Lock()

# The app and the container keep the files in these places; see default_data_dir().
REPO_DATA_DIR = Path(__file__).resolve().parents[2] / "tiktoken-data"
CONTAINER_DATA_DIR = Path("/app/tiktoken")


@dataclass(frozen=True)
class TiktokenFile:
    """Where tiktoken downloads an encoding from, and the file name and hash it caches it under."""

    url: str
    sha256: str

    @property
    def cache_name(self) -> str:
        return hashlib.sha1(self.url.encode()).hexdigest()


def pinned_tiktoken_file(encoding_name: str) -> TiktokenFile | None:
    """The cache file the *installed* tiktoken expects for `encoding_name`, or None.

    Read from tiktoken's own source, not a copy of ours, so a tiktoken upgrade that moves or
    re-hashes a file makes us fall back to the estimate instead of letting tiktoken download.
    None when tiktoken is not installed or the encoding has no plain `.tiktoken` file
    (gpt2, o200k_harmony).
    """
    try:
        spec = importlib.util.find_spec("tiktoken_ext.openai_public")
    except ImportError:
        return None
    if spec is None or spec.origin is None:
        return None
    try:
        source = Path(spec.origin).read_text(encoding="utf-8")
    except OSError:
        return None
    for pin in _PIN.finditer(source):
        if pin["name"] == encoding_name:
            return TiktokenFile(url=pin["url"], sha256=pin["sha256"])
    return None


def default_data_dir(environ: Mapping[str, str] | None = None) -> Path | None:
    """The directory holding tiktoken's cache files, first match wins.

    1. `TIKTOKEN_CACHE_DIR`, when set and not empty (tiktoken's own variable; an empty value means
       "no cache" to tiktoken, which offline means "no tiktoken", so we skip it);
    2. `tiktoken-data/` next to the package in a source checkout, where
       `scripts/fetch_tiktoken_data.py` writes by default;
    3. `/app/tiktoken`, where the container image keeps them.

    None when none of these exists; counts are then estimates.
    """
    env = os.environ if environ is None else environ
    configured = env.get("TIKTOKEN_CACHE_DIR", "")
    if configured:
        return Path(configured)
    for candidate in (REPO_DATA_DIR, CONTAINER_DATA_DIR):
        if candidate.is_dir():
            return candidate
    return None


def _load_offline(
    encoding_name: str, data_dir: Path | None
) -> tuple[tiktoken.Encoding | None, str]:
    """The encoding, or None and why not. Never lets tiktoken reach for the network."""
    if data_dir is None:
        return None, "no tiktoken data directory"
    pinned = pinned_tiktoken_file(encoding_name)
    if pinned is None:
        return None, f"tiktoken is not installed or has no file for {encoding_name}"
    path = data_dir / pinned.cache_name
    try:
        data = path.read_bytes()
    except OSError as exc:
        return None, f"cannot read {path}: {exc.strerror or exc}"
    if hashlib.sha256(data).hexdigest() != pinned.sha256:
        return None, f"{path} does not match the sha256 tiktoken pins for {encoding_name}"
    try:
        import tiktoken
    except ImportError:
        return None, "tiktoken is not installed"
    with _LOAD_LOCK:
        saved = os.environ.get("TIKTOKEN_CACHE_DIR")
        os.environ["TIKTOKEN_CACHE_DIR"] = str(data_dir)
        try:
            # The verified file is what tiktoken looks for first, so this reads it and stops.
            encoding = tiktoken.get_encoding(encoding_name)
            # tiktoken keeps the Python dict it built the Rust BPE from only for pickling the
            # Encoding, which we never do: about 23 MiB of RSS (of 77) for nothing.
            if isinstance(getattr(encoding, "_mergeable_ranks", None), dict):
                encoding._mergeable_ranks = {}
            return encoding, ""
        except Exception as exc:  # a tiktoken bug must not take the service down with it
            return None, f"tiktoken could not load {encoding_name}: {exc!r}"
        finally:
            if saved is None:
                del os.environ["TIKTOKEN_CACHE_DIR"]
            else:
                os.environ["TIKTOKEN_CACHE_DIR"] = saved


def _estimate(text: str) -> int:
    cjk = len(text) - len(_CJK.sub("", text))
    return math.ceil((len(text) - cjk) / 4) + cjk


class TokenCounter:
    """Counts tokens with tiktoken when it can load offline, with the module's estimate else.

    The encoding is loaded once (about 0.3-0.8 s for o200k_base), so build one counter at startup
    and share it: afterwards it holds no mutable state and is safe to use from any thread.
    `data_dir` None means `default_data_dir()`.

    `background=True` (the service) defers the load to `load()`, which the app runs in its
    nursery as it starts serving, on a worker thread: the service is ready while the tokenizer
    still loads (the load was most of the start-to-ready time). A count that comes first waits
    for that load, or loads it itself when none has begun. The worker thread never logs: a
    thread that formats a traceback (logging does, when its stream fails) runs `ast.parse`, and
    CPython 3.11's AST state is shared between threads ("AST constructor recursion depth
    mismatch" in the main thread's werkzeug route compiler, seen once in the suite).
    """

    def __init__(
        self,
        encoding_name: str = "o200k_base",
        *,
        data_dir: str | os.PathLike[str] | None = None,
        background: bool = False,
    ) -> None:
        self._name = encoding_name
        self._directory = default_data_dir() if data_dir is None else Path(data_dir)
        self._encoding_loaded: tiktoken.Encoding | None = None
        self._why_not = ""
        self._description = f"loading tiktoken {encoding_name} in the background"
        self._begun = threading.Lock()    # held by whoever does the load; never released after
        self._loaded = threading.Event()
        self._logged = False
        if not background:
            self._load_here()

    async def load(self) -> None:
        """The deferred load, on a worker thread; logs what it loaded (from the caller's thread)."""
        if self._begun.acquire(blocking=False):
            await trio.to_thread.run_sync(self._load_quietly)
            self.log_outcome()

    def _load_here(self) -> None:
        if self._begun.acquire(blocking=False):
            self._load_quietly()
            self.log_outcome()

    def _load_quietly(self) -> None:
        try:
            self._encoding_loaded, self._why_not = _load_offline(self._name, self._directory)
            self._description = f"tiktoken {self._name}" if self._encoding_loaded is not None else ESTIMATE_DESCRIPTION
        finally:
            self._loaded.set()

    def log_outcome(self) -> None:
        """Say once what counts (from the trio side, never a worker thread)."""
        if self._logged:
            return
        self._logged = True
        if self._encoding_loaded is not None:
            log.info("token counts: tiktoken %s from %s", self._name, self._directory)
        else:
            log.warning("token counts are estimates: %s (run scripts/fetch_tiktoken_data.py)", self._why_not)

    @property
    def _encoding(self) -> tiktoken.Encoding | None:
        if not self._loaded.is_set():
            started = time.perf_counter()
            self.wait_loaded()       # nobody has begun: load now; else wait for the load under way
            self.log_outcome()
            log.info("a token count waited %.2f s for tiktoken to load", time.perf_counter() - started)
        return self._encoding_loaded

    @property
    def loaded(self) -> bool:
        return self._loaded.is_set()

    def wait_loaded(self) -> None:
        """Until the encoding is there, loading it here when no load has begun. Never logs (it
        runs on a worker thread, see the class docstring): the caller then calls log_outcome()."""
        if self._begun.acquire(blocking=False):
            self._load_quietly()
        self._loaded.wait()

    @property
    def exact(self) -> bool:
        """Whether counts are tiktoken's (waits for the load)."""
        return self._encoding is not None

    @property
    def description(self) -> str:
        """What counts (never waits: "loading ..." while the load runs)."""
        return self._description

    def count(self, text: str) -> int:
        """Tokens in `text`; special-token strings such as "<|endoftext|>" count as plain text."""
        if self._encoding is None:
            return _estimate(text)
        # encode() raises on special-token strings in user text; encode_ordinary() does not.
        return len(self._encoding.encode_ordinary(text))

    def count_messages(self, messages: Sequence[tuple[str, str, str | None]]) -> int:
        """Prompt tokens of (role, text, name) messages, by the OpenAI cookbook recipe.

        Each message costs 3 tokens of framing plus its role and text, and 1 more plus the name
        when it has one; the reply is primed with 3 more.
        """
        total = 3
        for role, text, name in messages:
            total += 3 + self.count(role) + self.count(text)
            if name:
                total += 1 + self.count(name)
        return total

    def truncate(self, text: str, max_tokens: int) -> str:
        """The longest prefix of `text` that counts at most `max_tokens` tokens.

        With tiktoken: the text of the first `max_tokens` tokens, less any character they only
        partly cover (a CJK character or an emoji may span two tokens).
        """
        if max_tokens <= 0:
            return ""
        if self._encoding is None:
            return self._truncate_estimate(text, max_tokens)
        tokens = self._encoding.encode_ordinary(text)
        if len(tokens) <= max_tokens:
            return text
        for keep in range(max_tokens, 0, -1):
            # A byte prefix of valid UTF-8 can only end in one incomplete character.
            head = self._encoding.decode_bytes(tokens[:keep]).decode("utf-8", errors="ignore")
            prefix = text[: len(head)]
            # A prefix re-encoded nearly always gives the same tokens; check, as BPE is greedy.
            if self.count(prefix) <= max_tokens:
                return prefix
        return ""

    def _truncate_estimate(self, text: str, max_tokens: int) -> str:
        # The estimate grows with every character, so bisect on the prefix length.
        low, high = 0, len(text)
        while low < high:
            middle = (low + high + 1) // 2
            if _estimate(text[:middle]) <= max_tokens:
                low = middle
            else:
                high = middle - 1
        return text[:low]

    def stable_prefix(self, text: str) -> int:
        """A cut point `i` at which counting can be split: for any text `more`,
        count(text + more) == count(text[:i]) + count(text[i:] + more). 0 when none is known.

        This lets a stream be counted piece by piece (textfilters.TokenBudget) without counting
        all of it again for every chunk. The last such point is returned, to keep the rest short.
        """
        if self._encoding is None:
            return _estimate_stable_prefix(text)
        for i in range(len(text) - 1, 0, -1):
            if _starts_tiktoken_piece(text[i - 1], text[i]):
                return i
        return 0


def _starts_tiktoken_piece(before: str, char: str) -> bool:
    """Whether o200k/cl100k always start a pre-tokenizer piece at `char` when it follows `before`.

    tiktoken splits text with a regex (tiktoken_ext/openai_public.py) and encodes each piece on
    its own, so counts add up across a piece boundary. In both patterns a space can only open a
    piece or sit in an all-whitespace piece, and a letter or digit run ends at any punctuation or
    symbol except the apostrophe of "'s", "'ll" etc. Python's isspace() is a superset of the
    regex's \\s, so erring here only loses a cut point.
    """
    if char == " ":
        return not before.isspace()
    if char == "'":
        return False
    return unicodedata.category(before)[0] in "LN" and unicodedata.category(char)[0] in "PS"


def _estimate_stable_prefix(text: str) -> int:
    # ceil(a / 4) + ceil(b / 4) == ceil((a + b) / 4) when a is a multiple of 4: cut after a
    # multiple of 4 non-CJK characters.
    cjk_flags = [bool(_CJK.match(char)) for char in text]
    excess = cjk_flags.count(False) % 4
    i = len(text)
    while excess:
        i -= 1
        if not cjk_flags[i]:
            excess -= 1
    return i


async def count_messages_async(
    counter: TokenCounter,
    messages: Sequence[tuple[str, str, str | None]],
    *,
    offload_chars: int = 200_000,
) -> int:
    """`counter.count_messages` that keeps the event loop free for large prompts.

    tiktoken needs about 0.1 s per megabyte; prompts of `offload_chars` characters or more are
    counted in a worker thread. On cancellation the count still runs to its (bounded) end, then
    trio.Cancelled is raised.
    """
    if not counter.loaded:
        # The service's first requests: wait for the tokenizer off the loop, not blocking it.
        await trio.to_thread.run_sync(counter.wait_loaded)
        counter.log_outcome()
    size = sum(len(role) + len(text) + len(name or "") for role, text, name in messages)
    if size < offload_chars:
        return counter.count_messages(messages)
    return await trio.to_thread.run_sync(counter.count_messages, messages)
