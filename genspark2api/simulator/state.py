"""What the simulator remembers: recordings for tests, and the upstream's own server-side state.

Everything lives on one ``SimulatorState`` instance (no module globals) so a simulator can run in
the same trio process as the service under test, or several simulators side by side.
"""

from __future__ import annotations

import enum
import itertools
from dataclasses import dataclass, field
from typing import Any, Literal

MediaKind = Literal["image", "video"]


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
    """A Genspark "project": one conversation with server-side memory (§2.1, §5.5)."""

    id: str
    model: str
    session_id: str | None
    turns: list[tuple[str, str]] = field(default_factory=list)  # (user text, answer text)


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
    legacy_polls: int = 0  # GET image_generation_task_status calls seen so far


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
    issued_tokens: set[str]  # reCAPTCHA tokens handed out by /genspark and not yet used
    flaky_refused: set[str]  # session ids of the `flaky` scenario that already had their 429

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.requests = []
        self.stream_closures = []
        self.projects = {}
        self.deleted_projects = []
        self.uploads = {}
        self.upload_slots = set()
        self.tasks = {}
        self.downloads = []
        self.issued_tokens = set()
        self.flaky_refused = set()
        self._token_counter = itertools.count(1)

    def requests_to(self, path: str) -> list[RecordedRequest]:
        return [recorded for recorded in self.requests if recorded.path == path]

    def issue_token(self) -> str:
        token = f"sim-token-{next(self._token_counter)}"
        self.issued_tokens.add(token)
        return token

    def redeem_token(self, token: str | None) -> bool:
        """reCAPTCHA tokens are single-use, like Google's; True when ``token`` was valid."""
        if token is None or token not in self.issued_tokens:
            return False
        self.issued_tokens.discard(token)
        return True
