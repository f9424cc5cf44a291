"""Copying a real fleet into the lab (`lab rehearse --fleet-from URL`): its devices with their
ids, labels, inventory, time zones, locations, current releases (the one each last ran
successfully, `release_status.last_good`, as the rollout controller reads it) and
connection status, and what their telemetry says about their workloads, through the
operator client.

Devices are grouped into classes by hardware (`aarch64/npu/2048MB`). A device's model
behaviour comes from its own telemetry over the last `since` (median and p95 of
`inference.latency_ms`, request rate, error rate) — only since its live release changed,
when that was within `since` (`release_status.active_since`) — or its class's median when
it has none, or the defaults. The control plane does not know the network a device sits
behind, so links get the default conditions; a profile given as well adds its bad model,
faults and workloads.

How long an install takes on a device beyond its release's health window (long poll,
metadata, download, the sandbox check, start-up, the report) comes from the newest finished
rollouts that installed something on it: from the assignment until the control plane saw
it installed (`install_overhead_s`); devices without such history get their class's median,
or the defaults.

The release's facts (size, requirements, and the health window its service manifest sets)
come from the server's release record; how the devices' workload telemetry reaches the
gates (window length, upload interval) from the fleet's telemetry policy. The server's
workloads and where their replicas run now (`copy_workloads`, `copy_placement`) let the
lab's placement controller start from the placement in force rather than place anew (the
failover agreement test does; `lab rehearse --fleet-from` does not yet: with a selector,
replicas on devices left out would look gone).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from edgefleet.client import FleetClient
from edgefleet.core.durations import parse_duration
from edgefleet.core.rollouts.observation import last_good_release
from edgefleet.core.rollouts.spec import ReleaseRef
from edgefleet.core.telemetry.sampling import policy_from_document
from edgefleet.core.updates.compat import parse_requirements
from edgefleet.core.workloads.placement import Assignment, Placement
from edgefleet.core.workloads.workload import Workload, parse_workload
from edgefleet.errors import ApiError
from edgefleet.sim.hardware import HardwareSpec
from edgefleet.sim.lab.fleet_model import LabDevice
from edgefleet.sim.lab.telemetry_model import (
    DEFAULT_DELIVERY,
    TelemetryDelivery,
    delivery_from_policy,
)
from edgefleet.sim.model_behaviour import LatencyDistribution, ModelBehaviour
from edgefleet.sim.profile import ReleaseFacts

LATENCY_METRIC = "inference.latency_ms"
MAX_RECENT_CHANGES = 100
HISTORY_ROLLOUTS = 5  # the newest finished rollouts whose installs time the devices'
FINISHED = frozenset({"succeeded", "failed", "aborted", "rolled-back"})


@dataclass(frozen=True)
class Observed:
    """One device's workload as its telemetry shows it."""

    p50_ms: float | None = None
    p95_ms: float | None = None
    requests_per_s: float | None = None
    error_percent: float | None = None


def class_of(inventory: Mapping[str, Any]) -> str:
    """`arch/accelerators/memoryMB`: devices that should behave alike."""
    hardware = inventory.get("hardware") or {}
    accelerators = "+".join(sorted(str(a) for a in hardware.get("accelerators") or [])) or "cpu"
    return f"{hardware.get('arch', 'unknown')}/{accelerators}/{hardware.get('memory_mb', '?')}MB"


def _hardware(inventory: Mapping[str, Any]) -> HardwareSpec:
    hardware = inventory.get("hardware") or {}
    software = inventory.get("software") or {}
    return HardwareSpec(
        arch=str(hardware.get("arch", "unknown")),
        cpu_count=int(hardware.get("cpu_count") or 1),
        memory_mb=int(hardware.get("memory_mb") or 512),
        disk_mb=int(hardware.get("disk_mb") or 1024),
        accelerators=tuple(str(a) for a in hardware.get("accelerators") or []),
        os=str(software.get("os", "linux")),
        onnxruntime=software.get("onnxruntime"),
    )


