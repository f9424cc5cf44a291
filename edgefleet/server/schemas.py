"""Wire schemas of the HTTP API (pydantic): requests are strict, unknown fields refused."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from edgefleet.core.device import ConnectionStatus, Device
from edgefleet.core.durations import MAX_DURATION
from edgefleet.core.enrollment import EnrollmentState, EnrollmentToken
from edgefleet.core.group import Group
from edgefleet.core.updates.install import InstallState
from edgefleet.core.updates.release import Artifact, ArtifactKind, Release
from edgefleet.core.updates.service_manifest import MAX_MANIFEST_BYTES
from edgefleet.security.audit import AuditRecord
from edgefleet.security.tokens import ApiToken

# The largest integer a database column holds (SQLite and PostgreSQL BIGINT): the bound of
# every sequence number and cursor a request may carry.
SQL_INTEGER_MAX = 2**63 - 1


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Device-reported inventory.


class Hardware(Strict):
    arch: str = Field(max_length=32, description="Machine architecture, e.g. x86_64, aarch64.")
    cpu_count: int = Field(ge=1, le=4096)
    memory_mb: int = Field(ge=0, le=SQL_INTEGER_MAX)
    disk_mb: int = Field(
        ge=0, le=SQL_INTEGER_MAX, description="Free space in the agent's data dir."
    )
    accelerators: list[str] = Field(default_factory=list, max_length=16)


class Software(Strict):
    os: str = Field(max_length=64)
    os_version: str = Field("", max_length=128)
    python: str = Field(max_length=32)
    agent_version: str = Field(max_length=32)
    onnxruntime: str | None = Field(None, max_length=32)
    io_signatures: list[str] = Field(
        default_factory=list, max_length=32, description="Model interfaces the device serves."
    )


class Location(Strict):
    region: str | None = Field(None, max_length=64)
    zone: str | None = Field(None, max_length=64)
    timezone: str | None = Field(None, max_length=64, description="IANA name, e.g. Europe/Berlin")
    latitude: float | None = Field(None, ge=-90, le=90)
    longitude: float | None = Field(None, ge=-180, le=180)


class Inventory(Strict):
    hardware: Hardware
    software: Software
    location: Location = Field(default_factory=lambda: Location())


# Device API.


class EnrollRequest(Strict):
    enrollment_token: str = Field(min_length=1, max_length=256)
    public_key: str = Field(min_length=1, max_length=64, description="Base64 raw Ed25519 key.")
    name: str = Field(
        min_length=1,
        max_length=128,
        description="Unique among devices that are not revoked; no control, zero-width or bidi "
        "characters, no whitespace at either end (compared in NFC).",
    )
    labels: dict[str, str] = Field(default_factory=dict)
    inventory: Inventory
    heartbeat_interval_s: float | None = Field(
        None, ge=1, le=3600, description="Requested interval; the server default if absent."
    )


class EnrollResponse(BaseModel):
    device_id: str
    enrollment: EnrollmentState
    heartbeat_interval_s: float
    trusted_root: dict[str, Any] | None = Field(
        None, description="The TUF root metadata devices pin (absent before trust is set up)."
    )
    root_rotations: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Every root after the first, oldest first (the last is trusted_root): "
        "a device that pinned an earlier root out of band checks that trusted_root chains "
        "from it.",
    )


class ActiveRelease(Strict):
    name: str = Field(max_length=64)
    version: str = Field(max_length=64)
    port: int | None = Field(None, ge=1, le=65535, description="Where its service listens")


class ReleaseStatusReport(Strict):
    """What the device's installer is doing with its assigned release."""

    name: str = Field(max_length=64)
    version: str = Field(max_length=64)
    serial: int = Field(ge=0, le=SQL_INTEGER_MAX)
    state: InstallState
    reason: str = Field("", max_length=1000)
    bytes_done: int = Field(0, ge=0, le=SQL_INTEGER_MAX)
    bytes_total: int = Field(0, ge=0, le=SQL_INTEGER_MAX)
    bytes_saved: int = Field(
        0, ge=0, le=SQL_INTEGER_MAX, description="Download bytes saved by deltas."
    )
    active: ActiveRelease | None = Field(None, description="The release running now.")
    updated_at: datetime | None = None


