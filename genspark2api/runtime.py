"""The service's shared state, built once at start and passed down (no globals).

`Runtime` owns the upstream client, the cookie pool, the failover runner, the conversation
bindings, the media links (media_links.py), the state store (pool/store.py: what survives a
restart with DATA_DIR) and the stored responses, the token counter, the metrics and the client
keys' usage (metrics.py, client_keys.py) and the app's nursery, where
background work runs with a deadline and its errors caught: an exception escaping into the app
nursery would take the server down (python-stack.md §2.3).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import trio

from .client_keys import KeyUsage
from .core.media_links import MediaLinks, attach_links
from .core.usage import TokenCounter, default_data_dir
from .errors import ApiError, upstream_error
from .looplag import LoopLag
from .metrics import Metrics
from .pool.bindings import ConversationBindings
from .pool.cookies import CookiePool, CooldownPolicy
from .pool.failover import FailoverRunner
from .pool.store import (
    ResponseStore,
    StateStore,
    attach_bindings,
    attach_pool,
    open_store,
)
from .settings import Settings
from .upstream.catalog import Catalog
from .upstream.client import GensparkClient

log = logging.getLogger("genspark2api")


def read_cookie_file(path: str) -> list[str]:
    """`GS_COOKIE_FILE`: one cookie per line; blank lines and `#` comments skipped.

    A line may carry a proxy and a label: `cookie | proxy=socks5://host:1080 | label=alice`
    (pool/cookies.py `parse_cookie_spec`)."""
    entries = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            entries.append(line)
    return entries


def cookie_entries(settings: Settings) -> list[str]:
    entries = list(settings.cookies)
    if settings.cookie_file:
        entries += read_cookie_file(settings.cookie_file)
    return entries


class Runtime:
    def __init__(
        self,
        settings: Settings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
        counter: TokenCounter | None = None,
        store: StateStore | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        # Opened first: a database that cannot be used stops the start (StoreError) before anything runs.
        self.store = store if store is not None else open_store(settings.data_dir, settings.data_dir_fallback)
        self.client = GensparkClient(settings, transport=transport)
        policy = CooldownPolicy(rate_limit_seconds=settings.rate_limit_lock, network_seconds=settings.network_cooldown)
        self.pool = CookiePool(
            cookie_entries(settings), clock=clock, policy=policy, max_in_flight=settings.cookie_max_in_flight
        )
        self.client.proxy_of = self.pool.proxy_for  # per-cookie proxies (GS_COOKIE_FILE `| proxy=…`)
        self.catalog = Catalog(settings.extra_models, settings.unknown_model_moa, settings.model_aliases)
        self.key_usage = KeyUsage(settings.key_rpm_limits, clock=clock)
        known_models = frozenset(m for m, _ in self.catalog.listed()) | frozenset(self.catalog.aliases())
        self.metrics = Metrics(self.pool, self.key_usage, known_models)
        self.loop_lag = LoopLag()   # watched from the app nursery (api/app.py startup)
        self.runner = FailoverRunner(
            self.pool, max_attempts=settings.max_attempts, hedge_after=settings.hedge_after,
            pool_wait=settings.pool_wait, clock=clock, observer=self.metrics, behind=self.loop_lag.behind,
        )
        self.bindings = ConversationBindings(clock=clock)
        self.media_links = MediaLinks(settings.media_link_ttl)  # MEDIA_URLS=proxy
        # api/responses.py: what `store` keeps for GET /v1/responses/{id} and previous_response_id.
        self.responses = ResponseStore(self.store, clock=clock, memory_max=settings.responses_store_max,
                                       memory_bytes=settings.responses_store_max_bytes)
        # What came back from DATA_DIR, for the start-up log (cli.announce).
        self.restored = [self.store.description, attach_pool(self.store, self.pool, clock)]
        if self.store.persistent:
            self.restored.append(f"{attach_bindings(self.store, self.bindings)} conversation binding(s) and "
                                 f"{attach_links(self.store, self.media_links, self.pool)} media link(s) restored")
        self.counter = counter or TokenCounter(data_dir=default_data_dir(), background=True)
        self.nursery: trio.Nursery | None = None
        self.large_body_slots = trio.CapacityLimiter(settings.large_body_concurrency)  # connection.py
        self.shutting_down = False
        self.stopping = trio.Event()  # set with shutting_down, for those who wait (connection.py)
        self._answers: set[trio.CancelScope] = set()  # the upstream work of answers in flight
        self._answers_end: float | None = None        # when they end, once shutdown has begun
        self.started = clock()
        self._cookie_file_mtime = self._mtime()

    # ------------------------------------------------------------------ background work

    def background(self, name: str, fn: Callable[[], Awaitable[object]], *, timeout: float = 60.0) -> None:
        """Run `fn` in the app nursery with a deadline; errors are logged, never raised."""
        if self.nursery is None:
            log.warning("background task %s dropped: the app is not serving", name)
            return

        async def guarded() -> None:
            try:
                with trio.fail_after(timeout):
                    await fn()
            except Exception as exc:
                log.warning("background task %s failed: %s: %s", name, type(exc).__name__, exc)

        self.nursery.start_soon(guarded)

    # ------------------------------------------------------------------ shutdown

    def track(self, scope: trio.CancelScope) -> None:
        self._answers.add(scope)
        if self._answers_end is not None:
            # Began after SIGTERM (it was still being prepared then): the same end as the rest.
            scope.deadline = min(scope.deadline, self._answers_end)

    def untrack(self, scope: trio.CancelScope) -> None:
        self._answers.discard(scope)

    def begin_shutdown(self, grace: float) -> None:
        """SIGTERM: answers in flight get `grace` seconds, then end with a clear error event.

        hypercorn waits its own graceful timeout for in-flight requests and then cuts them, which a
        client sees as a truncated body; ending them a little earlier lets every stream close with
        an error event and `[DONE]` instead (python-stack.md §3).
        """
        self.shutting_down = True
        self.stopping.set()
        # A deadline on each answer's scope, not a task that cancels them later: an answer still
        # being prepared at this moment (not yet tracked) gets the same end when it starts.
        self._answers_end = trio.current_time() + grace
        for scope in list(self._answers):
            scope.deadline = min(scope.deadline, self._answers_end)

    def ended_early(self) -> ApiError:
        """The error for an answer whose producer stopped without a result."""
        if self.shutting_down:
            return ApiError(503, "The service is shutting down; send the request again.",
                            type="server_error", code="service_shutting_down")
        return upstream_error(502, "The upstream answer ended unexpectedly.", "upstream_truncated")

    # ------------------------------------------------------------------ cookie file reload

    def _mtime(self) -> float | None:
        path = self.settings.cookie_file
        try:
            return os.stat(path).st_mtime if path else None
        except OSError:
            return None

    def reload_cookies(self, reason: str) -> None:
        # Taken before reading, so the watcher neither repeats this reload nor misses a later edit.
        self._cookie_file_mtime = self._mtime()
        try:
            entries = cookie_entries(self.settings)
        except (OSError, ValueError) as exc:  # ValueError: not UTF-8; never let it stop the watcher
            log.error("cookie reload (%s) failed, pool unchanged: %s", reason, exc)
            return
        try:
            added, removed = self.pool.reload(entries)
        except ValueError as exc:  # a bad `| proxy=…` / `| label=…` (the message masks the cookie)
            log.error("cookie reload (%s) refused, pool unchanged: %s", reason, exc)
            return
        log.info("cookie reload (%s): %d added, %d removed, %d in pool", reason, added, removed, len(self.pool))
        for line in self.pool.summary().splitlines():
            log.info("  %s", line)

    async def watch_cookie_file(self, interval: float = 2.0) -> None:
        """Re-read `GS_COOKIE_FILE` when it changes (SIGHUP does it at once, see cli)."""
        if not self.settings.cookie_file:
            return
        while True:
            await trio.sleep(interval)
            mtime = self._mtime()
            if mtime != self._cookie_file_mtime:
                self._cookie_file_mtime = mtime
                self.reload_cookies("file changed")

    async def aclose(self) -> None:
        await self.client.aclose()
        # The last changes reach the database; the writer thread is joined off the event loop.
        await trio.to_thread.run_sync(self.store.close)
