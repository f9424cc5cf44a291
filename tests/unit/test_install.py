"""The install state machine, resume decisions after a crash, and the health judgement."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgefleet.core.updates.install import (
    FAILED_PROBES_TO_GIVE_UP,
    FINAL_STATES,
    MAX_HEALTH_ATTEMPTS,
    TRANSITIONS,
    HealthSample,
    HealthVerdictState,
    InstallState,
    ResumeAction,
    judge_health,
    resume_action,
    transition,
)
from edgefleet.core.updates.service_manifest import HealthCriteria
from edgefleet.errors import IllegalTransition


@pytest.mark.parametrize("current", list(InstallState))
@pytest.mark.parametrize("target", list(InstallState))
def test_transitions_follow_the_table(current: InstallState, target: InstallState) -> None:
    if target in TRANSITIONS[current]:
        assert transition(current, target) is target
    else:
        with pytest.raises(IllegalTransition):
            transition(current, target)


def test_only_a_switched_in_release_can_roll_back() -> None:
    sources = {s for s, targets in TRANSITIONS.items() if InstallState.ROLLED_BACK in targets}
    assert sources == {InstallState.INSTALLING, InstallState.HEALTH_CHECK}
    assert all(not TRANSITIONS[s] for s in FINAL_STATES)


@given(st.sampled_from(list(InstallState)), st.booleans(), st.integers(0, 5))
def test_resume_never_touches_the_live_slot_before_the_switch(
    state: InstallState, stage_only: bool, attempts: int
) -> None:
    action = resume_action(state, stage_only, attempts)
    if state in FINAL_STATES:
        assert action is ResumeAction.NOTHING
    elif state in (InstallState.DOWNLOADING, InstallState.VERIFYING):
        assert action is ResumeAction.RESTART_DELIVERY
    elif state is InstallState.STAGED:
        expected = ResumeAction.WAIT_FOR_ACTIVATION if stage_only else ResumeAction.SWITCH_IN
        assert action is expected
    else:
        expected = (
            ResumeAction.ROLL_BACK if attempts >= MAX_HEALTH_ATTEMPTS else ResumeAction.SWITCH_IN
        )
        assert action is expected


CRITERIA = HealthCriteria(window_s=10, max_error_rate=0.05, min_requests=20)


def samples(
    n: int, ok: bool = True, errors_per_s: int = 0, restarts: int = 0, requests_per_s: int = 10
) -> list[HealthSample]:
    return [
        HealthSample(
            float(t),
            ok,
            "200" if ok else "HTTP 503",
            requests_per_s * t,
            errors_per_s * t,
            restarts,
        )
        for t in range(n)
    ]


def test_healthy_after_the_window_and_watching_before() -> None:
    assert judge_health(samples(5), CRITERIA, 0, 5).state is HealthVerdictState.WATCHING
    assert judge_health(samples(11), CRITERIA, 0, 10).state is HealthVerdictState.HEALTHY


def test_error_rate_above_threshold_is_unhealthy_with_the_figures() -> None:
    verdict = judge_health(samples(11, errors_per_s=1), CRITERIA, 0, 10)
    assert verdict.state is HealthVerdictState.UNHEALTHY
    assert "10.0%" in verdict.reason and "10/100" in verdict.reason


def test_too_few_requests_do_not_decide() -> None:
    few = samples(11, errors_per_s=1, requests_per_s=1)  # 10 requests < min_requests 20
    assert judge_health(few, CRITERIA, 0, 10).state is HealthVerdictState.HEALTHY


def test_a_crash_or_a_failing_streak_ends_the_window_early() -> None:
    crashed = judge_health(samples(3, restarts=1), CRITERIA, 0, 3)
    assert crashed.state is HealthVerdictState.UNHEALTHY and "restarted" in crashed.reason
    failing = judge_health(samples(FAILED_PROBES_TO_GIVE_UP, ok=False), CRITERIA, 0, 4)
    assert failing.state is HealthVerdictState.UNHEALTHY and "in a row" in failing.reason
    assert judge_health(samples(2, ok=False), CRITERIA, 0, 1).state is HealthVerdictState.WATCHING


def test_failing_at_the_end_of_the_window_is_unhealthy() -> None:
    late = [*samples(10), HealthSample(10.0, False, "HTTP 503: not finite", 100, 0)]
    verdict = judge_health(late, CRITERIA, 0, 10)
    assert verdict.state is HealthVerdictState.UNHEALTHY and "not finite" in verdict.reason


def refusals(n: int) -> list[HealthSample]:
    """A service not listening yet, probed every second."""
    return [HealthSample(t, False, "GET /healthz: connection refused", reached=False)
            for t in range(n)]  # fmt: skip


def test_the_window_opens_at_the_first_answer_within_the_start_period() -> None:
    criteria = replace(CRITERIA, start_period_s=30)
    refused = refusals(20)
    starting = judge_health(refused, criteria, 0, 19)
    assert starting.state is HealthVerdictState.WATCHING  # 20 refusals: still starting
    assert "starting" in starting.reason and "connection refused" in starting.reason
    # Up at t=20: the 10 s window runs from there, not from the switch.
    up = [*refused, *(HealthSample(20 + t, True, "200", 10 * t, 0) for t in range(11))]
    assert judge_health(up[:25], criteria, 0, 24).state is HealthVerdictState.WATCHING
    assert judge_health(up, criteria, 0, 30).state is HealthVerdictState.HEALTHY
    # Answering but failing is no start-up: five in a row end the window early.
    failing = [*refused, *(HealthSample(20 + t, False, "HTTP 503: not finite")
                           for t in range(FAILED_PROBES_TO_GIVE_UP))]  # fmt: skip
    verdict = judge_health(failing, criteria, 0, 25)
    assert verdict.state is HealthVerdictState.UNHEALTHY and "not finite" in verdict.reason


def test_no_answer_within_the_start_period_is_unhealthy() -> None:
    criteria = replace(CRITERIA, start_period_s=30)
    verdict = judge_health(refusals(31), criteria, 0, 30)
    assert verdict.state is HealthVerdictState.UNHEALTHY
    assert "start period of 30 s" in verdict.reason and "connection refused" in verdict.reason