class ReplicaStatusReport(Strict):
    """One copy of a workload replica on the device (agent/workload_runner.py)."""

    workload: str = Field(max_length=64)
    replica: int = Field(ge=0, le=1000)
    generation: int = Field(ge=0, le=SQL_INTEGER_MAX)
    phase: str = Field("run", pattern=r"^(run|stage)$")
    state: str = Field(
        pattern=r"^(fetching|staged|starting|running|backoff|stopped|failed)$",
        description="fetching, staged, starting, running, backoff, stopped or failed",
    )
    health: str = Field("unknown", pattern=r"^(ok|failing|unknown)$")
    restarts: int = Field(0, ge=0, le=SQL_INTEGER_MAX)
    port: int | None = Field(None, ge=1, le=65535, description="Where its service listens")
    detail: str = Field("", max_length=500)
    restored_sha256: str | None = Field(
        None, pattern=r"^[0-9a-f]{64}$", description="State archive unpacked before the start"
    )
    migration: str | None = Field(None, max_length=32)


class CheckpointReport(Strict):
    """A state archive the device made for a migration (uploaded to /v1/checkpoints)."""

    migration: str = Field(max_length=32)
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    size_bytes: int | None = Field(None, ge=0, le=SQL_INTEGER_MAX)
    error: str = Field("", max_length=500)


class WorkloadsReport(Strict):
    replicas: list[ReplicaStatusReport] = Field(default_factory=list, max_length=256)
    checkpoints: list[CheckpointReport] = Field(default_factory=list, max_length=64)


class NodeStatusReport(Strict):
    """Where the device's workloads are reachable, and its power and load (forecasts)."""

    address: str | None = Field(None, max_length=255, description="Host clients connect to")
    power_source: str | None = Field(None, pattern=r"^(mains|battery|solar)$")
    battery_pct: float | None = Field(None, ge=0, le=100)
    cpu_load: float | None = Field(None, ge=0, description="1-minute load average / CPUs")
    scheduled: bool = Field(
        True,
        description="Sent on the heartbeat schedule; false for an extra report sent at "
        "once on a change (it proves life but is no heartbeat interval)",
    )


class ReportRequest(Strict):
    applied_generation: int = Field(ge=0, le=SQL_INTEGER_MAX)
    inventory: Inventory | None = Field(
        None, description="Omitted when unchanged since the last report the server took."
    )
    release: ReleaseStatusReport | None = None
    workloads: WorkloadsReport | None = None
    node: NodeStatusReport | None = None


class ReportResponse(BaseModel):
    desired_generation: int
    heartbeat_interval_s: float
    inventory_optional: bool | None = Field(
        None,
        description="In answer to a report with an inventory: later reports may leave it out "
        "while it is unchanged (older servers never say so).",
    )


# Operator API.


class DeviceOut(BaseModel):
    id: str
    name: str
    enrollment: EnrollmentState
    status: ConnectionStatus
    labels: dict[str, str]
    last_seen: datetime | None
    created_at: datetime
    heartbeat_interval_s: float
    desired_generation: int
    applied_generation: int
    in_sync: bool
    inventory: dict[str, Any]
    desired: dict[str, Any]
    release: dict[str, Any] | None = Field(None, description="Assigned release")
    release_status: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def of(cls, device: Device, now: datetime) -> DeviceOut:
        return cls(
            id=device.id,
            name=device.name,
            enrollment=device.enrollment,
            status=device.connection(now),
            labels=dict(device.labels),
            last_seen=device.last_seen,
            created_at=device.created_at,
            heartbeat_interval_s=device.heartbeat_interval_s,
            desired_generation=device.desired_generation,
            applied_generation=device.applied_generation,
            in_sync=device.applied_generation == device.desired_generation,
            inventory=dict(device.inventory),
            desired={"generation": device.desired_generation, **device.desired},
            release=device.release_assignment.to_dict() if device.release_assignment else None,
            release_status=dict(device.release_status),
        )


