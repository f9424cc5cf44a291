"""The rollout state machine as a table, operator commands, and release trains."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from edgefleet.core.rollouts.gates import GateResult, GateVerdict
from edgefleet.core.rollouts.release_train import may_start_next
from edgefleet.core.rollouts.rollout import (
    FINAL_STATES,
    INITIAL_STATES,
    TRANSITIONS,
    GateEvaluation,
    OperatorCommand,
    Rollout,
    RolloutEvent,
    RolloutState,
    apply_command,
    approve,
    transition,
)
from edgefleet.core.rollouts.spec import ReleaseRef, RolloutSpec
from edgefleet.errors import Conflict, IllegalTransition

S, E = RolloutState, RolloutEvent
NOW = datetime(2026, 3, 2, 12, tzinfo=UTC)
SPEC = RolloutSpec(release=ReleaseRef("det", "2.0.0"))


def test_the_happy_path_is_legal() -> None:
    state = S.PENDING
    for event in (E.START, E.SOAK, E.PROMOTE, E.SOAK, E.COMPLETE):
        state = transition(state, event)
    assert state is S.SUCCEEDED


def test_every_pair_outside_the_table_is_refused() -> None:
    for state in S:
        for event in E:
            if (state, event) in TRANSITIONS:
                assert transition(state, event) is TRANSITIONS[(state, event)]
            else:
                with pytest.raises(IllegalTransition, match=f"cannot {event} a rollout that is"):
                    transition(state, event)


def test_illegal_transition_is_a_conflict() -> None:
    with pytest.raises(Conflict):
        transition(S.SUCCEEDED, E.RESUME)


def test_final_states_only_allow_an_operator_rollback() -> None:
    for state in FINAL_STATES:
        moves = {event for (s, event) in TRANSITIONS if s is state}
        assert moves <= {E.ROLLBACK}
    assert not {event for (s, event) in TRANSITIONS if s is S.ROLLED_BACK}


def test_every_state_is_reachable_from_an_initial_state() -> None:
    reached, frontier = set(INITIAL_STATES), list(INITIAL_STATES)
    while frontier:
        state = frontier.pop()
        for (s, _), to in TRANSITIONS.items():
            if s is state and to not in reached:
                reached.add(to)
                frontier.append(to)
    assert reached == set(S)


def test_a_rollout_awaiting_approval_only_starts_once_approved_or_is_aborted() -> None:
    waiting = rollout(S.AWAITING_APPROVAL)
    approved = approve(waiting, requested_by="alice (tok-1)", actor="bob (tok-2)")
    assert approved.state is S.PENDING
    assert approved.reason == (
        "requested by alice (tok-1), approved by bob (tok-2); waiting to start"
    )
    assert apply_command(waiting, OperatorCommand.ABORT, NOW, actor="alice").state is S.ABORTED
    for command in (OperatorCommand.PAUSE, OperatorCommand.RESUME, OperatorCommand.ROLLBACK):
        with pytest.raises(IllegalTransition):
            apply_command(waiting, command, NOW, actor="alice")
    with pytest.raises(IllegalTransition, match="cannot approve a rollout that is pending"):
        approve(approved, requested_by="alice", actor="bob")


def test_a_rollback_cannot_be_paused_or_aborted() -> None:
    for event in (E.PAUSE, E.ABORT, E.RESUME, E.PROMOTE):
        with pytest.raises(IllegalTransition):
            transition(S.ROLLING_BACK, event)


def rollout(state: RolloutState, **changes: Any) -> Rollout:
    return replace(Rollout("r1", SPEC), state=state, **changes)


def test_operator_pause_and_resume() -> None:
    paused = apply_command(
        rollout(S.SOAKING, soak_until=NOW),
        OperatorCommand.PAUSE,
        NOW,
        actor="alice",
        note="change freeze",
    )
    assert paused.state is S.PAUSED
    assert paused.reason == "pause by alice: change freeze"
    resumed = apply_command(paused, OperatorCommand.RESUME, NOW, actor="bob")
    assert resumed.state is S.PROGRESSING
    # The soak starts over once the wave is settled again.
    assert resumed.soak_until is None and resumed.gate_wait_until is None


def test_operator_rollback_records_when_it_started() -> None:
    rolled = apply_command(rollout(S.SUCCEEDED), OperatorCommand.ROLLBACK, NOW, actor="alice")
    assert rolled.state is S.ROLLING_BACK
    assert rolled.rollback_started_at == NOW


@pytest.mark.parametrize(
    ("state", "command"),
    [
        (S.PROGRESSING, OperatorCommand.RESUME),
        (S.PENDING, OperatorCommand.PAUSE),
        (S.PENDING, OperatorCommand.ROLLBACK),
        (S.ROLLING_BACK, OperatorCommand.ABORT),
        (S.ROLLED_BACK, OperatorCommand.ROLLBACK),
        (S.ABORTED, OperatorCommand.RESUME),
    ],
)
def test_illegal_commands(state: RolloutState, command: OperatorCommand) -> None:
    with pytest.raises(IllegalTransition):
        apply_command(rollout(state), command, NOW, actor="alice")


# --- release trains -------------------------------------------------------------------------


def evaluation(wave: int, verdict: GateVerdict, with_results: bool = True) -> GateEvaluation:
    results = (GateResult("install_failure_rate", verdict, 0.0, 5, "%", 3, 3, "r"),)
    return GateEvaluation(wave, NOW, verdict, results if with_results else (), f"{verdict}")


def test_train_goes_on_after_a_success_with_passing_gates() -> None:
    done = rollout(
        S.SUCCEEDED,
        gate_evaluations=(evaluation(0, GateVerdict.PASS), evaluation(1, GateVerdict.PASS)),
    )
    verdict = may_start_next(done)
    assert verdict.may_start
    assert "succeeded and its gates passed" in verdict.reason


def test_train_goes_on_when_no_gate_was_declared() -> None:
    done = rollout(S.SUCCEEDED, gate_evaluations=(evaluation(0, GateVerdict.PASS, False),))
    assert may_start_next(done).may_start
    assert "declared no gates" in may_start_next(done).reason


@pytest.mark.parametrize("state", [S.FAILED, S.ROLLED_BACK, S.ABORTED, S.PAUSED, S.SOAKING])
def test_train_stops_unless_the_previous_rollout_succeeded(state: RolloutState) -> None:
    verdict = may_start_next(rollout(state, reason="something"))
    assert not verdict.may_start
    assert f"is {state}: something" in verdict.reason


def test_train_stops_after_a_gate_failure_even_if_an_operator_resumed() -> None:
    done = rollout(
        S.SUCCEEDED,
        gate_evaluations=(evaluation(0, GateVerdict.FAIL), evaluation(0, GateVerdict.PASS)),
    )
    verdict = may_start_next(done)
    assert not verdict.may_start
    assert "a gate failed on wave 1" in verdict.reason


def test_train_stops_without_enough_data_unless_allowed() -> None:
    done = rollout(S.SUCCEEDED, gate_evaluations=(evaluation(0, GateVerdict.INSUFFICIENT_DATA),))
    assert not may_start_next(done).may_start
    assert may_start_next(done, allow_insufficient_data=True).may_start
    assert not may_start_next(rollout(S.SUCCEEDED)).may_start  # nothing was evaluated
