"""Every message between a device and the control plane, as frozen dataclasses.

    device ──EnrollRequest──────────▶ control plane ──EnrollAnswer──▶ device
    device ──Report (heartbeat)─────▶               ──ReportAnswer──▶
           ◀─DesiredState (long poll over HTTP, a retained message over MQTT)──
    device ──TelemetryBatchHeader + batch bytes (core.telemetry.wire)──▶ ──TelemetryAck─▶

A Report carries the device's inventory (when it changed), its installer's ReleaseStatus,
its workload replicas' ReplicaStatus and checkpoints, and its NodeStatus. The field names
are the HTTP wire's JSON keys; `code` tags a top-level message in the binary encoding.
Bounds match what the store holds (INT_MAX) and what the agent ever sends.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar

from edgefleet.core.enrollment import EnrollmentState
from edgefleet.core.protocol.codec import INT_MAX, JsonObject, bounded
from edgefleet.core.updates.install import InstallState

HEX64 = r"[0-9a-f]{64}"


# Inventory: what a device is (sent at enrollment and in reports when it changed).


@dataclass(frozen=True, kw_only=True)
class Hardware:
    arch: str = bounded(max_len=32)  # machine architecture, e.g. x86_64, aarch64
    cpu_count: int = bounded(ge=1, le=4096)
    memory_mb: int = bounded(ge=0, le=INT_MAX)
    disk_mb: int = bounded(ge=0, le=INT_MAX)  # free space in the agent's data dir
    accelerators: tuple[str, ...] = bounded(factory=tuple, max_len=16)


@dataclass(frozen=True, kw_only=True)
class Software:
    os: str = bounded(max_len=64)
    os_version: str = bounded("", max_len=128)
    python: str = bounded(max_len=32)
    agent_version: str = bounded(max_len=32)
    onnxruntime: str | None = bounded(None, max_len=32)
    io_signatures: tuple[str, ...] = bounded(factory=tuple, max_len=32)


@dataclass(frozen=True, kw_only=True)
class Location:
    region: str | None = bounded(None, max_len=64)
    zone: str | None = bounded(None, max_len=64)
    timezone: str | None = bounded(None, max_len=64)  # IANA name, e.g. Europe/Berlin
    latitude: float | None = bounded(None, ge=-90, le=90)
    longitude: float | None = bounded(None, ge=-180, le=180)


@dataclass(frozen=True, kw_only=True)
class Inventory:
    hardware: Hardware
    software: Software
    location: Location = bounded(factory=Location)


# Enrollment.


@dataclass(frozen=True, kw_only=True)
class EnrollRequest:
    wire_name: ClassVar[str] = "enroll"
    code: ClassVar[int] = 1

    enrollment_token: str = bounded(min_len=1, max_len=256)
    public_key: str = bounded(min_len=1, max_len=64)  # base64 raw Ed25519 key
    name: str = bounded(min_len=1, max_len=128)
    labels: Mapping[str, str] = bounded(factory=dict)
    inventory: Inventory
    heartbeat_interval_s: float | None = bounded(None, ge=1, le=3600)  # None: server default


@dataclass(frozen=True, kw_only=True)
class EnrollAnswer:
    wire_name: ClassVar[str] = "enroll_answer"
    code: ClassVar[int] = 2
    lenient: ClassVar[bool] = True

    device_id: str
    enrollment: EnrollmentState
    heartbeat_interval_s: float
    # The TUF root devices pin (None before trust is set up), and every root after the
    # first, oldest first, for a device that pinned an earlier one out of band.
    trusted_root: JsonObject | None = None
    root_rotations: tuple[JsonObject, ...] = ()


# Reports (heartbeats).


@dataclass(frozen=True, kw_only=True)
class ActiveRelease:
    name: str = bounded(max_len=64)
    version: str = bounded(max_len=64)
    port: int | None = bounded(None, ge=1, le=65535)  # where its service listens


@dataclass(frozen=True, kw_only=True)
class ReleaseStatus:
    """What the device's installer is doing with its assigned release."""

    name: str = bounded(max_len=64)
    version: str = bounded(max_len=64)
    serial: int = bounded(ge=0, le=INT_MAX)
    state: InstallState
    reason: str = bounded("", max_len=1000)
    bytes_done: int = bounded(0, ge=0, le=INT_MAX)
    bytes_total: int = bounded(0, ge=0, le=INT_MAX)
    bytes_saved: int = bounded(0, ge=0, le=INT_MAX)  # download bytes saved by deltas
    active: ActiveRelease | None = None  # the release running now


class ReplicaPhaseName(StrEnum):
    RUN = "run"
    STAGE = "stage"


class ReplicaState(StrEnum):
    FETCHING = "fetching"
    STAGED = "staged"
    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"
    STOPPED = "stopped"
    FAILED = "failed"


class ReplicaHealth(StrEnum):
    OK = "ok"
    FAILING = "failing"
    UNKNOWN = "unknown"


