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
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from edgefleet.core.compat import CompatVerdict
from edgefleet.core.device import ConnectionStatus, Device
from edgefleet.core.enrollment import EnrollmentState
from edgefleet.core.rollout import InstallReport, RolloutDevice

# Install states of the agent that end an attempt without the release running.
_FAILED_STATES = frozenset({"failed", "rolled-back"})


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
        current_release=desired_release_of(device),
    )
