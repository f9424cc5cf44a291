"""Policies as code: declarative rules the control plane checks before it changes the fleet.

A `kind: Policy` document holds rules of a few fixed kinds; every stored policy applies.
Each check is a pure function of the policies and the change (with the devices it would
touch), and answers `Violation`s naming the policy, the rule and why::

    kind: Policy
    metadata: {name: production}
    spec:
      approval:                          # four-eyes: a second operator approves first
        min_devices: 50                  # rollouts matching at least this many devices
        protected: ["tier=critical"]     # rollouts reaching a device these selectors match
        unless_on_failure_pause: true    # rollouts whose gates do not pause on failure
        trust_changes: true              # root rotations
      max_wave_size: 100                 # devices a rollout's wave may add at most
      maintenance:                       # rollouts reaching these devices declare a window
        - devices: "env=prod"
          allowed:                       # optional: and only windows inside these
            - {cron: "0 1 * * *", duration: 5h, time_zone: device}
      releases:                          # signatures a release needs, by name pattern
        - match: "prod-*"
          min_signatures: 2
      forbidden_labels:                  # combinations no device may carry
        - ["env=prod", "canary=true"]
      residency:                         # workloads reaching these devices stay in zones
        - devices: "region=eu"
          allowed: [eu]

>>> policy = parse_policy({"kind": "Policy", "metadata": {"name": "p"},
...                        "spec": {"forbidden_labels": [["env=prod", "canary=true"]]}})
>>> [v.rule for v in check_labels([policy], "cam-1", {"env": "prod", "canary": "true"})]
['forbidden_labels']
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from edgefleet.core.manifest import (
    check_keys,
    read_int,
    read_list,
    read_mapping,
    read_string,
    split_manifest,
)
from edgefleet.core.rollouts.maintenance import MaintenanceWindow, first_uncovered, parse_window
from edgefleet.core.rollouts.spec import FailureAction, RolloutSpec
from edgefleet.core.selector import Selector, parse_selector
from edgefleet.core.workloads.workload import Workload
from edgefleet.errors import InvalidInput

Labels = Mapping[str, str]
MAX_DEVICES = 10_000_000


@dataclass(frozen=True)
class ApprovalRule:
    min_devices: int | None = None
    protected: tuple[Selector, ...] = ()
    unless_on_failure_pause: bool = False
    trust_changes: bool = False


@dataclass(frozen=True)
class SignerRule:
    match: str  # a glob over release names
    min_signatures: int


@dataclass(frozen=True)
class ResidencyRule:
    devices: Selector
    allowed: frozenset[str]


@dataclass(frozen=True)
class MaintenanceRule:
    """Rollouts reaching `devices` declare maintenance windows, each inside `allowed` when
    the rule names any."""

    devices: Selector
    allowed: tuple[MaintenanceWindow, ...] = ()


@dataclass(frozen=True)
class Policy:
    name: str
    approval: ApprovalRule = ApprovalRule()
    max_wave_size: int | None = None
    maintenance: tuple[MaintenanceRule, ...] = ()
    releases: tuple[SignerRule, ...] = ()
    forbidden_labels: tuple[tuple[tuple[str, str], ...], ...] = ()
    residency: tuple[ResidencyRule, ...] = ()


@dataclass(frozen=True)
class Violation:
    """One rule a change breaks: `policy/rule: reason`."""

    policy: str
    rule: str
    reason: str

    def __str__(self) -> str:
        return f"policy {self.policy}, rule {self.rule}: {self.reason}"


# Parsing.

_SPEC_KEYS = frozenset(
    {"approval", "max_wave_size", "maintenance", "releases", "forbidden_labels", "residency"}
)


def parse_policy(document: Mapping[str, object]) -> Policy:
    """A Policy document's rules, or InvalidInput naming the field path."""
    parts = split_manifest(document, "Policy", _SPEC_KEYS)
    name = read_string(parts.name, parts.name_path)
    spec, p = parts.spec, parts.prefix
    wave = spec.get("max_wave_size")
    return Policy(
        name=name,
        approval=_approval(spec.get("approval", {}), f"{p}approval"),
        max_wave_size=None if wave is None else read_int(wave, f"{p}max_wave_size", 1, MAX_DEVICES),
        maintenance=tuple(
            _maintenance(item, f"{p}maintenance[{i}]")
            for i, item in enumerate(read_list(spec.get("maintenance", []), f"{p}maintenance"))
        ),
        releases=tuple(
            _signers(item, f"{p}releases[{i}]")
            for i, item in enumerate(read_list(spec.get("releases", []), f"{p}releases"))
        ),
        forbidden_labels=tuple(
            _combination(item, f"{p}forbidden_labels[{i}]")
            for i, item in enumerate(
                read_list(spec.get("forbidden_labels", []), f"{p}forbidden_labels")
            )
        ),
        residency=tuple(
            _residency(item, f"{p}residency[{i}]")
            for i, item in enumerate(read_list(spec.get("residency", []), f"{p}residency"))
        ),
    )


