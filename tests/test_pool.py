"""The cookie pool state machine, driven by a fake clock."""

from __future__ import annotations

import pytest
from conftest import FAKE_T0, FakeClock
from hypothesis import given, settings
from hypothesis import strategies as st

from genspark2api.pool.cookies import (
    CookiePool,
    CookieState,
    CooldownPolicy,
    Lease,
    PoolUnavailable,
    cookie_key,
    normalize_cookie_entry,
)
from genspark2api.upstream.classify import Failure, FailureKind

K = FailureKind
T0 = FAKE_T0
UUIDS = [f"aed9196b-0000-4000-8000-ed6e32f7e4d{i}" for i in range(6)]


def fail(kind: FailureKind, reset_at: float | None = None) -> Failure:
    return Failure(kind, f"upstream_{kind}", f"{kind} happened", reset_at)


def make(n: int = 3, max_in_flight: int = 0, **policy: float) -> tuple[CookiePool, FakeClock]:
    clock = FakeClock()
    return CookiePool(UUIDS[:n], clock=clock, policy=CooldownPolicy(**policy), max_in_flight=max_in_flight), clock


def status(pool: CookiePool, key: str):
    return next(s for s in pool.snapshot() if s.key == key)


# ------------------------------------------------------------------------------ entries


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("abc", "session_id=abc"),
        ("  abc \n", "session_id=abc"),
        ("session_id=abc", "session_id=abc"),
        ("agree_terms=1; session_id=abc; from_auth=", "agree_terms=1; session_id=abc; from_auth="),
        ("", None),
        ("   ", None),
        ("session_id=", None),
        ("agree_terms=1; session_id= ; x=1", None),
    ],
)
def test_normalize_cookie_entry(entry: str, expected: str | None) -> None:
    assert normalize_cookie_entry(entry) == expected


def test_key_is_the_account_and_stable() -> None:
    assert cookie_key("session_id=abc") == cookie_key("agree_terms=1; session_id=abc")
    assert cookie_key("session_id=abc") != cookie_key("session_id=abd")
    assert len(cookie_key("session_id=abc")) == 12


def test_lease_repr_hides_the_cookie() -> None:
    pool, _ = make(1)
    lease = pool.acquire()
    assert UUIDS[0] not in repr(lease)
    assert UUIDS[0] not in lease.masked
    assert UUIDS[0] not in pool.summary()
    assert lease.cookie == "session_id=" + UUIDS[0]


# ------------------------------------------------------------------------------ selection


def test_concurrent_acquires_spread_over_cookies() -> None:
    pool, _ = make(3)
    leases = [pool.acquire() for _ in range(3)]
    assert len({lease.key for lease in leases}) == 3
    more = [pool.acquire() for _ in range(3)]
    assert len({lease.key for lease in more}) == 3
    assert all(s.in_flight == 2 for s in pool.snapshot())


def test_fewest_in_flight_then_least_recently_used() -> None:
    pool, clock = make(3)
    a = pool.acquire()
    pool.release(a)
    b = pool.acquire()
    assert b.key != a.key  # never used first
    pool.release(b)
    c = pool.acquire()
    assert c.key not in (a.key, b.key)
    pool.release(c)
    # All used once: the least recently used is a.
    assert pool.acquire().key == a.key


def test_in_flight_beats_recency() -> None:
    pool, _ = make(2)
    first = pool.acquire()
    second = pool.acquire()
    pool.release(first)
    # first has 0 in flight (used longer ago), second has 1.
    assert pool.acquire().key == first.key
    pool.release(second)


def test_prefer_wins_when_healthy_and_not_excluded() -> None:
    pool, _ = make(3)
    busy = pool.acquire()
    assert pool.acquire(prefer=busy.key).key == busy.key  # affinity beats load
    assert pool.acquire(prefer=busy.key, exclude={busy.key}).key != busy.key
    assert pool.acquire(prefer="no-such-key").key != busy.key


def test_prefer_ignored_when_cooling() -> None:
    pool, _ = make(2)
    lease = pool.acquire()
    pool.release(lease, fail(K.RATE_LIMITED))
    assert pool.acquire(prefer=lease.key).key != lease.key


def test_exclude_respected() -> None:
    pool, _ = make(3)
    keys = [s.key for s in pool.snapshot()]
    for _ in range(5):
        assert pool.acquire(exclude=keys[:2]).key == keys[2]


# ------------------------------------------------------------------------------ cooldowns


