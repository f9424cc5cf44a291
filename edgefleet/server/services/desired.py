"""Saving a device always re-renders its desired state from every input, in one place."""

from __future__ import annotations

from edgefleet.core.desired import refresh_desired
from edgefleet.core.device import Device
from edgefleet.core.release import Ref, ReleaseSection, render_release_section
from edgefleet.store import Transaction


def release_section(tx: Transaction, device: Device) -> ReleaseSection | None:
    assignment = device.release_assignment
    if assignment is None:
        return None
    release = tx.releases.get(Ref(assignment.name, assignment.version))
    artifacts = [tx.artifacts.get(ref) for ref in release.artifacts]
    return render_release_section(assignment, release, artifacts)


def save_device(tx: Transaction, device: Device) -> Device:
    """Write `device` (optimistic check) with its desired state re-rendered."""
    return tx.devices.update(refresh_desired(device, release_section(tx, device)))