def _selector(data: Mapping[str, object], key: str, path: str) -> Selector:
    check_keys(data, frozenset({key}), path)
    text = read_string(data.get(key), f"{path}.{key}")
    try:
        return parse_selector(text)
    except InvalidInput as e:
        raise InvalidInput(f"{path}.{key}: {e.message}") from None


def _approval(value: object, path: str) -> ApprovalRule:
    data = read_mapping(value, path)
    check_keys(
        data,
        frozenset({"min_devices", "protected", "unless_on_failure_pause", "trust_changes"}),
        path,
    )
    protected = []
    for i, item in enumerate(read_list(data.get("protected", []), f"{path}.protected")):
        try:
            protected.append(parse_selector(read_string(item, f"{path}.protected[{i}]")))
        except InvalidInput as e:
            raise InvalidInput(f"{path}.protected[{i}]: {e.message}") from None
    minimum = data.get("min_devices")
    return ApprovalRule(
        min_devices=None
        if minimum is None
        else read_int(minimum, f"{path}.min_devices", 1, MAX_DEVICES),
        protected=tuple(protected),
        unless_on_failure_pause=_flag(data, "unless_on_failure_pause", path),
        trust_changes=_flag(data, "trust_changes", path),
    )


def _flag(data: Mapping[str, object], key: str, path: str) -> bool:
    value = data.get(key, False)
    if not isinstance(value, bool):
        raise InvalidInput(f"{path}.{key}: expected true or false, got {value!r}")
    return value


def _signers(value: object, path: str) -> SignerRule:
    data = read_mapping(value, path)
    check_keys(data, frozenset({"match", "min_signatures"}), path)
    return SignerRule(
        match=read_string(data.get("match"), f"{path}.match"),
        min_signatures=read_int(data.get("min_signatures"), f"{path}.min_signatures", 1, 100),
    )


def _combination(value: object, path: str) -> tuple[tuple[str, str], ...]:
    items = read_list(value, path)
    if len(items) < 2:
        raise InvalidInput(f"{path}: expected at least two key=value labels")
    pairs = []
    for i, item in enumerate(items):
        key, sep, label = read_string(item, f"{path}[{i}]").partition("=")
        if not sep or not key:
            raise InvalidInput(f"{path}[{i}]: expected key=value, got {item!r}")
        pairs.append((key, label))
    return tuple(pairs)


def _maintenance(value: object, path: str) -> MaintenanceRule:
    data = read_mapping(value, path)
    check_keys(data, frozenset({"devices", "allowed"}), path)
    devices = _selector({"devices": data.get("devices")}, "devices", path)
    allowed = tuple(
        parse_window(item, f"{path}.allowed[{i}]")
        for i, item in enumerate(read_list(data.get("allowed", []), f"{path}.allowed"))
    )
    return MaintenanceRule(devices, allowed)


def _residency(value: object, path: str) -> ResidencyRule:
    data = read_mapping(value, path)
    check_keys(data, frozenset({"devices", "allowed"}), path)
    allowed = [
        read_string(z, f"{path}.allowed[{i}]")
        for i, z in enumerate(read_list(data.get("allowed"), f"{path}.allowed"))
    ]
    if not allowed:
        raise InvalidInput(f"{path}.allowed: expected at least one residency zone")
    devices = _selector({"devices": data.get("devices")}, "devices", path)
    return ResidencyRule(devices, frozenset(allowed))


# Checks.


def wave_increments(spec: RolloutSpec, total: int) -> list[int]:
    """How many devices each wave of `spec` adds out of `total` (a last wave short of every
    device is followed by the rest, as `core.waves` plans it)."""
    cumulative = [w.size.resolve(total) for w in spec.strategy.waves]
    if not cumulative or cumulative[-1] < total:
        cumulative.append(total)
    sizes, before = [], 0
    for size in cumulative:
        if size > before:
            sizes.append(size - before)
            before = size
    return sizes


def check_rollout(
    policies: Sequence[Policy], spec: RolloutSpec, matched: Mapping[str, Labels], now: datetime
) -> list[Violation]:
    """The rules a rollout of `spec` over the devices `matched` (name -> labels) breaks,
    judged at `now` (UTC: where allowed maintenance windows are checked from)."""
    found = []
    for policy in policies:
        if policy.max_wave_size is not None:
            largest = max(wave_increments(spec, len(matched)), default=0)
            if largest > policy.max_wave_size:
                found.append(
                    Violation(
                        policy.name,
                        "max_wave_size",
                        f"a wave would update {largest} devices at once; the most allowed is "
                        f"{policy.max_wave_size} (add smaller waves to strategy.waves)",
                    )
                )
        for rule in policy.maintenance:
            reached = sorted(n for n, labels in matched.items() if rule.devices.matches(labels))
            if reached:
                found.extend(_maintenance_violations(policy.name, rule, spec, reached, now))
    return found