@pytest.mark.parametrize(
    ("kind", "seconds"),
    [
        (K.RATE_LIMITED, 600.0),
        (K.QUOTA_EXHAUSTED, 86400.0),
        (K.SESSION_LIMIT, 1800.0),   # §12.5 E13 without a reset: AX-P 1 800 s
        (K.PLACEHOLDER, 60.0),       # §12.5 E15: KE 60 s
        (K.THROTTLED, 30.0),         # §12.5 E18: ~30 s
        (K.NETWORK, 30.0),
        (K.OVERLOADED, 60.0),
    ],
)
def test_cooldown_per_kind_expires(kind: FailureKind, seconds: float) -> None:
    pool, clock = make(1)
    lease = pool.acquire()
    pool.release(lease, fail(kind))
    s = status(pool, lease.key)
    assert s.state is CookieState.COOLING and s.until == T0 + seconds and s.reason == f"upstream_{kind}"
    with pytest.raises(PoolUnavailable) as info:
        pool.acquire()
    assert info.value.reason == "cooling"
    assert info.value.retry_after == pytest.approx(seconds)
    clock.advance(seconds - 1)
    with pytest.raises(PoolUnavailable):
        pool.acquire()
    clock.advance(1)
    assert pool.acquire().key == lease.key
    assert status(pool, lease.key).state is CookieState.HEALTHY


def test_policy_durations_are_configurable() -> None:
    pool, _ = make(1, rate_limit_seconds=5.0)
    lease = pool.acquire()
    pool.release(lease, fail(K.RATE_LIMITED))
    assert status(pool, lease.key).until == T0 + 5.0


def test_reset_at_honoured_when_in_the_future() -> None:
    pool, clock = make(2)
    lease = pool.acquire()
    pool.release(lease, fail(K.SESSION_LIMIT, reset_at=T0 + 123.0))
    assert status(pool, lease.key).until == T0 + 123.0
    other = pool.acquire()
    pool.release(other, fail(K.QUOTA_EXHAUSTED, reset_at=T0 - 10.0))  # in the past: policy duration
    assert status(pool, other.key).until == T0 + 86400.0
    clock.advance(123.0)
    assert pool.acquire().key == lease.key


def test_network_cooldown_escalates_and_is_capped() -> None:
    pool, clock = make(1, network_seconds=30.0, network_max_factor=10.0)
    seen = []
    for _ in range(6):
        lease = pool.acquire()
        pool.release(lease, fail(K.NETWORK))
        until = status(pool, lease.key).until
        seen.append(until - clock.now)
        clock.advance(until - clock.now)
    assert seen == [30.0, 60.0, 120.0, 240.0, 300.0, 300.0]


def test_a_429_throttle_doubles_on_repeats_up_to_the_rate_limit_rest() -> None:
    """§12.5 E18: ~30 s, no Retry-After; a cookie that keeps getting 429 backs off further."""
    pool, clock = make(1, throttled_seconds=30.0, rate_limit_seconds=200.0)
    seen = []
    for _ in range(5):
        lease = pool.acquire()
        pool.release(lease, fail(K.THROTTLED))
        until = status(pool, lease.key).until
        seen.append(until - clock.now)
        clock.advance(until - clock.now)
    assert seen == [30.0, 60.0, 120.0, 200.0, 200.0]


def test_the_in_flight_cap_makes_a_full_pool_busy_not_cooling() -> None:
    """COOKIE_MAX_IN_FLIGHT: a cookie at its cap is skipped; all at the cap is "busy" (wait), not 429."""
    pool, _ = make(2, max_in_flight=1)
    first, second = pool.acquire(), pool.acquire()
    assert first.key != second.key
    with pytest.raises(PoolUnavailable) as busy:
        pool.acquire()
    assert busy.value.reason == "busy" and busy.value.retry_after == 0.0
    pool.release(first)
    assert pool.acquire().key == first.key


def test_success_resets_the_failure_count() -> None:
    pool, clock = make(1)
    for _ in range(3):
        lease = pool.acquire()
        pool.release(lease, fail(K.NETWORK))
        clock.advance(1000)
    lease = pool.acquire()
    pool.release(lease)
    s = status(pool, lease.key)
    assert (s.consecutive_failures, s.failures, s.successes) == (0, 3, 1)
    lease = pool.acquire()
    pool.release(lease, fail(K.NETWORK))
    assert status(pool, lease.key).until == clock.now + 30.0  # back to the base cooldown


def test_a_shorter_cooldown_never_shortens_a_longer_one() -> None:
    pool, _ = make(1)
    a = pool.acquire()
    b = pool.acquire()
    pool.release(a, fail(K.QUOTA_EXHAUSTED))
    pool.release(b, fail(K.NETWORK))
    s = status(pool, a.key)
    assert s.until == T0 + 86400.0 and s.reason == "upstream_quota_exhausted"


@pytest.mark.parametrize("kind", [K.UPSTREAM_WIDE, K.REQUEST])
def test_no_penalty_kinds(kind: FailureKind) -> None:
    pool, _ = make(1)
    lease = pool.acquire()
    pool.release(lease, fail(kind))
    s = status(pool, lease.key)
    assert s.state is CookieState.HEALTHY and s.failures == 0 and s.consecutive_failures == 0 and s.in_flight == 0


