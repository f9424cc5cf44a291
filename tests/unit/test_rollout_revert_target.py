"""Where a rollback returns a device: the release it last ran successfully before the rollout
first assigned it the release — not the one its desired state named, which it may have
failed to install.

A model of the agent's A/B slots (fill the standby slot, switch, health window, switch back)
reports every install step; the control plane stamps each report (`stamp_last_good`); the
rollout controller's path (`observe`, `decide`, `apply_decision`) then assigns the release,
sees it installed, and rolls back. Hypothesis draws the device's history.
"""

from __future__ import annotations

import doctest
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgefleet.core.device import Device
from edgefleet.core.enrollment import EnrollmentState
from edgefleet.core.rollouts import observation as rollout_observation
from edgefleet.core.rollouts.actions import AssignRelease, apply_decision
from edgefleet.core.rollouts.decision import decide
from edgefleet.core.rollouts.observation import (
    CurrentAssignment,
    last_good_release,
    observe,
    stamp_last_good,
)
from edgefleet.core.rollouts.rollout import (
    DeviceState,
    InstallReport,
    OperatorCommand,
    Rollout,
    RolloutDevice,
    RolloutState,
    apply_command,
)
from edgefleet.core.rollouts.spec import parse_rollout_spec
from edgefleet.core.updates.compat import CompatVerdict
from edgefleet.core.updates.release import ReleaseAssignment

T0 = datetime(2026, 5, 4, 9, tzinfo=UTC)
ROLLOUT_RELEASE = "vision@2.2.0"
V1 = {"name": "vision", "version": "2.1.0", "port": 9000}
V1_GOOD = {"name": "vision", "version": "2.1.0"}


def report(version: str, state: str, active: dict[str, Any] | None) -> dict[str, Any]:
    return {"name": "vision", "version": version, "serial": 1, "state": state, "active": active}


def test_the_module_examples_hold() -> None:
    assert doctest.testmod(rollout_observation).failed == 0


@pytest.mark.parametrize(
    ("previous", "status", "last_good"),
    [
        # Proven by its health window.
        ({}, report("2.1.0", "installed", V1), V1_GOOD),
        # A new release on its way or being judged: the one before stays the last good.
        ({"last_good": V1_GOOD}, report("2.4.0", "downloading", V1), V1_GOOD),
        ({"last_good": V1_GOOD}, report("2.4.0", "health-check", {**V1, "version": "2.4.0"}),
         V1_GOOD),
        # Failed before the switch, or rolled back after it: back on the one before.
        ({"last_good": V1_GOOD}, report("2.4.0", "failed", V1), V1_GOOD),
        ({"last_good": V1_GOOD}, report("2.4.0", "rolled-back", V1), V1_GOOD),
        # A first install rolled back: no slot to go back to, the failed one stays stopped.
        ({}, report("2.4.0", "rolled-back", {**V1, "version": "2.4.0"}), None),
        # ... and a later rollback returns to that slot, which never ran successfully.
        ({"last_good": None}, report("2.5.0", "rolled-back", {**V1, "version": "2.4.0"}), None),
        ({"last_good": None}, report("2.5.0", "downloading", {**V1, "version": "2.4.0"}), None),
        # The same version installed again and rolled back: the slot before holds it too.
        ({"last_good": V1_GOOD}, report("2.1.0", "rolled-back", V1), V1_GOOD),
        # Nothing known yet: a live slot not being switched counts; one being judged does not.
        ({}, report("2.4.0", "failed", V1), V1_GOOD),
        ({}, report("2.4.0", "health-check", {**V1, "version": "2.4.0"}), "absent"),
        # No live release: nothing to go back to, nothing stamped.
        ({"last_good": V1_GOOD}, {}, "absent"),
        ({}, report("2.1.0", "downloading", None), "absent"),
    ],
)  # fmt: skip
def test_stamp_last_good(
    previous: dict[str, Any], status: dict[str, Any], last_good: object
) -> None:
    stamped = stamp_last_good(previous, status)
    if last_good == "absent":
        assert "last_good" not in stamped
    else:
        assert stamped["last_good"] == last_good
    assert {k: v for k, v in stamped.items() if k != "last_good"} == status


