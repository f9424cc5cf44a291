"""What a rollout controller observes about a device before each decision, and what it
remembers about the assignment it last published there.

The engine reasons about a device's *current assignment* (the last AssignRelease or
RevertRelease). The controller remembers what that assignment put into the device's desired
state (`CurrentAssignment`: the release, the serial of the release assignment, the desired
generation) and reads the device's heartbeat against it: a report counts only when it names
the same release and serial, so a report about an earlier attempt is `pending`.

A revert to *no release* (a device that had none before the rollout) takes the release out
of the desired state; the agent has nothing to switch back to and keeps its live slot, so
the revert counts as done once the device has applied that generation.

>>> from datetime import UTC, datetime
>>> current = CurrentAssignment("det@2.0.0", serial=7, generation=12)
>>> status = {"name": "det", "version": "2.0.0", "serial": 7, "state": "installed"}
>>> install_report(current, status, applied_generation=12)
<InstallReport.INSTALLED: 'installed'>
>>> install_report(current, {**status, "serial": 6}, applied_generation=12)
<InstallReport.PENDING: 'pending'>

A rollback returns a device to the release it *last ran successfully*, not to the one its
desired state named: a device assigned a release it failed to install is still assigned it,
but runs the one before. The control plane stamps that release into the stored status as
`last_good` on every report (`stamp_last_good`), because a report alone cannot tell it while
a new release is being switched in and judged:

>>> v1 = {"name": "det", "version": "1.0.0", "port": 8080}
>>> seen = stamp_last_good({}, {"name": "det", "version": "1.0.0", "state": "installed",
...                             "active": v1})
>>> failed = {"name": "det", "version": "2.0.0", "state": "rolled-back", "active": v1}
>>> last_good_release(stamp_last_good(seen, failed))
'det@1.0.0'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from edgefleet.core.device import ConnectionStatus, Device
from edgefleet.core.enrollment import EnrollmentState
from edgefleet.core.rollouts.rollout import InstallReport, RolloutDevice
from edgefleet.core.updates.compat import CompatVerdict

# Install states of the agent that end an attempt without the release running.
_FAILED_STATES = frozenset({"failed", "rolled-back"})
# Install states in which the live slot holds a release its health window has not judged.
_SWITCHING_STATES = frozenset({"installing", "health-check"})


@dataclass(frozen=True)
class CurrentAssignment:
    """What the controller's last AssignRelease or RevertRelease published to a device."""

    release: str | None  # name@version; None: the release was taken out of the desired state
    serial: int | None  # the release assignment's serial (None with no release)
    generation: int  # the desired-state generation that carried it


def install_report(
    current: CurrentAssignment | None,
    release_status: Mapping[str, Any],
    applied_generation: int,
) -> InstallReport:
    """What the device's latest heartbeat says about its current assignment."""
    if current is None:
        return InstallReport.PENDING
    if current.release is None:
        done = applied_generation >= current.generation
        return InstallReport.INSTALLED if done else InstallReport.PENDING
    reported = f"{release_status.get('name')}@{release_status.get('version')}"
    if reported != current.release or release_status.get("serial") != current.serial:
        return InstallReport.PENDING
    state = release_status.get("state")
    if state == "installed":
        return InstallReport.INSTALLED
    if state in _FAILED_STATES:
        return InstallReport.FAILED
    return InstallReport.PENDING


def stamp_last_good(previous: Mapping[str, Any], status: Mapping[str, Any]) -> dict[str, Any]:
    """The reported release status with `last_good` — `{name, version}` of the release the
    device last ran successfully, or None when it has none to go back to — from this report
    and the stored status `previous` (no `last_good` there: not known yet).

    - `installed`: the live release came through its health window;
    - `installing`, `health-check`: the live release is not judged yet; the last good one
      stays what it was;
    - `rolled-back` with no slot to go back to: the failed release stays live but stopped,
      so there is none (the live release is the failed one, and was not the last good);
    - otherwise (rolled back to the slot that ran before; `failed` or not switched yet, so
      the live slot did not change): the live release — unless none was good before, as
      when the agent went back to a slot that had itself failed;
    - no live release at all (none installed yet, or taken away): nothing is stamped.
    """
    out = {k: v for k, v in status.items() if k != "last_good"}
    active = status.get("active")
    if not active:
        return out
    live = {"name": active.get("name"), "version": active.get("version")}
    state = status.get("state")
    remembered, known = "last_good" in previous, previous.get("last_good")
    failed_live = (live["name"], live["version"]) == (status.get("name"), status.get("version"))
    stopped = state == "rolled-back" and failed_live and known != live
    if state == "installed":
        out["last_good"] = live
    elif state in _SWITCHING_STATES:
        if remembered:
            out["last_good"] = known
    else:
        out["last_good"] = None if stopped or (remembered and known is None) else live
    return out


def last_good_release(release_status: Mapping[str, Any]) -> str | None:
    """`name@version` of the release the device last ran successfully (`stamp_last_good`),
    or None: it ran none, or the control plane has not learnt which yet."""
    last_good = release_status.get("last_good")
    if not isinstance(last_good, Mapping):
        return None
    return f"{last_good.get('name')}@{last_good.get('version')}"


def already_runs(device: Device, name: str, version: str) -> bool:
    """Whether `device` is assigned `name@version` and reports it installed and live:
    assigning it again would only reinstall it."""
    assignment = device.release_assignment
    status = device.release_status or {}
    active = status.get("active") or {}
    return (
        assignment is not None
        and not assignment.stage_only
        and (assignment.name, assignment.version) == (name, version)
        and status.get("serial") == assignment.serial
        and status.get("state") == "installed"
        and (active.get("name"), active.get("version")) == (name, version)
    )


def device_time_zone(inventory: Mapping[str, Any]) -> str | None:
    """The IANA zone the device reports in `location.timezone`, if any."""
    location = inventory.get("location")
    if isinstance(location, Mapping):
        zone = location.get("timezone")
        if isinstance(zone, str) and zone:
            return zone
    return None


def desired_release_of(device: Device) -> str | None:
    """`name@version` of the release in the device's desired state, or None."""
    assignment = device.release_assignment
    return None if assignment is None else f"{assignment.name}@{assignment.version}"


def is_healthy(device: Device, now: datetime) -> bool:
    """Online and approved (the agent's health window already judged the release)."""
    return (
        device.enrollment is EnrollmentState.APPROVED
        and device.connection(now) is ConnectionStatus.ONLINE
    )


def observe(
    stored: RolloutDevice,
    current: CurrentAssignment | None,
    device: Device,
    compatibility: CompatVerdict,
    now: datetime,
) -> RolloutDevice:
    """The engine's record of `device` with every observed field refreshed."""
    return replace(
        stored,
        report=install_report(current, device.release_status, device.applied_generation),
        healthy=is_healthy(device, now),
        time_zone=device_time_zone(device.inventory),
        compatibility=compatibility,
        current_release=last_good_release(device.release_status or {}),
        desired_release=desired_release_of(device),
    )
