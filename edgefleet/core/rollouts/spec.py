"""Rollout specs: what an operator declares for a rollout, validated from a YAML document.

A document (`kind: Rollout`) in the Kubernetes shape, or flat with `name:` at the top::

    kind: Rollout
    metadata: {name: detector-2-1}
    spec:
      release: detector@2.1.0               # name@version
      target: "kind=camera,region=eu"       # label selector; empty means every device
      strategy:
        waves: [1, "5%", {size: "25%", soak: 2h}, "100%"]   # cumulative sizes
        soak: 30m                           # default soak of a wave
        max_unavailable: "10%"              # devices updating or unhealthy at once
        devices_per_minute: 20              # rate limit on assignments (none by default)
        install_timeout: 1h                 # an install not reported by then has failed
      gates:
        install_failure_rate: {max_percent: 5}
        workload_error_rate: {max_percent: 1, min_requests: 500}
        kpis:
          - {kpi: p95_latency_ms, max_increase_percent: 20}
          - {kpi: error_rate_pct, max_increase: 1, min_devices: 3, min_samples: 50}
        insufficient_data: {wait: 30m, then: promote}
      on_failure: rollback                  # or pause
      maintenance_windows:
        - {cron: "0 2 * * *", duration: 4h, time_zone: device}
      window: predicted                     # or static (default); see predicted_window.py
      deadline: {at: "2026-07-01T00:00:00Z", action: force}   # or {after: 72h, action: fail}
      retries: {max_attempts: 3, backoff: {initial: 1m, max: 30m}}

Every gate also takes `min_devices` (default 2); the gates are described in `gates.py`, the
windows in `maintenance.py` and `predicted_window.py`, the waves in `waves.py`. No gate is
implied: a rollout without `gates` promotes after each soak. Durations are `parse_duration`
strings or seconds. Errors are InvalidInput naming the field path, e.g.
`spec.strategy.waves[2]: ...`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from edgefleet.core.manifest import (
    check_keys,
    read_choice,
    read_duration_s,
    read_int,
    read_list,
    read_mapping,
    read_string,
    split_manifest,
)
from edgefleet.core.rollouts.gates import GatesSpec, parse_gates
from edgefleet.core.rollouts.maintenance import MaintenanceWindow, parse_window
from edgefleet.core.rollouts.predicted_window import PredictedWindow, parse_window_mode
from edgefleet.core.rollouts.waves import Quantity, WaveSpec
from edgefleet.core.selector import Selector, parse_selector
from edgefleet.errors import InvalidInput

DEFAULT_WAVES = (1, "10%", "50%", "100%")
DEFAULT_SOAK_S = 600.0
DEFAULT_MAX_UNAVAILABLE = "10%"
DEFAULT_INSTALL_TIMEOUT_S = 3600.0
DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_BACKOFF_INITIAL_S = 60.0
DEFAULT_BACKOFF_MAX_S = 1800.0
MAX_WAVES = 100
MAX_SOAK_S = 30 * 86400
MAX_ATTEMPTS = 100

_NAME_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_RELEASE_NAME_RE = re.compile(r"[a-z0-9](?:[a-z0-9._-]{0,126}[a-z0-9])?")
_RELEASE_VERSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,126}")
_SPEC_KEYS = frozenset(
    {
        "release",
        "target",
        "strategy",
        "gates",
        "on_failure",
        "maintenance_windows",
        "window",
        "deadline",
        "retries",
        "description",
    }
)


class FailureAction(StrEnum):
    PAUSE = "pause"
    ROLLBACK = "rollback"


class DeadlineAction(StrEnum):
    FORCE = "force"  # past the deadline, maintenance windows no longer hold devices back
    FAIL = "fail"  # past the deadline, an unfinished rollout fails


@dataclass(frozen=True)
class ReleaseRef:
    name: str
    version: str

    @classmethod
    def parse(cls, text: str) -> ReleaseRef:
        """`detector@2.1.0` -> ReleaseRef('detector', '2.1.0')."""
        name, at, version = text.strip().partition("@")
        if (
            not at
            or not _RELEASE_NAME_RE.fullmatch(name)
            or not _RELEASE_VERSION_RE.fullmatch(version)
        ):
            raise InvalidInput(
                f"invalid release {text!r}: expected name@version, e.g. detector@2.1.0"
            )
        return cls(name, version)

    def __str__(self) -> str:
        return f"{self.name}@{self.version}"


def _default_waves() -> tuple[WaveSpec, ...]:
    return tuple(WaveSpec(Quantity.parse(w)) for w in DEFAULT_WAVES)


@dataclass(frozen=True)
class Strategy:
    waves: tuple[WaveSpec, ...] = field(default_factory=_default_waves)
    soak_s: float = DEFAULT_SOAK_S
    max_unavailable: Quantity = field(
        default_factory=lambda: Quantity.parse(DEFAULT_MAX_UNAVAILABLE)
    )
    devices_per_minute: int | None = None
    install_timeout_s: float = DEFAULT_INSTALL_TIMEOUT_S

    def max_unavailable_of(self, total: int) -> int:
        """`max_unavailable` resolved against `total` devices (rounded up, at least 1)."""
        return max(1, self.max_unavailable.resolve(total))


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = DEFAULT_MAX_ATTEMPTS  # installs tried per device, the first included
    backoff_initial_s: float = DEFAULT_BACKOFF_INITIAL_S
    backoff_max_s: float = DEFAULT_BACKOFF_MAX_S


@dataclass(frozen=True)
class Deadline:
    action: DeadlineAction
    at: datetime | None = None  # an absolute time, or
    after_s: float | None = None  # a delay after the rollout started

    def resolve(self, started_at: datetime) -> datetime:
        """The absolute deadline of a rollout that started at `started_at`."""
        if self.at is not None:
            return self.at
        return started_at + timedelta(seconds=self.after_s or 0.0)


@dataclass(frozen=True)
class RolloutSpec:
    release: ReleaseRef
    target: Selector = field(default_factory=Selector)
    strategy: Strategy = field(default_factory=Strategy)
    gates: GatesSpec = field(default_factory=GatesSpec)
    on_failure: FailureAction = FailureAction.ROLLBACK
    maintenance_windows: tuple[MaintenanceWindow, ...] = ()
    predicted_window: PredictedWindow | None = None  # `window: predicted`
    deadline: Deadline | None = None
    retries: RetryPolicy = field(default_factory=RetryPolicy)
    name: str | None = None
    description: str = ""

    @property
    def rollout_name(self) -> str:
        """The chosen name, else one derived from the release (`vision-1-2-0` for
        vision@1.2.0). It also seeds the order of devices in the waves, so a dry run
        plans the waves the rollout will have."""
        if self.name:
            return self.name
        text = f"{self.release.name}-{self.release.version}".lower()
        return re.sub(r"[^a-z0-9]+", "-", text).strip("-")[:63].rstrip("-") or "rollout"


def _quantity(value: object, path: str) -> Quantity:
    try:
        return Quantity.parse(value)
    except InvalidInput as e:
        raise InvalidInput(f"{path}: {e.message}") from None


# The sections.


def _wave(value: object, path: str) -> WaveSpec:
    if isinstance(value, Mapping):
        data = read_mapping(value, path)
        check_keys(data, frozenset({"size", "soak"}), path)
        if "size" not in data:
            raise InvalidInput(f"{path}.size: required (a count or a percentage)")
        soak = data.get("soak")
        return WaveSpec(
            _quantity(data["size"], f"{path}.size"),
            None if soak is None else read_duration_s(soak, f"{path}.soak", MAX_SOAK_S),
        )
    return WaveSpec(_quantity(value, path))


def _waves(value: object, path: str) -> tuple[WaveSpec, ...]:
    items = read_list(value, path)
    if not 1 <= len(items) <= MAX_WAVES:
        raise InvalidInput(f"{path}: expected 1 to {MAX_WAVES} waves, got {len(items)}")
    waves = tuple(_wave(item, f"{path}[{i}]") for i, item in enumerate(items))
    last: dict[bool, tuple[int, Quantity]] = {}
    for i, wave in enumerate(waves):
        before = last.get(wave.size.percent)
        if before is not None and wave.size.amount <= before[1].amount:
            raise InvalidInput(
                f"{path}[{i}]: {wave.size} does not grow past wave {before[0]} ({before[1]}); "
                "wave sizes are cumulative"
            )
        last[wave.size.percent] = (i, wave.size)
    return waves


def _strategy(value: object, path: str) -> Strategy:
    data = read_mapping(value, path)
    allowed = {"waves", "soak", "max_unavailable", "devices_per_minute", "install_timeout"}
    check_keys(data, frozenset(allowed), path)
    rate = data.get("devices_per_minute")
    return Strategy(
        waves=_waves(data.get("waves", list(DEFAULT_WAVES)), f"{path}.waves"),
        soak_s=read_duration_s(data.get("soak", DEFAULT_SOAK_S), f"{path}.soak", MAX_SOAK_S),
        max_unavailable=_quantity(
            data.get("max_unavailable", DEFAULT_MAX_UNAVAILABLE), f"{path}.max_unavailable"
        ),
        devices_per_minute=None
        if rate is None
        else read_int(rate, f"{path}.devices_per_minute", 1, 100_000),
        install_timeout_s=read_duration_s(
            data.get("install_timeout", DEFAULT_INSTALL_TIMEOUT_S),
            f"{path}.install_timeout",
            MAX_SOAK_S,
            positive=True,
        ),
    )


def _deadline(value: object, path: str) -> Deadline:
    data = read_mapping(value, path)
    check_keys(data, frozenset({"at", "after", "action"}), path)
    if ("at" in data) == ("after" in data):
        raise InvalidInput(f"{path}: give exactly one of 'at' (a time) or 'after' (a duration)")
    action = read_choice(data.get("action", "fail"), f"{path}.action", DeadlineAction)
    if "after" in data:
        return Deadline(
            action,
            after_s=read_duration_s(data["after"], f"{path}.after", 366 * 86400, positive=True),
        )
    at = data["at"]
    if isinstance(at, str):
        try:
            at = datetime.fromisoformat(at.strip().replace("Z", "+00:00"))
        except ValueError:
            raise InvalidInput(f"{path}.at: expected an ISO 8601 time, got {at!r}") from None
    if not isinstance(at, datetime) or at.utcoffset() is None:
        raise InvalidInput(f"{path}.at: expected a time with a zone, e.g. 2026-07-01T00:00:00Z")
    return Deadline(action, at=at)


def _retries(value: object, path: str) -> RetryPolicy:
    data = read_mapping(value, path)
    check_keys(data, frozenset({"max_attempts", "backoff"}), path)
    backoff = read_mapping(data.get("backoff", {}), f"{path}.backoff")
    check_keys(backoff, frozenset({"initial", "max"}), f"{path}.backoff")
    initial = read_duration_s(
        backoff.get("initial", DEFAULT_BACKOFF_INITIAL_S), f"{path}.backoff.initial", MAX_SOAK_S
    )
    maximum = read_duration_s(
        backoff.get("max", max(initial, DEFAULT_BACKOFF_MAX_S)), f"{path}.backoff.max", MAX_SOAK_S
    )
    if maximum < initial:
        raise InvalidInput(f"{path}.backoff.max: must be at least backoff.initial")
    return RetryPolicy(
        max_attempts=read_int(
            data.get("max_attempts", DEFAULT_MAX_ATTEMPTS), f"{path}.max_attempts", 1, MAX_ATTEMPTS
        ),
        backoff_initial_s=initial,
        backoff_max_s=maximum,
    )


def parse_rollout_spec(data: Mapping[str, object]) -> RolloutSpec:
    """A validated RolloutSpec from a YAML document (`kind: Rollout`) or its flat form.

    >>> spec = parse_rollout_spec({"release": "detector@2.1.0", "target": "kind=camera"})
    >>> str(spec.release), [str(w.size) for w in spec.strategy.waves]
    ('detector@2.1.0', ['1', '10%', '50%', '100%'])
    """
    parts = split_manifest(data, "Rollout", _SPEC_KEYS)
    raw_name, name_path, spec, prefix = parts.name, parts.name_path, parts.spec, parts.prefix
    name = None
    if raw_name is not None:
        name = read_string(raw_name, name_path)
        if not _NAME_RE.fullmatch(name):
            raise InvalidInput(
                f"{name_path}: invalid rollout name {name!r}: use lowercase letters, digits "
                "and '-', at most 63 characters"
            )
    if "release" not in spec:
        raise InvalidInput(f"{prefix}release: required (name@version)")
    try:
        release = ReleaseRef.parse(read_string(spec["release"], f"{prefix}release"))
    except InvalidInput as e:
        raise InvalidInput(f"{prefix}release: {e.message}") from None
    target_text = spec.get("target", "")
    if not isinstance(target_text, str):
        raise InvalidInput(f"{prefix}target: expected a label selector string")
    try:
        target = parse_selector(target_text)
    except InvalidInput as e:
        raise type(e)(f"{prefix}target: {e.message}") from None
    description = spec.get("description", "")
    if not isinstance(description, str):
        raise InvalidInput(f"{prefix}description: expected a string")
    return RolloutSpec(
        release=release,
        target=target,
        strategy=_strategy(spec.get("strategy", {}), f"{prefix}strategy"),
        gates=parse_gates(spec.get("gates", {}), f"{prefix}gates"),
        on_failure=read_choice(
            spec.get("on_failure", "rollback"), f"{prefix}on_failure", FailureAction
        ),
        maintenance_windows=tuple(
            parse_window(item, f"{prefix}maintenance_windows[{i}]")
            for i, item in enumerate(
                read_list(spec.get("maintenance_windows", []), f"{prefix}maintenance_windows")
            )
        ),
        predicted_window=parse_window_mode(spec.get("window", "static"), f"{prefix}window"),
        deadline=None
        if spec.get("deadline") is None
        else _deadline(spec["deadline"], f"{prefix}deadline"),
        retries=_retries(spec.get("retries", {}), f"{prefix}retries"),
        name=name,
        description=description,
    )