def test_dead_stays_dead_across_time_and_reload() -> None:
    pool, clock = make(2)
    lease = pool.acquire()
    pool.release(lease, fail(K.ACCOUNT_DEAD))
    clock.advance(10 * 365 * 86400)
    assert status(pool, lease.key).state is CookieState.DEAD
    assert pool.acquire().key != lease.key
    assert pool.reload(UUIDS[:2]) == (0, 0)
    assert status(pool, lease.key).state is CookieState.DEAD
    # The same entry pasted bare or prefixed is the same text after normalisation: still dead.
    assert lease.key == cookie_key("session_id=" + UUIDS[0])
    pool.reload(["session_id=" + UUIDS[0], UUIDS[1]])
    assert status(pool, lease.key).state is CookieState.DEAD


def test_dead_revived_when_its_entry_changes() -> None:
    clock = FakeClock()
    pool = CookiePool(["session_id=abc"], clock=clock)
    lease = pool.acquire()
    pool.release(lease, fail(K.ACCOUNT_DEAD))
    with pytest.raises(PoolUnavailable) as info:
        pool.acquire()
    assert info.value.reason == "dead" and info.value.retry_after is None
    pool.reload(["agree_terms=1; session_id=abc"])
    revived = pool.acquire()
    assert revived.key == lease.key and revived.cookie == "agree_terms=1; session_id=abc"
    # The old lease's late outcome does not touch the new entry.
    pool.release(lease, fail(K.ACCOUNT_DEAD))
    assert status(pool, lease.key).state is CookieState.HEALTHY


# ------------------------------------------------------------------------------ unavailability


def test_retry_after_is_the_earliest_recovery() -> None:
    pool, clock = make(3)
    durations = {K.RATE_LIMITED: 600.0, K.OVERLOADED: 60.0, K.QUOTA_EXHAUSTED: 86400.0}
    for kind in durations:
        pool.release(pool.acquire(), fail(kind))
    clock.advance(10)
    with pytest.raises(PoolUnavailable) as info:
        pool.acquire()
    assert info.value.reason == "cooling"
    assert info.value.retry_after == pytest.approx(50.0)
    assert pool.earliest_recovery() == T0 + 60.0
    assert "cooling" in info.value.detail


def test_retry_after_counts_cooling_excluded_cookies_too() -> None:
    """A request that tried every cookie: the pool's earliest recovery still applies."""
    pool, _ = make(2)
    a, b = pool.acquire(), pool.acquire()
    pool.release(a, fail(K.RATE_LIMITED))
    pool.release(b, fail(K.OVERLOADED))
    with pytest.raises(PoolUnavailable) as info:
        pool.acquire(exclude={a.key, b.key})
    assert info.value.retry_after == pytest.approx(60.0)


def test_excluded_healthy_cookie_means_retry_now() -> None:
    pool, _ = make(2)
    a, b = pool.acquire(), pool.acquire()
    pool.release(a, fail(K.RATE_LIMITED))
    pool.release(b, fail(K.UPSTREAM_WIDE))  # b stays healthy, but this request already tried it
    with pytest.raises(PoolUnavailable) as info:
        pool.acquire(exclude={b.key})
    assert info.value.reason == "cooling" and info.value.retry_after == 0.0


def test_dead_and_empty() -> None:
    pool, _ = make(2)
    for _ in range(2):
        pool.release(pool.acquire(), fail(K.ACCOUNT_DEAD))
    with pytest.raises(PoolUnavailable) as info:
        pool.acquire()
    assert info.value.reason == "dead" and info.value.retry_after is None
    assert pool.earliest_recovery() is None
    empty = CookiePool(["", "  "], clock=FakeClock())
    assert len(empty) == 0
    with pytest.raises(PoolUnavailable) as info:
        empty.acquire()
    assert info.value.reason == "empty"
    assert "no cookies" in empty.summary()


def test_dead_plus_cooling_is_cooling() -> None:
    pool, _ = make(2)
    pool.release(pool.acquire(), fail(K.ACCOUNT_DEAD))
    pool.release(pool.acquire(), fail(K.RATE_LIMITED))
    with pytest.raises(PoolUnavailable) as info:
        pool.acquire()
    assert info.value.reason == "cooling" and info.value.retry_after == pytest.approx(600.0)


# ------------------------------------------------------------------------------ releases, reload


def test_double_release_is_a_no_op() -> None:
    pool, _ = make(1)
    lease = pool.acquire()
    pool.release(lease)
    pool.release(lease, fail(K.ACCOUNT_DEAD))
    s = status(pool, lease.key)
    assert s.in_flight == 0 and s.successes == 1 and s.state is CookieState.HEALTHY


