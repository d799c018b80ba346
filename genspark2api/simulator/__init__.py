"""A faithful fake of the Genspark.ai backend, served over real HTTP (genspark-protocol.md §9).

Usage in a trio test::

    sim = Simulator()
    base_url = await nursery.start(serve_simulator, sim, "127.0.0.1", 0)
    ...  # point the service at base_url, use cookies like "session_id=rate-limited-1"
    assert sim.requests_to("/api/copilot/ask")[0].session_id == "rate-limited-1"

Alone: ``python -m genspark2api.simulator --port 7056``. The cookie prefixes that select abnormal
upstream behaviour are listed in scenarios.py, backend.py (copilot) and agent.py (ask_proxy);
the switches for the inferred [I] readings of §12 are ``Simulator(**options)`` (options.py).

Two protocol generations: ``/api/copilot/ask`` (G1, §2–§3, unchanged) and
``/api/agent/ask_proxy`` as genspark-protocol.md §12 describes it (September 2026).

Module map: ``events`` (wire shapes), ``answers`` (the fake model), ``models`` (Genspark's own
model ids and coercions, §12.8), ``streams`` (G1 event scripts, polling), ``agent_streams``
(ask_proxy scripts, ``_event_index``, keepalives), ``backend`` (G1 + account calls),
``agent`` (ask_proxy decisions), ``accounts`` (per-account concurrency, rate, quota, credits),
``options`` (the §12 switches), ``scenarios`` (cookie -> condition, canned error bodies),
``playback`` (timing), ``app`` (Quart routes), ``server`` (Simulator, serve_simulator),
``structured`` (JSON answers to a structured-output instruction, issue #11).
"""

from .answers import key_of_storage_url, storage_url_for
from .options import SimOptions
from .scenarios import Scenario, scenario_for
from .server import Simulator, serve_simulator
from .state import (
    ClosedStream,
    FileDownload,
    MediaTask,
    Project,
    RecordedRequest,
    TaskOutcome,
)

__all__ = [
    "ClosedStream",
    "FileDownload",
    "MediaTask",
    "Project",
    "RecordedRequest",
    "Scenario",
    "SimOptions",
    "Simulator",
    "TaskOutcome",
    "key_of_storage_url",
    "scenario_for",
    "serve_simulator",
    "storage_url_for",
]
