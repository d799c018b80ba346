"""What the simulator remembers: recordings for tests, and the upstream's own server-side state.

Everything lives on one ``SimulatorState`` instance (no module globals) so a simulator can run in
the same trio process as the service under test, or several simulators side by side.
"""

from __future__ import annotations

import enum
import itertools
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from .accounts import AccountLedger
from .structured import JsonRequest

MediaKind = Literal["image", "video"]
TOKEN_LIFETIME = 120.0  # seconds


@dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request as received, before any routing decision."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes
    json: Any  # the parsed body, or None when it is not JSON (or is literally `null`)
    session_id: str | None  # the Cookie's session_id value (§1.3), None when absent
    time: float  # trio.current_time()


@dataclass(frozen=True)
class ClosedStream:
    """One streamed (chat, generation or poll) response that ended, for whatever reason."""

    path: str
    session_id: str | None
    completed: bool  # True: every planned byte was sent; False: the client went away first
    closed_at: float  # trio.current_time()


@dataclass
class Project:
    """A Genspark "project": one conversation with server-side memory (§2.1, §5.5, §12.3).

    ``session_id`` is the owner: on ask_proxy only that account may continue it (§12.3).
    """

    id: str
    model: str
    session_id: str | None
    turns: list[tuple[str, str]] = field(default_factory=list)  # (user text, answer text)
    kind: str = "ai_chat"  # ask_proxy `type` (or the copilot type) that created it
    name: str = ""
    ctime: str = ""  # ISO time of creation, as /api/project/my shows it (§12.3)
    event_count: int = 0  # §12.4.1: events sent so far; the next `_event_index`
    last_seen_event_indexes: list[int | None] = field(default_factory=list)  # one per ask_proxy request
    json_request: JsonRequest | None = None  # the structured instruction the thread was given

    @property
    def owner(self) -> str | None:
        return self.session_id


class TaskOutcome(enum.Enum):
    """How a generation task ends, chosen by words in the prompt (see backend.py)."""

    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    NEVER = "NEVER"  # stays PROCESSING until the poller gives up


@dataclass
class MediaTask:
    """An image or video generation task (§2.2–§2.4)."""

    id: str
    kind: MediaKind
    model: str
    prompt: str
    outcome: TaskOutcome
    project_id: str
    session_id: str | None
    legacy_polls: int = 0  # GET image_generation_task_status / _detail calls seen so far
    # ask_proxy agents (§12.7): "agent" tasks are polled in the §12.7.3 shape, "copilot" in §2.3's.
    generation: Literal["copilot", "agent"] = "copilot"
    image_size: str | None = None  # coerced (§12.7.5)
    pixels: tuple[int, int] = (1024, 1024)
    duration: str | None = None  # videos (§12.7.6)
    references: int = 0  # reference images the request carried (§12.7.5)
    urls: tuple[str, ...] = ()  # agent tasks: /api/files/s/ links (image_urls / video_urls)
    urls_nowatermark: tuple[str, ...] = ()


@dataclass(frozen=True)
class FileDownload:
    """A GET of a generated file; mc5024 (2026) sends the cookie there, deanxv does not (§2.3)."""

    name: str
    cookie_sent: bool
    found: bool


class SimulatorState:
    """Recordings plus the simulated upstream's stores. ``reset()`` empties all of it."""

    requests: list[RecordedRequest]
    stream_closures: list[ClosedStream]
    projects: dict[str, Project]
    deleted_projects: list[str]
    uploads: dict[str, bytes]  # blob key -> bytes PUT to it
    upload_slots: set[str]  # blob keys handed out by get_upload_personal_image_url
    tasks: dict[str, MediaTask]
    downloads: list[FileDownload]
    issued_tokens: dict[str, float]  # reCAPTCHA tokens handed out by /genspark, not yet used -> issue time
    files: dict[str, tuple[str, str]]  # /api/files/s/<id> -> ("task", task id) or ("upload", blob key)
    flaky_refused: set[str]  # session ids of the `flaky` scenario that already had their 429
    ledger: AccountLedger  # ask_proxy per-account concurrency, rate, quota window, credits

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.requests = []
        self.results: list[dict[str, Any]] = []
        self.stream_closures = []
        self.projects = {}
        self.deleted_projects = []
        self.uploads = {}
        self.upload_slots = set()
        self.tasks = {}
        self.downloads = []
        self.issued_tokens = {}
        self.files = {}
        self.agent_tasks_made = 0  # every 2nd agent task gets relative URLs (§12.7.4)
        self.flaky_refused = set()
        self.ledger = AccountLedger()
        self._token_counter = itertools.count(1)

    def record_result(self, frame: bytes) -> None:
        """Keep each ``message_result`` sent (its ``message`` on ai_chat), for assertions on what
        upstream said, e.g. ``_llm_usage``."""
        try:
            event = json.loads(frame.decode().removeprefix("data: "))
        except ValueError:
            return
        self.results.append(event.get("message") if isinstance(event.get("message"), dict) else event)

    def requests_to(self, path: str) -> list[RecordedRequest]:
        return [recorded for recorded in self.requests if recorded.path == path]

    def issue_token(self, now: float = 0.0) -> str:
        token = f"sim-token-{next(self._token_counter)}"
        self.issued_tokens[token] = now
        return token

    def redeem_token(self, token: str | None, now: float = 0.0) -> bool:
        """reCAPTCHA tokens are single-use and "valid about 2 minutes" (§12.6.1, TT-3 [O]);
        True when ``token`` was valid. ``now`` is on the clock ``issue_token`` was given."""
        issued = self.issued_tokens.pop(token, None) if token else None
        return issued is not None and now - issued <= TOKEN_LIFETIME
