"""Saving a device always re-renders its desired state from every input, in one place;
many devices in one transaction share the fleet-wide inputs (`FleetInputs`)."""

from __future__ import annotations

import math
from functools import cached_property
from typing import Any

from edgefleet.core.desired import refresh_desired
from edgefleet.core.device import Device
from edgefleet.core.telemetry.alerts import anomalous_metrics
from edgefleet.core.telemetry.policy import FleetTelemetryPolicy, render_telemetry_section
from edgefleet.core.updates.release import (
    Artifact,
    Ref,
    Release,
    ReleaseAssignment,
    ReleaseSection,
    render_release_section,
)
from edgefleet.core.workloads.liveness import hosting_heartbeat_s
from edgefleet.core.workloads.migration import Migration
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


class FleetInputs:
    """The inputs every device's desired state reads alike, each read at most once per
    transaction: the placement in force, the active migrations, the fleet and sealing
    telemetry policies, releases and artifacts. A fleet-wide change (a telemetry policy, a
    sealing key) re-renders every device with one of these instead of reading them again
    for each device."""

    def __init__(self, tx: Transaction) -> None:
        self._tx = tx
        self._releases: dict[Ref, Release] = {}
        self._artifacts: dict[Ref, Artifact] = {}

    @cached_property
    def placement(self) -> Placement:
        return self._tx.placement.load().placement

    @cached_property
    def migrations(self) -> list[Migration]:
        return self._tx.migrations.active()

    @cached_property
    def telemetry_policy(self) -> FleetTelemetryPolicy:
        return self._tx.telemetry.fleet_policy()

    @cached_property
    def training_rounds(self) -> list[tuple[str, int, frozenset[str]]]:
        return self._tx.training.open_rounds()

    @cached_property
    def sealing(self) -> dict[str, Any] | None:
        """The sealing key devices seal their batches to, when sealing is on."""
        record = self._tx.telemetry.policy_record(SEALING_POLICY)
        if record is None or not record["document"].get("enabled"):
            return None
        document = record["document"]
        return {"key_id": document["key_id"], "public_key": document["public_key"]}

    def release(self, ref: Ref) -> Release:
        if ref not in self._releases:
            self._releases[ref] = self._tx.releases.get(ref)
        return self._releases[ref]

    def artifact(self, ref: Ref) -> Artifact:
        if ref not in self._artifacts:
            self._artifacts[ref] = self._tx.artifacts.get(ref)
        return self._artifacts[ref]

    def release_targets(self, assignment: ReleaseAssignment) -> ReleaseSection:
        release = self.release(Ref(assignment.name, assignment.version))
        artifacts = [self.artifact(ref) for ref in release.artifacts]
        return render_release_section(assignment, release, artifacts)


def release_section(fleet: FleetInputs, device: Device) -> ReleaseSection | None:
    assignment = device.release_assignment
    return None if assignment is None else fleet.release_targets(assignment)


def telemetry_section(tx: Transaction, fleet: FleetInputs, device_id: str) -> dict[str, Any]:
    """The fleet telemetry policy, made finer for the metrics of the device's open alerts,
    with the device's fidelity advice (services/fidelity.py)."""
    policy = fleet.telemetry_policy
    section = render_telemetry_section(
        policy,
        anomalous_metrics(tx.alerts.open_for_device(device_id)),
        stored_advice(tx, device_id, policy.fidelity),
    )
    # Sealed telemetry: the ingest key the device seals its batches to (services/sealing.py).
    if fleet.sealing is not None:
        section["sealing"] = dict(fleet.sealing)
    return section


def workloads_section(tx: Transaction, fleet: FleetInputs, device_id: str) -> dict[str, Any] | None:
    """The replicas the placement in force and the active migrations give the device."""
    assignments = [
        NodeAssignment(a.workload, a.replica, a.node_id, a.generation)
        for a in fleet.placement.assignments
        if a.node_id == device_id
    ]
    migrations = [m for m in fleet.migrations if device_id in (m.source, m.target)]
    if not assignments and not migrations:
        return None
    sources: dict[str, WorkloadSource] = {}
    for name in sorted({a.workload for a in assignments} | {m.workload for m in migrations}):
        record = tx.workloads.find(name)
        if record is None:
            continue
        releases = []
        for ref in record.releases:
            section = fleet.release_targets(ReleaseAssignment(ref.name, ref.version, False, 0))
            releases.append({"name": ref.name, "version": ref.version,
                             "targets": [dict(t) for t in section.targets]})  # fmt: skip
        sources[name] = WorkloadSource(record.document, tuple(releases))
    return render_workloads_section(replicas_for_node(device_id, assignments, migrations, sources))


def _hosting_nodes(placement: Placement) -> set[str]:
    return {a.node_id for a in placement.assignments if a.node_id is not None}


def render_device(tx: Transaction, device: Device, fleet: FleetInputs | None = None) -> Device:
    """`device` with its desired state re-rendered from every input (not saved); `fleet`
    shares the fleet-wide inputs between the devices of one transaction. A device that
    hosts replicas heartbeats at the hosting interval, so its death is seen quickly; one
    online on the MQTT channel that hosts nothing at the long idle interval, since the
    broker's keep-alive and its Will tell of its death."""
    fleet = FleetInputs(tx) if fleet is None else fleet
    workloads = workloads_section(tx, fleet, device.id)
    interval = None
    if workloads is not None:
        hosting = len(_hosting_nodes(fleet.placement))
        interval = hosting_heartbeat_s(device.heartbeat_interval_s, max(1, hosting))
    elif device.presence is not None and device.presence.idle_interval_s is not None:
        interval = max(device.heartbeat_interval_s, device.presence.idle_interval_s)
    withheld = tx.attestations.get(device.id).withhold_releases  # the attestation policy
    return refresh_desired(
        device,
        None if withheld else release_section(fleet, device),
        telemetry_section(tx, fleet, device.id),
        workloads,
        interval,
        training_section(fleet, device.id),
    )


def training_section(fleet: FleetInputs, device_id: str) -> dict[str, Any] | None:
    """The federated training rounds the device is planned in (services/training.py)."""
    rounds = [(job, number) for job, number, clients in fleet.training_rounds
              if device_id in clients]  # fmt: skip
    if not rounds:
        return None
    return {"rounds": [{"job": job, "round": number} for job, number in rounds]}


def save_device(tx: Transaction, device: Device, fleet: FleetInputs | None = None) -> Device:
    """Write `device` (optimistic check) with its desired state re-rendered."""
    return tx.devices.update(render_device(tx, device, fleet))


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
