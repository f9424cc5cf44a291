"""Saving a device always re-renders its desired state from every input, in one place."""

from __future__ import annotations

import math
from typing import Any

from edgefleet.core.desired import refresh_desired
from edgefleet.core.device import Device
from edgefleet.core.telemetry.alerts import anomalous_metrics
from edgefleet.core.telemetry.policy import render_telemetry_section
from edgefleet.core.updates.release import (
    Ref,
    ReleaseAssignment,
    ReleaseSection,
    render_release_section,
)
from edgefleet.core.workloads.liveness import hosting_heartbeat_s
from edgefleet.core.workloads.placement import Placement
from edgefleet.core.workloads.section import (
    NodeAssignment,
    WorkloadSource,
    render_workloads_section,
    replicas_for_node,
)
from edgefleet.server.services.fidelity import stored_advice
from edgefleet.store import Transaction
from edgefleet.store.repositories.telemetry import SEALING_POLICY


def release_section(tx: Transaction, device: Device) -> ReleaseSection | None:
    assignment = device.release_assignment
    if assignment is None:
        return None
    release = tx.releases.get(Ref(assignment.name, assignment.version))
    artifacts = [tx.artifacts.get(ref) for ref in release.artifacts]
    return render_release_section(assignment, release, artifacts)


def telemetry_section(tx: Transaction, device_id: str) -> dict[str, Any]:
    """The fleet telemetry policy, made finer for the metrics of the device's open alerts,
    with the device's fidelity advice (services/fidelity.py)."""
    policy = tx.telemetry.fleet_policy()
    section = render_telemetry_section(
        policy,
        anomalous_metrics(tx.alerts.open_for_device(device_id)),
        stored_advice(tx, device_id, policy.fidelity),
    )
    # Sealed telemetry: the ingest key the device seals its batches to (services/sealing.py).
    sealing = tx.telemetry.policy_record(SEALING_POLICY)
    if sealing is not None and sealing["document"].get("enabled"):
        document = sealing["document"]
        section["sealing"] = {"key_id": document["key_id"], "public_key": document["public_key"]}
    return section


def workloads_section(
    tx: Transaction, device_id: str, placement: Placement
) -> dict[str, Any] | None:
    """The replicas the placement in force and the active migrations give the device."""
    assignments = [
        NodeAssignment(a.workload, a.replica, a.node_id, a.generation)
        for a in placement.assignments
        if a.node_id == device_id
    ]
    migrations = [m for m in tx.migrations.active() if device_id in (m.source, m.target)]
    if not assignments and not migrations:
        return None
    sources: dict[str, WorkloadSource] = {}
    for name in sorted({a.workload for a in assignments} | {m.workload for m in migrations}):
        record = tx.workloads.find(name)
        if record is None:
            continue
        releases = []
        for ref in record.releases:
            release = tx.releases.get(ref)
            artifacts = [tx.artifacts.get(r) for r in release.artifacts]
            section = render_release_section(
                ReleaseAssignment(ref.name, ref.version, False, 0), release, artifacts
            )
            releases.append({"name": ref.name, "version": ref.version,
                             "targets": [dict(t) for t in section.targets]})  # fmt: skip
        sources[name] = WorkloadSource(record.document, tuple(releases))
    return render_workloads_section(replicas_for_node(device_id, assignments, migrations, sources))


def _hosting_nodes(placement: Placement) -> set[str]:
    return {a.node_id for a in placement.assignments if a.node_id is not None}


def render_device(tx: Transaction, device: Device) -> Device:
    """`device` with its desired state re-rendered from every input (not saved). A device
    that hosts replicas heartbeats at the hosting interval, so its death is seen quickly; one
    online on the MQTT channel that hosts nothing at the long idle interval, since the
    broker's keep-alive and its Will tell of its death."""
    placement = tx.placement.load().placement
    workloads = workloads_section(tx, device.id, placement)
    interval = None
    if workloads is not None:
        hosting = len(_hosting_nodes(placement))
        interval = hosting_heartbeat_s(device.heartbeat_interval_s, max(1, hosting))
    elif device.presence is not None and device.presence.idle_interval_s is not None:
        interval = max(device.heartbeat_interval_s, device.presence.idle_interval_s)
    withheld = tx.attestations.get(device.id).withhold_releases  # the attestation policy
    return refresh_desired(
        device,
        None if withheld else release_section(tx, device),
        telemetry_section(tx, device.id),
        workloads,
        interval,
        training_section(tx, device.id),
    )


def training_section(tx: Transaction, device_id: str) -> dict[str, Any] | None:
    """The federated training rounds the device is planned in (services/training.py)."""
    rounds = tx.training.open_rounds_of(device_id)
    if not rounds:
        return None
    return {"rounds": [{"job": job, "round": number} for job, number in rounds]}


def save_device(tx: Transaction, device: Device) -> Device:
    """Write `device` (optimistic check) with its desired state re-rendered."""
    return tx.devices.update(render_device(tx, device))


def refresh_hosting_nodes(
    tx: Transaction, before: Placement, after: Placement, done: set[str]
) -> list[str]:
    """When the placement change moved the hosting interval (the number of hosting nodes
    crossed a step), re-render every node that hosts under `after` and is not in `done`;
    the ids whose desired state changed."""

    def level(placement: Placement) -> float:
        return hosting_heartbeat_s(math.inf, max(1, len(_hosting_nodes(placement))))

    if level(before) == level(after):
        return []
    return [d for d in sorted(_hosting_nodes(after) - done) if refresh_device(tx, d)]


def refresh_device(tx: Transaction, device_id: str) -> bool:
    """Re-render a device's desired state after one of its inputs changed elsewhere (the
    placement, a migration); writes only when the spec changed. True when it did."""
    device = tx.devices.find(device_id)
    if device is None:
        return False
    rendered = render_device(tx, device)
    if rendered.desired_generation == device.desired_generation:
        return False
    tx.devices.update(rendered)
    return True
