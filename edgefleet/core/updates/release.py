"""Artifacts and releases: what operators push, batch and assign to devices.

An *artifact* is one versioned file (an ONNX model, a plain file, or a service spec that
says how to run the others). A *release* batches artifacts that ship together; it becomes
installable once its targets are published in TUF metadata signed by the operators. An
*assignment* puts a release into a device's desired state.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from edgefleet.core.updates.versions import parse_version
from edgefleet.errors import InvalidInput

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_FILE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")


class ArtifactKind(StrEnum):
    ONNX_MODEL = "onnx-model"
    FILE = "file"
    SERVICE = "service"


def validate_name(name: str, what: str) -> str:
    """Artifact and release names: letters, digits, '.', '_', '-', at most 64."""
    if not _NAME_RE.fullmatch(name):
        raise InvalidInput(
            f"invalid {what} name {name!r}: use letters, digits, '.', '_' and '-' "
            "(at most 64, starting with a letter or digit)"
        )
    return name


def validate_file_name(name: str) -> str:
    if not _FILE_RE.fullmatch(name):
        raise InvalidInput(
            f"invalid file name {name!r}: use letters, digits, '.', '_', '+' and '-' "
            "(at most 128, no directories)"
        )
    return name


@dataclass(frozen=True)
class Ref:
    """`name@version`, how operators point at an artifact or a release."""

    name: str
    version: str

    def __str__(self) -> str:
        return f"{self.name}@{self.version}"


def parse_ref(text: str, what: str = "artifact") -> Ref:
    """Parse `name@version` (the version is SemVer).

    >>> parse_ref("detector@1.2.0")
    Ref(name='detector', version='1.2.0')
    """
    name, sep, version = text.strip().partition("@")
    if not sep or not version:
        raise InvalidInput(f"invalid {what} reference {text!r}: expected NAME@VERSION")
    validate_name(name, what)
    try:
        parse_version(version)
    except InvalidInput as e:
        raise InvalidInput(f"invalid {what} reference {text!r}: {e.message}") from None
    return Ref(name, version)


@dataclass(frozen=True)
class Artifact:
    name: str
    version: str
    kind: ArtifactKind
    sha256: str
    size_bytes: int
    file_name: str
    requirements: tuple[str, ...]
    facts: Mapping[str, Any]
    created_by: str
    created_at: datetime

    @property
    def ref(self) -> Ref:
        return Ref(self.name, self.version)


@dataclass(frozen=True)
class Release:
    name: str
    version: str
    artifacts: tuple[Ref, ...]
    created_by: str
    created_at: datetime
    targets_version: int | None = None  # the targets metadata version that signed it

    @property
    def ref(self) -> Ref:
        return Ref(self.name, self.version)

    @property
    def signed(self) -> bool:
        return self.targets_version is not None


def check_release_artifacts(artifacts: Sequence[Artifact]) -> None:
    """A release needs at least one artifact, distinct names and file names, and at most one
    service spec."""
    if not artifacts:
        raise InvalidInput("a release needs at least one artifact (--artifact NAME@VERSION)")
    for attribute in ("name", "file_name"):
        seen: set[str] = set()
        for artifact in artifacts:
            value = getattr(artifact, attribute)
            if value in seen:
                raise InvalidInput(f"two artifacts of the release share the {attribute} {value!r}")
            seen.add(value)
    services = [a for a in artifacts if a.kind is ArtifactKind.SERVICE]
    if len(services) > 1:
        raise InvalidInput("a release may hold at most one service spec")


@dataclass(frozen=True)
class ReleaseAssignment:
    """A release put into one device's desired state; `serial` changes on every assignment,
    so re-assigning the same release asks the device to try again."""

    name: str
    version: str
    stage_only: bool
    serial: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "stage_only": self.stage_only,
            "serial": self.serial,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ReleaseAssignment:
        return cls(
            str(raw["name"]), str(raw["version"]), bool(raw["stage_only"]), int(raw["serial"])
        )


def target_path(release: Ref, file_name: str) -> str:
    """Where an artifact file of a release lives in the TUF targets namespace."""
    return f"releases/{release.name}/{release.version}/{file_name}"


@dataclass(frozen=True)
class ReleaseSection:
    """The `release` part of a desired-state document."""

    assignment: ReleaseAssignment
    targets: tuple[Mapping[str, Any], ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {**self.assignment.to_dict(), "targets": [dict(t) for t in self.targets]}


def render_release_section(
    assignment: ReleaseAssignment, release: Release, artifacts: Sequence[Artifact]
) -> ReleaseSection:
    """What a device needs to fetch: each target's path (verified on the device against the
    signed TUF metadata, which is the authority for hash and length) and its role."""
    targets = tuple(
        {
            "path": target_path(release.ref, a.file_name),
            "artifact": a.name,
            "kind": a.kind.value,
            "file_name": a.file_name,
            "sha256": a.sha256,
            "length_bytes": a.size_bytes,
        }
        for a in sorted(artifacts, key=lambda a: a.name)
    )
    return ReleaseSection(assignment, targets)


def stamp_active_since(
    previous: Mapping[str, Any], status: Mapping[str, Any], now: datetime
) -> dict[str, Any]:
    """A device's reported release status with `active_since`: when the control plane
    first saw the live release (`now` when it changed, else the time already known).
    Telemetry from before it belongs to another release."""
    out = dict(status)
    active = status.get("active")
    if not active:
        return out
    before = previous.get("active") or {}
    same = (before.get("name"), before.get("version")) == (active.get("name"),
                                                           active.get("version"))  # fmt: skip
    known = previous.get("active_since")
    out["active_since"] = known if same and known else now.isoformat()
    return out
