"""Hypothesis drives `decide` through random device outcomes, clock steps and operator
commands, and checks the promises of the rollout engine after every decision:

- no wave ever runs ahead: every device that got the release belongs to a wave the rollout
  has reached, and no device is in two waves;
- `max_unavailable` is never exceeded by an assignment;
- the rate limit holds over every sliding minute;
- a failed gate always stops promotion (until an operator resumes and the gates pass);
- a rollback reaches every device that got the release, and returns each to the release it
  last ran successfully before its first attempt, whatever it reported since;
- maintenance windows, retries and skipped devices are respected;
- the same inputs give the same decision.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from edgefleet.core.rollouts.actions import (
    AssignRelease,
    CompleteRollout,
    Decision,
    PauseRollout,
    PromoteWave,
    RecordGates,
    RevertRelease,
    StartRollback,
    apply_decision,
)
from edgefleet.core.rollouts.decision import decide
from edgefleet.core.rollouts.gates import DeviceTelemetry, GateVerdict, InsufficientDataAction
from edgefleet.core.rollouts.maintenance import any_window_open, usable_time_zone
from edgefleet.core.rollouts.rollout import (
    FINAL_STATES,
    DeviceState,
    InstallReport,
    OperatorCommand,
    Rollout,
    RolloutDevice,
    RolloutState,
    apply_command,
    desired_release,
)
from edgefleet.core.rollouts.spec import DeadlineAction, parse_rollout_spec
from edgefleet.core.updates.compat import CompatVerdict, RequirementFailure
from edgefleet.errors import IllegalTransition

WAVES = [["100%"], [1, "100%"], [1, "25%", "100%"], [2, "50%"], ["10%", "30%", "60%"], [1, 3, 6]]
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Nowhere/Zone", None]
# Resume is the one command that keeps a rollout going: draw it more often than abort.
COMMANDS = [OperatorCommand.RESUME] * 3 + [
    OperatorCommand.PAUSE,
    OperatorCommand.ROLLBACK,
    OperatorCommand.ABORT,
]
REVERTED = (DeviceState.ROLLING_BACK, DeviceState.ROLLED_BACK, DeviceState.ROLLBACK_FAILED)
INCOMPATIBLE = CompatVerdict((RequirementFailure("min_memory_mb=512", "device has 256 MB"),))
# Starts the evening before Europe/Berlin springs forward (2026-03-29 01:00 UTC).
START = datetime(2026, 3, 28, 20, 0, tzinfo=UTC)


class RolloutMachine(RuleBasedStateMachine):
    @initialize(data=st.data())
    def setup(self, data: st.DataObject) -> None:
        draw = data.draw
        strategy: dict[str, Any] = {
            "waves": draw(st.sampled_from(WAVES)),
            "soak": draw(st.sampled_from(["0s", "5m", "20m"])),
            "max_unavailable": draw(st.sampled_from([1, 2, "20%", "100%"])),
            "install_timeout": "2h",
        }
        rate = draw(st.sampled_from([None, 1, 3]))
        if rate is not None:
            strategy["devices_per_minute"] = rate
        gates: dict[str, Any] = {
            "install_failure_rate": {
                "max_percent": draw(st.sampled_from([0, 20, 50])),
                "min_devices": draw(st.integers(1, 3)),
            },
            "insufficient_data": {
                "wait": draw(st.sampled_from(["0s", "10m"])),
                "then": draw(st.sampled_from(["promote", "fail"])),
            },
        }
        if draw(st.booleans()):
            gates["workload_error_rate"] = {"max_percent": 5, "min_devices": 2, "min_requests": 50}
        doc: dict[str, Any] = {
            "release": "det@2.0.0",
            "strategy": strategy,
            "gates": gates,
            "on_failure": draw(st.sampled_from(["pause", "rollback"])),
            "retries": {
                "max_attempts": draw(st.integers(1, 3)),
                "backoff": {"initial": draw(st.sampled_from(["30s", "20m"])), "max": "1h"},
            },
        }
        if draw(st.booleans()):
            doc["maintenance_windows"] = [{"cron": "30 */3 * * *", "duration": "1h"}]
        deadline = draw(st.sampled_from([None, "force", "fail"]))
        if deadline is not None:
            doc["deadline"] = {"after": "12h", "action": deadline}
        self.spec = parse_rollout_spec(doc)
        self.rollout = Rollout("stateful", self.spec)
        n = draw(st.integers(0, 16))
        self.devices = {
            f"d{i:02d}": RolloutDevice(
                f"d{i:02d}",
                current_release=draw(st.sampled_from(["det@1.0.0", None])),
                time_zone=draw(st.sampled_from(ZONES)),
                compatibility=INCOMPATIBLE if draw(st.integers(0, 9)) == 0 else CompatVerdict(),
            )
            for i in range(n)
        }
        self.telemetry: dict[str, DeviceTelemetry] = {}
        self.now = START
        self.assignment_times: list[datetime] = []
        self.ever_assigned: set[str] = set()
        self.blocked_wave: int | None = None  # a gate failed here; no promotion until resume
        self.published: dict[str, str | None] = {}  # what the controller last published
        self.last_good_at_first: dict[str, str | None] = {}  # when first assigned

    # --- the world changes, then the engine decides -----------------------------------------

    @rule(data=st.data(), seconds=st.sampled_from([0, 1, 30, 61, 300, 900, 1800]))
    def time_passes_and_devices_report(self, data: st.DataObject, seconds: int) -> None:
        self.now += timedelta(seconds=seconds)
        # Devices report on their current assignment; an installed device may still fail
        # (its agent rolls back after a failed health window).
        reporting = sorted(
            d
            for d, rec in self.devices.items()
            if rec.state in (DeviceState.UPDATING, DeviceState.INSTALLED, DeviceState.ROLLING_BACK)
            and (rec.report is InstallReport.PENDING or rec.state is DeviceState.INSTALLED)
        )
        if reporting:
            chosen = data.draw(st.lists(st.sampled_from(reporting), unique=True))
            for device_id in chosen:
                rec = self.devices[device_id]
                if rec.state is DeviceState.INSTALLED and data.draw(st.integers(0, 7)) > 0:
                    continue  # rarely
                ok = rec.state is not DeviceState.INSTALLED and data.draw(st.integers(0, 4)) > 0
                report = InstallReport.INSTALLED if ok else InstallReport.FAILED
                self.devices[device_id] = replace(rec, report=report)
                if ok:
                    errors = data.draw(st.sampled_from([0, 1, 2, 20]))
                    self.telemetry[device_id] = DeviceTelemetry(
                        workload_requests=100, workload_errors=errors
                    )
        self.decide_and_apply()

    @rule(data=st.data())
    def a_device_changes(self, data: st.DataObject) -> None:
        if self.devices:
            device_id = data.draw(st.sampled_from(sorted(self.devices)))
            self.devices[device_id] = replace(
                self.devices[device_id],
                healthy=data.draw(st.integers(0, 2)) > 0,
                compatibility=INCOMPATIBLE
                if data.draw(st.integers(0, 5)) == 0
                else CompatVerdict(),
                current_release=data.draw(st.sampled_from(["det@1.0.0", "det@0.9.0", None])),
            )
        self.decide_and_apply()

    @rule(data=st.data(), command=st.sampled_from(COMMANDS))
    def an_operator_acts(self, data: st.DataObject, command: OperatorCommand) -> None:
        if data.draw(st.integers(0, 2)) > 0:  # operators step in now and then
            return
        try:
            self.rollout = apply_command(self.rollout, command, self.now, actor="hypothesis")
        except IllegalTransition:
            return
        if command is OperatorCommand.RESUME:
            self.blocked_wave = None
        self.decide_and_apply()

    def decide_and_apply(self) -> None:
        before = self.rollout
        inputs = dict(self.devices)
        decision = decide(before, inputs, self.telemetry, self.now)
        shuffled = dict(reversed(list(inputs.items())))
        assert decide(before, shuffled, dict(self.telemetry), self.now) == decision
        after, devices = apply_decision(before, inputs, decision)
        self.check_decision(before, inputs, decision, after, devices)
        self.rollout, self.devices = after, devices

    def check_decision(
        self,
        before: Rollout,
        inputs: dict[str, RolloutDevice],
        decision: Decision,
        after: Rollout,
        devices: dict[str, RolloutDevice],
    ) -> None:
        assert decision.state is after.state
        assert decision.reason
        assert all(action.reason for action in decision.actions)
        if before.state in FINAL_STATES:
            assert decision.actions == ()
        plan = after.plan
        if decision.assignments:
            assert plan is not None
            assert after.state is RolloutState.PROGRESSING
            self.check_assignments(before, inputs, decision, after, devices)
        self.check_gates(decision, after)
        if plan is not None:
            # No wave runs ahead: every device that got the release is in a reached wave.
            reached = set(plan.devices_through(after.wave))
            touched = {d for d, rec in devices.items() if rec.touched}
            assert touched <= reached
            assert touched == self.ever_assigned
            for wave in plan.waves:
                assert sum(d in touched for d in wave.device_ids) <= wave.size
        # A rollback reaches every device that got the release.
        if after.state in (RolloutState.ROLLING_BACK, RolloutState.ROLLED_BACK) or (
            after.state is RolloutState.FAILED and after.rollback_started_at is not None
        ):
            assert all(rec.state in REVERTED for rec in devices.values() if rec.touched)
        if after.state is RolloutState.ROLLED_BACK:
            assert all(
                rec.state is DeviceState.ROLLED_BACK for rec in devices.values() if rec.touched
            )
        if after.state is RolloutState.SUCCEEDED:
            assert plan is not None and after.wave == len(plan.waves) - 1
        max_attempts = self.spec.retries.max_attempts
        assert all(rec.attempts <= max_attempts for rec in devices.values())
        # The records alone say what every device's desired state must name.
        for action in decision.actions:
            if isinstance(action, AssignRelease | RevertRelease):
                self.published[action.device_id] = action.release
            if isinstance(action, RevertRelease):
                assert action.release == self.last_good_at_first[action.device_id]
        assert decision.changed_device_ids == {d for d in devices if devices[d] != inputs[d]}
        for device_id, rec in devices.items():
            wanted = desired_release(after, rec)
            if device_id in self.published:
                assert wanted is not None and wanted.release == self.published[device_id]
                assert wanted.attempt == rec.attempts
            else:
                assert wanted is None

    def check_assignments(
        self,
        before: Rollout,
        inputs: dict[str, RolloutDevice],
        decision: Decision,
        after: Rollout,
        devices: dict[str, RolloutDevice],
    ) -> None:
        plan = after.plan
        assert plan is not None
        ids = [a.device_id for a in decision.assignments]
        assert len(ids) == len(set(ids))
        for action in decision.assignments:
            assert action.wave == plan.wave_of(action.device_id)
            assert action.wave <= after.wave
            assert action.attempt == devices[action.device_id].attempts
            assert inputs[action.device_id].state is not DeviceState.SKIPPED_INCOMPATIBLE
            assert devices[action.device_id].compatibility.compatible
            forced = after.past_deadline(self.now, DeadlineAction.FORCE)
            zone = usable_time_zone(inputs[action.device_id].time_zone)
            assert forced or any_window_open(self.spec.maintenance_windows, zone, self.now)
        self.ever_assigned |= set(ids)
        for action in decision.assignments:
            if action.attempt == 1:
                self.last_good_at_first[action.device_id] = inputs[action.device_id].current_release
        # max_unavailable: assignments never push the count past the limit.
        planned = plan.device_ids
        limit = self.spec.strategy.max_unavailable_of(len(planned))
        count_before = sum(inputs[d].unavailable for d in planned if d in inputs)
        count_after = sum(devices[d].unavailable for d in planned)
        assert count_after <= max(limit, count_before)
        # The rate limit holds over every sliding minute.
        self.assignment_times += [self.now] * len(ids)
        rate = self.spec.strategy.devices_per_minute
        if rate is not None:
            window = [t for t in self.assignment_times if t > self.now - timedelta(minutes=1)]
            assert len(window) <= rate

    def check_gates(self, decision: Decision, after: Rollout) -> None:
        promote_on_missing_data = (
            self.spec.gates.insufficient_data_action is InsufficientDataAction.PROMOTE
        )
        actions = decision.actions
        for i, action in enumerate(actions):
            if isinstance(action, PromoteWave | CompleteRollout):
                # Promotion only ever follows a passing evaluation of the wave just soaked.
                assert i > 0 and isinstance(actions[i - 1], RecordGates)
                verdict = actions[i - 1].evaluation.verdict  # type: ignore[union-attr]
                assert verdict is GateVerdict.PASS or (
                    verdict is GateVerdict.INSUFFICIENT_DATA and promote_on_missing_data
                )
                assert self.blocked_wave is None
            if isinstance(action, RecordGates) and not (
                i + 1 < len(actions) and isinstance(actions[i + 1], PromoteWave | CompleteRollout)
            ):
                # A failed gate stops promotion: it pauses or rolls back, nothing else.
                assert isinstance(actions[i + 1], PauseRollout | StartRollback)
                assert not any(
                    isinstance(later, PromoteWave | CompleteRollout) for later in actions[i:]
                )
                assert not any(a.kind == "assign-release" for a in actions[i:])
                self.blocked_wave = action.evaluation.wave
        if self.blocked_wave is not None:
            assert after.wave == self.blocked_wave
            assert after.state is not RolloutState.SUCCEEDED

    @precondition(lambda self: hasattr(self, "rollout"))
    @invariant()
    def wave_plan_is_a_partition(self) -> None:
        plan = self.rollout.plan
        if plan is not None:
            assert len(plan.device_ids) == len(set(plan.device_ids))
            assert set(plan.device_ids) <= set(self.devices)


RolloutMachine.TestCase.settings = settings(
    max_examples=250, stateful_step_count=60, deadline=None, database=None
)
TestRolloutMachine = RolloutMachine.TestCase
