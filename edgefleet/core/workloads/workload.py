"""Workloads: the declared shape of a process that serves a model, and its validation.

A workload is declared in YAML (`kind: Workload`) and parsed here from the plain dict the
YAML loader returns. Every field is checked, and a bad one fails with InvalidInput naming
its path (`spec.resources.cpu_millicores: ...`)::

    kind: Workload
    metadata: {name: detector}
    spec:
      artifacts: [camera-models@3]          # signed releases: release[@version]
      parameters: {threads: 2}              # only what their service manifest declares
      resources: {cpu_millicores: 500, memory_mb: 256, accelerator: {kind: npu, count: 1}}
      replicas: 2
      priority: 100                         # higher is placed first and may displace lower
      constraints:                          # hard: a node failing one is never chosen
        selector: "kind=camera,!canary"
        regions: [eu-west]
        zones: [eu-west-a, eu-west-b]
        residency: [eu]                     # the workload and its state stay in these zones
      preferences:                          # soft: they only change scores
        near:
          - {name: hall-3, lat: 48.1, lon: 11.6, weight: 2}
          - {name: users-munich}            # located or measured in the placement topology
        affinity: [{workload: feature-store, scope: zone}]
        anti_affinity: [{workload: detector-canary}]
        spread: zones
      state_dir: /var/lib/detector
      service: {port: 8080}                 # or "auto": the agent picks a free port
      health_check: {http: /healthz, interval_s: 5, timeout_s: 2, failure_threshold: 3}
      slo: {latency_ms: 50}

The flat form (the `spec` keys at the top level next to `name`) is accepted too.

What runs is never written here: the release's signed service manifest says the command,
its environment and its health check, and declares the parameters a workload may set
(`core.service_manifest`). A document with `command`, `env` or `health_check.command` is
refused, so neither an operator token nor the control plane can make a device run a
program its operators' keys did not sign.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from edgefleet.core.labels import validate_label_value
from edgefleet.core.manifest import (
    check_keys,
    read_int,
    read_list,
    read_mapping,
    read_number,
    read_string,
    split_manifest,
)
from edgefleet.core.selector import Selector, parse_selector
from edgefleet.errors import InvalidInput

MAX_REPLICAS = 1000
MIN_PRIORITY, MAX_PRIORITY = -1_000_000, 1_000_000
_NAME_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_REF_RE = re.compile(r"[a-z0-9](?:[a-z0-9.-]{0,126}[a-z0-9])?(?:@[A-Za-z0-9._+-]{1,64})?")
_PARAMETER_RE = re.compile(r"[a-z][a-z0-9_]{0,62}")
MAX_PARAMETERS = 64
_SPEC_KEYS = frozenset(
    {
        "artifacts", "parameters", "resources", "replicas", "priority", "constraints",
        "preferences", "state_dir", "service", "service_port", "health_check", "slo",
        # Refused with their own reason below: what runs comes from a signed release.
        "command", "env",
    }
)  # fmt: skip
_UNSIGNED = (
    "a workload cannot set what runs: the release's signed service manifest says it "
    "(declare a parameter there for what a workload may choose)"
)


class AffinityScope(StrEnum):
    NODE = "node"
    ZONE = "zone"


@dataclass(frozen=True)
class Resources:
    """What one replica reserves on its node."""

    cpu_millicores: int
    memory_mb: int
    accelerators: int = 0
    accelerator_kind: str | None = None  # None: any kind of accelerator will do


@dataclass(frozen=True)
class GeoPoint:
    lat: float
    lon: float


@dataclass(frozen=True)
class ProximityTarget:
    """A data source or user population the workload should run close to."""

    name: str
    location: GeoPoint | None = None  # None: the placement topology knows where it is
    weight: float = 1.0


@dataclass(frozen=True)
class AffinityTerm:
    """Prefer (or, when `anti`, avoid) the node or zone where another workload runs."""

    workload: str
    scope: AffinityScope = AffinityScope.NODE
    weight: float = 1.0
    anti: bool = False


@dataclass(frozen=True)
class HardConstraints:
    """A node must satisfy every one of these; empty sets allow everything."""

    selector: Selector = field(default_factory=Selector)
    regions: frozenset[str] = frozenset()
    zones: frozenset[str] = frozenset()
    residency: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Preferences:
    near: tuple[ProximityTarget, ...] = ()
    affinity: tuple[AffinityTerm, ...] = ()
    spread_zones: bool = False


@dataclass(frozen=True)
class HealthCheck:
    """How often the agent checks a replica, and (optionally) an HTTP path to probe
    instead of the one the service manifest names."""

    http_path: str | None = None
    interval_s: float = 5.0
    timeout_s: float = 2.0
    failure_threshold: int = 3


@dataclass(frozen=True)
class Workload:
    name: str
    resources: Resources
    artifacts: tuple[str, ...] = ()
    parameters: Mapping[str, str | int | float | bool] = field(default_factory=dict)
    replicas: int = 1
    priority: int = 0
    constraints: HardConstraints = field(default_factory=HardConstraints)
    preferences: Preferences = field(default_factory=Preferences)
    state_dir: str | None = None
    service_port: int | None = None
    health_check: HealthCheck | None = None
    slo_latency_ms: float | None = None
    auto_port: bool = False  # `service: {port: auto}`: each copy gets a free port

    @property
    def stateful(self) -> bool:
        return self.state_dir is not None


def validate_workload_name(name: str, path: str = "name") -> str:
    """Workload names are DNS labels: lowercase letters, digits and '-', at most 63."""
    if not _NAME_RE.fullmatch(name):
        raise InvalidInput(
            f"{path}: invalid workload name {name!r}: use lowercase letters, digits and '-', "
            "starting and ending with a letter or digit, at most 63 characters"
        )
    return name


def parse_workload(data: object) -> Workload:
    """A validated Workload from a YAML document (`kind: Workload`) or its flat form.

    >>> spec = {"name": "web", "resources": {"cpu_millicores": 250, "memory_mb": 64}}
    >>> parse_workload(spec).replicas
    1
    """
    parts = split_manifest(data, "Workload", _SPEC_KEYS)
    spec, prefix, name_path = parts.spec, parts.prefix, parts.name_path
    raw_name = parts.name
    name = validate_workload_name(_string(raw_name, name_path), name_path)
    for key in ("command", "env"):
        if key in spec:
            raise InvalidInput(f"{prefix}{key}: {_UNSIGNED}", code="unsigned_command")
    if "resources" not in spec:
        raise InvalidInput(f"{prefix}resources: required (cpu_millicores and memory_mb)")
    port = spec.get("service_port")
    if "service" in spec:
        service = read_mapping(spec["service"], f"{prefix}service")
        check_keys(service, frozenset({"port"}), f"{prefix}service")
        port = service.get("port")
    auto_port = port == "auto"
    if auto_port:
        port = None
    slo = read_mapping(spec.get("slo", {}), f"{prefix}slo")
    check_keys(slo, frozenset({"latency_ms"}), f"{prefix}slo")
    return Workload(
        name=name,
        artifacts=tuple(
            _artifact_ref(ref, f"{prefix}artifacts[{i}]")
            for i, ref in enumerate(read_list(spec.get("artifacts", []), f"{prefix}artifacts"))
        ),
        parameters=_parameters(spec.get("parameters", {}), f"{prefix}parameters"),
        resources=_resources(spec["resources"], f"{prefix}resources"),
        replicas=read_int(spec.get("replicas", 1), f"{prefix}replicas", 0, MAX_REPLICAS),
        priority=read_int(spec.get("priority", 0), f"{prefix}priority", MIN_PRIORITY, MAX_PRIORITY),
        constraints=_constraints(spec.get("constraints", {}), f"{prefix}constraints"),
        preferences=_preferences(spec.get("preferences", {}), f"{prefix}preferences"),
        state_dir=_state_dir(spec.get("state_dir"), f"{prefix}state_dir"),
        service_port=None if port is None else read_int(port, f"{prefix}service.port", 1, 65535),
        health_check=_health_check(spec.get("health_check"), f"{prefix}health_check"),
        slo_latency_ms=(
            None
            if slo.get("latency_ms") is None
            else _number(slo["latency_ms"], f"{prefix}slo.latency_ms", positive=True)
        ),
        auto_port=auto_port,
    )


def _resources(value: object, path: str) -> Resources:
    data = read_mapping(value, path)
    check_keys(data, frozenset({"cpu_millicores", "memory_mb", "accelerator"}), path)
    for key in ("cpu_millicores", "memory_mb"):
        if key not in data:
            raise InvalidInput(f"{path}.{key}: required")
    count, kind = 0, None
    accelerator = data.get("accelerator")
    if isinstance(accelerator, str):
        count, kind = 1, _token(accelerator, f"{path}.accelerator")
    elif isinstance(accelerator, Mapping):
        acc = read_mapping(accelerator, f"{path}.accelerator")
        check_keys(acc, frozenset({"kind", "count"}), f"{path}.accelerator")
        count = read_int(acc.get("count", 1), f"{path}.accelerator.count", 1, 64)
        if acc.get("kind") is not None:
            kind = _token(acc["kind"], f"{path}.accelerator.kind")
    elif accelerator is not None:
        count = read_int(accelerator, f"{path}.accelerator", 0, 64)
    return Resources(
        cpu_millicores=read_int(data["cpu_millicores"], f"{path}.cpu_millicores", 1, 1_000_000),
        memory_mb=read_int(data["memory_mb"], f"{path}.memory_mb", 1, 10_000_000),
        accelerators=count,
        accelerator_kind=kind,
    )


def _constraints(value: object, path: str) -> HardConstraints:
    data = read_mapping(value, path)
    check_keys(data, frozenset({"selector", "regions", "zones", "residency"}), path)
    selector_text = _string(data.get("selector", ""), f"{path}.selector", allow_empty=True)
    try:
        selector = parse_selector(selector_text)
    except InvalidInput as e:
        raise InvalidInput(f"{path}.selector: {e.message}") from None
    return HardConstraints(
        selector=selector,
        regions=_token_set(data.get("regions", []), f"{path}.regions"),
        zones=_token_set(data.get("zones", []), f"{path}.zones"),
        residency=_token_set(data.get("residency", []), f"{path}.residency"),
    )


def _preferences(value: object, path: str) -> Preferences:
    data = read_mapping(value, path)
    check_keys(data, frozenset({"near", "affinity", "anti_affinity", "spread"}), path)
    near = tuple(
        _proximity(item, f"{path}.near[{i}]")
        for i, item in enumerate(read_list(data.get("near", []), f"{path}.near"))
    )
    affinity = [
        _affinity(item, f"{path}.{key}[{i}]", anti=key == "anti_affinity")
        for key in ("affinity", "anti_affinity")
        for i, item in enumerate(read_list(data.get(key, []), f"{path}.{key}"))
    ]
    spread = data.get("spread")
    if spread not in (None, "zones", "none"):
        raise InvalidInput(f"{path}.spread: expected 'zones' or 'none', got {spread!r}")
    return Preferences(near=near, affinity=tuple(affinity), spread_zones=spread == "zones")


def _proximity(value: object, path: str) -> ProximityTarget:
    data = read_mapping(value, path)
    check_keys(data, frozenset({"name", "lat", "lon", "weight"}), path)
    name = _token(data.get("name"), f"{path}.name")
    location = None
    if "lat" in data or "lon" in data:
        lat = _number(data.get("lat"), f"{path}.lat")
        lon = _number(data.get("lon"), f"{path}.lon")
        if not -90 <= lat <= 90:
            raise InvalidInput(f"{path}.lat: {lat} is outside -90..90")
        if not -180 <= lon <= 180:
            raise InvalidInput(f"{path}.lon: {lon} is outside -180..180")
        location = GeoPoint(lat, lon)
    weight = _number(data.get("weight", 1.0), f"{path}.weight", positive=True)
    return ProximityTarget(name=name, location=location, weight=weight)


def _affinity(value: object, path: str, *, anti: bool) -> AffinityTerm:
    if isinstance(value, str):
        value = {"workload": value}
    data = read_mapping(value, path)
    check_keys(data, frozenset({"workload", "scope", "weight"}), path)
    scope = data.get("scope", "node")
    if scope not in ("node", "zone"):
        raise InvalidInput(f"{path}.scope: expected 'node' or 'zone', got {scope!r}")
    return AffinityTerm(
        workload=validate_workload_name(
            _string(data.get("workload"), f"{path}.workload"), f"{path}.workload"
        ),
        scope=AffinityScope(scope),
        weight=_number(data.get("weight", 1.0), f"{path}.weight", positive=True),
        anti=anti,
    )


def _health_check(value: object, path: str) -> HealthCheck | None:
    if value is None:
        return None
    data = read_mapping(value, path)
    if "command" in data:
        raise InvalidInput(f"{path}.command: {_UNSIGNED}", code="unsigned_command")
    check_keys(data, frozenset({"http", "interval_s", "timeout_s", "failure_threshold"}), path)
    interval_s = _number(data.get("interval_s", 5.0), f"{path}.interval_s", positive=True)
    timeout_s = _number(data.get("timeout_s", 2.0), f"{path}.timeout_s", positive=True)
    if timeout_s > interval_s:
        raise InvalidInput(f"{path}.timeout_s: {timeout_s} is longer than interval_s")
    threshold = read_int(data.get("failure_threshold", 3), f"{path}.failure_threshold", 1, 100)
    http_path = None
    if "http" in data:
        http_path = _string(data["http"], f"{path}.http")
        if not http_path.startswith("/") or any(c in http_path for c in "\r\n \t"):
            raise InvalidInput(f"{path}.http: expected a path starting with '/'")
    return HealthCheck(http_path, interval_s, timeout_s, threshold)


def _state_dir(value: object, path: str) -> str | None:
    if value is None:
        return None
    text = _string(value, path)
    if not text.startswith("/") or "/../" in f"{text}/":
        raise InvalidInput(f"{path}: expected an absolute path without '..', got {text!r}")
    return text


def _artifact_ref(value: object, path: str) -> str:
    ref = _string(value, path)
    if not _REF_RE.fullmatch(ref):
        raise InvalidInput(f"{path}: invalid release ref {ref!r}: expected release[@version]")
    return ref


def _parameters(value: object, path: str) -> dict[str, str | int | float | bool]:
    """The values a workload gives its release's declared parameters; checked against the
    declarations where the manifest is known (server at apply time, device before run)."""
    data = read_mapping(value, path)
    if len(data) > MAX_PARAMETERS:
        raise InvalidInput(f"{path}: at most {MAX_PARAMETERS} parameters")
    out: dict[str, str | int | float | bool] = {}
    for key, raw in data.items():
        if not isinstance(key, str) or not _PARAMETER_RE.fullmatch(key):
            raise InvalidInput(f"{path}.{key}: invalid parameter name")
        if not isinstance(raw, str | int | float | bool):
            raise InvalidInput(f"{path}.{key}: expected a string, number or boolean")
        out[key] = raw
    return out


def _token_set(value: object, path: str) -> frozenset[str]:
    items = [value] if isinstance(value, str) else read_list(value, path)
    return frozenset(_token(item, f"{path}[{i}]") for i, item in enumerate(items))


def _token(value: object, path: str) -> str:
    """A region, zone, residency or accelerator name: the label-value alphabet."""
    text = _string(value, path)
    try:
        return validate_label_value(path, text)
    except InvalidInput:
        raise InvalidInput(
            f"{path}: invalid name {text!r}: use letters, digits, '-', '_', '.'"
        ) from None


def _string(value: object, path: str, *, allow_empty: bool = False) -> str:
    if allow_empty and value == "":
        return ""
    return read_string(value, path)


def _number(value: object, path: str, *, positive: bool = False) -> float:
    number = read_number(value, path, -math.inf, math.inf)
    if positive and number <= 0:
        raise InvalidInput(f"{path}: expected a positive number, got {value!r}")
    return number