def _observed(client: FleetClient, since: str, device: str | None = None) -> dict[str, Observed]:
    """Per device (or for one): latency quantiles, request rate and error rate over `since`
    (a duration ago, or an ISO 8601 time)."""
    try:
        median = client.telemetry_kpis(device=device, metric=LATENCY_METRIC, since=since,
                                       quantile=0.5)  # fmt: skip
        tail = client.telemetry_kpis(device=device, metric=LATENCY_METRIC, since=since,
                                     quantile=0.95)  # fmt: skip
    except ApiError:
        return {}
    out: dict[str, Observed] = {}
    for device_id, point in median.get("devices", {}).items():
        p95 = tail.get("devices", {}).get(device_id, {}).get("quantile")
        length_s = point.get("length_s") or 0
        rate = point["count"] / length_s if length_s else None
        errors = median.get("kpis", {}).get(device_id, {}).get("error_rate_pct", {})
        out[device_id] = Observed(point.get("quantile"), p95, rate, errors.get("value"))
    return out


def _behaviour(observed: list[Observed]) -> ModelBehaviour:
    """A class's (or one device's) behaviour from what telemetry showed; defaults else."""
    default = ModelBehaviour()

    def median(values: list[float | None]) -> float | None:
        present = [v for v in values if v is not None and math.isfinite(v) and v > 0]
        return statistics.median(present) if present else None

    p50 = median([o.p50_ms for o in observed])
    p95 = median([o.p95_ms for o in observed])
    latency = default.latency
    if p50 is not None:
        latency = LatencyDistribution(p50, p95 if p95 is not None and p95 > p50 else p50 * 2)
    rate = median([o.requests_per_s for o in observed])
    errors = [o.error_percent for o in observed if o.error_percent is not None]
    return replace(
        default,
        latency=latency,
        requests_per_s=default.requests_per_s if rate is None else rate,
        error_percent=statistics.median(errors) if errors else default.error_percent,
    )


def install_overhead_s(client: FleetClient) -> dict[str, float]:
    """Per device, the median time its installs in the newest finished rollouts took beyond
    the release's health window: from the assignment until the control plane saw the device
    report the release installed."""
    try:
        finished = [r for r in client.list_rollouts() if r.get("state") in FINISHED]
    except ApiError:
        return {}
    windows: dict[str, float] = {}
    seen: dict[str, list[float]] = {}
    for summary in finished[:HISTORY_ROLLOUTS]:  # newest first
        release = str(summary["release"])
        if release not in windows:
            facts = release_facts(client, release)
            windows[release] = (
                facts.health_window_s if facts else ReleaseFacts(release).health_window_s
            )
        try:
            devices = client.get_rollout(summary["id"]).get("devices") or []
        except ApiError:
            continue
        for row in devices:
            if (
                row.get("state") == "installed"
                and row.get("installed_at")
                and row.get("assigned_at")
            ):
                took = datetime.fromisoformat(row["installed_at"]) - datetime.fromisoformat(
                    row["assigned_at"]
                )
                seen.setdefault(row["device_id"], []).append(
                    took.total_seconds() - windows[release]
                )
    return {d: max(0.0, statistics.median(values)) for d, values in seen.items()}


def _with_install_time(behaviour: ModelBehaviour, overhead_s: float | None) -> ModelBehaviour:
    """`behaviour` with the sandbox check and start-up taking `overhead_s` together, half
    each: history gives only the sum, and both start a process that loads the model."""
    if overhead_s is None:
        return behaviour
    return replace(behaviour, sandbox_s=overhead_s / 2, start_s=overhead_s / 2)


