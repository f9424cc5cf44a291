"""HTTP wire schemas: what the device agent sends (enrollment, reports) and the answers."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from edgefleet.core.enrollment import EnrollmentState
from edgefleet.core.updates.install import InstallState
from edgefleet.server.schemas.base import SQL_INTEGER_MAX, Strict


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
