"""Release service: blobs and artifacts in, releases out, releases onto devices.

Pushing an artifact stores its file in the content-addressed blob store and records what
the server learned from it (ONNX facts, a validated service manifest). A release batches
artifacts, and may bring its service manifest along: that artifact and the release are
created in one transaction, so a refused release leaves neither behind. Once signed (see
trust.py) a release can be assigned to devices, each checked against the artifacts'
compatibility requirements with the one pure function devices use too.
"""

from __future__ import annotations

import hashlib
import io
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, BinaryIO

import yaml

from edgefleet.artifacts.blobstore import BlobInfo, BlobStore, validate_sha256
from edgefleet.artifacts.onnx_inspect import inspect_onnx
from edgefleet.clock import Clock
from edgefleet.core.device import Device
from edgefleet.core.selector import parse_selector
from edgefleet.core.updates.compat import (
    CompatVerdict,
    RequirementFailure,
    evaluate_compatibility,
    parse_requirements,
)
from edgefleet.core.updates.ddi import ddi_refusal
from edgefleet.core.updates.release import (
    Artifact,
    ArtifactKind,
    Ref,
    Release,
    ReleaseAssignment,
    check_release_artifacts,
    validate_file_name,
    validate_name,
)
from edgefleet.core.updates.service_manifest import MAX_MANIFEST_BYTES, parse_service_manifest
from edgefleet.core.updates.versions import parse_version
from edgefleet.errors import Conflict, InvalidInput, NotFound
from edgefleet.security.rbac import Permission
from edgefleet.server.services.audit import OperatorContext, record_action
from edgefleet.server.services.deltas import DeltaService, DeltaState
from edgefleet.server.services.desired import save_device
from edgefleet.server.watch import DesiredStateWatch
from edgefleet.store import Database, Transaction


@dataclass(frozen=True)
class Skipped:
    device_id: str
    name: str
    reason: str


@dataclass(frozen=True)
class AssignmentResult:
    assigned: list[Device]
    skipped: list[Skipped]


@dataclass(frozen=True)
class ServiceFile:
    """A release's service manifest, sent with the release: it becomes the artifact
    `NAME-service@VERSION`."""

    file_name: str
    content: bytes


