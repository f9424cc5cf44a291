"""Saving a device always re-renders its desired state from every input, in one place."""

from __future__ import annotations

from typing import Any

from edgefleet.core.alerts import anomalous_metrics
from edgefleet.core.desired import refresh_desired
from edgefleet.core.device import Device
from edgefleet.core.release import Ref, ReleaseSection, render_release_section
from edgefleet.core.telemetry_policy import render_telemetry_section
from edgefleet.store import Transaction


def release_section(tx: Transaction, device: Device) -> ReleaseSection | None:
    assignment = device.release_assignment
    if assignment is None:
        return None
    release = tx.releases.get(Ref(assignment.name, assignment.version))
    artifacts = [tx.artifacts.get(ref) for ref in release.artifacts]
    return render_release_section(assignment, release, artifacts)


def telemetry_section(tx: Transaction, device_id: str) -> dict[str, Any]:
    """The fleet telemetry policy, made finer for the metrics of the device's open alerts."""
    policy = tx.telemetry.fleet_policy()
    return render_telemetry_section(
        policy, anomalous_metrics(tx.alerts.open_for_device(device_id))
    )


def render_device(tx: Transaction, device: Device) -> Device:
    """`device` with its desired state re-rendered from every input (not saved)."""
    return refresh_desired(
        device, release_section(tx, device), telemetry_section(tx, device.id)
    )


def save_device(tx: Transaction, device: Device) -> Device:
    """Write `device` (optimistic check) with its desired state re-rendered."""
    return tx.devices.update(render_device(tx, device))