def test_a_device_cannot_stamp_its_own_last_good() -> None:
    claimed = {**report("2.4.0", "health-check", V1), "last_good": {"name": "x", "version": "9"}}
    assert "last_good" not in stamp_last_good({}, claimed)
    assert last_good_release({"last_good": "vision@2.4.0"}) is None  # not a stamped record


# --- a model of the agent, for the property ------------------------------------------------


@dataclass
class ModelAgent:
    """The agent's A/B slots as `agent/installer.py` drives them, with the ground truth."""

    slots: dict[str, str | None] = field(default_factory=lambda: {"a": None, "b": None})
    proven: dict[str, bool] = field(default_factory=lambda: {"a": False, "b": False})
    live: str | None = None  # the slot `current` points at
    stopped: bool = False  # the live slot's service was stopped (a rollback with no way back)
    record: dict[str, Any] | None = None
    serial: int = 0

    def status(self) -> dict[str, Any]:
        if self.record is None:
            return {}
        release = self.slots[self.live] if self.live else None
        active = None
        if release is not None:
            name, version = release.split("@")
            active = {"name": name, "version": version, "port": 9000}
        return {**self.record, "active": active}

    def truth(self) -> str | None:
        """The release it last ran successfully: the live one once its health window passed
        (while a switch is being judged, the one it would go back to)."""
        if self.record is not None and self.record["state"] == "health-check":
            previous = self.record["previous_slot"]
            return self.slots[previous] if previous and self.proven[previous] else None
        if self.live is None or self.stopped or not self.proven[self.live]:
            return None
        return self.slots[self.live]

    def install(self, release: str, outcome: str) -> list[dict[str, Any]]:
        """Install `release` through `outcome`; every report on the way."""
        name, version = release.split("@")
        self.serial += 1
        standby = "b" if self.live == "a" else "a"
        reports = []

        def move(state: str, **extra: Any) -> None:
            assert self.record is not None
            self.record = {**self.record, "state": state, **extra}
            reports.append(self.status())

        self.record = {"name": name, "version": version, "serial": self.serial,
                       "state": "downloading", "previous_slot": None}  # fmt: skip
        reports.append(self.status())
        if outcome == "downloading":
            return reports
        self.slots[standby], self.proven[standby] = release, False  # filled, not yet judged
        if outcome == "failed":
            move("failed")
            return reports
        previous, self.live, self.stopped = self.live, standby, False
        move("health-check", previous_slot=previous)
        if outcome == "health-check":
            return reports
        if outcome == "installed":
            self.proven[standby] = True
            move("installed")
        elif previous is not None:
            self.live = previous
            move("rolled-back")
        else:
            self.stopped = True
            move("rolled-back")
        return reports

    def remove(self) -> list[dict[str, Any]]:
        self.live, self.record, self.stopped = None, None, False
        return [self.status()]


def wire(status: dict[str, Any]) -> dict[str, Any]:
    """What the agent sends (the model's bookkeeping stays on the device)."""
    return {k: v for k, v in status.items() if k != "previous_slot"}


STEPS = st.lists(
    st.one_of(
        st.tuples(
            st.sampled_from(["vision@2.1.0", "vision@2.4.0", "vision@2.0.0", "other@1.0.0"]),
            st.sampled_from(["installed", "installed", "failed", "rolled-back"]),
        ),
        st.just(("remove", "")),
    ),
    max_size=8,
)
LAST = st.sampled_from(["", "downloading", "health-check"])


def device_record(status: dict[str, Any], desired: str | None, serial: int) -> Device:
    assignment = None
    if desired is not None:
        name, version = desired.split("@")
        assignment = ReleaseAssignment(name, version, stage_only=False, serial=serial)
    return Device(
        id="cam-1", name="cam-1", public_key="k", enrollment=EnrollmentState.APPROVED,
        labels={}, inventory={}, enrollment_token_id=None, created_at=T0, last_seen=T0,
        heartbeat_interval_s=10, applied_generation=serial, release_assignment=assignment,
        release_status=status,
    )  # fmt: skip