class ReleaseService:
    def __init__(
        self,
        db: Database,
        blobs: BlobStore,
        clock: Clock,
        watch: DesiredStateWatch,
        deltas: DeltaService,
        *,
        ddi_releases: frozenset[str] = frozenset(),
    ) -> None:
        self._db = db
        self.blobs = blobs
        self._clock = clock
        self._watch = watch
        self._deltas = deltas
        self._ddi_releases = ddi_releases  # the releases DDI devices may be assigned

    # Blobs and artifacts.

    def store_blob(self, ctx: OperatorContext, sha256: str, source: BinaryIO) -> BlobInfo:
        ctx.require(Permission.ARTIFACTS_WRITE)
        return self.blobs.put(source, expected_sha256=validate_sha256(sha256))

    def register_artifact(
        self,
        ctx: OperatorContext,
        name: str,
        version: str,
        kind: ArtifactKind,
        sha256: str,
        file_name: str,
        requirements: Sequence[str],
    ) -> Artifact:
        """Record an uploaded blob as `name@version`; ONNX models are inspected and an
        invalid model is refused with the checker's message."""
        ctx.require(Permission.ARTIFACTS_WRITE)
        validate_name(name, "artifact")
        parse_version(version)
        validate_file_name(file_name)
        sha256 = validate_sha256(sha256)
        if not self.blobs.exists(sha256):
            raise NotFound(
                f"blob {sha256} was not uploaded (PUT /v1/blobs/{{sha256}} first)",
                code="blob_not_found",
            )
        canonical = parse_requirements(list(requirements)).to_strings()
        facts = self._facts(kind, sha256)
        now = self._clock.now()
        artifact = Artifact(
            name=name,
            version=version,
            kind=kind,
            sha256=sha256,
            size_bytes=self.blobs.size_bytes(sha256),
            file_name=file_name,
            requirements=tuple(canonical),
            facts=facts,
            created_by=ctx.actor,
            created_at=now,
        )
        with self._db.transaction() as tx:
            tx.artifacts.insert(artifact)
            record_action(
                tx,
                ctx,
                "artifact.push",
                f"artifact/{artifact.ref}",
                now,
                {"sha256": sha256, "kind": kind.value, "size_bytes": artifact.size_bytes},
            )
        return artifact

    def _facts(self, kind: ArtifactKind, sha256: str) -> dict[str, Any]:
        if kind is ArtifactKind.ONNX_MODEL:
            return inspect_onnx(self.blobs.path(sha256)).to_dict()
        if kind is ArtifactKind.SERVICE:
            return {"manifest": _manifest_dict(self._read_manifest(sha256))}
        return {}

    def _read_manifest(self, sha256: str) -> Any:
        return read_service_manifest(self.blobs, sha256)

    def list_artifacts(self, ctx: OperatorContext, name: str | None = None) -> list[Artifact]:
        ctx.require(Permission.FLEET_READ)
        with self._db.read() as tx:
            return tx.artifacts.all(name)

    def get_artifact(self, ctx: OperatorContext, ref: Ref) -> Artifact:
        ctx.require(Permission.FLEET_READ)
        with self._db.read() as tx:
            return tx.artifacts.get(ref)

    # Releases.

    def create_release(
        self,
        ctx: OperatorContext,
        ref: Ref,
        artifacts: Sequence[Ref],
        service: ServiceFile | None = None,
    ) -> Release:
        """Create a release of existing artifacts, plus its service manifest as the new
        artifact `NAME-service@VERSION` when `service` is given: both or neither."""
        ctx.require(Permission.RELEASES_WRITE)
        now = self._clock.now()
        manifest = None if service is None else self._service_artifact(ctx, ref, service, now)
        members_refs = tuple(artifacts) + (() if manifest is None else (manifest.ref,))
        release = Release(ref.name, ref.version, members_refs, ctx.actor, now)
        with self._db.transaction() as tx:
            tx.releases.insert(release)  # first: a taken version is named as such
            if manifest is not None:
                tx.artifacts.insert(manifest)
                record_action(
                    tx,
                    ctx,
                    "artifact.push",
                    f"artifact/{manifest.ref}",
                    now,
                    {
                        "sha256": manifest.sha256,
                        "kind": manifest.kind.value,
                        "size_bytes": manifest.size_bytes,
                    },
                )
            members = [tx.artifacts.get(a) for a in members_refs]
            check_release_artifacts(members)
            _check_manifest_references(members)
            record_action(
                tx,
                ctx,
                "release.create",
                f"release/{ref}",
                now,
                {"artifacts": [str(a) for a in members_refs]},
            )
            if service is not None and manifest is not None:
                # Last, once every check passed: a refused release writes no blob either.
                self.blobs.put(io.BytesIO(service.content), expected_sha256=manifest.sha256)
        return release

    def _service_artifact(
        self, ctx: OperatorContext, ref: Ref, service: ServiceFile, now: datetime
    ) -> Artifact:
        """The artifact a release's service manifest becomes, validated (not stored)."""
        ctx.require(Permission.ARTIFACTS_WRITE)
        validate_file_name(service.file_name)
        if len(service.content) > MAX_MANIFEST_BYTES:
            raise InvalidInput(f"a service manifest is at most {MAX_MANIFEST_BYTES} bytes")
        return Artifact(
            name=validate_name(f"{ref.name}-service", "artifact"),
            version=ref.version,
            kind=ArtifactKind.SERVICE,
            sha256=hashlib.sha256(service.content).hexdigest(),
            size_bytes=len(service.content),
            file_name=service.file_name,
            requirements=(),
            facts=_manifest_facts(service.content),
            created_by=ctx.actor,
            created_at=now,
        )

    def list_releases(self, ctx: OperatorContext) -> list[Release]:
        ctx.require(Permission.FLEET_READ)
        with self._db.read() as tx:
            return tx.releases.all()

    def get_release(self, ctx: OperatorContext, ref: Ref) -> tuple[Release, list[Artifact]]:
        ctx.require(Permission.FLEET_READ)
        with self._db.read() as tx:
            release = tx.releases.get(ref)
            return release, [tx.artifacts.get(a) for a in release.artifacts]

    # Assignment.

    def assign(
        self,
        ctx: OperatorContext,
        ref: Ref,
        *,
        device: str | None = None,
        selector: str | None = None,
        stage_only: bool = False,
    ) -> AssignmentResult:
        """Put a signed release into the desired state of one device (refused if
        incompatible) or of every device a selector matches (incompatible ones skipped)."""
        ctx.require(Permission.DEVICES_WRITE)
        if (device is None) == (selector is None):
            raise InvalidInput("give exactly one of a device or a selector")
        parsed = parse_selector(selector or "")
        now = self._clock.now()
        assigned: list[Device] = []
        skipped: list[Skipped] = []
        delta_pairs: set[tuple[str, str]] = set()
        with self._db.transaction() as tx:
            release, artifacts = signed_release(tx, ref)
            targets = (
                [tx.devices.resolve(device)]
                if device is not None
                else [d for d in tx.devices.all() if parsed.matches(d.labels)]
            )
            if device is not None:
                ctx.principal.require_on_device(Permission.DEVICES_WRITE, targets[0].name,
                                                targets[0].labels)  # fmt: skip
            else:
                ctx.principal.require_on_selector(Permission.DEVICES_WRITE, parsed,
                                                  {d.name: d.labels for d in targets})  # fmt: skip
            for target in targets:
                refusal = ddi_refusal(target, ref.name, self._ddi_releases)
                if refusal is not None and device is not None:
                    raise Conflict(f"device {target.id}: {refusal}", code="ddi_release_not_allowed")
                reason = refusal or incompatibility(artifacts, target)
                if reason is not None:
                    if device is not None:
                        raise Conflict(
                            f"device {target.id} is incompatible with {ref}: {reason}",
                            code="incompatible_device",
                        )
                    skipped.append(Skipped(target.id, target.name, reason))
                    continue
                assigned.append(
                    assign_release_to_device(tx, target, release, stage_only=stage_only)
                )
                delta_pairs |= delta_pairs_for(tx, target, artifacts)
            record_action(
                tx,
                ctx,
                "release.assign",
                f"release/{ref}",
                now,
                {
                    "devices": [d.id for d in assigned],
                    "stage_only": stage_only,
                    "skipped": {s.device_id: s.reason for s in skipped},
                },
            )
        for saved in assigned:
            self._watch.notify(saved.id)
        self.request_deltas(delta_pairs)
        return AssignmentResult(assigned, skipped)

    def compatibility(
        self, artifacts: Sequence[Artifact], device: Device, release_name: str
    ) -> CompatVerdict:
        """`compatibility_of`, and the DDI rule: a DDI device takes only the releases the
        `ddi_releases` setting lists."""
        verdict = compatibility_of(artifacts, device)
        refusal = ddi_refusal(device, release_name, self._ddi_releases)
        if refusal is None:
            return verdict
        return CompatVerdict((*verdict.failures, RequirementFailure("ddi", refusal)))

    def request_deltas(self, pairs: set[tuple[str, str]]) -> None:
        """Deltas from what devices run now, computed in the background before they ask."""
        for from_sha, to_sha in sorted(pairs):
            self._deltas.request(from_sha, to_sha)

    def guard_delta_pair(self, from_sha256: str, to_sha256: str) -> None:
        """Deltas are made only between two versions of one artifact: a request naming any
        two stored blobs must not make the server spend CPU and disk on them."""
        with self._db.read() as tx:
            shared = (tx.artifacts.names_of_blob(from_sha256)
                      & tx.artifacts.names_of_blob(to_sha256))  # fmt: skip
        if not shared:
            raise NotFound(
                f"no delta from {from_sha256[:12]} to {to_sha256[:12]}: they are "
                "not two versions of one artifact",
                code="delta_unavailable",
            )

    def delta_stats(self, ctx: OperatorContext, name: str, compute: bool) -> list[dict[str, Any]]:
        """Deltas between versions of artifact `name`: every pair already computed or asked
        for, plus each pair of consecutive versions (scheduled when `compute`)."""
        ctx.require(Permission.ARTIFACTS_WRITE if compute else Permission.FLEET_READ)
        with self._db.read() as tx:
            versions = sorted(tx.artifacts.all(name), key=lambda a: parse_version(a.version))
        if not versions:
            raise NotFound(f"no artifact named {name!r}", code="artifact_not_found")
        consecutive = set(itertools.pairwise(range(len(versions))))
        rows = []
        for i, old in enumerate(versions):
            for j, new in enumerate(versions):
                if i == j or old.sha256 == new.sha256:
                    continue
                status = self._deltas.status(old.sha256, new.sha256)
                known = not (
                    status.state is DeltaState.PENDING and status.reason == "not scheduled"
                )
                if (i, j) not in consecutive and not known:
                    continue
                if compute and not known:
                    status = self._deltas.request(old.sha256, new.sha256)
                rows.append(
                    {
                        "from_version": old.version,
                        "to_version": new.version,
                        "state": status.state.value,
                        "delta_size": status.delta_size,
                        "target_size": status.target_size or new.size_bytes,
                        "ratio": status.ratio,
                        "reason": status.reason,
                    }
                )
        return rows

    def activate(self, ctx: OperatorContext, device: str) -> Device:
        """Install a release that was delivered with --stage-only."""
        ctx.require(Permission.DEVICES_WRITE)
        now = self._clock.now()
        with self._db.transaction() as tx:
            target = tx.devices.resolve(device)
            ctx.principal.require_on_device(Permission.DEVICES_WRITE, target.name, target.labels)
            assignment = target.release_assignment
            if assignment is None or not assignment.stage_only:
                raise Conflict(
                    f"device {target.id} has no staged release to activate", code="nothing_staged"
                )
            saved = save_device(
                tx, replace(target, release_assignment=replace(assignment, stage_only=False))
            )
            record_action(
                tx,
                ctx,
                "release.activate",
                f"device/{target.id}",
                now,
                {"release": f"{assignment.name}@{assignment.version}"},
            )
        self._watch.notify(saved.id)
        return saved