def test_forged_lease_is_ignored() -> None:
    pool, _ = make(1)
    real = pool.acquire()
    pool.release(Lease(real.key, real.cookie, real.masked, real.token + 999), fail(K.ACCOUNT_DEAD))
    assert status(pool, real.key).in_flight == 1


def test_reload_adds_removes_dedups_and_keeps_state() -> None:
    pool, _ = make(3)
    cooling = pool.acquire()
    pool.release(cooling, fail(K.RATE_LIMITED))
    in_flight = pool.acquire()
    keep = [UUIDS[0], UUIDS[1], UUIDS[2]]
    removed_key = next(s.key for s in pool.snapshot() if s.key not in (cooling.key, in_flight.key))
    kept = [u for u in keep if cookie_key("session_id=" + u) != removed_key]
    added, removed = pool.reload([*kept, kept[0], "session_id=" + kept[1], UUIDS[3], UUIDS[4], ""])
    assert (added, removed) == (2, 1)
    assert len(pool) == 4
    assert status(pool, cooling.key).state is CookieState.COOLING
    assert status(pool, in_flight.key).in_flight == 1
    pool.release(in_flight)
    assert status(pool, in_flight.key).in_flight == 0


def test_release_of_a_removed_cookie_is_ignored() -> None:
    pool, _ = make(2)
    lease = pool.acquire()
    pool.reload([u for u in UUIDS[:2] if cookie_key("session_id=" + u) != lease.key])
    pool.release(lease, fail(K.ACCOUNT_DEAD))
    assert len(pool) == 1 and pool.snapshot()[0].state is CookieState.HEALTHY


def test_summary_one_masked_line_per_cookie() -> None:
    pool, _ = make(3)
    pool.release(pool.acquire(), fail(K.RATE_LIMITED))
    pool.release(pool.acquire(), fail(K.ACCOUNT_DEAD))
    lines = pool.summary().splitlines()
    assert len(lines) == 3
    assert any("cooling for 600 s" in line for line in lines)
    assert any("dead" in line for line in lines)
    assert all("session_id=aed9" in line for line in lines)


# ------------------------------------------------------------------------------ invariants

operations = st.lists(
    st.one_of(
        st.tuples(st.just("acquire"), st.sets(st.integers(0, 4), max_size=3), st.one_of(st.none(), st.integers(0, 4))),
        st.tuples(st.just("release"), st.integers(0, 30), st.sampled_from([None, *FailureKind])),
        st.tuples(st.just("advance"), st.floats(0, 3600)),
        st.tuples(st.just("reload"), st.sets(st.integers(0, 5), max_size=6)),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(operations)
def test_random_sequences_keep_the_invariants(ops: list[tuple]) -> None:
    clock = FakeClock()
    pool = CookiePool(UUIDS[:5], clock=clock)
    keys = [cookie_key("session_id=" + u) for u in UUIDS]
    leases: list[Lease] = []
    outstanding: dict[int, Lease] = {}
    for op in ops:
        if op[0] == "acquire":
            exclude = {keys[i] for i in op[1]}
            prefer = keys[op[2]] if op[2] is not None else None
            before = {s.key: s for s in pool.snapshot()}
            try:
                lease = pool.acquire(exclude=exclude, prefer=prefer)
            except PoolUnavailable as exc:
                usable = [s for s in before.values() if s.state is CookieState.HEALTHY and s.key not in exclude]
                assert not usable
                assert exc.reason in ("cooling", "dead", "empty")
                assert exc.retry_after is None or exc.retry_after >= 0
                continue
            assert lease.key not in exclude
            assert before[lease.key].state is CookieState.HEALTHY
            usable = [s for s in before.values() if s.state is CookieState.HEALTHY and s.key not in exclude]
            if prefer in {s.key for s in usable}:
                assert lease.key == prefer
            else:
                assert before[lease.key].in_flight == min(s.in_flight for s in usable)
            leases.append(lease)
            outstanding[lease.token] = lease
        elif op[0] == "release" and leases:
            lease = leases[op[1] % len(leases)]
            kind = op[2]
            pool.release(lease, None if kind is None else fail(kind))
            outstanding.pop(lease.token, None)
        elif op[0] == "advance":
            clock.advance(op[1])
        elif op[0] == "reload":
            pool.reload([UUIDS[i] for i in sorted(op[1])])
            present = {s.key for s in pool.snapshot()}
            outstanding = {t: lease for t, lease in outstanding.items() if lease.key in present}
        for s in pool.snapshot():
            assert s.in_flight >= 0
            assert s.in_flight == sum(1 for lease in outstanding.values() if lease.key == s.key)
            if s.state is CookieState.COOLING:
                assert s.until is not None and s.until > clock.now