class LabelRequest(Strict):
    set: dict[str, str] = Field(default_factory=dict)
    remove: list[str] = Field(default_factory=list, max_length=64)


class ConfigureRequest(Strict):
    heartbeat_interval_s: float = Field(ge=1, le=3600)


class CreateApiTokenRequest(Strict):
    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._@-]+$")
    role: str = Field(
        min_length=1, max_length=64,
        description="A built-in role (viewer, operator, admin, rollout-approver, "
                    "release-signer) or a custom role's name (`kind: Role`).",
    )  # fmt: skip
    expires_in_s: float | None = Field(None, gt=0, le=MAX_DURATION.total_seconds())
    scope: str | None = Field(
        None, max_length=4096,
        description="A label selector the token's changes to devices are limited to "
                    "(docs/operator-guide.md, Governance); none: the whole fleet.",
    )  # fmt: skip


class ApiTokenOut(BaseModel):
    id: str
    name: str
    role: str
    created_by: str
    created_at: datetime
    expires_at: datetime | None
    revoked: bool
    last_used_at: datetime | None
    scope: str | None = None
    token: str | None = Field(None, description="The secret; shown once, at creation.")

    @classmethod
    def of(cls, token: ApiToken, secret: str | None = None) -> ApiTokenOut:
        return cls(
            id=token.id,
            name=token.name,
            role=token.role,
            created_by=token.created_by,
            created_at=token.created_at,
            expires_at=token.expires_at,
            revoked=token.revoked,
            last_used_at=token.last_used_at,
            scope=token.scope,
            token=secret,
        )


class WhoAmI(BaseModel):
    token_id: str
    name: str
    role: str
    scope: str | None = None


class CreateEnrollmentTokenRequest(Strict):
    description: str = Field("", max_length=256)
    auto_approve: bool = False
    expires_in_s: float | None = Field(None, gt=0, le=MAX_DURATION.total_seconds())
    max_uses: int | None = Field(None, ge=1, le=SQL_INTEGER_MAX)


class EnrollmentTokenOut(BaseModel):
    id: str
    description: str
    auto_approve: bool
    expires_at: datetime | None
    max_uses: int | None
    uses: int
    revoked: bool
    created_by: str
    created_at: datetime
    token: str | None = Field(None, description="The secret; shown once, at creation.")

    @classmethod
    def of(cls, token: EnrollmentToken, secret: str | None = None) -> EnrollmentTokenOut:
        return cls(
            id=token.id,
            description=token.description,
            auto_approve=token.auto_approve,
            expires_at=token.expires_at,
            max_uses=token.max_uses,
            uses=token.uses,
            revoked=token.revoked,
            created_by=token.created_by,
            created_at=token.created_at,
            token=secret,
        )


class CreateGroupRequest(Strict):
    name: str = Field(min_length=1, max_length=64)
    selector: str = Field(max_length=4096)
    description: str = Field("", max_length=256)


class GroupOut(BaseModel):
    name: str
    selector: str
    description: str
    created_by: str
    created_at: datetime
    devices: list[str] | None = None

    @classmethod
    def of(cls, group: Group, device_ids: list[str] | None = None) -> GroupOut:
        return cls(
            name=group.name,
            selector=group.selector,
            description=group.description,
            created_by=group.created_by,
            created_at=group.created_at,
            devices=device_ids,
        )


class AuditRecordOut(BaseModel):
    seq: int
    at: str
    actor: str
    action: str
    target: str
    request_id: str
    details: dict[str, Any]
    prev_hash: str
    hash: str

    @classmethod
    def of(cls, record: AuditRecord) -> AuditRecordOut:
        return cls(
            seq=record.seq,
            at=record.at,
            actor=record.actor,
            action=record.action,
            target=record.target,
            request_id=record.request_id,
            details=dict(record.details),
            prev_hash=record.prev_hash,
            hash=record.hash,
        )


