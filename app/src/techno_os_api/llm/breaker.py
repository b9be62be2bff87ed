"""A per-provider circuit breaker: a pure state machine with an injected clock.

States and transitions are the runbook's:

    CLOSED --(threshold consecutive failures)--> OPEN
    OPEN --(cooldown elapsed)--> HALF_OPEN            (exactly one trial call is let through;
                                                       the cooldown is longer when the failure
                                                       that opened it carried a Retry-After)
    HALF_OPEN --(trial succeeds)--> CLOSED            (failure count reset)
    HALF_OPEN --(trial fails)--> OPEN                 (for another full cooldown)

Every method is synchronous and never awaits, so under asyncio each call runs to completion
without interleaving: concurrent callers cannot both take the half-open trial. The breaker knows
nothing about HTTP, providers or metrics; the gateway classifies outcomes and reports them here.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

Clock = Callable[[], float]


class State(enum.IntEnum):
    """Values are the `llm_circuit_state` gauge's: 0 closed, 1 open, 2 half-open."""

    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


class CircuitOpenError(Exception):
    """The breaker rejected the call; `retry_after` is the number of seconds to wait."""

    def __init__(self, state: State, retry_after: float) -> None:
        self.state = state
        self.retry_after = retry_after
        super().__init__(f"circuit {state.name}; retry after {retry_after:.1f}s")


@dataclass(frozen=True)
class Permit:
    """Permission for one call; hand it back with exactly one `record_*` or `release`."""

    trial: bool
    generation: int


@dataclass(frozen=True)
class Snapshot:
    state: State
    consecutive_failures: int
    seconds_until_half_open: float


class CircuitBreaker:
    def __init__(
        self,
        failure_threshold: int,
        cooldown_seconds: float,
        clock: Clock = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be >= 1")
        if cooldown_seconds <= 0:
            raise ValueError("cooldown_seconds must be > 0")
        self.failure_threshold = failure_threshold
        self.cooldown_seconds = cooldown_seconds
        self._clock = clock
        self._state = State.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._open_for = cooldown_seconds
        self._trial_in_flight = False
        # Bumped on every state change, so a late outcome from an older state is ignored.
        self._generation = 0

    # --- reading ---------------------------------------------------------------------------
    @property
    def state(self) -> State:
        self._advance()
        return self._state

    def snapshot(self) -> Snapshot:
        self._advance()
        remaining = 0.0
        if self._state is State.OPEN:
            remaining = max(0.0, self._opened_at + self._open_for - self._clock())
        return Snapshot(self._state, self._failures, remaining)

    # --- calling ---------------------------------------------------------------------------
    def acquire(self) -> Permit:
        """Permission for one call, or `CircuitOpenError` at once."""
        self._advance()
        if self._state is State.CLOSED:
            return Permit(trial=False, generation=self._generation)
        if self._state is State.HALF_OPEN and not self._trial_in_flight:
            self._trial_in_flight = True
            return Permit(trial=True, generation=self._generation)
        if self._state is State.OPEN:
            remaining = self._opened_at + self._open_for - self._clock()
            raise CircuitOpenError(State.OPEN, max(1.0, math.ceil(remaining)))
        # HALF_OPEN with the trial in flight: its outcome decides, very soon.
        raise CircuitOpenError(State.HALF_OPEN, 1.0)

    def record_success(self, permit: Permit) -> None:
        if permit.generation != self._generation:
            return
        if permit.trial:
            self._transition(State.CLOSED)
        self._failures = 0

    def record_failure(self, permit: Permit, hold_open_for: float = 0.0) -> None:
        """A failed call. `hold_open_for`: the provider asked not to be called for that long
        (its Retry-After); if this failure opens the circuit, it stays OPEN at least that long."""
        if permit.generation != self._generation:
            return
        self._failures += 1
        if permit.trial or self._failures >= self.failure_threshold:
            self._open(hold_open_for)

    def release(self, permit: Permit) -> None:
        """The call ended without a verdict on the provider's health (cancelled, or an error
        that does not count): nothing changes, and a half-open trial slot is freed."""
        if permit.generation == self._generation and permit.trial:
            self._trial_in_flight = False

    # --- internals -------------------------------------------------------------------------
    def _advance(self) -> None:
        if self._state is State.OPEN and self._clock() >= self._opened_at + self._open_for:
            self._transition(State.HALF_OPEN)

    def _open(self, hold_open_for: float = 0.0) -> None:
        self._transition(State.OPEN)
        self._opened_at = self._clock()
        self._open_for = max(self.cooldown_seconds, hold_open_for)

    def _transition(self, state: State) -> None:
        if state is not self._state:
            self._generation += 1
        self._state = state
        self._trial_in_flight = False
