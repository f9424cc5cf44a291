"""The rollout decision, scenario by scenario, with an explicit clock."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from edgefleet.core.rollouts.actions import (
    AssignRelease,
    CompleteRollout,
    Decision,
    ExtendSoak,
    FinishRollback,
    MarkDevice,
    PauseRollout,
    PromoteWave,
    RecordGates,
    RevertRelease,
    StartRollback,
    StartRollout,
    StartSoak,
    apply_decision,
)
from edgefleet.core.rollouts.decision import decide
from edgefleet.core.rollouts.gates import DeviceTelemetry, GateVerdict
from edgefleet.core.rollouts.rollout import (
    DesiredRelease,
    DeviceState,
    InstallReport,
    OperatorCommand,
    Rollout,
    RolloutDevice,
    RolloutState,
    apply_command,
    desired_release,
)
from edgefleet.core.rollouts.spec import parse_rollout_spec
from edgefleet.core.rollouts.status import wave_progress
from edgefleet.core.updates.compat import CompatVerdict, RequirementFailure
from edgefleet.errors import IllegalTransition, InvalidInput

T0 = datetime(2026, 3, 2, 12, tzinfo=UTC)  # a Monday
INCOMPATIBLE = CompatVerdict((RequirementFailure("arch=aarch64", "device arch is x86_64"),))


class Fleet:
    """Drives decide/apply_decision the way the controller does, with a manual clock."""

    def __init__(
        self,
        n: int = 10,
        *,
        zones: Mapping[str, str | None] | None = None,
        incompatible: tuple[str, ...] = (),
        **spec: Any,
    ) -> None:
        doc: dict[str, Any] = {"release": "det@2.0.0", **spec}
        doc.setdefault("strategy", {})
        doc["strategy"].setdefault("soak", "10m")
        doc["strategy"].setdefault("max_unavailable", "100%")
        self.rollout = Rollout("rollout-1", parse_rollout_spec(doc))
        ids = [f"dev-{i:02d}" for i in range(n)] + list((zones or {}).keys())
        self.devices = {
            d: RolloutDevice(
                d,
                current_release="det@1.0.0",
                time_zone=(zones or {}).get(d),
                compatibility=INCOMPATIBLE if d in incompatible else CompatVerdict(),
            )
            for d in ids
        }
        self.telemetry: dict[str, DeviceTelemetry] = {}
        self.now = T0
        self.decisions: list[Decision] = []

    def step(self, advance_s: float = 0) -> Decision:
        self.now += timedelta(seconds=advance_s)
        decision = decide(self.rollout, self.devices, self.telemetry, self.now)
        self.rollout, self.devices = apply_decision(self.rollout, self.devices, decision)
        self.decisions.append(decision)
        return decision

    def report(self, report: InstallReport, *device_ids: str) -> None:
        for d in device_ids:
            self.devices[d] = replace(self.devices[d], report=report)

    def install(self, *device_ids: str) -> None:
        self.report(InstallReport.INSTALLED, *device_ids)

    def fail(self, *device_ids: str) -> None:
        self.report(InstallReport.FAILED, *device_ids)

    def in_state(self, state: DeviceState) -> list[str]:
        return [d for d, rec in self.devices.items() if rec.state is state]

    def install_updating(self) -> list[str]:
        updating = self.in_state(DeviceState.UPDATING) + self.in_state(DeviceState.ROLLING_BACK)
        self.install(*updating)
        return updating

    @property
    def wave(self) -> tuple[str, ...]:
        assert self.rollout.plan is not None
        return self.rollout.plan.waves[self.rollout.wave].device_ids

    def ever_assigned(self) -> set[str]:
        return {a.device_id for d in self.decisions for a in d.assignments}


def kinds(decision: Decision) -> list[str]:
    return [a.kind for a in decision.actions]


def assigned(decision: Decision) -> list[str]:
    return [a.device_id for a in decision.assignments]


# --- the happy path -------------------------------------------------------------------------


def test_waves_soak_gate_and_promote_to_success() -> None:
    fleet = Fleet(
        10,
        strategy={"waves": [1, "50%", "100%"]},
        gates={"install_failure_rate": {"max_percent": 0, "min_devices": 1}},
    )
    first = fleet.step()
    assert isinstance(first.actions[0], StartRollout)
    assert first.actions[0].reason.startswith("started det@2.0.0: 10 device(s) in 3 wave(s)")
    plan = fleet.rollout.plan
    assert plan is not None and [w.size for w in plan.waves] == [1, 4, 5]
    assert assigned(first) == list(plan.waves[0].device_ids)
    assert first.assignments[0].reason == "wave 1/3 (1): install det@2.0.0, attempt 1 of 3"
    assert first.state is RolloutState.PROGRESSING

    fleet.install_updating()
    soak = fleet.step(30)
    assert kinds(soak) == ["mark-device", "start-soak"]
    assert soak.state is RolloutState.SOAKING
    assert soak.next_check_at == fleet.now + timedelta(minutes=10)
    assert fleet.step(599).actions == ()  # still soaking

    promoted = fleet.step(1)
    assert kinds(promoted)[:2] == ["record-gates", "promote-wave"]
    assert (
        "gates passed — install_failure_rate: 0 of 1 devices failed" in promoted.actions[0].reason
    )
    assert assigned(promoted) == list(plan.waves[1].device_ids)  # the whole wave, in order

    for _ in range(2):
        fleet.install_updating()
        fleet.step(60)
        fleet.step(600)
    assert fleet.rollout.state is RolloutState.SUCCEEDED
    assert isinstance(fleet.decisions[-1].actions[-1], CompleteRollout)
    assert fleet.in_state(DeviceState.INSTALLED) == sorted(fleet.devices)
    assert [e.verdict for e in fleet.rollout.gate_evaluations] == [GateVerdict.PASS] * 3
    assert fleet.step(3600).actions == ()  # a finished rollout decides nothing


def test_no_device_of_a_later_wave_is_assigned_before_its_wave() -> None:
    fleet = Fleet(20, strategy={"waves": [2, "100%"]})
    fleet.step()
    for _ in range(5):
        fleet.install_updating()
        fleet.step(60)
        plan = fleet.rollout.plan
        assert plan is not None
        assert fleet.ever_assigned() <= set(plan.devices_through(fleet.rollout.wave))


def test_progress_per_wave() -> None:
    fleet = Fleet(10, strategy={"waves": [1, "100%"]})
    fleet.step()
    progress = wave_progress(fleet.rollout, fleet.devices)
    assert [(p.label, p.size) for p in progress] == [("1", 1), ("100%", 9)]
    assert progress[0].count(DeviceState.UPDATING) == 1
    assert progress[1].count(DeviceState.WAITING) == 9
    assert fleet.decisions[-1].reason == "wave 1/2 (1): 1 updating"


# --- incompatible devices -------------------------------------------------------------------


def test_incompatible_devices_are_skipped_and_reported_not_planned() -> None:
    fleet = Fleet(12, incompatible=("dev-03", "dev-07"), strategy={"waves": ["50%", "100%"]})
    first = fleet.step()
    skipped = [a for a in first.actions if isinstance(a, MarkDevice)]
    assert [a.device_id for a in skipped] == ["dev-03", "dev-07"]
    assert skipped[0].reason == "incompatible with det@2.0.0: arch=aarch64: device arch is x86_64"
    plan = fleet.rollout.plan
    assert plan is not None and len(plan.device_ids) == 10
    assert [w.size for w in plan.waves] == [5, 5]  # percentages of the compatible devices
    assert "2 incompatible skipped" in fleet.rollout.reason
    assert fleet.devices["dev-03"].state is DeviceState.SKIPPED_INCOMPATIBLE


def test_a_device_that_becomes_incompatible_before_its_install_is_skipped() -> None:
    fleet = Fleet(4, strategy={"waves": [1, "100%"], "max_unavailable": 1})
    fleet.step()
    waiting = fleet.in_state(DeviceState.WAITING)[0]
    fleet.devices[waiting] = replace(fleet.devices[waiting], compatibility=INCOMPATIBLE)
    decision = fleet.step(1)
    assert decision.actions[0] == MarkDevice(
        waiting,
        DeviceState.SKIPPED_INCOMPATIBLE,
        "incompatible with det@2.0.0: arch=aarch64: device arch is x86_64",
    )
    assert waiting not in fleet.ever_assigned()


def test_a_rollout_with_no_compatible_device_fails_with_the_reason() -> None:
    fleet = Fleet(2, incompatible=("dev-00", "dev-01"), target="kind=camera")
    decision = fleet.step()
    assert decision.state is RolloutState.FAILED
    assert (
        "no compatible device to update: the target 'kind=camera' matched 2 device(s), 2 of "
        "them incompatible" in fleet.rollout.reason
    )


# --- gates: rollback and pause --------------------------------------------------------------


def test_a_failed_canary_gate_rolls_back_only_the_canary() -> None:
    fleet = Fleet(
        10,
        strategy={"waves": [2, "100%"]},
        gates={"install_failure_rate": {"max_percent": 0, "min_devices": 2}},
        retries={"max_attempts": 1},
    )
    fleet.step()
    good, bad = fleet.wave
    fleet.install(good)
    fleet.fail(bad)
    settled = fleet.step(60)
    assert fleet.devices[bad].state is DeviceState.FAILED
    assert "no retry left" in fleet.devices[bad].reason
    assert settled.state is RolloutState.SOAKING

    tripped = fleet.step(600)
    assert kinds(tripped) == ["record-gates", "start-rollback", "revert-release", "revert-release"]
    assert isinstance(tripped.actions[1], StartRollback)
    assert "gate failed — install_failure_rate: 1 of 2 devices failed" in tripped.actions[1].reason
    assert {a.device_id for a in tripped.reverts} == {good, bad}
    assert {a.release for a in tripped.reverts} == {"det@1.0.0"}
    assert not tripped.assignments
    assert tripped.state is RolloutState.ROLLING_BACK

    fleet.install_updating()
    done = fleet.step(60)
    assert isinstance(done.actions[-1], FinishRollback)
    assert done.state is RolloutState.ROLLED_BACK
    assert fleet.ever_assigned() == {good, bad}  # nobody else was ever touched
    assert fleet.in_state(DeviceState.ROLLED_BACK) == sorted([good, bad])


def test_rollback_reaches_devices_still_updating_and_waiting_to_retry() -> None:
    fleet = Fleet(6, strategy={"waves": ["100%"]}, retries={"max_attempts": 3})
    fleet.step()
    a, b, c, *_ = fleet.wave
    fleet.install(a)
    fleet.fail(b)
    fleet.step(10)
    assert fleet.devices[b].state is DeviceState.RETRY_WAIT
    assert fleet.devices[c].state is DeviceState.UPDATING
    fleet.rollout = apply_command(fleet.rollout, OperatorCommand.ROLLBACK, fleet.now, actor="ops")
    decision = fleet.step(1)
    assert {r.device_id for r in decision.reverts} == set(fleet.wave)
    assert all(d.state is DeviceState.ROLLING_BACK for d in fleet.devices.values())


def test_a_device_without_a_previous_release_is_reverted_to_none() -> None:
    fleet = Fleet(1, strategy={"waves": ["100%"]})
    fleet.devices["dev-00"] = replace(fleet.devices["dev-00"], current_release=None)
    fleet.step()
    fleet.rollout = apply_command(fleet.rollout, OperatorCommand.ROLLBACK, fleet.now, actor="ops")
    (revert,) = fleet.step(1).reverts
    assert revert.release is None
    assert "to no release" in revert.reason


def test_a_rollback_that_a_device_never_confirms_fails_and_can_be_retried() -> None:
    fleet = Fleet(2, strategy={"waves": ["100%"], "install_timeout": "30m"})
    fleet.step()
    fleet.install_updating()
    fleet.step(60)
    fleet.rollout = apply_command(fleet.rollout, OperatorCommand.ROLLBACK, fleet.now, actor="ops")
    fleet.step(1)
    fleet.install("dev-00")
    fleet.step(60)
    failed = fleet.step(1800)
    assert failed.state is RolloutState.FAILED
    assert fleet.devices["dev-01"].state is DeviceState.ROLLBACK_FAILED
    assert "rollback incomplete: 1 of 2 devices did not confirm" in fleet.rollout.reason
    again = apply_command(fleet.rollout, OperatorCommand.ROLLBACK, fleet.now, actor="ops")
    fleet.rollout = again
    retry = fleet.step(1)
    assert [r.device_id for r in retry.reverts] == ["dev-01"]


def test_on_failure_pause_stops_and_resume_soaks_again() -> None:
    fleet = Fleet(
        6,
        strategy={"waves": [2, "100%"]},
        gates={"workload_error_rate": {"max_percent": 1, "min_devices": 2, "min_requests": 10}},
        on_failure="pause",
    )
    fleet.step()
    canary = fleet.wave
    fleet.install(*canary)
    for d in canary:
        fleet.telemetry[d] = DeviceTelemetry(workload_requests=100, workload_errors=5)
    fleet.step(60)
    paused = fleet.step(600)
    assert kinds(paused) == ["record-gates", "pause-rollout"]
    assert isinstance(paused.actions[1], PauseRollout)
    assert "5% > 1%" in paused.actions[1].reason
    assert paused.state is RolloutState.PAUSED
    assert fleet.step(3600).actions == ()  # paused: nothing more happens

    for d in canary:  # the operator fixed the workload configuration
        fleet.telemetry[d] = DeviceTelemetry(workload_requests=100, workload_errors=0)
    fleet.rollout = apply_command(fleet.rollout, OperatorCommand.RESUME, fleet.now, actor="ops")
    resoak = fleet.step(1)
    assert kinds(resoak) == ["start-soak"]
    assert fleet.step(600).actions[1] == PromoteWave(1, fleet.rollout.reason)
    assert [e.verdict for e in fleet.rollout.gate_evaluations] == [
        GateVerdict.FAIL,
        GateVerdict.PASS,
    ]


def test_resume_after_a_gate_failure_that_persists_pauses_again() -> None:
    fleet = Fleet(
        4,
        strategy={"waves": [2, "100%"]},
        gates={"install_failure_rate": {"max_percent": 0, "min_devices": 2}},
        retries={"max_attempts": 1},
        on_failure="pause",
    )
    fleet.step()
    fleet.fail(*fleet.wave)
    fleet.step(60)
    fleet.step(600)
    fleet.rollout = apply_command(fleet.rollout, OperatorCommand.RESUME, fleet.now, actor="ops")
    fleet.step(1)
    again = fleet.step(600)
    assert again.state is RolloutState.PAUSED
    assert not any(isinstance(a, PromoteWave) for d in fleet.decisions for a in d.actions)


# --- insufficient data ----------------------------------------------------------------------

GATES_NEEDING_TWO = {
    "workload_error_rate": {"max_percent": 1, "min_devices": 2, "min_requests": 10},
    "insufficient_data": {"wait": "5m"},
}


def test_insufficient_data_extends_the_soak_then_promotes() -> None:
    fleet = Fleet(6, strategy={"waves": [1, "100%"]}, gates=GATES_NEEDING_TWO)
    fleet.step()
    fleet.install(*fleet.wave)
    fleet.telemetry[fleet.wave[0]] = DeviceTelemetry(workload_requests=1000, workload_errors=900)
    fleet.step(60)
    extended = fleet.step(600)
    assert kinds(extended) == ["extend-soak"]
    assert isinstance(extended.actions[0], ExtendSoak)
    assert "not enough data for workload_error_rate" in extended.actions[0].reason
    assert extended.next_check_at == fleet.now + timedelta(minutes=5)
    assert fleet.step(60).actions == ()
    promoted = fleet.step(240)
    assert kinds(promoted)[:2] == ["record-gates", "promote-wave"]
    assert "promoting as configured" in promoted.actions[0].reason
    assert fleet.rollout.gate_evaluations[-1].verdict is GateVerdict.INSUFFICIENT_DATA


def test_insufficient_data_can_count_as_a_failure() -> None:
    gates = {**GATES_NEEDING_TWO, "insufficient_data": {"wait": "0s", "then": "fail"}}
    fleet = Fleet(6, strategy={"waves": [1, "100%"]}, gates=gates)
    fleet.step()
    fleet.install(*fleet.wave)
    fleet.step(60)
    decision = fleet.step(600)
    assert kinds(decision)[:2] == ["record-gates", "start-rollback"]
    assert "counted as a failed gate" in decision.actions[0].reason


def test_data_arriving_during_the_wait_decides_at_once() -> None:
    fleet = Fleet(6, strategy={"waves": [2, "100%"]}, gates=GATES_NEEDING_TWO)
    fleet.step()
    fleet.install(*fleet.wave)
    fleet.step(60)
    fleet.step(600)
    for d in fleet.wave:
        fleet.telemetry[d] = DeviceTelemetry(workload_requests=100, workload_errors=50)
    decision = fleet.step(60)
    assert kinds(decision)[:2] == ["record-gates", "start-rollback"]


def test_the_default_wait_for_data_is_one_more_soak() -> None:
    gates = {"workload_error_rate": {"max_percent": 1}}
    fleet = Fleet(4, strategy={"waves": [1, "100%"], "soak": "20m"}, gates=gates)
    fleet.step()
    fleet.install(*fleet.wave)
    fleet.step(60)
    extended = fleet.step(1200)
    assert isinstance(extended.actions[0], ExtendSoak)
    assert extended.actions[0].until == fleet.now + timedelta(minutes=20)


# --- max_unavailable, the rate limit, retries -----------------------------------------------


def test_max_unavailable_caps_devices_updating_at_once() -> None:
    fleet = Fleet(10, strategy={"waves": ["100%"], "max_unavailable": 3})
    assert len(fleet.step().assignments) == 3
    assert fleet.step(60).assignments == ()
    fleet.install(fleet.in_state(DeviceState.UPDATING)[0])
    assert len(fleet.step(60).assignments) == 1


def test_unhealthy_updated_devices_count_as_unavailable() -> None:
    fleet = Fleet(10, strategy={"waves": ["100%"], "max_unavailable": 2})
    fleet.step()
    first, _ = fleet.install_updating()
    fleet.devices[first] = replace(fleet.devices[first], healthy=False)
    decision = fleet.step(60)
    assert len(decision.assignments) == 1  # one slot held by the unhealthy device
    assert sum(d.unavailable for d in fleet.devices.values()) == 2
    # An untouched offline device does not hold a slot.
    waiting = fleet.in_state(DeviceState.WAITING)[0]
    fleet.devices[waiting] = replace(fleet.devices[waiting], healthy=False)
    assert not fleet.devices[waiting].unavailable


def test_rate_limit_counts_assignments_of_the_last_minute() -> None:
    fleet = Fleet(10, strategy={"waves": ["100%"], "devices_per_minute": 2})
    first = fleet.step()
    assert len(first.assignments) == 2
    assert first.next_check_at == T0 + timedelta(minutes=1)
    fleet.install_updating()
    assert fleet.step(30).assignments == ()
    assert fleet.step(29).assignments == ()
    assert len(fleet.step(1).assignments) == 2  # 60 s after the first two
    assert fleet.rollout.recent_assignments == (fleet.now, fleet.now)


def test_failed_installs_are_retried_with_backoff_then_fail() -> None:
    fleet = Fleet(
        1,
        strategy={"waves": ["100%"]},
        retries={"max_attempts": 3, "backoff": {"initial": "1m", "max": "10m"}},
    )
    fleet.step()
    fleet.fail("dev-00")
    first_fail = fleet.step(5)
    device = fleet.devices["dev-00"]
    assert device.state is DeviceState.RETRY_WAIT and device.retry_at is not None
    delay = (device.retry_at - fleet.now).total_seconds()
    assert 30 <= delay <= 60  # equal jitter over 1m
    assert "install of det@2.0.0 failed; attempt 1 of 3, retrying after" in device.reason
    assert first_fail.next_check_at == device.retry_at
    assert fleet.step(delay - 1).assignments == ()
    retry = fleet.step(1)
    assert [(a.device_id, a.attempt) for a in retry.assignments] == [("dev-00", 2)]
    assert retry.assignments[0].reason.endswith("attempt 2 of 3")

    fleet.fail("dev-00")
    fleet.step(5)
    device = fleet.devices["dev-00"]
    assert device.retry_at is not None
    assert 60 <= (device.retry_at - fleet.now).total_seconds() <= 120
    fleet.step((device.retry_at - fleet.now).total_seconds())
    fleet.fail("dev-00")
    fleet.step(5)
    assert fleet.devices["dev-00"].state is DeviceState.FAILED
    assert fleet.devices["dev-00"].attempts == 3
    assert fleet.rollout.state is RolloutState.SOAKING  # a failed device settles its wave


def test_retry_times_are_deterministic() -> None:
    a, b = Fleet(3, strategy={"waves": ["100%"]}), Fleet(3, strategy={"waves": ["100%"]})
    for fleet in (a, b):
        fleet.step()
        fleet.fail(*fleet.in_state(DeviceState.UPDATING))
        fleet.step(1)
    assert a.devices == b.devices
    assert len({d.retry_at for d in a.devices.values()}) == 3  # jitter spreads them


def test_no_report_within_the_install_timeout_is_a_failed_attempt() -> None:
    fleet = Fleet(1, strategy={"waves": ["100%"], "install_timeout": "15m"})
    first = fleet.step()
    assert first.next_check_at == T0 + timedelta(minutes=15)
    assert fleet.step(899).actions == ()
    timeout = fleet.step(1)
    assert fleet.devices["dev-00"].state is DeviceState.RETRY_WAIT
    assert "no install report within 15m" in timeout.actions[0].reason


def test_an_installed_device_whose_agent_rolls_back_counts_as_a_failed_attempt() -> None:
    fleet = Fleet(1, strategy={"waves": ["100%"]})
    fleet.step()
    fleet.install("dev-00")
    fleet.step(10)
    fleet.fail("dev-00")
    fleet.step(10)
    assert fleet.devices["dev-00"].state is DeviceState.RETRY_WAIT


# --- maintenance windows and deadlines ------------------------------------------------------

ZONED = {
    "berlin": "Europe/Berlin",
    "new-york": "America/New_York",
    "tokyo": "Asia/Tokyo",
    "nowhere": "Mars/Olympus_Mons",
}
NIGHTLY = [{"cron": "0 2 * * *", "duration": "1h"}]


def test_devices_wait_for_their_own_maintenance_window() -> None:
    fleet = Fleet(0, zones=ZONED, strategy={"waves": ["100%"]}, maintenance_windows=NIGHTLY)
    fleet.now = datetime(2026, 3, 2, 1, 30, tzinfo=UTC)  # 02:30 in Berlin
    decision = fleet.step()
    assert assigned(decision) == ["berlin"]
    marks = {a.device_id: a.reason for a in decision.actions if isinstance(a, MarkDevice)}
    assert marks["new-york"] == (
        "outside its maintenance window in America/New_York; next opens 2026-03-02 07:00:00Z"
    )
    assert marks["tokyo"].endswith("next opens 2026-03-02 17:00:00Z")
    assert marks["nowhere"] == (
        "outside its maintenance window in UTC (its zone 'Mars/Olympus_Mons' is unknown; "
        "using UTC); next opens 2026-03-02 02:00:00Z"
    )
    assert sorted(fleet.in_state(DeviceState.OUTSIDE_WINDOW)) == ["new-york", "nowhere", "tokyo"]
    assert fleet.step(60).actions == ()  # nothing new to say while they wait
    assert decision.next_check_at == datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
    fleet.now = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
    assert assigned(fleet.step()) == ["nowhere"]  # 02:00 UTC
    fleet.now = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)
    assert assigned(fleet.step()) == ["new-york"]  # 02:00 EST
    fleet.now = datetime(2026, 3, 2, 17, 0, tzinfo=UTC)
    assert assigned(fleet.step()) == ["tokyo"]  # 02:00 JST


def test_window_opening_with_no_free_slot_marks_the_device_waiting() -> None:
    fleet = Fleet(
        0,
        zones={"a": "UTC", "b": "UTC"},
        strategy={"waves": ["100%"], "max_unavailable": 1},
        maintenance_windows=NIGHTLY,
    )
    fleet.now = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)
    fleet.step()
    assert fleet.in_state(DeviceState.OUTSIDE_WINDOW) == ["a", "b"]
    decision = fleet.step(3600)
    assert len(decision.assignments) == 1
    assert len(fleet.in_state(DeviceState.WAITING)) == 1


def test_windows_across_the_berlin_spring_forward_gap() -> None:
    fleet = Fleet(
        0,
        zones={"berlin": "Europe/Berlin"},
        strategy={"waves": ["100%"]},
        maintenance_windows=[{"cron": "30 2 * * *", "duration": "1h"}],
    )
    fleet.now = datetime(2026, 3, 29, 0, 0, tzinfo=UTC)
    decision = fleet.step()
    assert decision.actions[-1].reason.endswith("next opens 2026-03-29 01:30:00Z")
    assert decision.next_check_at == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    assert assigned(fleet.step(90 * 60)) == ["berlin"]  # 03:30 CEST


def test_a_force_deadline_stops_windows_from_holding_devices_back() -> None:
    fleet = Fleet(
        0,
        zones={"ny": "America/New_York"},
        strategy={"waves": ["100%"]},
        maintenance_windows=NIGHTLY,
        deadline={"after": "1h", "action": "force"},
    )
    fleet.now = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
    first = fleet.step()
    assert fleet.devices["ny"].state is DeviceState.OUTSIDE_WINDOW
    assert first.next_check_at == fleet.now + timedelta(hours=1)
    forced = fleet.step(3600)
    assert assigned(forced) == ["ny"]
    assert "deadline passed, maintenance window not required" in forced.assignments[0].reason


def test_a_fail_deadline_fails_an_unfinished_rollout() -> None:
    fleet = Fleet(
        4, strategy={"waves": [1, "100%"], "soak": "2h"}, deadline={"after": "1h", "action": "fail"}
    )
    fleet.step()
    fleet.install_updating()
    fleet.step(60)
    failed = fleet.step(3540)
    assert failed.state is RolloutState.FAILED
    assert fleet.rollout.reason.startswith("deadline 2026-03-02 13:00:00Z passed during wave 1/2")
    assert "1 of 4 devices installed" in fleet.rollout.reason


def test_a_fail_deadline_also_ends_a_paused_rollout() -> None:
    fleet = Fleet(4, strategy={"waves": [1, "100%"]}, deadline={"after": "1h"})
    fleet.step()
    fleet.rollout = apply_command(fleet.rollout, OperatorCommand.PAUSE, fleet.now, actor="ops")
    assert fleet.step(3600).state is RolloutState.FAILED


# --- operator commands ----------------------------------------------------------------------


def test_pause_holds_new_assignments_but_reports_still_count() -> None:
    fleet = Fleet(4, strategy={"waves": ["100%"], "max_unavailable": 1})
    fleet.step()
    fleet.rollout = apply_command(fleet.rollout, OperatorCommand.PAUSE, fleet.now, actor="ops")
    fleet.install_updating()
    paused = fleet.step(60)
    assert kinds(paused) == ["mark-device"]  # installed, but nobody new assigned
    assert paused.reason == "paused: pause by ops"
    fleet.rollout = apply_command(fleet.rollout, OperatorCommand.RESUME, fleet.now, actor="ops")
    assert len(fleet.step(1).assignments) == 1


def test_abort_leaves_devices_as_they_are() -> None:
    fleet = Fleet(4, strategy={"waves": ["100%"]})
    fleet.step()
    fleet.rollout = apply_command(fleet.rollout, OperatorCommand.ABORT, fleet.now, actor="ops")
    assert fleet.step(60).actions == ()
    assert fleet.rollout.state is RolloutState.ABORTED
    with pytest.raises(IllegalTransition):
        apply_command(fleet.rollout, OperatorCommand.RESUME, fleet.now, actor="ops")


def test_rollback_after_success_reverts_every_device() -> None:
    fleet = Fleet(3, strategy={"waves": ["100%"]})
    fleet.step()
    fleet.install_updating()
    fleet.step(60)
    fleet.step(600)
    assert fleet.rollout.state is RolloutState.SUCCEEDED
    fleet.rollout = apply_command(fleet.rollout, OperatorCommand.ROLLBACK, fleet.now, actor="ops")
    decision = fleet.step(1)
    assert len(decision.reverts) == 3
    assert decision.reverts[0].reason == (
        "revert det@2.0.0 to det@1.0.0, the release it last ran successfully (was installed)"
    )
    fleet.install_updating()
    assert fleet.step(60).state is RolloutState.ROLLED_BACK


# --- determinism and contracts --------------------------------------------------------------


def test_the_same_inputs_give_the_same_decision_whatever_the_mapping_order() -> None:
    fleet = Fleet(30, strategy={"waves": [1, "10%", "100%"], "max_unavailable": 4})
    fleet.step()
    fleet.install_updating()
    fleet.step(60)
    fleet.step(600)
    reordered = dict(reversed(list(fleet.devices.items())))
    one = decide(fleet.rollout, fleet.devices, {}, fleet.now + timedelta(seconds=5))
    two = decide(fleet.rollout, reordered, {}, fleet.now + timedelta(seconds=5))
    assert one == two


def test_a_naive_now_is_refused() -> None:
    fleet = Fleet(1)
    with pytest.raises(InvalidInput, match="no time zone"):
        decide(fleet.rollout, fleet.devices, {}, datetime(2026, 1, 1))


def test_every_planned_device_needs_a_record() -> None:
    fleet = Fleet(3)
    fleet.step()
    del fleet.devices["dev-01"]
    with pytest.raises(InvalidInput, match="device 'dev-01' of rollout rollout-1 has no record"):
        fleet.step(1)


def test_gate_results_are_recorded_with_measured_values() -> None:
    fleet = Fleet(
        2,
        strategy={"waves": ["100%"]},
        gates={"install_failure_rate": {"max_percent": 50, "min_devices": 2}},
    )
    fleet.step()
    fleet.install_updating()
    fleet.step(60)
    decision = fleet.step(600)
    record = decision.actions[0]
    assert isinstance(record, RecordGates)
    (result,) = record.evaluation.results
    assert (result.measured, result.threshold, result.samples) == (0.0, 50, 2)
    assert record.evaluation.wave == 0
    assert fleet.rollout.gate_evaluations == (record.evaluation,)


def test_apply_decision_touches_only_records_named_by_actions() -> None:
    fleet = Fleet(5, strategy={"waves": [1, "100%"]})
    before = dict(fleet.devices)
    decision = decide(fleet.rollout, fleet.devices, {}, T0)
    _, after = apply_decision(fleet.rollout, fleet.devices, decision)
    changed = {d for d in after if after[d] != before[d]}
    assert changed == decision.changed_device_ids == {a.device_id for a in decision.assignments}
    assert isinstance(decision.actions[0], StartRollout)
    assert isinstance(decision.actions[1], AssignRelease)
    assert all(not isinstance(a, StartSoak | RevertRelease) for a in decision.actions)


def test_desired_release_can_be_rendered_from_the_records_alone() -> None:
    fleet = Fleet(3, strategy={"waves": [1, "100%"]})
    fleet.step()
    canary = fleet.wave[0]
    waiting = fleet.in_state(DeviceState.WAITING)[0]
    assert desired_release(fleet.rollout, fleet.devices[waiting]) is None
    assert desired_release(fleet.rollout, fleet.devices[canary]) == DesiredRelease("det@2.0.0", 1)
    fleet.fail(canary)
    fleet.step(1)
    retry_at = fleet.devices[canary].retry_at
    assert retry_at is not None
    fleet.step((retry_at - fleet.now).total_seconds())
    assert desired_release(fleet.rollout, fleet.devices[canary]) == DesiredRelease("det@2.0.0", 2)
    fleet.rollout = apply_command(fleet.rollout, OperatorCommand.ROLLBACK, fleet.now, actor="ops")
    fleet.step(1)
    assert desired_release(fleet.rollout, fleet.devices[canary]) == DesiredRelease("det@1.0.0", 2)