class ErrorBody(BaseModel):
    code: str
    message: str
    request_id: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


# Artifacts and releases.


class CreateArtifactRequest(Strict):
    name: str = Field(min_length=1, max_length=64)
    version: str = Field(min_length=1, max_length=64, description="SemVer")
    kind: ArtifactKind = ArtifactKind.FILE
    sha256: str = Field(min_length=64, max_length=64, description="Of an uploaded blob")
    file_name: str = Field(min_length=1, max_length=128)
    requires: list[str] = Field(default_factory=list, max_length=64)


class ArtifactOut(BaseModel):
    name: str
    version: str
    kind: ArtifactKind
    sha256: str
    size_bytes: int
    file_name: str
    requires: list[str]
    facts: dict[str, Any]
    created_by: str
    created_at: datetime

    @classmethod
    def of(cls, a: Artifact) -> ArtifactOut:
        return cls(
            name=a.name,
            version=a.version,
            kind=a.kind,
            sha256=a.sha256,
            size_bytes=a.size_bytes,
            file_name=a.file_name,
            requires=list(a.requirements),
            facts=dict(a.facts),
            created_by=a.created_by,
            created_at=a.created_at,
        )


class ServiceFileIn(Strict):
    file_name: str = Field(min_length=1, max_length=128)
    content: str = Field(max_length=MAX_MANIFEST_BYTES, description="The manifest (YAML) text")


class CreateReleaseRequest(Strict):
    name: str = Field(min_length=1, max_length=64)
    version: str = Field(min_length=1, max_length=64)
    artifacts: list[str] = Field(
        default_factory=list, max_length=64, description="NAME@VERSION each"
    )
    service: ServiceFileIn | None = Field(
        None,
        description="The release's service manifest, created with the release as the "
        "artifact NAME-service@VERSION (both or neither)",
    )


class ReleaseOut(BaseModel):
    name: str
    version: str
    artifacts: list[str]
    signed: bool
    targets_version: int | None
    created_by: str
    created_at: datetime
    files: list[ArtifactOut] | None = None

    @classmethod
    def of(cls, r: Release, files: list[Artifact] | None = None) -> ReleaseOut:
        return cls(
            name=r.name,
            version=r.version,
            artifacts=[str(a) for a in r.artifacts],
            signed=r.signed,
            targets_version=r.targets_version,
            created_by=r.created_by,
            created_at=r.created_at,
            files=[ArtifactOut.of(a) for a in files] if files is not None else None,
        )


class AssignRequest(Strict):
    device: str | None = Field(None, description="A device id or name")
    selector: str | None = Field(None, max_length=4096, description="Or: every matching device")
    stage_only: bool = Field(False, description="Deliver and verify now, install on activate")


class SkippedDevice(BaseModel):
    id: str
    name: str
    reason: str


class AssignResponse(BaseModel):
    assigned: list[str]
    skipped: list[SkippedDevice]


class SetRootRequest(Strict):
    root: dict[str, Any] = Field(description="Signed root metadata (TUF JSON)")
    targets: dict[str, Any] | None = Field(
        None, description="Targets re-signed by new targets keys, when a rotation changes them"
    )


# Telemetry and alerts.


class TelemetryAck(BaseModel):
    acked_through_seq: int = Field(
        description="Highest contiguous batch sequence stored (gaps declared dropped skipped)."
    )
    stored_windows: int = Field(0, description="Windows stored from this upload.")


class TelemetryCursorOut(BaseModel):
    device_id: str
    acked_through_seq: int
    batches_stored: int
    windows_stored: int
    dropped_batches_total: int = Field(description="As last reported by the device.")
    dropped_windows_total: int
    last_batch_at: datetime | None
    clock_skew_s: int | None = Field(
        description="The device's clock minus the server's when its last batch arrived "
        "(positive: ahead)."
    )
    shifted_batches: int = Field(
        description="Batches whose windows were moved onto the server's clock "
        "(docs/telemetry.md, Device clocks)."
    )
    shifted_windows: int
    last_shift_s: int = Field(description="How far the last moved batch was moved.")
    largest_shift_s: int = Field(description="The largest move in magnitude, with its sign.")
    last_shift_reason: str | None = Field(description="Why the last moved batch was moved.")


