"""Failover and hedging over the cookie pool: the one retry loop of the service.

Chat, images and videos all run their upstream work as an *attempt*: an async function that gets
a cookie lease and emits answer events. `FailoverRunner.run` owns every attempt of one request in
one nursery:

- Events before the first answer-bearing one (project id, model info) are held per attempt, so an
  in-band error at the start of a 200 stream can still move the request to another cookie
  (openai-compat.md §2.5 item 20, CPA's "stream bootstrap buffering").
- The first attempt to produce an answer-bearing event wins: its held events and everything after
  go down the channel; every other attempt is cancelled and its upstream connection closed.
- With `hedge_after` > 0 a second attempt starts on another cookie when the first has produced
  nothing answer-bearing by then (nobody else does this; trio's nurseries make it cheap). When
  the hedge wins, the silent attempt it raced counts as a stall against its cookie (`upstream_stalled`).
- With `first_event_timeout` > 0 an attempt that produces nothing answer-bearing in that time
  fails as a stall (NETWORK: its cookie cools down, the next cookie is tried). The idle timeout
  alone allowed a silent cookie 120 s per request (issue #10 item 7).
- Both silence timers are the supervisor's, and both wait while the service's own event loop
  runs late (`behind`, looplag.py): under a burst an attempt's events may sit unread in our
  socket, and a hedge or a stall then would add load and blame a healthy cookie for our delay.
- An attempt cancelled without an outcome (a lost race, the client left) is released as
  cancelled: neither credited nor blamed.
- After the win, a failure is reported as `Failed` (the client gets an error event); before it,
  the next cookie is tried, up to `max_attempts`.
- With `hold_until_done` (non-stream answers, where the client sees nothing before the end) the
  winner's events are held until it completes, so an answer that breaks off midway still moves
  to another cookie instead of failing the request.

The outcome always goes down the channel as exactly one `Completed` or `Failed` item. Each
attempt's outcome, each failover and each hedge is also told to a `RunObserver` (the metrics).
"""

from __future__ import annotations

import collections
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from ..errors import ApiError, upstream_error
from ..upstream.classify import EMPTY_ANSWER, Failure, FailureKind
from ..upstream.events import AnswerEvent, UpstreamFailure, is_answer_bearing
from .cookies import CookiePool, CookieState, Lease, PoolUnavailable

log = logging.getLogger("genspark2api.failover")

Emit = Callable[[AnswerEvent], Awaitable[None]]
Attempt = Callable[[Lease, Emit], Awaitable[None]]


class RunObserver(Protocol):
    """What the runner reports as it goes (metrics.py implements it; pool/ imports no metrics)."""

    def attempt(self, outcome: str) -> None:
        """One attempt ended: `success`, `cancelled`, or the FailureKind value of its failure."""

    def failover(self) -> None:
        """A request moved to another cookie after an attempt failed."""

    def hedge(self) -> None:
        """A second attempt started because the first stayed silent."""

    def postponed(self, check: str) -> None:
        """A due silence check (`hedge` or `stall`) waited: our own event loop ran late (looplag.py)."""


class _Unobserved:
    def attempt(self, outcome: str) -> None:
        pass

    def failover(self) -> None:
        pass

    def hedge(self) -> None:
        pass

    def postponed(self, check: str) -> None:
        pass


@dataclass(frozen=True, slots=True)
class Won:
    """The attempt on `lease` produced the first answer-bearing event; its events follow."""

    lease: Lease


@dataclass(frozen=True, slots=True)
class Completed:
    pass


@dataclass(frozen=True, slots=True)
class Failed:
    error: ApiError
    after_answer: bool = False


RunItem = AnswerEvent | Won | Completed | Failed


async def _put(send: trio.MemorySendChannel, item: Any) -> None:
    """Queue an item for the consumer without a schedule point when there is room.

    The channels are unbounded, so this never waits: the attempt runs on to its next upstream
    read (itself a checkpoint), and the consumer takes whatever queued meanwhile in one go. An
    `await send.send` per item cost a task switch per upstream event. A bounded channel that is
    full still waits."""
    try:
        send.send_nowait(item)
    except trio.WouldBlock:
        await send.send(item)


STALL_RECHECK = 1.0   # seconds: a stall check postponed (our loop ran late) is made again this soon


def stalled(seconds: float, why: str) -> Failure:
    """A cookie that said nothing answer-bearing in time: network-ish (a short, escalating cooldown)."""
    return Failure(FailureKind.NETWORK, "upstream_stalled", f"Genspark sent no answer within {seconds:g} s ({why}).")


