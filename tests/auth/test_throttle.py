"""Login throttling walked with an injected clock: free failures, growing delays, cap, lock, reset."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from medvault.auth.throttle import (
    ACCOUNT_POLICY,
    ADDRESS_POLICY,
    Decision,
    Throttle,
    ThrottlePolicy,
    ThrottleState,
)

T0 = datetime(2025, 1, 1, 9, 0, tzinfo=UTC)
ACCOUNTS = Throttle(ACCOUNT_POLICY)
ADDRESSES = Throttle(ADDRESS_POLICY)
ALLOWED = Decision(allowed=True, retry_after=0.0)


class Clock:
    """The injected clock: time moves only when the test says so."""

    def __init__(self) -> None:
        self.now = T0

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


def fail_as_soon_as_allowed(throttle: Throttle, state: ThrottleState, clock: Clock) -> ThrottleState:
    """One more failed attempt, made the moment the throttle allows it."""
    decision = throttle.check(state=state, now=clock.now)
    assert decision.allowed or not decision.locked
    if not decision.allowed:
        clock.advance(decision.retry_after)
        assert throttle.check(state=state, now=clock.now) == ALLOWED
    return throttle.record_failure(state=state, now=clock.now)


def test_five_failures_are_free() -> None:
    clock = Clock()
    state = ThrottleState()
    for failures in range(1, 5):
        state = ACCOUNTS.record_failure(state=state, now=clock.now)
        assert state.failures == failures
        assert ACCOUNTS.check(state=state, now=clock.now) == ALLOWED
    state = ACCOUNTS.record_failure(state=state, now=clock.now)
    assert ACCOUNTS.check(state=state, now=clock.now) == Decision(allowed=False, retry_after=1.0)
    assert ACCOUNTS.check(state=state, now=clock.advance(0.5)) == Decision(allowed=False, retry_after=0.5)
    assert ACCOUNTS.check(state=state, now=clock.advance(0.5)) == ALLOWED


def test_delays_double_then_cap_at_fifteen_minutes() -> None:
    clock = Clock()
    state = ThrottleState()
    waits: list[float] = []
    for _ in range(20):
        state = fail_as_soon_as_allowed(ACCOUNTS, state, clock)
        waits.append(ACCOUNTS.check(state=state, now=clock.now).retry_after)
    assert waits == [0, 0, 0, 0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 900, 900, 900, 900, 900, 900]
    assert state.failures == 20
    assert not state.locked


def test_the_lock_comes_exactly_at_the_hundredth_consecutive_failure() -> None:
    clock = Clock()
    state = ThrottleState()
    for _ in range(99):
        state = fail_as_soon_as_allowed(ACCOUNTS, state, clock)
    assert (state.failures, state.locked) == (99, False)
    # A guesser holding to the schedule needs more than 20 hours to get here.
    assert clock.now - T0 > timedelta(hours=20)
    assert ACCOUNTS.check(state=state, now=clock.advance(900)) == ALLOWED
    state = ACCOUNTS.record_failure(state=state, now=clock.now)
    assert (state.failures, state.locked) == (100, True)
    locked = Decision(allowed=False, retry_after=math.inf, locked=True)
    assert ACCOUNTS.check(state=state, now=clock.now) == locked
    # No amount of waiting, and no success slipped past `check`, lifts it: only an administrator.
    assert ACCOUNTS.check(state=state, now=clock.advance(365 * 86400)) == locked
    assert ACCOUNTS.record_success(state=state).locked
    unlocked = ACCOUNTS.unlock(state=state)
    assert unlocked == ThrottleState()
    assert ACCOUNTS.check(state=unlocked, now=clock.now) == ALLOWED


def test_success_resets_the_count() -> None:
    clock = Clock()
    state = ThrottleState()
    for _ in range(12):
        state = fail_as_soon_as_allowed(ACCOUNTS, state, clock)
    assert not ACCOUNTS.check(state=state, now=clock.now).allowed
    clock.advance(ACCOUNTS.check(state=state, now=clock.now).retry_after)
    state = ACCOUNTS.record_success(state=state)
    assert state == ThrottleState()
    # The next typos are free again.
    for _ in range(4):
        state = ACCOUNTS.record_failure(state=state, now=clock.now)
        assert ACCOUNTS.check(state=state, now=clock.now) == ALLOWED


def test_account_failures_are_never_forgotten_without_a_success() -> None:
    # SP 800-63B-4 counts *consecutive* failures: waiting does not bring the free attempts back.
    clock = Clock()
    state = ThrottleState()
    for _ in range(6):
        state = fail_as_soon_as_allowed(ACCOUNTS, state, clock)
    clock.advance(30 * 86400)
    state = ACCOUNTS.record_failure(state=state, now=clock.now)
    assert state.failures == 7
    assert ACCOUNTS.check(state=state, now=clock.now).retry_after == 4.0


def test_the_address_key_is_throttled_independently() -> None:
    # One address sprays five different accounts once each: no account is throttled, the address is.
    clock = Clock()
    address = ThrottleState()
    accounts = [ThrottleState() for _ in range(5)]
    for index, account in enumerate(accounts):
        assert ACCOUNTS.check(state=account, now=clock.now).allowed
        assert ADDRESSES.check(state=address, now=clock.now).allowed
        accounts[index] = ACCOUNTS.record_failure(state=account, now=clock.now)
        address = ADDRESSES.record_failure(state=address, now=clock.now)
    assert all(ACCOUNTS.check(state=account, now=clock.now) == ALLOWED for account in accounts)
    # A sixth account is fine on its own key, but the caller checks both and the address says wait.
    assert ACCOUNTS.check(state=ThrottleState(), now=clock.now) == ALLOWED
    assert ADDRESSES.check(state=address, now=clock.now) == Decision(allowed=False, retry_after=1.0)
    # And one account guessed from many addresses is throttled on the account key alone.
    account = ThrottleState()
    for _ in range(6):
        account = ACCOUNTS.record_failure(state=account, now=clock.now)
    assert not ACCOUNTS.check(state=account, now=clock.now).allowed
    assert ADDRESSES.check(state=ThrottleState(), now=clock.now) == ALLOWED


def test_addresses_are_never_locked_and_forget_after_a_quiet_day() -> None:
    clock = Clock()
    address = ThrottleState()
    for _ in range(150):
        address = fail_as_soon_as_allowed(ADDRESSES, address, clock)
    assert (address.failures, address.locked) == (150, False)
    assert ADDRESSES.check(state=address, now=clock.now).retry_after == 900.0
    clock.advance(86400)
    assert ADDRESSES.check(state=address, now=clock.now) == ALLOWED
    address = ADDRESSES.record_failure(state=address, now=clock.now)
    assert address.failures == 1


def test_a_clock_stepping_back_does_not_lengthen_the_wait() -> None:
    clock = Clock()
    state = ThrottleState()
    for _ in range(6):
        state = ACCOUNTS.record_failure(state=state, now=clock.now)
    assert ACCOUNTS.check(state=state, now=clock.advance(-3600)).retry_after == 2.0


def test_times_must_be_aware() -> None:
    naive = datetime(2025, 1, 1)
    with pytest.raises(ValueError, match="aware"):
        ACCOUNTS.check(state=ThrottleState(), now=naive)
    with pytest.raises(ValueError, match="aware"):
        ACCOUNTS.record_failure(state=ThrottleState(), now=naive)


def test_policies_cannot_exceed_the_standard() -> None:
    with pytest.raises(ValueError, match="at most 100"):
        ThrottlePolicy(lock_after=101)
    with pytest.raises(ValueError, match="positive"):
        ThrottlePolicy(base_delay=timedelta(0))
    with pytest.raises(ValueError, match="cap"):
        ThrottlePolicy(max_delay=timedelta(milliseconds=1))


@given(st.integers(min_value=0, max_value=10_000))
def test_delays_never_shrink_and_never_pass_the_cap(failures: int) -> None:
    delay = ACCOUNT_POLICY.delay_after(failures)
    assert timedelta(0) <= delay <= timedelta(minutes=15)
    assert delay <= ACCOUNT_POLICY.delay_after(failures + 1)
    assert (delay == timedelta(0)) == (failures < 5)