def signed_release(tx: Transaction, ref: Ref) -> tuple[Release, list[Artifact]]:
    """A release and its artifacts, refused unless it is signed."""
    release = tx.releases.get(ref)
    if not release.signed:
        raise Conflict(
            f"release {ref} is not signed yet (edgefleet releases sign {ref})",
            code="release_not_signed",
        )
    return release, [tx.artifacts.get(a) for a in release.artifacts]


def assign_release_to_device(
    tx: Transaction, device: Device, release: Release, *, stage_only: bool = False
) -> Device:
    """Put `release` into `device`'s desired state with a new serial and save it (optimistic
    check). The serial goes past both the last assignment's and the one the device last
    reported, so the agent always sees a new assignment and tries (again)."""
    previous = device.release_assignment.serial if device.release_assignment else 0
    reported = (device.release_status or {}).get("serial")
    base = max(previous, reported if isinstance(reported, int) else 0)
    assignment = ReleaseAssignment(release.name, release.version, stage_only, base + 1)
    return save_device(tx, replace(device, release_assignment=assignment))


def clear_release_of_device(tx: Transaction, device: Device) -> Device:
    """Take the release out of `device`'s desired state and save it (optimistic check)."""
    return save_device(tx, replace(device, release_assignment=None))


def delta_pairs_for(
    tx: Transaction, device: Device, artifacts: Sequence[Artifact]
) -> set[tuple[str, str]]:
    """(from, to) blob pairs worth a delta: the device's live version of each artifact to
    the version being assigned."""
    active = (device.release_status or {}).get("active")
    if not active:
        return set()
    running = tx.releases.find(Ref(active["name"], active["version"]))
    if running is None:
        return set()
    live = {a.name: a.sha256 for a in (tx.artifacts.find(r) for r in running.artifacts) if a}
    return {
        (live[a.name], a.sha256)
        for a in artifacts
        if a.kind is not ArtifactKind.SERVICE and a.name in live and live[a.name] != a.sha256
    }


