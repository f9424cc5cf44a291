"""Fleet profiles: the shipped ones load, bad ones fail naming the field, fleets and fault
schedules drawn from them are deterministic."""

from __future__ import annotations

import copy
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgefleet.errors import InvalidInput
from edgefleet.sim.blueprint import allocate, draw_fleet
from edgefleet.sim.faults import FaultKind, schedule_faults
from edgefleet.sim.profile import (
    PROFILES_DIR,
    load_profile,
    parse_profile,
    shipped_profiles,
)


def shipped(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((PROFILES_DIR / f"{name}.yaml").read_text())
    return data


def test_the_shipped_profiles_load() -> None:
    assert shipped_profiles() == ["battery-sensors", "factory-gateways", "retail-cameras"]
    for name in shipped_profiles():
        profile = load_profile(name)
        assert profile.classes and profile.regions and profile.faults and profile.workloads


def set_path(document: dict[str, Any], path: str, value: Any) -> None:
    """Set `a.b[0].c` in a nested document."""
    node: Any = document
    parts = path.replace("[", ".").replace("]", "").split(".")
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node[part]
    last = parts[-1]
    if last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("spec.classes[0].network.loss_percent", 150,
         "spec.classes[0].network.loss_percent: expected a number in 0..100"),
        ("spec.classes[1].hardware.cpus", 4, "spec.classes[1].hardware.cpus: unknown field"),
        ("spec.regions[0].time_zone", "Mars/Olympus",
         "spec.regions[0].time_zone: unknown time zone"),
        ("spec.faults[0].kind", "meteor", "spec.faults[0].kind: expected agent-crash|"),
        ("spec.faults[1].hosting", "nothing", "spec.faults[1].hosting: no workload named"),
        ("spec.faults[2].class", "cam-x", "spec.faults[2].class: no class named 'cam-x'"),
        ("spec.classes[0].model.latency_ms", {"p50": 30, "p95": 20},
         "spec.classes[0].model.latency_ms.p95: must be above p50"),
        ("spec.classes[0].hardware.power", "nuclear", "spec.classes[0].hardware.power: expected"),
        ("spec.releases[0].requires", ["arch"], "spec.releases[0]: invalid requirement"),
        ("spec.bad_model.latency_factor", -1, "spec.bad_model.latency_factor: expected a number"),
        ("spec.bad_model.self_test_failure_percent", 120,
         "spec.bad_model.self_test_failure_percent: expected a number in 0..100"),
        ("spec.classes[1].name", "cam-npu", "spec.classes[1].name: class 'cam-npu' is declared"),
        ("spec.classes[0].network.outages", {"every": "1h"},
         "spec.classes[0].network.outages.duration: required"),
        ("spec.heartbeat_interval", "soon", "spec.heartbeat_interval: invalid duration"),
    ],
)  # fmt: skip
def test_a_bad_field_is_named(path: str, value: Any, message: str) -> None:
    document = copy.deepcopy(shipped("retail-cameras"))
    set_path(document, path, value)
    with pytest.raises(InvalidInput) as caught:
        parse_profile(document)
    assert message in caught.value.message


def test_missing_sections_and_unknown_top_level_fields() -> None:
    with pytest.raises(InvalidInput, match=r"spec\.classes: required"):
        parse_profile({"kind": "FleetProfile", "spec": {"regions": [{"name": "r"}]}})
    with pytest.raises(InvalidInput, match=r"spec\.colour: unknown field"):
        parse_profile({"kind": "FleetProfile", "spec": {"colour": "blue"}})
    with pytest.raises(InvalidInput, match="kind: expected 'FleetProfile'"):
        parse_profile({"kind": "Rollout", "spec": {}})


def test_a_profile_file_error_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    document = shipped("factory-gateways")
    document["spec"]["classes"][0]["hardware"]["memory_mb"] = "lots"
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(InvalidInput, match=r"mine\.yaml: spec\.classes\[0\]\.hardware\.memory_mb"):
        load_profile(path)
    with pytest.raises(InvalidInput, match="shipped profiles: battery-sensors"):
        load_profile("no-such-profile")


def test_a_fleet_follows_the_shares_and_is_the_same_every_time() -> None:
    profile = load_profile("retail-cameras")
    fleet = draw_fleet(profile, 1000, seed=5)
    classes = Counter(b.device_class.name for b in fleet)
    assert classes == {"cam-npu": 550, "cam-cpu": 350, "cam-legacy": 100}
    assert Counter(b.region.name for b in fleet) == {"eu-west": 400, "eu-central": 300,
                                                     "us-east": 300}  # fmt: skip
    again = draw_fleet(profile, 1000, seed=5)
    assert [(b.name, b.device_class.name, b.zone.name, b.seed) for b in fleet] == [
        (b.name, b.device_class.name, b.zone.name, b.seed) for b in again
    ]
    other = draw_fleet(profile, 1000, seed=6)
    assert [b.device_class.name for b in fleet] != [b.device_class.name for b in other]
    device = fleet[0]
    assert device.labels["region"] == device.region.name
    assert device.labels["class"] == device.device_class.name
    assert device.labels["fleet"] == "retail"


def test_allocation_sums_to_the_total() -> None:
    assert allocate([1, 1, 1], 10) == [4, 3, 3]
    assert sum(allocate([0.3, 2.7, 5], 17)) == 17


def test_fault_schedules_are_seeded_and_follow_their_filters() -> None:
    profile = load_profile("factory-gateways")
    fleet = draw_fleet(profile, 200, seed=1)
    targets = [b.fault_target() for b in fleet]
    events = schedule_faults(profile.faults, targets, 8 * 3600, seed=1)
    assert events == schedule_faults(profile.faults, targets, 8 * 3600, seed=1)
    assert [e.at_s for e in events] == sorted(e.at_s for e in events)
    crashes = [e for e in events if e.kind is FaultKind.AGENT_CRASH]
    assert [e.at_s for e in crashes] == [4 * 3600.0]  # every 4h, before 8h
    assert len(crashes[0].device_indices) == 4  # 2% of 200
    partition = next(e for e in events if e.kind is FaultKind.PARTITION)
    assert {fleet[i].zone.name for i in partition.device_indices} == {"de-hall-3"}
    assert len(partition.device_indices) == sum(b.zone.name == "de-hall-3" for b in fleet)
    # `hosting` needs placements: without any, such a fault has no device to hit.
    assert not any(e.spec_index == 1 for e in events)
