"""The breaker as a pure state machine, time driven by a fake clock."""

from __future__ import annotations

import pytest
from app_helpers import FakeClock
from techno_os_api.llm.breaker import CircuitBreaker, CircuitOpenError, State


def breaker(clock: FakeClock, threshold: int = 3, cooldown: float = 60) -> CircuitBreaker:
    return CircuitBreaker(threshold, cooldown, clock)


def fail(b: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        b.record_failure(b.acquire())


def test_starts_closed():
    b = breaker(FakeClock())
    assert b.state is State.CLOSED
    assert b.snapshot().consecutive_failures == 0


def test_opens_after_threshold_consecutive_failures():
    b = breaker(FakeClock())
    fail(b, 2)
    assert b.state is State.CLOSED
    fail(b)
    assert b.state is State.OPEN
    assert b.snapshot().consecutive_failures == 3


def test_success_resets_the_failure_count():
    b = breaker(FakeClock())
    fail(b, 2)
    b.record_success(b.acquire())
    assert b.snapshot().consecutive_failures == 0
    fail(b, 2)
    assert b.state is State.CLOSED


def test_open_rejects_at_once_with_seconds_to_wait():
    clock = FakeClock()
    b = breaker(clock)
    fail(b, 3)
    clock.advance(20.5)
    with pytest.raises(CircuitOpenError) as caught:
        b.acquire()
    assert caught.value.state is State.OPEN
    assert caught.value.retry_after == 40  # ceil(39.5)
    assert b.snapshot().seconds_until_half_open == pytest.approx(39.5)


def test_becomes_half_open_when_cooldown_elapses():
    clock = FakeClock()
    b = breaker(clock)
    fail(b, 3)
    clock.advance(59.999)
    assert b.state is State.OPEN
    clock.advance(0.001)
    assert b.state is State.HALF_OPEN
    assert b.snapshot().seconds_until_half_open == 0


def test_half_open_lets_exactly_one_trial_through():
    clock = FakeClock()
    b = breaker(clock)
    fail(b, 3)
    clock.advance(60)
    trial = b.acquire()
    assert trial.trial
    for _ in range(5):
        with pytest.raises(CircuitOpenError) as caught:
            b.acquire()
        assert caught.value.state is State.HALF_OPEN
    b.record_success(trial)
    assert b.state is State.CLOSED
    assert b.snapshot().consecutive_failures == 0


def test_failed_trial_reopens_for_a_full_cooldown():
    clock = FakeClock()
    b = breaker(clock)
    fail(b, 3)
    clock.advance(100)  # well past the cooldown
    b.record_failure(b.acquire())
    assert b.state is State.OPEN
    assert b.snapshot().seconds_until_half_open == 60
    clock.advance(59)
    assert b.state is State.OPEN
    clock.advance(1)
    assert b.state is State.HALF_OPEN


def test_released_trial_frees_the_slot_without_a_verdict():
    clock = FakeClock()
    b = breaker(clock)
    fail(b, 3)
    clock.advance(60)
    b.release(b.acquire())  # e.g. the caller was cancelled
    assert b.state is State.HALF_OPEN
    assert b.acquire().trial


def test_late_outcomes_from_before_opening_are_ignored():
    clock = FakeClock()
    b = breaker(clock)
    in_flight = b.acquire()
    fail(b, 3)
    clock.advance(60)
    b.record_success(in_flight)  # a slow call started while CLOSED
    assert b.state is State.HALF_OPEN


def test_rejects_nonsense_configuration():
    with pytest.raises(ValueError):
        CircuitBreaker(0, 60)
    with pytest.raises(ValueError):
        CircuitBreaker(3, 0)


def test_gateway_core_does_not_import_the_web_framework():
    import ast
    from pathlib import Path

    import techno_os_api.llm

    for path in Path(techno_os_api.llm.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in ("fastapi", "starlette"), f"{path.name}: {name}"
