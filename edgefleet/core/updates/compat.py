"""Compatibility: whether an artifact may run on a device, and why not.

An artifact carries requirements as `KEY=VALUE` strings, as typed on the CLI::

    arch=aarch64|x86_64           hardware.arch is one of these (arm64 = aarch64, amd64 = x86_64)
    os=linux                      software.os is one of these (case-insensitive)
    min_memory_mb=512             hardware.memory_mb is at least this
    min_disk_mb=2048              hardware.disk_mb (free disk) is at least this
    min_cpu_count=2               hardware.cpu_count is at least this
    accelerator=npu|gpu           hardware.accelerators holds one of these
    runtime=onnxruntime>=1.17     software.onnxruntime is a version the specifier accepts
    io_signature=<sha256 hex>     software.io_signatures (the model interfaces the device's
                                  serving workloads accept) holds one of these
    label.tier=gold|silver        the device's label `tier` is one of these

All requirements must hold. The inventory is the dict the agent reports::

    {"hardware": {"arch", "cpu_count", "memory_mb", "disk_mb", "accelerators"},
     "software": {"os", "os_version", "python", "agent_version", "onnxruntime", ...},
     "location": {...}}

A value the device does not report fails its requirement ("unknown" is not "compatible").
The server calls `evaluate_compatibility` to skip devices, the agent to refuse an install.

>>> reqs = parse_requirements(["arch=aarch64", "min_memory_mb=512"])
>>> evaluate_compatibility(reqs, {"hardware": {"arch": "x86_64", "memory_mb": 256}}).reason
'arch=aarch64: device arch is x86_64; min_memory_mb=512: device has 256 MB memory'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from edgefleet.core.labels import validate_label_key, validate_label_value
from edgefleet.core.updates.versions import PackageRequirement, parse_loose_version
from edgefleet.core.updates.versions import parse_package_requirement as _parse_package
from edgefleet.errors import InvalidInput

MAX_REQUIREMENTS = 64
MAX_REQUIREMENT_LENGTH = 512
LABEL_PREFIX = "label."

_ARCH_ALIASES = {"arm64": "aarch64", "amd64": "x86_64", "x64": "x86_64"}


class RequirementKey(StrEnum):
    ARCH = "arch"
    OS = "os"
    MIN_MEMORY_MB = "min_memory_mb"
    MIN_DISK_MB = "min_disk_mb"
    MIN_CPU_COUNT = "min_cpu_count"
    ACCELERATOR = "accelerator"
    RUNTIME = "runtime"
    IO_SIGNATURE = "io_signature"
    LABEL = "label"


# Where each key looks in the inventory, and how the device's value is described.
_MINIMUMS: dict[RequirementKey, tuple[str, str, str]] = {
    RequirementKey.MIN_MEMORY_MB: ("hardware", "memory_mb", "MB memory"),
    RequirementKey.MIN_DISK_MB: ("hardware", "disk_mb", "MB free disk"),
    RequirementKey.MIN_CPU_COUNT: ("hardware", "cpu_count", "CPUs"),
}


@dataclass(frozen=True)
class Requirement:
    """One parsed requirement; `text` is its canonical `KEY=VALUE` form."""

    key: RequirementKey
    text: str
    choices: tuple[str, ...] = ()
    minimum: int = 0
    package: PackageRequirement | None = None
    label_key: str = ""

    def check(self, inventory: Mapping[str, object], labels: Mapping[str, str]) -> str | None:
        """None when the requirement holds, else the reason it does not."""
        if self.key in _MINIMUMS:
            return self._check_minimum(inventory)
        match self.key:
            case RequirementKey.ARCH:
                arch = _read(inventory, "hardware", "arch")
                if not isinstance(arch, str):
                    return "device does not report its arch"
                if _normalize_arch(arch) in self.choices:
                    return None
                return f"device arch is {arch}"
            case RequirementKey.OS:
                os_name = _read(inventory, "software", "os")
                if not isinstance(os_name, str):
                    return "device does not report its os"
                return None if os_name.lower() in self.choices else f"device os is {os_name}"
            case RequirementKey.ACCELERATOR:
                return _check_member(
                    _read(inventory, "hardware", "accelerators"), self.choices, "accelerators"
                )
            case RequirementKey.IO_SIGNATURE:
                return _check_member(
                    _read(inventory, "software", "io_signatures"), self.choices, "io signatures"
                )
            case RequirementKey.RUNTIME:
                assert self.package is not None
                return _check_runtime(self.package, _read(inventory, "software", self.package.name))
            case RequirementKey.LABEL:
                value = labels.get(self.label_key)
                if value is None:
                    return f"device has no label {self.label_key}"
                return None if value in self.choices else f"device label {self.label_key}={value}"
            case _:
                raise AssertionError(f"unhandled requirement key {self.key}")

    def _check_minimum(self, inventory: Mapping[str, object]) -> str | None:
        section, name, unit = _MINIMUMS[self.key]
        value = _read(inventory, section, name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"device does not report {section}.{name}"
        shown = value if isinstance(value, int) else round(value, 1)
        return None if value >= self.minimum else f"device has {shown} {unit}"


def _read(inventory: Mapping[str, object], section: str, name: str) -> object:
    part = inventory.get(section)
    return part.get(name) if isinstance(part, Mapping) else None


def _normalize_arch(arch: str) -> str:
    arch = arch.strip().lower()
    return _ARCH_ALIASES.get(arch, arch)


def _check_member(reported: object, choices: tuple[str, ...], what: str) -> str | None:
    if not isinstance(reported, list | tuple):
        return f"device does not report its {what}"
    have = {str(v).lower() for v in reported}
    if have & set(choices):
        return None
    return f"device {what} are {', '.join(sorted(have)) or 'none'}"


def _check_runtime(package: PackageRequirement, reported: object) -> str | None:
    if reported is None or reported == "":
        return f"device has no {package.name}"
    try:
        version = parse_loose_version(str(reported))
    except InvalidInput:
        return f"device reports {package.name} version {reported!r}, which is not a version"
    if package.matches(version):
        return None
    return f"device has {package.name} {reported}"


@dataclass(frozen=True)
class Requirements:
    """An artifact's requirements, all of which must hold."""

    items: tuple[Requirement, ...] = ()

    def to_strings(self) -> list[str]:
        """The canonical `KEY=VALUE` strings; `parse_requirements` reads them back."""
        return [r.text for r in self.items]


