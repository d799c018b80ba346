"""Operator mutations of the cookie pool, cookie lines with a proxy and a label, the listeners."""

from __future__ import annotations

import pytest
from conftest import FakeClock

from genspark2api.pool.cookies import (
    DISABLED_BY_OPERATOR,
    PROBE_NOT_LOGGED_IN,
    CookieOrigin,
    CookiePool,
    CookieState,
    PoolUnavailable,
    cookie_key,
    parse_cookie_spec,
)
from genspark2api.redact import mask_proxy
from genspark2api.upstream.account import AccountProbe
from genspark2api.upstream.classify import Failure, FailureKind

A = "aed9196b-0000-4000-8000-ed6e32f7e4d1"
B = "aed9196b-0000-4000-8000-ed6e32f7e4d2"
C = "aed9196b-0000-4000-8000-ed6e32f7e4d3"


def key(session_id: str) -> str:
    return cookie_key("session_id=" + session_id)


def make(*entries: str) -> tuple[CookiePool, FakeClock, list[str]]:
    clock = FakeClock()
    pool = CookiePool(entries, clock=clock)
    changes: list[str] = []
    pool.listeners.append(changes.append)
    return pool, clock, changes


def state(pool: CookiePool, session_id: str) -> CookieState:
    status = pool.status(key(session_id))
    assert status is not None
    return status.state


# ------------------------------------------------------------------------------ cookie lines


@pytest.mark.parametrize(
    ("line", "proxy", "label"),
    [
        (A, None, None),
        (f"{A} | proxy=socks5://127.0.0.1:1080", "socks5://127.0.0.1:1080", None),
        (f"{A}\tlabel=alice\tproxy=http://u:p@proxy.example:3128", "http://u:p@proxy.example:3128", "alice"),
        (f"session_id={A}; agree_terms=1 | label= Alice Smith  | proxy=direct", "direct", "Alice Smith"),
        (f"{A} | proxy=socks5h://[::1]:1080/", "socks5h://[::1]:1080/", None),
    ],
)
def test_cookie_line_with_proxy_and_label(line: str, proxy: str | None, label: str | None) -> None:
    spec = parse_cookie_spec(line)
    assert spec is not None and spec.proxy == proxy and spec.label == label
    assert cookie_key(spec.cookie) == key(A)


@pytest.mark.parametrize(
    ("line", "why"),
    [
        (f"{A} | proxy=ftp://host:21", "proxy must be"),
        (f"{A} | proxy=socks5://", "proxy must be"),
        (f"{A} | proxy=http://host:99999", "not a URL"),
        (f"{A} | proxy=http://host:1/path", "path"),
        (f"{A} | colour=blue", "unknown field"),
        (f"{A} | proxy", "unknown field"),
        (f"{A} | label={'x' * 65}", "at most 64"),
        (" | label=alice", "no cookie"),
    ],
)
def test_bad_cookie_line_is_refused_with_the_cookie_masked(line: str, why: str) -> None:
    with pytest.raises(ValueError, match=why) as info:
        parse_cookie_spec(line)
    assert A not in str(info.value)


def test_a_bad_line_changes_nothing_on_reload() -> None:
    pool, _, _ = make(A, B)
    with pytest.raises(ValueError, match="entry #2"):
        pool.reload([A, f"{C} | proxy=gopher://x:1"])
    assert [s.key for s in pool.snapshot()] == [key(A), key(B)]


def test_a_bare_pipe_inside_a_cookie_value_is_not_a_separator() -> None:
    spec = parse_cookie_spec(f"session_id={A}; tracker=a|b|c")
    assert spec is not None and spec.cookie == f"session_id={A}; tracker=a|b|c" and spec.proxy is None


