"""Manifests: reading the plain data of a YAML document (`kind: X`) field by field, with the
field's path in every error (`spec.strategy.waves[2]: ...`).

A manifest comes in the Kubernetes shape (`kind`, `apiVersion`, `metadata.name`, `spec`) or
flat (`kind`, `name` and the spec's fields at the top); `split_manifest` accepts both.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from edgefleet.core.durations import parse_duration
from edgefleet.errors import InvalidInput

_E = TypeVar("_E", bound=StrEnum)


@dataclass(frozen=True)
class ManifestParts:
    name: object  # the raw name, None when absent
    name_path: str  # "metadata.name" or "name"
    spec: Mapping[str, object]
    prefix: str  # "spec." or "" — prepended to every field path of the spec


def read_mapping(value: object, path: str) -> Mapping[str, object]:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise InvalidInput(f"{path or 'document'}: expected a mapping")
    return value


def check_keys(data: Mapping[str, object], allowed: frozenset[str], path: str) -> None:
    """Refuse unknown fields, so a typo never silently means a default."""
    unknown = sorted(set(data) - allowed)
    if unknown:
        where = f"{path}.{unknown[0]}" if path else unknown[0]
        raise InvalidInput(f"{where}: unknown field (allowed: {', '.join(sorted(allowed))})")


def read_list(value: object, path: str) -> list[object]:
    if not isinstance(value, list | tuple):
        raise InvalidInput(f"{path}: expected a list, got {type(value).__name__}")
    return list(value)


def read_string(value: object, path: str) -> str:
    """A non-empty string, stripped."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{path}: expected a non-empty string, got {value!r}")
    return value.strip()


def read_int(value: object, path: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInput(f"{path}: expected an integer in {low}..{high}, got {value!r}")
    return value


def read_number(value: object, path: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(f"{path}: expected a number, got {value!r}")
    if not math.isfinite(value) or not low <= value <= high:
        raise InvalidInput(f"{path}: expected a number in {low:g}..{high:g}, got {value!r}")
    return float(value)


def read_duration_s(value: object, path: str, high_s: float, *, positive: bool = False) -> float:
    """A duration (`30m`, `1h30m`, or a number of seconds) in seconds, within bounds."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidInput(f"{path}: expected a duration such as 30m, got {value!r}")
    try:
        seconds = parse_duration(value).total_seconds() if isinstance(value, str) else float(value)
    except InvalidInput as e:
        raise InvalidInput(f"{path}: {e.message}") from None
    if not math.isfinite(seconds) or seconds < 0 or seconds > high_s or (positive and not seconds):
        low = "above 0" if positive else "at least 0"
        raise InvalidInput(f"{path}: duration {value!r} must be {low} and at most {high_s:g}s")
    return seconds


def read_choice(value: object, path: str, enum: type[_E]) -> _E:
    """A member of a StrEnum by its value."""
    for member in enum:
        if value == member.value:
            return member
    choices = "|".join(member.value for member in enum)
    raise InvalidInput(f"{path}: expected {choices}, got {value!r}")


def split_manifest(data: object, kind: str, spec_keys: frozenset[str]) -> ManifestParts:
    """The name and spec of a `kind` manifest in either shape, unknown fields refused."""
    doc = read_mapping(data, "")
    if doc.get("kind", kind) != kind:
        raise InvalidInput(f"kind: expected {kind!r}, got {doc.get('kind')!r}")
    if "spec" in doc:
        check_keys(doc, frozenset({"kind", "apiVersion", "metadata", "spec", "name"}), "")
        meta = read_mapping(doc.get("metadata", {}), "metadata")
        check_keys(meta, frozenset({"name"}), "metadata")
        spec = read_mapping(doc["spec"], "spec")
        check_keys(spec, spec_keys, "spec")
        return ManifestParts(meta.get("name", doc.get("name")), "metadata.name", spec, "spec.")
    check_keys(doc, spec_keys | {"kind", "apiVersion", "name"}, "")
    return ManifestParts(doc.get("name"), "name", doc, "")