@dataclass(frozen=True)
class RequirementFailure:
    requirement: str
    reason: str

    def __str__(self) -> str:
        return f"{self.requirement}: {self.reason}"


@dataclass(frozen=True)
class CompatVerdict:
    """The outcome: compatible, or the failed requirements each with its reason."""

    failures: tuple[RequirementFailure, ...] = ()

    @property
    def compatible(self) -> bool:
        return not self.failures

    @property
    def reason(self) -> str:
        return "; ".join(str(f) for f in self.failures) if self.failures else "compatible"


def evaluate_compatibility(
    requirements: Requirements,
    inventory: Mapping[str, object],
    labels: Mapping[str, str] | None = None,
) -> CompatVerdict:
    """Check every requirement against a device's inventory and labels."""
    device_labels = labels or {}
    failures = []
    for requirement in requirements.items:
        reason = requirement.check(inventory, device_labels)
        if reason is not None:
            failures.append(RequirementFailure(requirement.text, reason))
    return CompatVerdict(tuple(failures))


def _choices(item: str, value: str, *, lower: bool = True) -> tuple[str, ...]:
    parts = [p.strip() for p in value.split("|")]
    if not all(parts):
        raise InvalidInput(f"invalid requirement {item!r}: empty choice in {value!r}")
    return tuple(sorted({p.lower() if lower else p for p in parts}))


def _parse_minimum(item: str, value: str) -> int:
    try:
        minimum = int(value.strip())
    except ValueError:
        raise InvalidInput(f"invalid requirement {item!r}: {value!r} is not an integer") from None
    if minimum < 0:
        raise InvalidInput(f"invalid requirement {item!r}: must not be negative")
    return minimum


def parse_requirement(item: str) -> Requirement:
    """Parse one `KEY=VALUE` requirement; InvalidInput names the item."""
    if len(item) > MAX_REQUIREMENT_LENGTH:
        raise InvalidInput(f"requirement is longer than {MAX_REQUIREMENT_LENGTH} characters")
    raw_key, sep, value = item.partition("=")
    raw_key = raw_key.strip()
    if not sep or not raw_key or not value.strip():
        raise InvalidInput(f"invalid requirement {item!r}: expected KEY=VALUE")
    if raw_key.startswith(LABEL_PREFIX):
        try:
            label_key = validate_label_key(raw_key.removeprefix(LABEL_PREFIX))
            choices = _choices(item, value, lower=False)
            for choice in choices:
                validate_label_value(label_key, choice)
        except InvalidInput as e:
            raise InvalidInput(f"invalid requirement {item!r}: {e.message}") from None
        text = f"{LABEL_PREFIX}{label_key}={'|'.join(choices)}"
        return Requirement(RequirementKey.LABEL, text, choices, label_key=label_key)
    try:
        key = RequirementKey(raw_key)
    except ValueError:
        known = ", ".join(k.value for k in RequirementKey if k is not RequirementKey.LABEL)
        raise InvalidInput(
            f"invalid requirement {item!r}: unknown key {raw_key!r} (known: {known}, label.KEY)"
        ) from None
    if key in _MINIMUMS:
        minimum = _parse_minimum(item, value)
        return Requirement(key, f"{key}={minimum}", minimum=minimum)
    match key:
        case RequirementKey.RUNTIME:
            try:
                package = _parse_package(value)
            except InvalidInput as e:
                raise InvalidInput(f"invalid requirement {item!r}: {e.message}") from None
            return Requirement(key, f"{key}={package}", package=package)
        case RequirementKey.ARCH:
            choices = tuple(sorted({_normalize_arch(c) for c in _choices(item, value)}))
        case _:
            choices = _choices(item, value)
    return Requirement(key, f"{key}={'|'.join(choices)}", choices)


def parse_requirements(items: Sequence[str]) -> Requirements:
    """Parse CLI-style `KEY=VALUE` strings once; InvalidInput names the bad item."""
    if isinstance(items, str):
        raise InvalidInput("requirements must be a list of KEY=VALUE strings, not one string")
    if len(items) > MAX_REQUIREMENTS:
        raise InvalidInput(f"at most {MAX_REQUIREMENTS} requirements are allowed")
    return Requirements(tuple(parse_requirement(item) for item in items))