@dataclass(frozen=True, kw_only=True)
class ReplicaStatus:
    """One copy of a workload replica on the device (agent/workload_runner.py)."""

    workload: str = bounded(max_len=64)
    replica: int = bounded(ge=0, le=1000)
    generation: int = bounded(ge=0, le=INT_MAX)
    phase: ReplicaPhaseName = ReplicaPhaseName.RUN
    state: ReplicaState
    health: ReplicaHealth = ReplicaHealth.UNKNOWN
    restarts: int = bounded(0, ge=0, le=INT_MAX)
    port: int | None = bounded(None, ge=1, le=65535)
    detail: str = bounded("", max_len=500)
    restored_sha256: str | None = bounded(None, pattern=HEX64)  # unpacked before the start
    migration: str | None = bounded(None, max_len=32)


@dataclass(frozen=True, kw_only=True)
class CheckpointReport:
    """A state archive the device made for a migration (uploaded to /v1/checkpoints)."""

    migration: str = bounded(max_len=32)
    sha256: str | None = bounded(None, pattern=HEX64, omit_none=True)
    size_bytes: int | None = bounded(None, ge=0, le=INT_MAX, omit_none=True)
    error: str = bounded("", max_len=500)


@dataclass(frozen=True, kw_only=True)
class WorkloadsReport:
    replicas: tuple[ReplicaStatus, ...] = bounded(factory=tuple, max_len=256)
    checkpoints: tuple[CheckpointReport, ...] = bounded(factory=tuple, max_len=64)


class PowerSource(StrEnum):
    MAINS = "mains"
    BATTERY = "battery"
    SOLAR = "solar"


@dataclass(frozen=True, kw_only=True)
class NodeStatus:
    """Where the device's workloads are reachable, and its power and load (forecasts)."""

    address: str | None = bounded(None, max_len=255)  # host clients connect to
    cpu_load: float | None = bounded(None, ge=0)  # 1-minute load average / CPUs
    power_source: PowerSource | None = bounded(None, omit_none=True)
    battery_pct: float | None = bounded(None, ge=0, le=100, omit_none=True)
    # Sent on the heartbeat schedule; False for an extra report sent at once on a change
    # (it proves life but is no heartbeat interval).
    scheduled: bool = True


@dataclass(frozen=True, kw_only=True)
class Report:
    """A heartbeat: what the device has applied and how it is doing."""

    wire_name: ClassVar[str] = "report"
    code: ClassVar[int] = 3

    applied_generation: int = bounded(ge=0, le=INT_MAX)
    release: ReleaseStatus | None = None
    # None: unchanged since the last report the server took (it keeps the stored one).
    inventory: Inventory | None = bounded(None, omit_none=True)
    workloads: WorkloadsReport | None = bounded(None, omit_none=True)
    node: NodeStatus | None = bounded(None, omit_none=True)


@dataclass(frozen=True, kw_only=True)
class ReportAnswer:
    wire_name: ClassVar[str] = "report_answer"
    code: ClassVar[int] = 4
    lenient: ClassVar[bool] = True

    desired_generation: int
    heartbeat_interval_s: float
    # In answer to a report with an inventory: later reports may leave it out while it is
    # unchanged (older servers never say so).
    inventory_optional: bool | None = bounded(None, omit_none=True)


# The desired-state document.


@dataclass(frozen=True, kw_only=True)
class AgentSection:
    lenient: ClassVar[bool] = True

    heartbeat_interval_s: float = bounded(ge=0.001)


@dataclass(frozen=True, kw_only=True)
class DesiredState:
    """What the control plane wants the device to converge to (core/desired.py renders the
    sections); `generation` goes up by one exactly when anything else changes. Signed by
    the control plane over its exact JSON bytes."""

    wire_name: ClassVar[str] = "desired"
    code: ClassVar[int] = 5
    lenient: ClassVar[bool] = True

    device_id: str
    generation: int = bounded(ge=0, le=INT_MAX)
    labels: Mapping[str, str] = bounded(factory=dict)
    agent: AgentSection | None = bounded(None, omit_none=True)
    release: JsonObject | None = bounded(None, omit_none=True)
    telemetry: JsonObject | None = bounded(None, omit_none=True)
    workloads: JsonObject | None = bounded(None, omit_none=True)
    training: JsonObject | None = bounded(None, omit_none=True)  # rounds it is planned in


# Telemetry.


@dataclass(frozen=True, kw_only=True)
class TelemetryBatchHeader:
    """What goes with one telemetry batch (its bytes: core.telemetry.wire, or sealed)."""

    wire_name: ClassVar[str] = "telemetry_header"
    code: ClassVar[int] = 6

    # Every batch up to here that the server lacks is gone on the device.
    dropped_through_seq: int = bounded(0, ge=0, le=INT_MAX)
    sealed: bool = False  # sealed to the control plane's ingest key


@dataclass(frozen=True, kw_only=True)
class TelemetryAck:
    wire_name: ClassVar[str] = "telemetry_ack"
    code: ClassVar[int] = 7
    lenient: ClassVar[bool] = True

    acked_through_seq: int
    stored_windows: int
