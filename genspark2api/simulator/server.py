"""``Simulator`` (state + backend + ASGI app) and ``serve_simulator`` (hypercorn on trio)."""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from .app import create_app
from .backend import SimulatedBackend
from .options import SimOptions
from .playback import Timing
from .state import SimulatorState


class Simulator(SimulatorState):
    """A fake Genspark backend with everything it saw and stored, for one test or one demo.

    ``answer_delay`` sleeps before every answer delta so a stream can be watched mid-way;
    ``task_poll_interval`` spaces task-status progress rounds; during an ``answer_delay`` longer
    than ``heartbeat_interval`` a keep-alive goes out every ``heartbeat_interval`` (an
    ``_updatetime`` heartbeat on copilot, an ``agent_notification`` on ask_proxy, §12.4.1);
    ``answer_delay_slow`` is how long the ``slow-first-byte`` scenario keeps the client waiting.

    Keyword options choose the [I] readings of genspark-protocol.md §12 (options.py documents
    each: ``require_origin``, ``max_concurrent``, ``concurrency_penalty``, ``rate_per_minute``,
    ``foreign_project``, ``resent_history``, ``adopt_unknown_projects``, ``readable_reasoning``,
    ``search_variant``, ``five_hour_budget``, ``credits``, ``image_captcha_strict``,
    ``image_inline``); ``sim.options`` may be changed between requests.
    """

    def __init__(
        self,
        answer_delay: float = 0.0,
        task_poll_interval: float = 0.05,
        heartbeat_interval: float = 0.5,
        answer_delay_slow: float = 3.0,
        **options: Any,
    ) -> None:
        super().__init__()
        self.answer_delay = answer_delay
        self.task_poll_interval = task_poll_interval
        self.heartbeat_interval = heartbeat_interval
        self.answer_delay_slow = answer_delay_slow
        self.options = SimOptions(**options)
        self.backend = SimulatedBackend(self, self.options)
        self.app = create_app(self)

    @property
    def timing(self) -> Timing:
        # Read on every stream, so a test may change the delays between requests.
        return Timing(self.answer_delay, self.task_poll_interval, self.heartbeat_interval)


async def serve_simulator(
    sim: Simulator,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``sim.app`` until cancelled; ``nursery.start`` returns the base URL, e.g.
    ``"http://127.0.0.1:40123"`` (port 0 picks a free port). IPv6 hosts go in brackets: ``[::1]``."""
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    # Our own logger, not hypercorn's shared "hypercorn.error": the service under test may run
    # hypercorn in this process too, and configures that one.
    config.errorlog = logging.getLogger("genspark2api.simulator.http")
    config.graceful_timeout = 0.5
    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(partial(serve, sim.app, config))
        task_status.started(binds[0])