class TelemetryPointOut(BaseModel):
    time: datetime = Field(description="Start of the bucket (or of the summarized span).")
    start_s: int
    length_s: int
    count: int
    sum: float
    mean: float
    min: float
    max: float
    last: float
    quantile: float | None = Field(None, description="From merged sketches (timings only).")
    windows: int = Field(description="Stored windows merged into this point.")


class TelemetrySeriesOut(BaseModel):
    device_id: str
    device_name: str
    points: list[TelemetryPointOut]
    summary: TelemetryPointOut | None


class TelemetryQueryOut(BaseModel):
    metric: str
    since: datetime
    until: datetime
    step_s: int
    quantile: float | None
    series: list[TelemetrySeriesOut]
    summary: TelemetryPointOut | None = Field(description="Every matching window merged.")


class TelemetryPolicyOut(BaseModel):
    document: dict[str, Any]
    version: int = Field(description="0 while the built-in default applies.")
    updated_by: str | None
    updated_at: datetime | None


class TelemetryPolicyIn(Strict):
    document: dict[str, Any] = Field(description="The fleet telemetry policy (see docs).")


class KpiReadingOut(BaseModel):
    value: float
    samples: int


class KpiSummaryOut(BaseModel):
    metric: str
    since: datetime
    until: datetime
    quantile: float
    devices: dict[str, TelemetryPointOut]
    cohorts: dict[str, TelemetryPointOut]
    overall: TelemetryPointOut | None
    kpis: dict[str, dict[str, KpiReadingOut]]


class AlertOut(BaseModel):
    id: str
    device_id: str
    kind: str
    kpi: str
    metrics: list[str]
    status: str
    opened_at: datetime
    open_reason: str
    value: float | None
    score: float | None
    closed_at: datetime | None
    close_reason: str | None


# Rollouts and release trains.


class CreateRolloutRequest(Strict):
    manifest: dict[str, Any] = Field(
        description="A Rollout manifest (kind: Rollout, in the Kubernetes shape or flat), "
        "as its YAML parses to JSON; see docs/rollouts.md."
    )
    supersede: bool = Field(
        False,
        description="Abort the active rollouts that hold any of the target devices and take "
        "the devices over, instead of refusing with 409 devices_in_rollout.",
    )


class ManifestRequest(Strict):
    manifest: dict[str, Any] = Field(
        description="A manifest (kind: Policy or Role, or for policy test kind: Rollout or "
        "Workload), "
        "as its YAML parses to JSON."
    )


class RolloutCommandRequest(Strict):
    note: str = Field("", max_length=500, description="Why; kept in the timeline and audit.")


class ApplyReleaseTrainRequest(Strict):
    manifest: dict[str, Any] = Field(description="A ReleaseTrain manifest (kind: ReleaseTrain).")


# Workloads, placements, migrations, service endpoints.


class ApplyWorkloadRequest(Strict):
    document: dict[str, Any] = Field(
        description="A Workload manifest (kind: Workload, in the Kubernetes shape or flat), "
        "as its YAML parses to JSON; see docs/workloads.md."
    )


class SaveRehearsalRequest(Strict):
    rollout: str = Field(..., max_length=63, description="The rollout manifest's name")
    report: dict[str, Any] = Field(..., description="The lab report (lab rehearse -o x.json)")


class MigrateRequest(Strict):
    replica: int = Field(0, ge=0, le=1000)
    to: str | None = Field(None, max_length=128, description="Target device (id or name)")
    selector: str | None = Field(
        None, max_length=4096, description="Or: the best node matching this label selector"
    )