def copy_fleet(
    client: FleetClient, selector: str | None = None, since: str = "24h"
) -> list[LabDevice]:
    """The approved devices of the server (matching `selector`), as lab devices."""
    devices = [d for d in client.list_devices(selector=selector)
               if d.get("enrollment") == "approved"]  # fmt: skip
    observed = _observed(client, since)
    for device_id, recent in _since_release_change(client, devices, since).items():
        if recent is None:  # its class's behaviour stands in
            observed.pop(device_id, None)
        else:
            observed[device_id] = recent
    by_class: dict[str, list[Observed]] = {}
    for device in devices:
        if device["id"] in observed:
            by_class.setdefault(class_of(device["inventory"]), []).append(observed[device["id"]])
    class_behaviour = {name: _behaviour(values) for name, values in by_class.items()}
    overheads = install_overhead_s(client)
    class_overheads: dict[str, list[float]] = {}
    for device in devices:
        if device["id"] in overheads:
            class_overheads.setdefault(class_of(device["inventory"]), []).append(
                overheads[device["id"]]
            )
    fleet = []
    for device in sorted(devices, key=lambda d: d["id"]):
        inventory = device.get("inventory") or {}
        location = inventory.get("location") or {}
        labels = device.get("labels") or {}
        name = class_of(inventory)
        own = observed.get(device["id"])
        behaviour = _behaviour([own]) if own else class_behaviour.get(name, ModelBehaviour())
        overhead = overheads.get(device["id"])
        if overhead is None and name in class_overheads:
            overhead = statistics.median(class_overheads[name])
        behaviour = _with_install_time(behaviour, overhead)
        fleet.append(LabDevice(
            id=device["id"],
            name=device.get("name") or device["id"],
            device_class=name,
            labels=dict(labels),
            inventory=inventory,
            time_zone=location.get("timezone"),
            region=str(location.get("region") or labels.get("region") or "default"),
            zone=str(location.get("zone") or labels.get("zone") or "default"),
            behaviour=behaviour,
            hardware=_hardware(inventory),
            heartbeat_interval_s=float(device.get("heartbeat_interval_s") or 30.0),
            current_release=last_good_release(device.get("release_status") or {}),
            latitude=location.get("latitude"),
            longitude=location.get("longitude"),
            online=device.get("status") == "online",
            seed=int(device["id"].encode().hex()[-12:], 16) if device["id"] else 0,
        ))  # fmt: skip
    return fleet


def _since_release_change(
    client: FleetClient, devices: list[dict[str, Any]], since: str
) -> dict[str, Observed | None]:
    """What devices whose live release changed within `since` show since the change (the
    windows before it are another release's); None where nothing is known since. At most
    MAX_RECENT_CHANGES devices are read one by one; the others get None too."""
    window_start = datetime.now(UTC) - parse_duration(since)
    out: dict[str, Observed | None] = {}
    changed = []
    for device in devices:
        started = (device.get("release_status") or {}).get("active_since")
        if started and datetime.fromisoformat(started) > window_start:
            changed.append((device["id"], started))
    for device_id, started in changed[:MAX_RECENT_CHANGES]:
        out[device_id] = _observed(client, started, device_id).get(device_id)
    for device_id, _ in changed[MAX_RECENT_CHANGES:]:
        out[device_id] = None
    return out


def release_facts(client: FleetClient, release: str) -> ReleaseFacts | None:
    """Size, requirements and health window of `release` from the server (None if it has no
    such release). Without a service manifest the device's defaults apply."""
    ref = ReleaseRef.parse(release)
    try:
        found = client.get_release(ref.name, ref.version)
    except ApiError:
        return None
    files = found.get("files") or []
    requires = sorted({r for f in files for r in f.get("requires", [])})
    size_mb = sum(int(f.get("size_bytes", 0)) for f in files) / 1e6
    facts = ReleaseFacts(release, size_mb=size_mb, requires=parse_requirements(requires))
    for file in files:
        health = ((file.get("facts") or {}).get("manifest") or {}).get("health")
        if health:
            facts = replace(
                facts,
                health_window_s=float(health.get("window_s", facts.health_window_s)),
                max_error_percent=round(100 * float(health.get("max_error_rate", 0.05)), 6),
                min_requests=int(health.get("min_requests", 0)),
            )
    return facts


def copy_telemetry_delivery(client: FleetClient) -> TelemetryDelivery:
    """How workload telemetry reaches the server under its fleet telemetry policy (the
    default policy's when it cannot be read)."""
    try:
        document = client.telemetry_policy()["manifest"]
    except ApiError:
        return DEFAULT_DELIVERY
    return delivery_from_policy(policy_from_document(document))


def copy_workloads(client: FleetClient) -> list[Workload]:
    """The server's workloads, from the documents they were applied with."""
    return [parse_workload(w["manifest"]) for w in client.list_workloads()]


def copy_placement(client: FleetClient) -> Placement:
    """Where the server's workloads' replicas run now, each at its placement generation."""
    assignments = []
    for workload in client.list_workloads():
        for row in client.get_workload(workload["name"])["placement"]:
            node_id, generation = row["node_id"], row["generation"]
            if node_id is not None and generation is not None:
                assignments.append(Assignment(workload["name"], row["replica"], node_id,
                                              generation))  # fmt: skip
    assignments.sort(key=lambda a: (a.workload, a.replica))
    return Placement(tuple(assignments), max((a.generation for a in assignments), default=0))
