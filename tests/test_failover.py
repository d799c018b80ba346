"""The failover runner with fake attempts: no network, the pool on a fake wall clock, trio's
autojump clock for hedging and slow attempts."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Awaitable, Callable

import pytest
import trio
from conftest import FakeClock

from genspark2api.pool.cookies import (
    CookiePool,
    CookieState,
    CooldownPolicy,
    Lease,
    cookie_key,
    normalize_cookie_entry,
)
from genspark2api.pool.failover import Completed, Failed, FailoverRunner, Won, _RunState
from genspark2api.upstream.classify import Failure, FailureKind
from genspark2api.upstream.events import (
    AnswerDone,
    ModelsReported,
    ProjectStarted,
    TextDelta,
    UpstreamFailure,
)

K = FailureKind
COOKIES = ["alpha-0000-cookie", "bravo-1111-cookie", "charlie-2222-cookie", "delta-3333-cookie"]
KEY = {c: cookie_key(normalize_cookie_entry(c) or "") for c in COOKIES}
NAME = {v: k for k, v in KEY.items()}

Emit = Callable[[object], Awaitable[None]]


def failure(kind: FailureKind, reset_at: float | None = None) -> UpstreamFailure:
    return UpstreamFailure(Failure(kind, f"upstream_{kind}", f"{kind} signal", reset_at))


async def answer(emit: Emit, text: str = "hi") -> None:
    await emit(ProjectStarted("p"))
    await emit(TextDelta(text))
    await emit(AnswerDone())


def make(n: int = 3, **runner: float) -> tuple[FailoverRunner, CookiePool, FakeClock]:
    clock = FakeClock()
    pool = CookiePool(COOKIES[:n], clock=clock, policy=CooldownPolicy(rate_limit_seconds=600, network_seconds=30))
    return FailoverRunner(pool, clock=clock, **runner), pool, clock


async def run(runner: FailoverRunner, attempt, **kwargs) -> list[object]:
    send, recv = trio.open_memory_channel(math.inf)
    await runner.run(attempt, send, **kwargs)
    return [item async for item in recv]


def state_of(pool: CookiePool, cookie: str):
    return next(s for s in pool.snapshot() if s.key == KEY[cookie])


def scripted(behaviour: dict[str, Callable[[Emit], Awaitable[None]]], tried: list[str] | None = None):
    """An attempt function: what each cookie does, and the order cookies were tried in."""

    async def attempt(lease: Lease, emit: Emit) -> None:
        name = NAME[lease.key]
        if tried is not None:
            tried.append(name)
        await behaviour.get(name, answer)(emit)

    return attempt


def raising(kind: FailureKind, reset_at: float | None = None):
    async def behave(emit: Emit) -> None:
        await emit(ProjectStarted("orphan"))
        raise failure(kind, reset_at)

    return behave


# ------------------------------------------------------------------------------ winning


async def test_held_events_follow_the_winner_in_order() -> None:
    runner, pool, _ = make(1)

    async def behave(emit: Emit) -> None:
        await emit(ProjectStarted("p1"))
        await emit(ModelsReported(("m",)))
        await emit(TextDelta("a"))
        await emit(TextDelta("b"))
        await emit(AnswerDone())

    items = await run(runner, scripted({COOKIES[0]: behave}))
    assert items == [
        Won(items[0].lease), ProjectStarted("p1"), ModelsReported(("m",)), TextDelta("a"), TextDelta("b"),
        AnswerDone(), Completed(),
    ]
    assert state_of(pool, COOKIES[0]).successes == 1 and state_of(pool, COOKIES[0]).in_flight == 0


async def test_a_failure_before_the_answer_moves_on_and_its_events_are_dropped() -> None:
    runner, pool, _ = make(2)
    tried: list[str] = []
    items = await run(runner, scripted({COOKIES[0]: raising(K.RATE_LIMITED)}, tried))
    assert tried == COOKIES[:2]
    assert ProjectStarted("orphan") not in items
    assert isinstance(items[0], Won) and items[0].lease.key == KEY[COOKIES[1]]
    assert items[-1] == Completed()
    assert state_of(pool, COOKIES[0]).state is CookieState.COOLING


async def breaks_off(emit: Emit) -> None:
    await emit(TextDelta("half an"))
    raise failure(K.NETWORK)


async def test_a_failure_after_the_answer_is_reported_not_retried() -> None:
    runner, pool, _ = make(2)
    tried: list[str] = []
    items = await run(runner, scripted({COOKIES[0]: breaks_off}, tried))
    assert tried == [COOKIES[0]]
    assert TextDelta("half an") in items
    assert isinstance(items[-1], Failed) and items[-1].after_answer and items[-1].error.status == 502


async def test_hold_until_done_fails_over_even_after_the_answer_began() -> None:
    runner, pool, _ = make(2)
    tried: list[str] = []
    items = await run(runner, scripted({COOKIES[0]: breaks_off}, tried), hold_until_done=True)
    assert tried == COOKIES[:2]
    assert TextDelta("half an") not in items  # the client never sees the broken answer
    assert [type(i) for i in items] == [Won, ProjectStarted, TextDelta, AnswerDone, Completed]
    assert items[0].lease.key == KEY[COOKIES[1]]
    assert state_of(pool, COOKIES[0]).state is CookieState.COOLING


async def test_an_attempt_without_answer_counts_as_empty_and_moves_on() -> None:
    runner, pool, _ = make(2)

    async def nothing(emit: Emit) -> None:
        await emit(ProjectStarted("p"))

    items = await run(runner, scripted({COOKIES[0]: nothing}))
    assert items[-1] == Completed()
    assert state_of(pool, COOKIES[0]).reason == "upstream_empty_answer"


# ------------------------------------------------------------------------------ what stops the loop


@pytest.mark.parametrize(
    ("kind", "status"), [(K.UPSTREAM_WIDE, 503), (K.REQUEST, 400)]
)
async def test_upstream_wide_and_request_failures_stop_at_once_and_blame_nobody(kind: FailureKind, status: int) -> None:
    runner, pool, _ = make(3)
    tried: list[str] = []
    items = await run(runner, scripted({COOKIES[0]: raising(kind)}, tried))
    assert tried == [COOKIES[0]]
    assert isinstance(items[-1], Failed) and items[-1].error.status == status
    assert all(s.state is CookieState.HEALTHY and s.failures == 0 for s in pool.snapshot())


async def test_a_crash_of_ours_is_a_500_and_blames_nobody() -> None:
    runner, pool, _ = make(2)
    tried: list[str] = []

    async def crash(emit: Emit) -> None:
        raise ZeroDivisionError("oops")

    items = await run(runner, scripted({COOKIES[0]: crash}, tried))
    assert tried == [COOKIES[0]]
    assert isinstance(items[-1], Failed) and items[-1].error.status == 500
    assert items[-1].error.code == "internal_error"
    assert all(s.failures == 0 for s in pool.snapshot())


async def test_max_attempts_caps_the_cookies_tried() -> None:
    runner, pool, _ = make(3, max_attempts=1)
    tried: list[str] = []
    items = await run(runner, scripted({COOKIES[0]: raising(K.ACCOUNT_DEAD)}, tried))
    assert tried == [COOKIES[0]]
    assert isinstance(items[-1], Failed) and items[-1].error.code == "upstream_account_dead"
    assert items[-1].error.status not in (401, 403)


# ------------------------------------------------------------------------------ the pool's answer


async def test_retry_after_is_the_earliest_recovery() -> None:
    runner, pool, clock = make(2)
    behaviour = {
        COOKIES[0]: raising(K.RATE_LIMITED),                             # 600 s
        COOKIES[1]: raising(K.SESSION_LIMIT, reset_at=clock() + 100.0),  # upstream said 100 s
    }
    items = await run(runner, scripted(behaviour))
    error = items[-1].error
    assert (error.status, error.code, error.headers["Retry-After"]) == (429, "accounts_cooling", "100")
    clock.advance(30)
    items = await run(runner, scripted(behaviour))  # nothing is even tried now
    assert items[-1].error.headers["Retry-After"] == "70"
    clock.advance(70)
    assert await run(runner, scripted({})) and state_of(pool, COOKIES[1]).successes == 1


async def test_dead_cookies_stay_dead() -> None:
    runner, pool, clock = make(2)
    tried: list[str] = []
    behaviour = {COOKIES[0]: raising(K.ACCOUNT_DEAD)}
    for _ in range(5):
        items = await run(runner, scripted(behaviour, tried))
        assert items[-1] == Completed()
        clock.advance(7 * 86400.0)
        pool.reload(COOKIES[:2])  # a reload with the same entry does not revive it
    assert Counter(tried) == {COOKIES[0]: 1, COOKIES[1]: 5}
    assert state_of(pool, COOKIES[0]).state is CookieState.DEAD


async def test_none_alive_is_503_and_none_configured_is_503() -> None:
    runner, pool, _ = make(2)
    behaviour = {c: raising(K.ACCOUNT_DEAD) for c in COOKIES}
    for _ in range(2):  # the first run kills them, the second finds nothing
        error = (await run(runner, scripted(behaviour)))[-1].error
        assert (error.status, error.code) == (503, "no_usable_account")
        assert "Retry-After" not in error.headers
    empty = FailoverRunner(CookiePool([]))
    error = (await run(empty, scripted({})))[-1].error
    assert (error.status, error.code) == (503, "no_account_configured")


async def test_success_resets_the_failure_count() -> None:
    runner, pool, clock = make(1)
    await run(runner, scripted({COOKIES[0]: raising(K.NETWORK)}))
    assert state_of(pool, COOKIES[0]).consecutive_failures == 1
    clock.advance(31)
    assert (await run(runner, scripted({})))[-1] == Completed()
    status = state_of(pool, COOKIES[0])
    assert (status.consecutive_failures, status.failures, status.successes) == (0, 1, 1)


# ------------------------------------------------------------------------------ concurrency


async def test_no_double_booking_under_concurrency(autojump_clock: trio.testing.MockClock) -> None:
    runner, pool, _ = make(3)
    in_flight: Counter[str] = Counter()
    peak: Counter[str] = Counter()
    per_run: list[list[str]] = []
    flaky = False

    def attempt_for(tried: list[str]):
        async def attempt(lease: Lease, emit: Emit) -> None:
            name = NAME[lease.key]
            assert name not in tried  # never the same cookie twice in one request
            tried.append(name)
            in_flight[name] += 1
            peak[name] = max(peak[name], in_flight[name])
            try:
                await trio.sleep(1.0)
                if flaky and name == COOKIES[0]:
                    raise failure(K.OVERLOADED)
                await answer(emit)
            finally:
                in_flight[name] -= 1

        return attempt

    async def one() -> None:
        tried: list[str] = []
        per_run.append(tried)
        items = await run(runner, attempt_for(tried))
        assert items[-1] == Completed()

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(one)
    # Three requests at once over three cookies: one each, nobody shares.
    assert peak == {c: 1 for c in COOKIES[:3]}
    assert all(s.in_flight == 0 for s in pool.snapshot())

    # Thirty at once, one cookie failing: spread evenly, and no request gets a cookie twice.
    flaky = True
    peak.clear()
    per_run.clear()
    async with trio.open_nursery() as nursery:
        for _ in range(30):
            nursery.start_soon(one)
    assert peak[COOKIES[0]] == 10 and peak[COOKIES[1]] <= 15 and peak[COOKIES[2]] <= 15
    assert sum(len(tried) for tried in per_run) == 40
    assert all(s.in_flight == 0 for s in pool.snapshot())


async def test_hedge_starts_a_second_attempt_and_cancels_the_loser(autojump_clock: trio.testing.MockClock) -> None:
    runner, pool, _ = make(2, hedge_after=2.0)
    cancelled: list[str] = []

    async def slow(emit: Emit) -> None:
        try:
            await trio.sleep(100)
        except trio.Cancelled:
            cancelled.append("slow")
            raise
        await answer(emit, "late")

    started = trio.current_time()
    items = await run(runner, scripted({COOKIES[0]: slow}))
    assert trio.current_time() - started == pytest.approx(2.0)
    assert items[0].lease.key == KEY[COOKIES[1]] and items[-1] == Completed()
    assert cancelled == ["slow"]
    # Silent long enough to be hedged, then beaten: a stall against its cookie (issue #10 item 6).
    slow_state = state_of(pool, COOKIES[0])
    assert (slow_state.state, slow_state.reason, slow_state.failures, slow_state.successes, slow_state.in_flight) == (
        CookieState.COOLING, "upstream_stalled", 1, 0, 0)
    assert state_of(pool, COOKIES[1]).successes == 1


async def test_no_hedge_while_our_own_loop_runs_late(autojump_clock: trio.testing.MockClock) -> None:
    # A burst puts the service's own loop seconds behind: the first attempt's silence is ours,
    # so the due hedge waits (asked again one HEDGE_AFTER later) instead of doubling the load.
    late_until = 5.0
    started = trio.current_time()
    runner, _, _ = make(2, hedge_after=2.0)
    runner.behind = lambda: trio.current_time() - started < late_until
    tried: list[str] = []

    async def slow(emit: Emit) -> None:
        await trio.sleep(100)
        await answer(emit, "late")

    items = await run(runner, scripted({COOKIES[0]: slow}, tried))
    # Due at 2 s and 4 s (the loop was late), started at 6 s, the first time the loop was on time.
    assert trio.current_time() - started == pytest.approx(6.0)
    assert tried == [COOKIES[0], COOKIES[1]] and items[0].lease.key == KEY[COOKIES[1]] and items[-1] == Completed()


async def test_no_hedge_when_the_first_answers_in_time(autojump_clock: trio.testing.MockClock) -> None:
    runner, _, _ = make(2, hedge_after=2.0)
    tried: list[str] = []

    async def quick(emit: Emit) -> None:
        await trio.sleep(1.0)
        await answer(emit)

    items = await run(runner, scripted({COOKIES[0]: quick}, tried))
    assert tried == [COOKIES[0]] and items[-1] == Completed()


async def test_the_consumer_leaving_cancels_the_attempts_and_frees_the_cookies(
    autojump_clock: trio.testing.MockClock,
) -> None:
    runner, pool, _ = make(2)
    stopped = trio.Event()

    async def endless(emit: Emit) -> None:
        await emit(TextDelta("x"))
        try:
            while True:
                await trio.sleep(1)
                await emit(TextDelta("y"))
        finally:
            stopped.set()

    send, recv = trio.open_memory_channel(0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: runner.run(scripted({COOKIES[0]: endless}), send))
        assert isinstance(await recv.receive(), Won)
        await recv.receive()
        await recv.aclose()
        with trio.fail_after(5):
            await stopped.wait()
    status = state_of(pool, COOKIES[0])
    assert (status.in_flight, status.failures, status.successes) == (0, 0, 0)  # cancelled: no outcome


async def test_a_cancelled_attempt_is_neither_a_success_nor_a_failure(autojump_clock: trio.testing.MockClock) -> None:
    runner, pool, _ = make(1)

    async def silent(emit: Emit) -> None:
        await trio.sleep(100)

    for _ in range(5):  # five requests whose clients give up on a cookie that never answers
        send, recv = trio.open_memory_channel(math.inf)
        with trio.move_on_after(3):
            await runner.run(scripted({COOKIES[0]: silent}), send)
        recv.close()
    status = state_of(pool, COOKIES[0])
    assert (status.successes, status.failures, status.consecutive_failures, status.in_flight) == (0, 0, 0, 0)


async def test_a_silent_cookie_fails_at_the_first_event_deadline_and_is_not_tried_next(
    autojump_clock: trio.testing.MockClock,
) -> None:
    runner, pool, _ = make(2)
    tried: list[str] = []

    async def silent(emit: Emit) -> None:
        await emit(ProjectStarted("p-1"))  # not answer-bearing: does not lift the deadline
        await trio.sleep(1000)

    started = trio.current_time()
    items = await run(runner, scripted({COOKIES[0]: silent}, tried), first_event_timeout=5.0)
    assert trio.current_time() - started == pytest.approx(5.0)
    assert tried == [COOKIES[0], COOKIES[1]] and items[-1] == Completed()
    status = state_of(pool, COOKIES[0])
    assert (status.state, status.reason) == (CookieState.COOLING, "upstream_stalled")
    tried.clear()
    await run(runner, scripted({COOKIES[0]: silent}, tried), first_event_timeout=5.0)
    assert tried == [COOKIES[1]]  # the next request does not go straight back to the stalled cookie


async def test_no_stall_is_declared_while_our_own_loop_runs_late(autojump_clock: trio.testing.MockClock) -> None:
    # Due at 5 s, but the service's own loop is late until 6.5 s: the check is made again each
    # second (6 s: still late) and the stall is declared at 7 s, the first on-time check.
    runner, pool, _ = make(2)
    started = trio.current_time()
    runner.behind = lambda: trio.current_time() - started < 6.5
    tried: list[str] = []

    async def silent(emit: Emit) -> None:
        await trio.sleep(1000)

    items = await run(runner, scripted({COOKIES[0]: silent}, tried), first_event_timeout=5.0)
    assert trio.current_time() - started == pytest.approx(7.0)
    assert tried == [COOKIES[0], COOKIES[1]] and items[-1] == Completed()
    assert state_of(pool, COOKIES[0]).reason == "upstream_stalled"


async def test_the_first_event_deadline_ends_at_the_first_answer_text(autojump_clock: trio.testing.MockClock) -> None:
    runner, _, _ = make(1)

    async def slow_after_start(emit: Emit) -> None:
        await trio.sleep(4)
        await emit(TextDelta("a"))
        await trio.sleep(20)  # later silences are the idle timeout's business
        await answer(emit, "b")

    items = await run(runner, scripted({COOKIES[0]: slow_after_start}), first_event_timeout=5.0)
    assert items[-1] == Completed()


async def test_requests_waiting_for_a_busy_pool_are_served_in_arrival_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # One cookie, one request in flight at a time: each release wakes the longest waiter only,
    # so the waiters get the cookie in the order they came (no herd racing for it).
    clock = FakeClock()
    pool = CookiePool(COOKIES[:1], clock=clock, policy=CooldownPolicy(), max_in_flight=1)
    runner = FailoverRunner(pool, clock=clock, pool_wait=60.0)
    served: list[int] = []

    def attempt_of(n: int):
        async def attempt(lease: Lease, emit: Emit) -> None:
            served.append(n)
            await trio.sleep(1.0)
            await answer(emit)
        return attempt

    async with trio.open_nursery() as nursery:
        for n in range(5):
            nursery.start_soon(run, runner, attempt_of(n))
            await trio.sleep(0.01)   # they arrive in this order
    assert served == [0, 1, 2, 3, 4]
    assert not runner._waiters   # nobody left queued


async def test_a_waiter_that_cannot_use_the_freed_cookie_passes_the_wake_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Two cookies at their cap. The first waiter has already tried cookie 0 (excluded), so when
    # cookie 0 frees up it cannot take it and must hand the wake to the second waiter, which
    # then gets cookie 0 at once, not at its next one-second look.
    clock = FakeClock()
    pool = CookiePool(COOKIES[:2], clock=clock, policy=CooldownPolicy(), max_in_flight=1)
    runner = FailoverRunner(pool, clock=clock, pool_wait=60.0)
    holders = [pool.acquire(), pool.acquire()]
    first = _RunState(pool_wait=60.0, tried={holders[0].key})
    second = _RunState(pool_wait=60.0)
    got: dict[str, tuple[str, float]] = {}
    start = trio.current_time()

    async def wait_for(name: str, state: _RunState) -> None:
        lease = await runner._acquire(state, None, wait=True)
        assert lease is not None
        got[name] = (lease.key, round(trio.current_time() - start, 3))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait_for, "first", first)
        await trio.sleep(0.01)
        nursery.start_soon(wait_for, "second", second)
        await trio.sleep(0.2)
        pool.release(holders[0], None)
        runner._lease_freed()
        await trio.sleep(0.2)
        assert got == {"second": (holders[0].key, 0.21)}
        pool.release(holders[1], None)
        runner._lease_freed()
    assert got["first"] == (holders[1].key, 0.41)

