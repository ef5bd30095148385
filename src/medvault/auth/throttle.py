"""Login throttling: growing delays after repeated failures, and a hard lock for accounts.

One `ThrottleState` is kept per key. Accounts and client addresses are separate keys with separate
policies, and the login path checks both before verifying anything: the account key stops guessing
one user's password from many addresses, the address key slows one address spraying many accounts.

Schedule (SP 800-63B-4 3.2.2 asks for rate limiting, and at most 100 consecutive failed attempts on
one account):

* the first 5 consecutive failures cost nothing (typos);
* after the n-th failure (n >= 5) the next attempt waits `min(2 ** (n - 5), 900)` seconds from that
  failure: 1 s, 2 s, 4 s ... capped at 15 minutes (from the 15th failure on). The cap keeps a
  forgotten-password user able to try again within a coffee break while holding a guesser to four
  tries an hour; reaching the lock at 100 then takes an attacker more than 20 hours, time in which
  the failures are visible in the audit log;
* the 100th consecutive failure locks the account until an administrator unlocks it (`unlock`).
  Addresses are never locked: many users can share one (a clinic behind NAT), and locking it would
  hand an attacker a denial of service.
* a success resets the key.

Everything is a pure function of the state and `now` (an injected clock), so the store can persist
the state in the login's transaction and tests can walk the schedule without sleeping.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

FREE_FAILURES = 5
BASE_DELAY = timedelta(seconds=1)
MAX_DELAY = timedelta(minutes=15)
LOCK_AFTER = 100
# Address keys forget failures after a day without any: an address reassigned to someone else (or an
# attacker who moved on) should not leave the next user waiting.
ADDRESS_FORGET_AFTER = timedelta(days=1)
# 2**40 s is far beyond any cap; bounding the exponent keeps the arithmetic in timedelta's range.
_MAX_EXPONENT = 40


@dataclass(frozen=True, slots=True)
class ThrottleState:
    """What the store persists per key. The zero value is a key that has never failed."""

    failures: int = 0
    last_failure: datetime | None = None
    locked: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether an attempt may go ahead now; if not, after how many seconds (infinite when locked)."""

    allowed: bool
    retry_after: float
    locked: bool = False


@dataclass(frozen=True, slots=True)
class ThrottlePolicy:
    """The schedule for one kind of key. `lock_after=None`: never lock (address keys)."""

    free_failures: int = FREE_FAILURES
    base_delay: timedelta = BASE_DELAY
    max_delay: timedelta = MAX_DELAY
    lock_after: int | None = LOCK_AFTER
    forget_after: timedelta | None = None

    def __post_init__(self) -> None:
        if self.free_failures < 0 or self.base_delay <= timedelta(0) or self.max_delay < self.base_delay:
            raise ValueError("throttle delays must be positive and the cap at least the base delay")
        # SP 800-63B-4: no more than 100 consecutive failed attempts on a single account.
        if self.lock_after is not None and not 1 <= self.lock_after <= LOCK_AFTER:
            raise ValueError("an account must lock after at most 100 consecutive failures")

    def delay_after(self, failures: int) -> timedelta:
        """The wait imposed after `failures` consecutive failures (zero while still free)."""
        if failures < self.free_failures:
            return timedelta(0)
        exponent = min(failures - self.free_failures, _MAX_EXPONENT)
        return min(self.base_delay * (1 << exponent), self.max_delay)


ACCOUNT_POLICY = ThrottlePolicy()
ADDRESS_POLICY = ThrottlePolicy(lock_after=None, forget_after=ADDRESS_FORGET_AFTER)


class Throttle:
    """Applies one `ThrottlePolicy` to states; holds no state of its own (one instance per policy)."""

    def __init__(self, policy: ThrottlePolicy = ACCOUNT_POLICY) -> None:
        self.policy = policy

    def check(self, *, state: ThrottleState, now: datetime) -> Decision:
        """May an attempt be made at `now`? Call before verifying anything (and count nothing here)."""
        _require_aware(now)
        if state.locked:
            return Decision(allowed=False, retry_after=math.inf, locked=True)
        state = self._current(state, now)
        delay = self.policy.delay_after(state.failures)
        if state.last_failure is None or delay <= timedelta(0):
            return Decision(allowed=True, retry_after=0.0)
        # Capped at `delay`: if the clock stepped backwards, the wait must not grow with the step.
        wait = min(state.last_failure + delay - now, delay)
        if wait <= timedelta(0):
            return Decision(allowed=True, retry_after=0.0)
        return Decision(allowed=False, retry_after=wait.total_seconds())

    def record_failure(self, *, state: ThrottleState, now: datetime) -> ThrottleState:
        """The state after a verification failed at `now` (only for attempts `check` allowed)."""
        _require_aware(now)
        failures = self._current(state, now).failures + 1
        lock_after = self.policy.lock_after
        locked = state.locked or (lock_after is not None and failures >= lock_after)
        return ThrottleState(failures=failures, last_failure=now, locked=locked)

    def record_success(self, *, state: ThrottleState) -> ThrottleState:
        """The state after a successful login: the count restarts; a lock stays (only `unlock` lifts it)."""
        return ThrottleState(locked=state.locked)

    def unlock(self, *, state: ThrottleState) -> ThrottleState:
        """An administrator's unlock: the key starts afresh, with its free failures again."""
        del state  # the previous state is irrelevant, but taking it keeps the call sites uniform
        return ThrottleState()

    def _current(self, state: ThrottleState, now: datetime) -> ThrottleState:
        """`state`, or a fresh state if the policy forgets failures and enough quiet time passed."""
        forget_after = self.policy.forget_after
        if forget_after is not None and state.last_failure is not None and now - state.last_failure >= forget_after:
            return replace(state, failures=0, last_failure=None)
        return state


def _require_aware(now: datetime) -> None:
    # Naive datetimes compare wrongly across DST changes and fail against aware stored ones.
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("throttle times must be timezone-aware")