@dataclass(slots=True)
class _RunState:
    winner: Lease | None = None
    done: bool = False
    started: int = 0
    last_start: float = 0.0
    failures: list[Failure] = field(default_factory=list)
    running: dict[int, trio.CancelScope] = field(default_factory=dict)
    changed: trio.Event = field(default_factory=trio.Event)
    unavailable: PoolUnavailable | None = None
    tried: set[str] = field(default_factory=set)
    hold_until_done: bool = False
    hedge: bool = True
    capped: bool = True
    pool_wait: float = 0.0
    first_event_timeout: float = 0.0
    hedged_over: set[int] = field(default_factory=set)   # silent attempts a hedge was started against
    # Per attempt token: the scope a stall cancels, and when (while nothing answer-bearing came).
    first_event: dict[int, trio.CancelScope] = field(default_factory=dict)
    first_due: dict[int, float] = field(default_factory=dict)


class FailoverRunner:
    def __init__(self, pool: CookiePool, *, max_attempts: int = 0, hedge_after: float = 0.0,
                 pool_wait: float = 0.0, clock: Callable[[], float] = time.time,
                 observer: RunObserver | None = None, behind: Callable[[], bool] = lambda: False) -> None:
        self.pool = pool
        # Whether our own event loop runs late (looplag.LoopLag.behind): then an attempt's silence
        # may be ours, and a hedge would only add load and blame its cookie.
        self.behind = behind
        self._postponed_logged = -math.inf
        self.observer: RunObserver = observer or _Unobserved()
        self.clock = clock
        self.max_attempts = max_attempts
        self.hedge_after = hedge_after
        self.pool_wait = pool_wait          # how long an attempt waits for a cookie below its cap
        self._waiters: collections.deque[trio.Event] = collections.deque()   # requests waiting for a free slot

    def _lease_freed(self) -> None:
        """A release: wake the longest-waiting request for a cookie with a free in-flight slot."""
        self._wake_after(None)

    def _wake_after(self, waiter: trio.Event | None) -> None:
        """Wake the first waiter after `waiter` (from the front with None) not woken already."""
        found = waiter is None
        for other in self._waiters:
            if found and not other.is_set():
                other.set()
                return
            found = found or other is waiter

    async def _acquire(self, state: _RunState, prefer: str | None, *, wait: bool) -> Lease | None:
        """A lease, waiting up to `pool_wait` while every usable cookie is at its cap (§12.5 E18).

        Waiters queue in arrival order and each release wakes one, the longest waiting; one that
        cannot use what was freed (a cookie it already tried, say) passes the wake on to the next,
        so it never stops at a waiter that cannot take it. Waking every waiter on every release
        cost each request a dozen fruitless retries at saturation and let a waiter starve until
        its 429. Every waiter also looks again every second, since a cooldown ending or a cookie
        file reload frees capacity without a release (and so a lost wake costs a second at most).
        """
        deadline = trio.current_time() + (state.pool_wait if wait else 0.0)
        waiter: trio.Event | None = None
        try:
            while True:
                try:
                    return self.pool.acquire(exclude=state.tried, prefer=prefer, capped=state.capped)
                except PoolUnavailable as exc:
                    state.unavailable = exc
                    if exc.reason != "busy" or trio.current_time() >= deadline:
                        if waiter is not None and waiter.is_set():
                            self._wake_after(waiter)   # leaving with a wake unused: the next may use it
                        return None
                if waiter is None:
                    waiter = trio.Event()
                    self._waiters.append(waiter)
                elif waiter.is_set():
                    self._wake_after(waiter)   # woken, but what was freed is not for us: pass it on
                    index = self._waiters.index(waiter)
                    waiter = self._waiters[index] = trio.Event()   # same place in the queue
                with trio.move_on_at(min(deadline, trio.current_time() + 1.0)):
                    await waiter.wait()
        finally:
            if waiter is not None:
                self._waiters.remove(waiter)

    async def run(self, attempt: Attempt, send: trio.MemorySendChannel, *, prefer: str | None = None,
                  hold_until_done: bool = False, first_event_timeout: float = 0.0, hedge: bool = True,
                  capped: bool = True, pool_wait: float | None = None) -> None:
        """Run attempts until one completes or nothing is left; never raises but Cancelled.

        `first_event_timeout` (0 = none): chat passes UPSTREAM_FIRST_EVENT_TIMEOUT; generations,
        silent for their whole run by nature, pass nothing. `hedge=False` (generations): a hedged
        duplicate would submit paid tasks on a second account. `capped=False` (generations): the
        leases do not count against COOKIE_MAX_IN_FLIGHT (pool.CookiePool.acquire).
        """
        state = _RunState(hold_until_done=hold_until_done, first_event_timeout=first_event_timeout, hedge=hedge,
                          capped=capped, pool_wait=self.pool_wait if pool_wait is None else pool_wait)
        async with send:
            try:
                async with trio.open_nursery() as nursery:
                    await self._supervise(attempt, send, prefer, state, nursery)
                    nursery.cancel_scope.cancel()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the consumer went away; the attempts were cancelled with the nursery

    async def _supervise(self, attempt: Attempt, send: trio.MemorySendChannel, prefer: str | None,
                         state: _RunState, nursery: trio.Nursery) -> None:
        limit = self.max_attempts or max(1, len(self.pool))

        async def start_next(hedge: bool) -> bool:
            if state.started >= limit:
                return False
            lease = await self._acquire(state, prefer if state.started == 0 else None, wait=not hedge)
            if lease is None:
                return False
            state.tried.add(lease.key)
            state.started += 1
            state.last_start = trio.current_time()
            if hedge:
                log.info("hedging: second attempt on %s", lease.masked)
                state.hedged_over.update(state.running)
                self.observer.hedge()
            # Registered before the task runs, so the loop below never sees a gap.
            state.running[lease.token] = trio.CancelScope()
            state.first_event[lease.token] = trio.CancelScope()
            if state.first_event_timeout > 0:
                state.first_due[lease.token] = trio.current_time() + state.first_event_timeout
            nursery.start_soon(self._attempt, attempt, lease, send, state)
            return True

        if not await start_next(False):
            await send.send(Failed(self._exhausted(state)))
            return
        hedging = self.hedge_after > 0 and state.hedge
        while not state.done:
            if not state.running and state.winner is None:
                last = state.failures[-1] if state.failures else EMPTY_ANSWER
                if not last.retry_elsewhere or not await start_next(False):
                    await send.send(Failed(self._exhausted(state)))
                    return
                self.observer.failover()
                continue
            timeout = self._check_stalls(state)
            if hedging and state.winner is None and len(state.running) == 1 and state.started < limit:
                until_hedge = state.last_start + self.hedge_after - trio.current_time()
                if until_hedge <= 0:
                    if self._postpone("hedge"):
                        state.last_start = trio.current_time()  # ask again one HEDGE_AFTER later
                        continue
                    hedging = await start_next(True)  # nothing left to hedge on: stop trying
                    continue
                timeout = min(timeout, until_hedge)
            state.changed = trio.Event()
            with trio.move_on_after(timeout):
                await state.changed.wait()

    def _check_stalls(self, state: _RunState) -> float:
        """Stop the attempts silent past UPSTREAM_FIRST_EVENT_TIMEOUT (each then fails as
        `upstream_stalled`); the seconds until the next one is due."""
        now = trio.current_time()
        for token, due in list(state.first_due.items()):
            if due <= now:
                if self._postpone("stall"):
                    state.first_due[token] = now + STALL_RECHECK
                else:
                    del state.first_due[token]
                    state.first_event[token].cancel()
        return min(state.first_due.values(), default=math.inf) - now

    def _postpone(self, check: str) -> bool:
        """Whether a due silence check waits because our own loop runs late (told once a burst)."""
        if not self.behind():
            return False
        self.observer.postponed(check)
        now = trio.current_time()
        if now - self._postponed_logged >= 10.0:   # one line per burst, not one per request
            self._postponed_logged = now
            log.warning("hedges and stall checks postponed: the service's own event loop is running late "
                        "(a burst of requests?); a silent attempt may only be waiting for us to read it")
        return True

    async def _attempt(self, attempt: Attempt, lease: Lease, send: trio.MemorySendChannel, state: _RunState) -> None:
        scope = state.running[lease.token]
        held: list[AnswerEvent] = []
        committed = False  # this attempt's events go down the channel (no failover any more)
        released = False
        outcome: str | None = None  # told to the observer once, in `finally`
        # Until its first answer-bearing event; lifted by emit.
        first_event = state.first_event[lease.token]   # cancelled by the supervisor on a stall

        def release(failure: Failure | None, *, cancelled: bool = False) -> None:
            nonlocal released
            if not released:
                released = True
                self.pool.release(lease, failure, cancelled=cancelled)
                self._lease_freed()

        async def commit() -> None:
            nonlocal committed
            committed = True
            await _put(send, Won(lease))
            for item in held:
                await _put(send, item)
            held.clear()

        async def emit(event: AnswerEvent) -> None:
            if committed:
                await _put(send, event)
                return
            if state.winner is not None and state.winner is not lease:
                scope.cancel()  # another attempt won while this one was mid-flight
                await trio.lowlevel.checkpoint()
                return
            held.append(event)
            if is_answer_bearing(event):
                state.first_due.pop(lease.token, None)
            if state.winner is None and is_answer_bearing(event):
                state.winner = lease
                for token, other in list(state.running.items()):
                    if token != lease.token:
                        other.cancel()
                if not state.hold_until_done:
                    await commit()

        async def failed(failure: Failure, *, blame_cookie: bool) -> None:
            release(failure if blame_cookie else None)
            if committed:
                await send.send(Failed(_mid_stream_error(failure), after_answer=True))
                state.done = True
                return
            if state.winner is lease:
                state.winner = None  # nothing reached the client: the next cookie may still answer
            state.failures.append(failure)

        try:
            with scope:
                try:
                    with first_event:
                        await attempt(lease, emit)
                    if first_event.cancelled_caught:
                        raise UpstreamFailure(stalled(state.first_event_timeout, "UPSTREAM_FIRST_EVENT_TIMEOUT"))
                    if state.winner is not lease:
                        raise UpstreamFailure(EMPTY_ANSWER)
                    if not committed:
                        await commit()
                    release(None)
                    outcome = "success"
                    await _put(send, Completed())
                    state.done = True
                except UpstreamFailure as exc:
                    failure = exc.failure
                    outcome = failure.kind.value
                    log.warning("attempt on %s failed: %s (%s)", lease.masked, failure.code, failure.detail)
                    await failed(failure, blame_cookie=True)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    release(None, cancelled=True)  # the consumer went away mid-answer
                    state.done = True
                except Exception as exc:  # a bug of ours: never blame the cookie, never try all others
                    log.exception("attempt on %s crashed", lease.masked)
                    outcome = "internal_error"
                    detail = f"internal error: {type(exc).__name__}: {exc}"
                    await failed(Failure(FailureKind.UPSTREAM_WIDE, "internal_error", detail), blame_cookie=False)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            state.done = True
        finally:
            if lease.token in state.hedged_over and state.winner is not None and state.winner is not lease:
                # It stayed silent long enough to be hedged and then lost: evidence against it.
                stall = stalled(self.hedge_after, "a hedged attempt on another cookie answered first")
                if not released:
                    outcome = stall.kind.value
                release(stall)
            release(None, cancelled=True)  # cancelled losers and cancelled requests: no outcome
            self.observer.attempt(outcome or "cancelled")
            state.running.pop(lease.token, None)
            state.first_event.pop(lease.token, None)
            state.first_due.pop(lease.token, None)
            state.changed.set()

    def _exhausted(self, state: _RunState) -> ApiError:
        """The answer when no attempt succeeded (openai-compat.md §5 item 4)."""
        failures = state.failures
        last = failures[-1] if failures else None
        if not failures and state.unavailable is not None and state.unavailable.reason == "busy":
            return upstream_error(
                429,
                f"Every Genspark account of this service is busy (COOKIE_MAX_IN_FLIGHT requests each) and none "
                f"became free within {state.pool_wait:g} s (POOL_WAIT_SECONDS); retry shortly.",
                "accounts_busy",
                retry_after=5.0,
            )
        if last is not None and last.kind in (FailureKind.UPSTREAM_WIDE, FailureKind.REQUEST):
            return error_for_failure(last)
        overloaded = next((f for f in failures if f.kind is FailureKind.OVERLOADED), None)
        if overloaded is not None:
            return upstream_error(503, overloaded.detail, overloaded.code)
        statuses = self.pool.snapshot()
        cooling = [s for s in statuses if s.state == CookieState.COOLING and s.until is not None]
        healthy = [s for s in statuses if s.state == CookieState.HEALTHY]
        if not statuses:
            return upstream_error(503, "No Genspark cookie is configured (set GS_COOKIE or GS_COOKIE_FILE).", "no_account_configured")
        if not healthy and cooling:
            earliest = self.pool.earliest_recovery()
            wait = max(1.0, earliest - self.clock()) if earliest else None
            reason = f" Last upstream signal: {last.detail}" if last else ""
            return upstream_error(
                429,
                f"Every Genspark account of this service is cooling down; retry after {int(wait or 60)} s.{reason}",
                "accounts_cooling",
                retry_after=wait,
            )
        if not healthy:
            return upstream_error(
                503,
                "No usable Genspark account: every configured cookie is logged out or was rejected upstream; "
                "the operator must renew GS_COOKIE.",
                "no_usable_account",
            )
        if last is not None:
            return error_for_failure(last)
        return upstream_error(502, "Genspark gave no answer.", "upstream_failed")


def error_for_failure(failure: Failure) -> ApiError:
    """The client's answer for one classified failure, before anything was streamed."""
    if failure.kind is FailureKind.REQUEST:
        return ApiError(400, failure.detail, type="invalid_request_error", code=failure.code)
    if failure.kind is FailureKind.UPSTREAM_WIDE:
        status = 500 if failure.code == "internal_error" else 503
        return ApiError(status, failure.detail, type="upstream_error" if status == 503 else "server_error", code=failure.code)
    if failure.code == "upstream_timeout":
        return upstream_error(504, failure.detail, failure.code)
    return upstream_error(502, failure.detail, failure.code)


def _mid_stream_error(failure: Failure) -> ApiError:
    return upstream_error(502, f"The upstream answer broke off: {failure.detail}", failure.code)
