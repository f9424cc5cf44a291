"""Workload specs: the YAML shape, defaults, and errors that name the offending field."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from edgefleet.core.workloads.workload import (
    AffinityScope,
    GeoPoint,
    Workload,
    parse_workload,
)
from edgefleet.errors import InvalidInput

MANIFEST = """
kind: Workload
metadata: {name: detector}
spec:
  artifacts: [camera-models@3]
  parameters: {threads: 2, mode: fast}
  resources: {cpu_millicores: 500, memory_mb: 256, accelerator: {kind: npu, count: 1}}
  replicas: 2
  priority: 100
  constraints:
    selector: "kind=camera,!canary"
    regions: [eu-west]
    zones: [eu-west-a, eu-west-b]
    residency: [eu]
  preferences:
    near:
      - {name: hall-3, lat: 48.1, lon: 11.6, weight: 2}
      - {name: users-munich}
    affinity: [{workload: feature-store, scope: zone}]
    anti_affinity: [detector-canary]
    spread: zones
  state_dir: /var/lib/detector
  service: {port: 8080}
  health_check: {http: /healthz, interval_s: 5, timeout_s: 2, failure_threshold: 3}
  slo: {latency_ms: 50}
"""


def manifest() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(MANIFEST)
    return data


def test_the_documented_manifest_parses_into_every_field() -> None:
    w = parse_workload(manifest())
    assert w.name == "detector"
    assert w.artifacts == ("camera-models@3",)
    assert w.parameters == {"threads": 2, "mode": "fast"}
    assert (w.resources.cpu_millicores, w.resources.memory_mb) == (500, 256)
    assert (w.resources.accelerators, w.resources.accelerator_kind) == (1, "npu")
    assert (w.replicas, w.priority) == (2, 100)
    assert w.constraints.selector.matches({"kind": "camera"})
    assert not w.constraints.selector.matches({"kind": "camera", "canary": "1"})
    assert w.constraints.regions == {"eu-west"}
    assert w.constraints.zones == {"eu-west-a", "eu-west-b"}
    assert w.constraints.residency == {"eu"}
    near = w.preferences.near
    assert near[0].location == GeoPoint(48.1, 11.6) and near[0].weight == 2
    assert near[1].location is None
    affinity, anti = w.preferences.affinity
    assert (affinity.workload, affinity.scope, affinity.anti) == (
        "feature-store",
        AffinityScope.ZONE,
        False,
    )
    assert (anti.workload, anti.scope, anti.anti) == ("detector-canary", AffinityScope.NODE, True)
    assert w.preferences.spread_zones
    assert w.state_dir == "/var/lib/detector" and w.stateful
    assert w.service_port == 8080
    assert w.health_check is not None
    assert w.health_check.http_path == "/healthz" and w.health_check.failure_threshold == 3
    assert w.slo_latency_ms == 50


def test_the_flat_form_and_defaults() -> None:
    w = parse_workload({"name": "web", "resources": {"cpu_millicores": 100, "memory_mb": 64}})
    assert w == Workload(name="web", resources=w.resources)
    assert w.replicas == 1 and w.priority == 0 and not w.stateful
    assert w.constraints.selector.matches({})


@pytest.mark.parametrize(
    ("accelerator", "expected"),
    [
        ("npu", (1, "npu")),
        (2, (2, None)),
        ({"count": 2, "kind": "gpu"}, (2, "gpu")),
        (None, (0, None)),
    ],
)
def test_accelerator_forms(accelerator: object, expected: tuple[int, str | None]) -> None:
    data = {"name": "a", "resources": {"cpu_millicores": 1, "memory_mb": 1}}
    if accelerator is not None:
        data["resources"]["accelerator"] = accelerator  # type: ignore[index]
    r = parse_workload(data).resources
    assert (r.accelerators, r.accelerator_kind) == expected


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("spec.command", ["python", "-c", "import os; os.system('id')"]),
        ("spec.env", {"LD_PRELOAD": "/tmp/evil.so"}),
        ("spec.health_check", {"command": ["sh", "-c", "id"]}),
    ],
)
def test_a_workload_cannot_say_what_runs(path: str, value: object) -> None:
    """Commands, environments and check commands come only from a signed manifest."""
    data = manifest()
    set_path(data, path, value)
    with pytest.raises(InvalidInput) as refused:
        parse_workload(data)
    assert refused.value.code == "unsigned_command"
    assert refused.value.message.startswith(path if "health" not in path else f"{path}.command")


def test_a_health_check_may_set_only_its_timing_and_path() -> None:
    data = manifest()
    data["spec"]["health_check"] = {"interval_s": 2, "timeout_s": 1}
    check = parse_workload(data).health_check
    assert check is not None and check.http_path is None and check.interval_s == 2


def set_path(data: dict[str, Any], path: str, value: object) -> None:
    *parents, last = path.split(".")
    node = data
    for key in parents:
        node = node[key]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value


DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "named"),
    [
        ("metadata.name", "Bad_Name", "metadata.name"),
        ("spec.resources.cpu_millicores", -5, "spec.resources.cpu_millicores"),
        ("spec.resources.memory_mb", "lots", "spec.resources.memory_mb"),
        ("spec.resources.cpu_millicores", DELETE, "spec.resources.cpu_millicores: required"),
        ("spec.resources", DELETE, "spec.resources: required"),
        ("spec.replicas", True, "spec.replicas"),
        ("spec.replicas", 5000, "spec.replicas"),
        ("spec.constraints.selector", "kind in (", "spec.constraints.selector"),
        ("spec.constraints.residency", ["e u"], "spec.constraints.residency[0]"),
        ("spec.preferences.near", [{"name": "x", "lat": 95, "lon": 0}], "near[0].lat"),
        ("spec.preferences.near", [{"name": "x", "weight": 0}], "near[0].weight"),
        ("spec.preferences.affinity", [{"workload": "x", "scope": "rack"}], "affinity[0].scope"),
        ("spec.preferences.spread", "racks", "spec.preferences.spread"),
        ("spec.state_dir", "relative/dir", "spec.state_dir"),
        ("spec.state_dir", "/var/../etc", "spec.state_dir"),
        ("spec.service", {"port": 70000}, "spec.service.port"),
        ("spec.health_check", {"http": "/h", "command": ["x"]}, "spec.health_check.command"),
        ("spec.health_check", {"http": "healthz"}, "spec.health_check.http"),
        ("spec.health_check", {"http": "/h", "timeout_s": 9}, "spec.health_check.timeout_s"),
        ("spec.slo", {"latency_ms": -1}, "spec.slo.latency_ms"),
        ("spec.parameters", {"1BAD": "x"}, "spec.parameters.1BAD"),
        ("spec.parameters", {"threads": [1]}, "spec.parameters.threads"),
        ("spec.command", "python serve.py", "spec.command"),
        ("spec.artifacts", ["Not A Ref"], "spec.artifacts[0]"),
        ("spec.replcas", 2, "spec.replcas: unknown field"),
        ("spec.resources.gpu", 1, "spec.resources.gpu: unknown field"),
        ("kind", "Rollout", "kind"),
    ],
)
def test_errors_name_the_field(path: str, value: object, named: str) -> None:
    data = manifest()
    set_path(data, path, value)
    with pytest.raises(InvalidInput) as info:
        parse_workload(data)
    assert named in info.value.message


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
spec_keys = st.sampled_from(
    ["resources", "replicas", "priority", "constraints", "preferences", "state_dir", "service",
     "health_check", "slo", "parameters", "artifacts"]
)  # fmt: skip


@settings(max_examples=150)
@given(key=spec_keys, value=json_values)
def test_any_malformed_field_fails_with_invalid_input_only(key: str, value: object) -> None:
    data = copy.deepcopy(manifest())
    data["spec"][key] = value
    try:
        parse_workload(data)
    except InvalidInput as e:
        assert e.message