def compatibility_of(artifacts: Sequence[Artifact], device: Device) -> CompatVerdict:
    """Every artifact's requirements checked against `device`, failures named by artifact."""
    failures: list[RequirementFailure] = []
    for artifact in artifacts:
        verdict = evaluate_compatibility(
            parse_requirements(list(artifact.requirements)), device.inventory, device.labels
        )
        failures += [
            RequirementFailure(f"{artifact.name}: {f.requirement}", f.reason)
            for f in verdict.failures
        ]
    return CompatVerdict(tuple(failures))


def incompatibility(artifacts: Sequence[Artifact], device: Device) -> str | None:
    """Why `device` cannot take these artifacts, or None if it can."""
    reasons = []
    for artifact in artifacts:
        verdict = evaluate_compatibility(
            parse_requirements(list(artifact.requirements)), device.inventory, device.labels
        )
        if not verdict.compatible:
            reasons.append(f"{artifact.name}: {verdict.reason}")
    return "; ".join(reasons) or None


def read_service_manifest(blobs: BlobStore, sha256: str) -> Any:
    """A stored service manifest as its YAML loads (validate with parse_service_manifest)."""
    if blobs.size_bytes(sha256) > MAX_MANIFEST_BYTES:
        raise InvalidInput(f"a service manifest is at most {MAX_MANIFEST_BYTES} bytes")
    try:
        return yaml.safe_load(blobs.path(sha256).read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise InvalidInput(
            f"service manifest is not valid YAML: {e}", code="invalid_service_manifest"
        ) from None


def _manifest_facts(data: bytes) -> dict[str, Any]:
    """What the server records about a service manifest: the validated manifest."""
    try:
        raw = yaml.safe_load(data.decode())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise InvalidInput(
            f"service manifest is not valid YAML: {e}", code="invalid_service_manifest"
        ) from None
    return {"manifest": _manifest_dict(raw)}


def _manifest_dict(raw: Any) -> dict[str, Any]:
    manifest = parse_service_manifest(raw)
    return {
        "command": list(manifest.command),
        "port": manifest.port,
        "health": {
            "http": manifest.health.http_path,
            "command": list(manifest.health.command),
            "window_s": manifest.health.window_s,
            "max_error_rate": manifest.health.max_error_rate,
            "min_requests": manifest.health.min_requests,
        },
        "artifacts": sorted(manifest.artifact_names()),
        "parameters": {
            name: {
                "type": p.type.value,
                "default": p.default,
                "minimum": p.minimum,
                "maximum": p.maximum,
                "enum": list(p.choices) or None,
                "pattern": p.pattern,
            }
            for name, p in manifest.parameters.items()
        },
    }


def _check_manifest_references(members: Sequence[Artifact]) -> None:
    names = {a.name for a in members}
    for artifact in members:
        if artifact.kind is ArtifactKind.SERVICE:
            missing = set(artifact.facts["manifest"]["artifacts"]) - names
            if missing:
                raise InvalidInput(
                    f"service manifest {artifact.ref} refers to {sorted(missing)[0]!r}, "
                    "which is not in the release"
                )