def test_proxy_password_is_masked_in_the_status() -> None:
    pool, _, _ = make(f"{A} | proxy=socks5://user:hunter2@10.0.0.1:1080")
    status = pool.status(key(A))
    assert status is not None and status.proxy == "socks5://user:***@10.0.0.1:1080"
    assert pool.proxy_for("session_id=" + A) == "socks5://user:hunter2@10.0.0.1:1080"
    assert mask_proxy("http://10.0.0.1:3128") == "http://10.0.0.1:3128"
    assert mask_proxy("http://user@10.0.0.1:3128") == "http://user@10.0.0.1:3128"


# ------------------------------------------------------------------------------ operator actions


def test_add_a_paste_and_a_browser_string_collapse_by_account() -> None:
    pool, _, changes = make(A)
    results = pool.add([B, f"agree_terms=1; session_id={B}", f"session_id={A}", f"{C} | label=carol"], label="new")
    assert results == [(key(B), "added"), (key(A), "unchanged"), (key(C), "added")]
    assert {key(B), key(C), key(A)} <= set(changes)
    c = pool.status(key(C))
    assert c is not None and c.label == "new" and c.origin is CookieOrigin.ADMIN and c.state is CookieState.HEALTHY


def test_add_of_a_new_login_for_a_dead_account_revives_it() -> None:
    pool, _, _ = make(A)
    lease = pool.acquire()
    pool.release(lease, Failure(FailureKind.ACCOUNT_DEAD, "upstream_not_login", "not login"))
    assert state(pool, A) is CookieState.DEAD
    assert pool.add([f"session_id={A}; agree_terms=1"]) == [(key(A), "updated")]
    assert state(pool, A) is CookieState.HEALTHY


def test_add_refuses_a_bad_entry_before_changing_anything() -> None:
    pool, _, changes = make(A)
    with pytest.raises(ValueError):
        pool.add([B, f"{C} | proxy=nope"])
    with pytest.raises(ValueError):
        pool.add([B], proxy="ftp://x:1")
    assert len(pool) == 1 and changes == []


def test_disable_takes_a_cookie_out_of_rotation_and_enable_brings_it_back() -> None:
    pool, _, changes = make(A, B)
    assert pool.set_disabled(key(A), True)
    assert changes == [key(A)]
    assert {pool.acquire().key for _ in range(4)} == {key(B)}
    status = pool.status(key(A))
    assert status is not None and status.state is CookieState.DISABLED and status.reason == DISABLED_BY_OPERATOR
    assert pool.set_disabled(key(B), True)
    with pytest.raises(PoolUnavailable) as info:
        pool.acquire()
    assert info.value.reason == "dead" and DISABLED_BY_OPERATOR in info.value.detail
    pool.set_disabled(key(A), False)
    assert pool.acquire().key == key(A)
    assert not pool.set_disabled("nope", True)


def test_disable_keeps_a_cooldown_underneath() -> None:
    pool, clock, _ = make(A)
    pool.release(pool.acquire(), Failure(FailureKind.RATE_LIMITED, "upstream_rate_limited", "slow down"))
    pool.set_disabled(key(A), True)
    pool.set_disabled(key(A), False)
    assert state(pool, A) is CookieState.COOLING
    clock.advance(601)
    assert state(pool, A) is CookieState.HEALTHY


def test_revive_brings_a_dead_cookie_back_and_reset_ends_a_cooldown() -> None:
    pool, _, changes = make(A, B)
    pool.release(pool.acquire(), Failure(FailureKind.ACCOUNT_DEAD, "upstream_not_login", "not login"))
    pool.release(pool.acquire(), Failure(FailureKind.NETWORK, "upstream_network", "reset by peer"))
    assert (state(pool, A), state(pool, B)) == (CookieState.DEAD, CookieState.COOLING)
    changes.clear()
    assert pool.revive(key(A)) and pool.reset_cooldown(key(B))
    assert changes == [key(A), key(B)]
    assert (state(pool, A), state(pool, B)) == (CookieState.HEALTHY, CookieState.HEALTHY)
    b = pool.status(key(B))
    assert b is not None and b.consecutive_failures == 0 and b.until is None and b.failures == 1
    assert not pool.revive("nope") and not pool.reset_cooldown("nope")


