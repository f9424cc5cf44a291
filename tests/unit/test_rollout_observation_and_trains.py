"""What the controller observes about a device (reports about the current assignment only),
and release trains: their manifests and their next step."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from edgefleet.core.device import Device
from edgefleet.core.enrollment import EnrollmentState
from edgefleet.core.rollouts.gates import GateResult, GateVerdict
from edgefleet.core.rollouts.observation import (
    CurrentAssignment,
    already_runs,
    device_time_zone,
    install_report,
    observe,
)
from edgefleet.core.rollouts.release_train_spec import (
    check_train_update,
    next_train_step,
    parse_release_train,
)
from edgefleet.core.rollouts.rollout import (
    GateEvaluation,
    InstallReport,
    Rollout,
    RolloutDevice,
    RolloutState,
)
from edgefleet.core.rollouts.spec import parse_rollout_spec
from edgefleet.core.updates.compat import CompatVerdict, RequirementFailure
from edgefleet.core.updates.release import ReleaseAssignment
from edgefleet.errors import Conflict, InvalidInput

T0 = datetime(2026, 12, 1, 12, tzinfo=UTC)
CURRENT = CurrentAssignment("det@2.0.0", serial=7, generation=12)


def status(**changes: Any) -> dict[str, Any]:
    return {"name": "det", "version": "2.0.0", "serial": 7, "state": "installed", **changes}


@pytest.mark.parametrize(
    ("report", "expected"),
    [
        (status(), InstallReport.INSTALLED),
        (status(state="failed"), InstallReport.FAILED),
        (status(state="rolled-back"), InstallReport.FAILED),
        (status(state="downloading"), InstallReport.PENDING),
        (status(state="health-check"), InstallReport.PENDING),
        (status(serial=6), InstallReport.PENDING),  # about the previous attempt
        (status(serial=6, state="failed"), InstallReport.PENDING),
        (status(version="1.0.0", serial=7), InstallReport.PENDING),
        ({}, InstallReport.PENDING),
    ],
)
def test_a_report_counts_only_for_the_current_assignment(
    report: dict[str, Any], expected: InstallReport
) -> None:
    assert install_report(CURRENT, report, applied_generation=12) is expected


def test_no_assignment_yet_is_pending_and_a_revert_to_nothing_waits_for_the_generation() -> None:
    assert install_report(None, status(), 12) is InstallReport.PENDING
    nothing = CurrentAssignment(None, None, generation=15)
    assert install_report(nothing, status(), 14) is InstallReport.PENDING
    assert install_report(nothing, status(), 15) is InstallReport.INSTALLED


def device(**changes: Any) -> Device:
    base = Device(
        id="d-1", name="cam-1", public_key="k", enrollment=EnrollmentState.APPROVED,
        labels={}, inventory={"location": {"timezone": "Asia/Kolkata"}},
        enrollment_token_id=None, created_at=T0, last_seen=T0, heartbeat_interval_s=10,
        applied_generation=12, release_assignment=ReleaseAssignment("det", "1.0.0", False, 3),
        release_status=status(),
    )  # fmt: skip
    return replace(base, **changes)


def test_observe_refreshes_every_observed_field_and_keeps_the_stored_ones() -> None:
    stored = RolloutDevice("d-1", attempts=2, reason="wave 1", healthy=False)
    verdict = CompatVerdict((RequirementFailure("arch=aarch64", "device arch is x86_64"),))
    reported = device(release_status=status(last_good={"name": "det", "version": "2.0.0"}))
    seen = observe(stored, CURRENT, reported, verdict, T0 + timedelta(seconds=20))
    assert (seen.attempts, seen.reason) == (2, "wave 1")
    assert seen.report is InstallReport.INSTALLED and seen.healthy
    assert seen.time_zone == "Asia/Kolkata"
    assert (seen.current_release, seen.desired_release) == ("det@2.0.0", "det@1.0.0")
    assert seen.compatibility == verdict
    late = observe(stored, CURRENT, device(), verdict, T0 + timedelta(seconds=31))
    assert not late.healthy  # more than three heartbeats missed
    revoked = observe(stored, CURRENT, device(enrollment=EnrollmentState.REVOKED),
                      verdict, T0)  # fmt: skip
    assert not revoked.healthy
    assert device_time_zone({}) is None and device_time_zone({"location": "x"}) is None


# Release trains.

TRAIN: dict[str, Any] = {
    "kind": "ReleaseTrain",
    "metadata": {"name": "vision"},
    "spec": {
        "releases": ["vision@1.1.0", "vision@1.2.0-rc.1"],
        "rollout": {"target": "kind=camera", "strategy": {"waves": [1, "100%"]}},
    },
}


def test_a_train_manifest_and_the_rollouts_it_makes() -> None:
    train = parse_release_train(TRAIN)
    assert [str(r) for r in train.releases] == ["vision@1.1.0", "vision@1.2.0-rc.1"]
    second = train.rollout_manifest(1)
    assert second["metadata"]["name"] == "vision-1-2-0-rc-1"
    spec = parse_rollout_spec(second)
    assert str(spec.release) == "vision@1.2.0-rc.1" and str(spec.target) == "kind=camera"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"releases": []}, "spec.releases: expected 1 to"),
        ({"releases": ["vision"]}, "spec.releases[0]: invalid release"),
        ({"releases": ["a@1.0.0", "a@1.0.0"]}, "spec.releases[1]: a@1.0.0 is listed twice"),
        ({"rollout": {"release": "a@1.0.0"}}, "spec.rollout.release: not allowed"),
        ({"rollout": {"strategy": {"waves": [0]}}}, "spec.rollout.strategy.waves[0]"),
        ({"allow_insufficient_data": "yes"}, "spec.allow_insufficient_data"),
        ({"speed": 3}, "spec.speed: unknown field"),
    ],
)
def test_bad_train_manifests_name_the_field(change: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput) as bad:
        parse_release_train({**TRAIN, "spec": {**TRAIN["spec"], **change}})
    assert message in bad.value.message


def test_a_train_needs_a_name() -> None:
    with pytest.raises(InvalidInput, match=r"metadata\.name: required"):
        parse_release_train({**TRAIN, "metadata": {}})


def rollout(state: RolloutState, *verdicts: GateVerdict) -> Rollout:
    spec = parse_rollout_spec({"release": "vision@1.1.0"})
    result = GateResult("install_failure_rate", GateVerdict.PASS, 0.0, 5.0, "%", 3, 3, "0 of 3")
    evaluations = tuple(GateEvaluation(i, T0, v, (result,), f"wave {i + 1}: {v}")
                        for i, v in enumerate(verdicts))  # fmt: skip
    return Rollout("ro-1", spec, state=state, reason="done", gate_evaluations=evaluations)


def test_the_next_step_of_a_train() -> None:
    train = parse_release_train(TRAIN)
    signed = {"vision@1.1.0": True, "vision@1.2.0-rc.1": True}
    assert next_train_step(train, 0, None, signed).start == 0
    assert "to be created and signed" in next_train_step(train, 0, None, {}).reason
    running = next_train_step(train, 0, rollout(RolloutState.SOAKING), signed)
    assert running.start is None and not running.stop and "soaking" in running.reason
    passed = rollout(RolloutState.SUCCEEDED, GateVerdict.PASS, GateVerdict.PASS)
    assert next_train_step(train, 0, passed, signed).start == 1
    unsigned = next_train_step(train, 0, passed, {"vision@1.2.0-rc.1": False})
    assert unsigned.start is None and "to be signed" in unsigned.reason
    done = next_train_step(train, 1, passed, signed)
    assert done.start is None and not done.stop and "append releases" in done.reason
    failed = next_train_step(train, 0, rollout(RolloutState.ROLLED_BACK, GateVerdict.FAIL), signed)
    assert failed.stop and "rolled-back" in failed.reason
    resumed = rollout(RolloutState.SUCCEEDED, GateVerdict.FAIL, GateVerdict.PASS)
    assert next_train_step(train, 0, resumed, signed).stop


def test_a_train_update_keeps_the_releases_already_started() -> None:
    old = parse_release_train(TRAIN)
    longer = parse_release_train(
        {**TRAIN, "spec": {**TRAIN["spec"], "releases": [*TRAIN["spec"]["releases"],
                                                        "vision@1.3.0"]}})  # fmt: skip
    check_train_update(old, longer, started=2)
    swapped = parse_release_train(
        {**TRAIN, "spec": {**TRAIN["spec"], "releases": ["vision@1.2.0-rc.1", "vision@1.1.0"]}}
    )
    check_train_update(old, swapped, started=0)
    with pytest.raises(Conflict, match="may only append"):
        check_train_update(old, swapped, started=1)


def test_a_device_already_runs_a_release_only_when_assigned_installed_and_live() -> None:
    running = device(
        release_assignment=ReleaseAssignment("vision", "1.0.0", False, 3),
        release_status={"name": "vision", "version": "1.0.0", "serial": 3,
                        "state": "installed", "active": {"name": "vision", "version": "1.0.0"}},
    )  # fmt: skip
    assert already_runs(running, "vision", "1.0.0")
    assert not already_runs(running, "vision", "2.0.0")
    status = running.release_status
    assert not already_runs(replace(running, release_status={**status, "serial": 2}),
                            "vision", "1.0.0")  # an older assignment's report  # fmt: skip
    assert not already_runs(replace(running, release_status={**status, "state": "failed"}),
                            "vision", "1.0.0")  # fmt: skip
    assert not already_runs(replace(running, release_status={**status, "active": None}),
                            "vision", "1.0.0")  # fmt: skip
    staged = replace(running, release_assignment=ReleaseAssignment("vision", "1.0.0", True, 3))
    assert not already_runs(staged, "vision", "1.0.0")


def test_observing_reports_skips_only_devices_with_nothing_to_say() -> None:
    """`observe_reports` decides installed and waiting devices without asking each one: the
    actions are those of asking every device, for every state, report, compatibility and
    rollout state (assigned long ago, so every timeout has passed)."""
    from itertools import product

    from edgefleet.core.rollouts.devices import _observe_one, observe_reports
    from edgefleet.core.rollouts.rollout import DeviceState
    from edgefleet.core.rollouts.waves import Wave, WavePlan

    incompatible = CompatVerdict((RequirementFailure("arch", "needs aarch64"),))
    devices = {
        f"d{i}": RolloutDevice(f"d{i}", state=state, report=report, compatibility=compat,
                               assigned_at=T0 - timedelta(days=2))
        for i, (state, report, compat) in enumerate(
            product(DeviceState, InstallReport, (CompatVerdict(), incompatible))
        )
    }  # fmt: skip
    plan = WavePlan("r", (Wave(0, "100%", tuple(devices), 0.0),))
    spec = parse_rollout_spec({"release": "vision@1.1.0"})
    for rollout_state in RolloutState:
        rollout = replace(Rollout("r", spec), state=rollout_state, plan=plan)
        asked = [_observe_one(rollout, devices[d], T0) for d in devices]
        assert observe_reports(rollout, devices, T0) == [a for a in asked if a is not None]