@settings(max_examples=300, deadline=None, database=None)
@given(steps=STEPS, last=LAST)
def test_a_rollback_returns_each_device_to_the_release_it_last_ran_successfully(
    steps: list[tuple[str, str]], last: str
) -> None:
    agent, desired = ModelAgent(), None
    stored: dict[str, Any] = {}  # the device's release status as the control plane keeps it

    def see(reports: list[dict[str, Any]]) -> None:
        nonlocal stored
        for status in reports:
            stored = stamp_last_good(stored, wire(status))

    for release, outcome in steps:
        if release == "remove":
            see(agent.remove())
            desired = None
        else:
            see(agent.install(release, outcome))
            desired = release
    if last:
        see(agent.install("vision@2.3.0", last))
        desired = "vision@2.3.0"
    truth = agent.truth()

    # The rollout assigns its release; the device installs it; then an operator rolls it
    # back (a failed gate starts the same rollback).
    spec = parse_rollout_spec({"release": ROLLOUT_RELEASE,
                               "strategy": {"waves": ["100%"], "soak": "1m"}})  # fmt: skip
    rollout = Rollout("ro-1", spec)
    now = T0
    records = {"cam-1": observe(RolloutDevice("cam-1"), None,
                                device_record(stored, desired, agent.serial),
                                CompatVerdict(), now)}  # fmt: skip
    decision = decide(rollout, records, {}, now)
    (assigned,) = [a for a in decision.actions if isinstance(a, AssignRelease)]
    rollout, records = apply_decision(rollout, records, decision)

    if last != "health-check":  # a switch being judged finishes before the next install
        see(agent.install(ROLLOUT_RELEASE, "installed"))
    current = CurrentAssignment(ROLLOUT_RELEASE, agent.serial, agent.serial)
    now += timedelta(seconds=30)
    installed = device_record(stored, ROLLOUT_RELEASE, agent.serial)
    records = {"cam-1": observe(records["cam-1"], current, installed, CompatVerdict(), now)}
    rollout, records = apply_decision(rollout, records, decide(rollout, records, {}, now))
    rollout = apply_command(rollout, OperatorCommand.ROLLBACK, now, actor="ops")
    decision = decide(rollout, records, {}, now)

    (revert,) = decision.reverts
    assert revert.release == truth, (steps, last, stored)
    assert records["cam-1"].previous_release == truth
    if truth is None:
        assert "it had run none successfully before the rollout" in revert.reason
    else:
        assert f"to {truth}, the release it last ran successfully" in revert.reason
    if desired is not None and desired != truth:  # the choice is explained up front
        assert f"its desired state names {desired}" in assigned.reason


def test_the_failed_assignment_is_not_where_a_rollback_returns() -> None:
    """The reported sequence: 2.1.0 installed, 2.4.0 assigned and failed (the agent is back
    on 2.1.0); a rollout of 2.2.0 rolls back — to 2.1.0."""
    agent = ModelAgent()
    stored: dict[str, Any] = {}
    for status in agent.install("vision@2.1.0", "installed") + agent.install(
        "vision@2.4.0", "rolled-back"
    ):
        stored = stamp_last_good(stored, wire(status))
    assert last_good_release(stored) == "vision@2.1.0"
    spec = parse_rollout_spec({"release": ROLLOUT_RELEASE, "strategy": {"waves": ["100%"]}})
    device = device_record(stored, "vision@2.4.0", agent.serial)
    records = {"cam-1": observe(RolloutDevice("cam-1"), None, device, CompatVerdict(), T0)}
    decision = decide(Rollout("ro-1", spec), records, {}, T0)
    (assign,) = decision.assignments
    assert assign.reason.endswith(
        "; a rollback returns it to vision@2.1.0, the release it last ran successfully "
        "(its desired state names vision@2.4.0)"
    )
    rollout, records = apply_decision(Rollout("ro-1", spec), records, decision)
    rollout = apply_command(rollout, OperatorCommand.ROLLBACK, T0, actor="ops")
    (revert,) = decide(rollout, records, {}, T0).reverts
    assert revert.release == "vision@2.1.0"
    assert revert.reason == (
        "revert vision@2.2.0 to vision@2.1.0, the release it last ran successfully (was updating)"
    )
    rollout, records = apply_decision(rollout, records, decide(rollout, records, {}, T0))
    assert records["cam-1"].state is DeviceState.ROLLING_BACK
    back = replace(records["cam-1"], report=InstallReport.INSTALLED)
    done = decide(rollout, {"cam-1": back}, {}, T0 + timedelta(seconds=5))
    assert done.state is RolloutState.ROLLED_BACK