def test_remove_ignores_its_leases_and_a_reload_does_not_bring_it_back_unchanged() -> None:
    pool, _, changes = make(A, B)
    lease = pool.acquire()
    assert pool.remove(lease.key) and changes[-1] == lease.key and pool.status(lease.key) is None
    pool.release(lease, Failure(FailureKind.ACCOUNT_DEAD, "upstream_not_login", "not login"))  # ignored
    assert len(pool) == 1
    pool.reload([A, B])
    assert len(pool) == 1 and pool.status(lease.key) is None
    removed = A if lease.key == key(A) else B
    pool.reload([f"{removed} | label=again", B if removed == A else A])  # its line was edited: back
    assert pool.status(lease.key) is not None
    assert not pool.remove("nope")


def test_reload_keeps_cookies_added_at_run_time() -> None:
    pool, _, _ = make(A)
    pool.add([B])
    assert pool.reload([C]) == (1, 1)
    assert {s.key for s in pool.snapshot()} == {key(B), key(C)}


def test_an_operators_proxy_lasts_until_the_line_is_edited() -> None:
    pool, _, _ = make(f"{A} | proxy=http://10.0.0.1:3128")
    pool.configure(key(A), proxy="socks5://10.0.0.2:1080", label="alice")
    pool.reload([f"{A} | proxy=http://10.0.0.1:3128"])  # the same line: the operator's change stays
    assert pool.proxy_for("session_id=" + A) == "socks5://10.0.0.2:1080"
    pool.reload([f"{A} | proxy=http://10.0.0.3:3128"])  # edited: the line wins
    status = pool.status(key(A))
    assert status is not None and status.proxy == "http://10.0.0.3:3128" and status.label is None


def test_configure_sets_and_clears_proxy_and_label() -> None:
    pool, _, changes = make(A)
    assert pool.configure(key(A), proxy="direct", label="alice")
    assert pool.proxy_for(f"agree_terms=1; session_id={A}") == "direct"
    assert pool.configure(key(A), label=None)
    status = pool.status(key(A))
    assert status is not None and status.proxy == "direct" and status.label is None
    assert pool.configure(key(A), proxy=None)
    assert pool.proxy_for("session_id=" + A) is None
    with pytest.raises(ValueError):
        pool.configure(key(A), proxy="socks4://x:1")
    assert changes == [key(A)] * 3
    assert not pool.configure("nope", label="x")


def test_a_removed_cookies_leases_keep_its_proxy() -> None:
    pool, _, _ = make(f"{A} | proxy=socks5://10.0.0.9:1080")
    pool.remove(key(A))
    assert pool.proxy_for("session_id=" + A) == "socks5://10.0.0.9:1080"


def test_a_probe_that_finds_the_session_logged_out_kills_the_cookie() -> None:
    pool, clock, _ = make(A, B)
    good = AccountProbe(checked_at=clock(), logged_in=True, email="a@x", credits=42)
    assert pool.record_probe(key(A), good)
    status = pool.status(key(A))
    assert status is not None and status.probe == good and status.state is CookieState.HEALTHY
    pool.record_probe(key(B), AccountProbe(checked_at=clock(), logged_in=False, error="no e-mail"))
    status = pool.status(key(B))
    assert status is not None and status.state is CookieState.DEAD and status.reason == PROBE_NOT_LOGGED_IN
    # A probe that could not tell (network) changes no state.
    pool.revive(key(B))
    pool.record_probe(key(B), AccountProbe(checked_at=clock(), logged_in=None, error="timeout"))
    assert state(pool, B) is CookieState.HEALTHY


def test_every_mutation_tells_the_listeners() -> None:
    pool, _, changes = make(A)
    lease = pool.acquire()
    pool.release(lease)
    pool.cool(key(A), 10, "policy", "resting")
    pool.note_served(key(A), "gpt-5.4", "gpt-5", substituted=True)
    assert changes == [key(A)] * 4
    changes.clear()
    pool.reload([A, B])
    assert sorted(changes) == sorted([key(A), key(B)])