def check_wave(
    policies: Sequence[Policy],
    spec: RolloutSpec,
    wave: str,
    members: Mapping[str, Labels],
    now: datetime,
) -> list[Violation]:
    """The rules starting `wave` of a running rollout of `spec` breaks, over the wave's
    devices `members` (name -> labels as they are now): the controller asks before each
    wave, since policies applied and labels changed after the rollout was created count too."""
    found = []
    for policy in policies:
        if policy.max_wave_size is not None and len(members) > policy.max_wave_size:
            found.append(
                Violation(
                    policy.name,
                    "max_wave_size",
                    f"{wave} would update {len(members)} devices at once; the most allowed "
                    f"is {policy.max_wave_size}",
                )
            )
        for rule in policy.maintenance:
            reached = sorted(n for n, labels in members.items() if rule.devices.matches(labels))
            if reached:
                found.extend(_maintenance_violations(policy.name, rule, spec, reached, now))
    return found


def _maintenance_violations(
    policy: str, rule: MaintenanceRule, spec: RolloutSpec, reached: Sequence[str], now: datetime
) -> list[Violation]:
    if not spec.maintenance_windows:
        return [
            Violation(
                policy,
                "maintenance",
                f"the rollout reaches {_some(reached)}, matching '{rule.devices}', and declares "
                "no maintenance window",
            )
        ]
    if not rule.allowed:
        return []
    allowed = "; ".join(str(w) for w in rule.allowed)
    found = []
    for window in spec.maintenance_windows:
        # Windows in device time are compared in UTC: the same shift applies to both sides.
        outside = first_uncovered(window, rule.allowed, None, now)
        if outside is not None:
            found.append(
                Violation(
                    policy,
                    "maintenance",
                    f"the rollout reaches {_some(reached)}, matching '{rule.devices}'; its "
                    f"window {window} opens at {outside:%Y-%m-%d %H:%M} UTC outside the "
                    f"allowed windows ({allowed})",
                )
            )
    return found


def check_release(
    policies: Sequence[Policy], release_name: str, signatures: int
) -> list[Violation]:
    """The rules a release named `release_name` signed by `signatures` distinct targets keys
    breaks."""
    return [
        Violation(
            policy.name,
            "releases",
            f"release {release_name} matches {rule.match!r}, which needs "
            f"{rule.min_signatures} signatures; it has {signatures}",
        )
        for policy in policies
        for rule in policy.releases
        if fnmatch.fnmatchcase(release_name, rule.match) and signatures < rule.min_signatures
    ]


def check_labels(policies: Sequence[Policy], device: str, labels: Labels) -> list[Violation]:
    """The forbidden label combinations a device with `labels` would carry."""
    return [
        Violation(
            policy.name,
            "forbidden_labels",
            f"device {device} would carry "
            f"{' and '.join(f'{k}={v}' for k, v in combination)} together, which the "
            "policy forbids",
        )
        for policy in policies
        for combination in policy.forbidden_labels
        if all(labels.get(k) == v for k, v in combination)
    ]


def check_workload(
    policies: Sequence[Policy], spec: Workload, matched: Mapping[str, Labels]
) -> list[Violation]:
    """The residency rules a workload that may be placed on `matched` breaks: where it may
    reach a device a rule covers, its `constraints.residency` must be non-empty and within
    the rule's zones."""
    found = []
    declared = spec.constraints.residency
    for policy in policies:
        for rule in policy.residency:
            reached = sorted(n for n, labels in matched.items() if rule.devices.matches(labels))
            if reached and (not declared or not declared <= rule.allowed):
                zones = ",".join(sorted(declared)) or "none"
                found.append(
                    Violation(
                        policy.name,
                        "residency",
                        f"workload {spec.name} may be placed on {_some(reached)} (matching "
                        f"'{rule.devices}'), so its constraints.residency must be within "
                        f"{','.join(sorted(rule.allowed))}; it declares {zones}",
                    )
                )
    return found


def approval_reasons(
    policies: Sequence[Policy], spec: RolloutSpec, matched: Mapping[str, Labels]
) -> list[str]:
    """Why a rollout needs a second operator's approval before its first wave (empty: it
    does not)."""
    reasons = []
    for policy in policies:
        rule = policy.approval
        if rule.min_devices is not None and len(matched) >= rule.min_devices:
            reasons.append(
                f"policy {policy.name}: it reaches {len(matched)} devices "
                f"(approval from {rule.min_devices})"
            )
        for selector in rule.protected:
            reached = sorted(n for n, labels in matched.items() if selector.matches(labels))
            if reached:
                reasons.append(
                    f"policy {policy.name}: it reaches protected devices "
                    f"'{selector}' ({_some(reached)})"
                )
        if rule.unless_on_failure_pause and spec.on_failure is not FailureAction.PAUSE:
            reasons.append(f"policy {policy.name}: on_failure is {spec.on_failure}, not pause")
    return reasons


def trust_change_needs_approval(policies: Sequence[Policy]) -> list[str]:
    """The policies that make a root rotation wait for a second approver."""
    return [p.name for p in policies if p.approval.trust_changes]


def _some(names: Sequence[str]) -> str:
    shown = ", ".join(names[:3])
    return f"{shown} and {len(names) - 3} more" if len(names) > 3 else shown
