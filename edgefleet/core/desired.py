"""The desired-state document: what the control plane wants one device to converge to.

The document is derived from stored inputs (labels, settings, the assigned release, the
telemetry section, the replicas placed on the device) by `render_spec`; its `generation`
goes up by one exactly when the spec changes, so agents compare a single integer to know
whether there is anything new. Inputs that live outside the device record (the release's
targets, the placement) are passed in explicitly, so no caller can drop a section by
forgetting it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from edgefleet.core.device import Device
from edgefleet.core.updates.release import ReleaseSection


def render_spec(
    device: Device,
    release: ReleaseSection | None,
    telemetry: Mapping[str, Any] | None = None,
    workloads: Mapping[str, Any] | None = None,
    heartbeat_interval_s: float | None = None,
    training: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The spec part of `device`'s desired state, from its current inputs. `telemetry` is
    the rendered section (core.telemetry_policy.render_telemetry_section), `workloads` the
    replicas the device should hold (core.workload_section.render_workloads_section),
    `heartbeat_interval_s` the interval while it hosts replicas or idles on the MQTT channel
    (else its own), `training`
    the federated training rounds it is planned in (docs/learning.md)."""
    interval = device.heartbeat_interval_s if heartbeat_interval_s is None else (
        heartbeat_interval_s)  # fmt: skip
    spec: dict[str, Any] = {
        "labels": dict(sorted(device.labels.items())),
        "agent": {"heartbeat_interval_s": interval},
    }
    if release is not None:
        spec["release"] = release.to_dict()
    if telemetry is not None:
        spec["telemetry"] = dict(telemetry)
    if workloads is not None:
        spec["workloads"] = dict(workloads)
    if training is not None:
        spec["training"] = dict(training)
    return spec


def heartbeat_interval_of(device: Device) -> float:
    """The interval `device` is told to heartbeat at: its desired state's (the hosting
    interval while it holds replicas, the idle one while it is online on the MQTT channel
    hosting nothing), else its own setting."""
    agent = device.desired.get("agent") or {}
    return float(agent.get("heartbeat_interval_s", device.heartbeat_interval_s))


def next_generation(
    generation: int, current_spec: Mapping[str, Any], new_spec: Mapping[str, Any]
) -> int:
    """`generation` unchanged when the spec is the same, else one more."""
    return generation if dict(current_spec) == dict(new_spec) else generation + 1


def desired_document(device: Device) -> dict[str, Any]:
    """The document served to the agent: identity, generation and spec."""
    return {"device_id": device.id, "generation": device.desired_generation, **device.desired}


def refresh_desired(
    device: Device,
    release: ReleaseSection | None,
    telemetry: Mapping[str, Any] | None = None,
    workloads: Mapping[str, Any] | None = None,
    heartbeat_interval_s: float | None = None,
    training: Mapping[str, Any] | None = None,
) -> Device:
    """`device` with its spec re-rendered and its generation bumped if the spec changed."""
    spec = render_spec(device, release, telemetry, workloads, heartbeat_interval_s, training)
    generation = next_generation(device.desired_generation, device.desired, spec)
    if generation == device.desired_generation:
        return device
    return replace(device, desired=spec, desired_generation=generation)


def blobs_named(spec: Mapping[str, Any]) -> frozenset[str]:
    """The sha256 of every blob a desired-state spec names: the files of its release, the
    files of the releases of the replicas it lists, and the state archives they restore
    from. A device may download exactly these.

    >>> spec = {"release": {"targets": [{"sha256": "a1"}]}, "workloads": {"replicas": [
    ...     {"releases": [{"targets": [{"sha256": "b2"}]}], "restore": {"sha256": "c3"}}]}}
    >>> sorted(blobs_named(spec))
    ['a1', 'b2', 'c3']
    """
    named = {str(t["sha256"]) for t in (spec.get("release") or {}).get("targets", [])}
    for replica in (spec.get("workloads") or {}).get("replicas", []):
        for release in replica.get("releases", []):
            named.update(str(t["sha256"]) for t in release.get("targets", []))
        restore = replica.get("restore")
        if restore and restore.get("sha256"):
            named.add(str(restore["sha256"]))
    return frozenset(named)
