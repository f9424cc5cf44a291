"""Restart policy: backoff grows for quick crashes, resets after stable running, obeys modes."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgefleet.core.updates.restart_policy import (
    RestartMode,
    RestartPolicy,
    decide_restart,
    describe_exit,
)

POLICY = RestartPolicy(base_delay_s=1.0, max_delay_s=60.0, stable_after_s=30.0)


def crash_loop(policy: RestartPolicy, crashes: int, ran_for_s: float = 0.5) -> list[float]:
    rng = random.Random(7)
    failures, delays = 0, []
    for _ in range(crashes):
        decision = decide_restart(
            policy, failures=failures, ran_for_s=ran_for_s, exit_code=1, rng=rng
        )
        failures = decision.failures
        delays.append(decision.delay_s)
    return delays


def test_quick_crashes_wait_exponentially_longer_up_to_the_cap() -> None:
    delays = crash_loop(POLICY, 10)
    for attempt, delay in enumerate(delays):
        ceiling = min(60.0, 2.0**attempt)
        assert ceiling / 2 <= delay <= ceiling
    assert delays[-1] >= 30.0  # capped at 60, never below half of it


def test_a_process_that_ran_stably_starts_a_fresh_backoff_sequence() -> None:
    rng = random.Random(1)
    decision = decide_restart(POLICY, failures=8, ran_for_s=30.0, exit_code=-9, rng=rng)
    assert decision.restart
    assert decision.failures == 1
    assert 0.5 <= decision.delay_s <= 1.0
    assert "signal SIGKILL after 30.0 s" in decision.reason


def test_a_crash_shortly_after_start_keeps_counting() -> None:
    decision = decide_restart(POLICY, failures=3, ran_for_s=29.9, exit_code=2, rng=random.Random(0))
    assert decision.failures == 4
    assert 4.0 <= decision.delay_s <= 8.0
    assert decision.reason.startswith("exited with exit code 2 after 29.9 s; restart 4 in")


@pytest.mark.parametrize(
    ("mode", "exit_code", "restart"),
    [
        (RestartMode.ALWAYS, 0, True),
        (RestartMode.ALWAYS, 1, True),
        (RestartMode.ON_FAILURE, 0, False),
        (RestartMode.ON_FAILURE, -15, True),
        (RestartMode.NEVER, 1, False),
    ],
)
def test_restart_modes(mode: RestartMode, exit_code: int, restart: bool) -> None:
    policy = RestartPolicy(mode=mode)
    decision = decide_restart(
        policy, failures=0, ran_for_s=1.0, exit_code=exit_code, rng=random.Random(0)
    )
    assert decision.restart is restart
    if not restart:
        assert f"restart policy {mode}" in decision.reason


def test_bad_policies_are_refused() -> None:
    with pytest.raises(ValueError):
        RestartPolicy(base_delay_s=10.0, max_delay_s=1.0)
    with pytest.raises(ValueError):
        RestartPolicy(stable_after_s=-1.0)


def test_exit_descriptions() -> None:
    assert describe_exit(3) == "exit code 3"
    assert describe_exit(-11) == "signal SIGSEGV"
    assert describe_exit(-200) == "signal 200"


@given(
    failures=st.integers(0, 1000),
    ran_for_s=st.floats(0, 1e6, allow_nan=False),
    seed=st.integers(0, 2**32),
)
def test_delay_is_always_within_the_bounds(failures: int, ran_for_s: float, seed: int) -> None:
    decision = decide_restart(
        POLICY, failures=failures, ran_for_s=ran_for_s, exit_code=1, rng=random.Random(seed)
    )
    assert POLICY.base_delay_s / 2 <= decision.delay_s <= POLICY.max_delay_s
    assert decision.failures >= 1
