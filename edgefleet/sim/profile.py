"""Fleet profiles: a YAML description of a fleet to simulate (`kind: FleetProfile`).

    kind: FleetProfile
    metadata: {name: retail-cameras}
    spec:
      description: Cameras in shops, with an NPU or on CPU
      name_prefix: cam                 # virtual devices are cam-00000, cam-00001, ...
      labels: {fleet: retail}          # on every device
      heartbeat_interval: 30s
      telemetry: {sample_interval: 30s, batch_interval: 60s}
      regions:
        - name: eu-west
          share: 60                    # a weight, or a percentage ("60%")
          time_zone: Europe/Paris
          residency: eu
          zones:
            - {name: eu-west-paris, lat: 48.86, lon: 2.35}
      classes:
        - name: cam-npu
          share: 70
          labels: {kind: camera, hw: npu}
          hardware: {...}              # sim/hardware.py
          network: {...}               # sim/network.py
          model: {...}                 # sim/model_behaviour.py
          activity: {...}              # sim/activity.py (optional: busy around the clock)
      bad_model: {...}                 # sim/model_behaviour.py
      bad_releases: ["detector@2.0.*"]
      releases:                        # what the lab needs to know of a release when it
        - release: detector@2.1.0      # cannot ask a control plane
          size_mb: 12
          requires: [accelerator=npu]
          health_window: 60s
          max_error_percent: 5
      faults: [...]                    # sim/faults.py
      workloads: [...]                 # Workload manifests, for failover rehearsals

Every field is checked; an error names the field's path (`spec.classes[1].network.loss_percent:
expected a number in 0..100, got 150`), with the manifest readers of `edgefleet.core.manifest`.
Shipped profiles live in `edgefleet/sim/profiles/` and can be named without a path
(`--profile retail-cameras`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from edgefleet.core.labels import parse_label_assignments
from edgefleet.core.manifest import (
    check_keys,
    read_duration_s,
    read_list,
    read_mapping,
    read_number,
    read_string,
    split_manifest,
)
from edgefleet.core.rollouts.maintenance import resolve_time_zone
from edgefleet.core.rollouts.spec import ReleaseRef
from edgefleet.core.updates.compat import Requirements, parse_requirements
from edgefleet.core.workloads.workload import Workload, parse_workload
from edgefleet.errors import InvalidInput
from edgefleet.sim.activity import DailyActivity, parse_activity
from edgefleet.sim.faults import FaultSpec, parse_fault
from edgefleet.sim.hardware import HardwareSpec, parse_hardware
from edgefleet.sim.model_behaviour import (
    BadModel,
    ModelBehaviour,
    parse_bad_model,
    parse_model_behaviour,
)
from edgefleet.sim.network import NetworkConditions, parse_network

PROFILES_DIR = Path(__file__).resolve().parent / "profiles"
_SPEC_KEYS = frozenset({
    "description", "name_prefix", "labels", "heartbeat_interval", "telemetry", "regions",
    "classes", "bad_model", "bad_releases", "releases", "faults", "workloads", "seed",
})  # fmt: skip
DEFAULT_RELEASE_SIZE_MB = 10.0
DEFAULT_HEALTH_WINDOW_S = 60.0


@dataclass(frozen=True)
class Zone:
    name: str
    latitude: float
    longitude: float


@dataclass(frozen=True)
class Region:
    name: str
    share: float
    time_zone: str
    zones: tuple[Zone, ...]
    residency: str | None = None


@dataclass(frozen=True)
class DeviceClass:
    name: str
    share: float
    labels: Mapping[str, str] = field(default_factory=dict)
    hardware: HardwareSpec = field(default_factory=HardwareSpec)
    network: NetworkConditions = field(default_factory=NetworkConditions)
    model: ModelBehaviour = field(default_factory=ModelBehaviour)
    activity: DailyActivity = field(default_factory=DailyActivity)  # busy around the clock


@dataclass(frozen=True)
class ReleaseFacts:
    """What the lab needs to know about a release to rehearse it."""

    release: str
    size_mb: float = DEFAULT_RELEASE_SIZE_MB
    requires: Requirements = field(default_factory=lambda: parse_requirements([]))
    health_window_s: float = DEFAULT_HEALTH_WINDOW_S
    max_error_percent: float = 5.0
    min_requests: int = 0  # the device judges the error rate only past this many requests


@dataclass(frozen=True)
class TelemetrySettings:
    sample_interval_s: float = 30.0
    batch_interval_s: float = 60.0


@dataclass(frozen=True)
class FleetProfile:
    name: str
    regions: tuple[Region, ...]
    classes: tuple[DeviceClass, ...]
    description: str = ""
    name_prefix: str = "sim"
    labels: Mapping[str, str] = field(default_factory=dict)
    heartbeat_interval_s: float = 30.0
    telemetry: TelemetrySettings = field(default_factory=TelemetrySettings)
    bad_model: BadModel = field(default_factory=BadModel)
    bad_releases: tuple[str, ...] = ()
    releases: tuple[ReleaseFacts, ...] = ()
    faults: tuple[FaultSpec, ...] = ()
    workloads: tuple[Workload, ...] = ()
    seed: int = 1

    def release_facts(self, release: str) -> ReleaseFacts:
        """The declared facts of `release`, or the defaults."""
        for facts in self.releases:
            if facts.release == release:
                return facts
        return ReleaseFacts(release)

    def device_class(self, name: str) -> DeviceClass:
        for device_class in self.classes:
            if device_class.name == name:
                return device_class
        raise InvalidInput(f"profile {self.name}: no device class named {name!r}")


def _share(data: Mapping[str, object], path: str) -> float:
    value = data.get("share", 1)
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            value = float(value.strip()[:-1])
        except ValueError:
            raise InvalidInput(f"{path}.share: expected a weight or a percentage") from None
    return read_number(value, f"{path}.share", 0.000001, 1e9)


def _labels(value: object, path: str) -> dict[str, str]:
    data = read_mapping(value, path)
    try:
        return parse_label_assignments([f"{k}={v}" for k, v in data.items()])
    except InvalidInput as e:
        raise InvalidInput(f"{path}: {e.message}") from None


def _unique(names: list[str], path: str, what: str) -> None:
    for i, name in enumerate(names):
        if name in names[:i]:
            raise InvalidInput(f"{path}[{i}].name: {what} {name!r} is declared twice")


def _zone(value: object, path: str) -> Zone:
    data = read_mapping(value, path)
    check_keys(data, frozenset({"name", "lat", "lon"}), path)
    return Zone(
        read_string(data.get("name"), f"{path}.name"),
        read_number(data.get("lat", 0.0), f"{path}.lat", -90, 90),
        read_number(data.get("lon", 0.0), f"{path}.lon", -180, 180),
    )


def _region(value: object, path: str) -> Region:
    data = read_mapping(value, path)
    check_keys(data, frozenset({"name", "share", "time_zone", "zones", "residency"}), path)
    name = read_string(data.get("name"), f"{path}.name")
    zone_name = read_string(data.get("time_zone", "UTC"), f"{path}.time_zone")
    try:
        resolve_time_zone(zone_name)
    except InvalidInput as e:
        raise InvalidInput(f"{path}.time_zone: {e.message}") from None
    items = read_list(data.get("zones", [{"name": f"{name}-a"}]), f"{path}.zones")
    if not items:
        raise InvalidInput(f"{path}.zones: at least one zone")
    zones = tuple(_zone(item, f"{path}.zones[{i}]") for i, item in enumerate(items))
    _unique([z.name for z in zones], f"{path}.zones", "zone")
    residency = data.get("residency")
    return Region(
        name, _share(data, path), zone_name, zones,
        None if residency is None else read_string(residency, f"{path}.residency"),
    )  # fmt: skip


def _device_class(value: object, path: str) -> DeviceClass:
    data = read_mapping(value, path)
    check_keys(data, frozenset({"name", "share", "labels", "hardware", "network", "model",
                                "activity"}), path)  # fmt: skip
    return DeviceClass(
        name=read_string(data.get("name"), f"{path}.name"),
        share=_share(data, path),
        labels=_labels(data.get("labels", {}), f"{path}.labels"),
        hardware=parse_hardware(data.get("hardware", {}), f"{path}.hardware"),
        network=parse_network(data.get("network", {}), f"{path}.network"),
        model=parse_model_behaviour(data.get("model", {}), f"{path}.model"),
        activity=DailyActivity()
        if "activity" not in data
        else parse_activity(data["activity"], f"{path}.activity"),
    )


def _release(value: object, path: str) -> ReleaseFacts:
    data = read_mapping(value, path)
    allowed = {
        "release",
        "size_mb",
        "requires",
        "health_window",
        "max_error_percent",
        "min_requests",
    }
    check_keys(data, frozenset(allowed), path)
    text = read_string(data.get("release"), f"{path}.release")
    try:
        ReleaseRef.parse(text)
        requires = parse_requirements(
            [str(r) for r in read_list(data.get("requires", []), f"{path}.requires")]
        )
    except InvalidInput as e:
        raise InvalidInput(f"{path}: {e.message}") from None
    return ReleaseFacts(
        release=text,
        size_mb=read_number(data.get("size_mb", DEFAULT_RELEASE_SIZE_MB), f"{path}.size_mb",
                            0, 100_000),
        requires=requires,
        health_window_s=read_duration_s(data.get("health_window", DEFAULT_HEALTH_WINDOW_S),
                                        f"{path}.health_window", 86400),
        max_error_percent=read_number(data.get("max_error_percent", 5.0),
                                      f"{path}.max_error_percent", 0, 100),
        min_requests=int(read_number(data.get("min_requests", 0), f"{path}.min_requests",
                                     0, 10**9)),
    )  # fmt: skip


def _workload(value: object, path: str) -> Workload:
    try:
        return parse_workload(value)
    except InvalidInput as e:
        raise InvalidInput(f"{path}: {e.message}") from None


def _telemetry(value: object, path: str) -> TelemetrySettings:
    data = read_mapping(value, path)
    check_keys(data, frozenset({"sample_interval", "batch_interval"}), path)
    return TelemetrySettings(
        read_duration_s(data.get("sample_interval", 30.0), f"{path}.sample_interval", 3600,
                        positive=True),
        read_duration_s(data.get("batch_interval", 60.0), f"{path}.batch_interval", 3600,
                        positive=True),
    )  # fmt: skip


def parse_profile(data: object) -> FleetProfile:
    """A validated FleetProfile from a YAML document; InvalidInput names the field path."""
    parts = split_manifest(data, "FleetProfile", _SPEC_KEYS)
    spec, prefix = parts.spec, parts.prefix
    name = read_string(parts.name, parts.name_path) if parts.name is not None else "profile"
    for key in ("regions", "classes"):
        if key not in spec or not read_list(spec[key], f"{prefix}{key}"):
            raise InvalidInput(f"{prefix}{key}: required, at least one")
    regions = tuple(
        _region(item, f"{prefix}regions[{i}]")
        for i, item in enumerate(read_list(spec["regions"], f"{prefix}regions"))
    )
    _unique([r.name for r in regions], f"{prefix}regions", "region")
    classes = tuple(
        _device_class(item, f"{prefix}classes[{i}]")
        for i, item in enumerate(read_list(spec["classes"], f"{prefix}classes"))
    )
    _unique([c.name for c in classes], f"{prefix}classes", "class")
    faults = tuple(
        parse_fault(item, f"{prefix}faults[{i}]")
        for i, item in enumerate(read_list(spec.get("faults", []), f"{prefix}faults"))
    )
    class_names, region_names = {c.name for c in classes}, {r.name for r in regions}
    zone_names = {z.name for r in regions for z in r.zones}
    for i, fault in enumerate(faults):
        for key, value, known in (
            ("class", fault.device_class, class_names),
            ("region", fault.region, region_names),
            ("zone", fault.zone, zone_names),
        ):
            if value is not None and value not in known:
                raise InvalidInput(f"{prefix}faults[{i}].{key}: no {key} named {value!r}")
    workloads = tuple(
        _workload(item, f"{prefix}workloads[{i}]")
        for i, item in enumerate(read_list(spec.get("workloads", []), f"{prefix}workloads"))
    )
    workload_names = [w.name for w in workloads]
    _unique(workload_names, f"{prefix}workloads", "workload")
    for i, fault in enumerate(faults):
        if fault.hosting is not None and fault.hosting not in workload_names:
            raise InvalidInput(
                f"{prefix}faults[{i}].hosting: no workload named {fault.hosting!r} in workloads"
            )
    prefix_name = read_string(spec.get("name_prefix", "sim"), f"{prefix}name_prefix")
    seed = spec.get("seed", 1)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InvalidInput(f"{prefix}seed: expected an integer")
    return FleetProfile(
        name=name,
        regions=regions,
        classes=classes,
        description=str(spec.get("description", "")),
        name_prefix=prefix_name,
        labels=_labels(spec.get("labels", {}), f"{prefix}labels"),
        heartbeat_interval_s=read_duration_s(spec.get("heartbeat_interval", 30.0),
                                             f"{prefix}heartbeat_interval", 3600, positive=True),
        telemetry=_telemetry(spec.get("telemetry", {}), f"{prefix}telemetry"),
        bad_model=parse_bad_model(spec.get("bad_model", {}), f"{prefix}bad_model"),
        bad_releases=tuple(
            read_string(p, f"{prefix}bad_releases[{i}]")
            for i, p in enumerate(read_list(spec.get("bad_releases", []), f"{prefix}bad_releases"))
        ),
        releases=tuple(
            _release(item, f"{prefix}releases[{i}]")
            for i, item in enumerate(read_list(spec.get("releases", []), f"{prefix}releases"))
        ),
        faults=faults,
        workloads=workloads,
        seed=seed,
    )  # fmt: skip


def shipped_profiles() -> list[str]:
    """Names of the profiles that ship with edgefleet."""
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


def resolve_profile_path(name_or_path: str | Path) -> Path:
    """A file path as given, or a shipped profile by name (`retail-cameras`)."""
    path = Path(name_or_path)
    if path.exists():
        return path
    shipped = PROFILES_DIR / f"{name_or_path}.yaml"
    if shipped.exists():
        return shipped
    raise InvalidInput(
        f"no profile file {str(name_or_path)!r} (shipped profiles: {', '.join(shipped_profiles())})"
    )


def load_profile(name_or_path: str | Path) -> FleetProfile:
    """Read and validate a profile file (or a shipped profile by name)."""
    path = resolve_profile_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise InvalidInput(f"{path}: not valid YAML: {e}") from None
    try:
        return parse_profile(data)
    except InvalidInput as e:
        raise InvalidInput(f"{path.name}: {e.message}", code="invalid_profile") from None
