"""Table definitions (SQLAlchemy Core). Alembic migrations must produce exactly these."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
)


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps stored in UTC and always returned timezone-aware, on every backend."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use an aware UTC datetime")
        utc = value.astimezone(UTC)
        # SQLite has no time zone type: store naive UTC and re-attach UTC when reading.
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData()

devices = Table(
    "devices",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(128), nullable=False),
    Column("public_key", String(64), nullable=False, unique=True),
    Column("enrollment", String(16), nullable=False),
    Column("labels", JSON, nullable=False),
    Column("inventory", JSON, nullable=False),
    Column("enrollment_token_id", String(64), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("last_seen", UTCDateTime, nullable=True),
    Column("heartbeat_interval_s", Float, nullable=False),
    Column("desired_generation", Integer, nullable=False),
    Column("desired", JSON, nullable=False),
    Column("applied_generation", Integer, nullable=False),
    Column("version", Integer, nullable=False),
    Column("release_assignment", JSON, nullable=True),
    Column("release_status", JSON, nullable=False),
    # On the MQTT channel, the last presence message taken (core/presence.py): its state
    # (online, offline: the device's Will), when, its sequence number, and the interval the
    # device is told while online and hosting nothing. All null off MQTT.
    Column("presence", String(8), nullable=True),
    Column("presence_at", UTCDateTime, nullable=True),
    Column("presence_seq", BigInteger, nullable=True),
    Column("presence_interval_s", Float, nullable=True),
)
Index("ix_devices_name", devices.c.name)
# One device per name among those not revoked (revoking a device frees its name).
_NOT_REVOKED = devices.c.enrollment != "revoked"
Index("uq_devices_live_name", devices.c.name, unique=True,
      sqlite_where=_NOT_REVOKED, postgresql_where=_NOT_REVOKED)  # fmt: skip

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(128), nullable=False),
    Column("role", String(64), nullable=False),  # a built-in role or a `roles` row's name
    Column("secret_hash", String(64), nullable=False, unique=True),
    Column("created_by", String(128), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=True),
    Column("revoked", Boolean, nullable=False),
    Column("last_used_at", UTCDateTime, nullable=True),
    Column("scope", Text, nullable=True),  # a label selector; NULL: the whole fleet
)

enrollment_tokens = Table(
    "enrollment_tokens",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("description", String(256), nullable=False),
    Column("secret_hash", String(64), nullable=False, unique=True),
    Column("auto_approve", Boolean, nullable=False),
    Column("expires_at", UTCDateTime, nullable=True),
    Column("max_uses", Integer, nullable=True),
    Column("uses", Integer, nullable=False),
    Column("revoked", Boolean, nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

groups = Table(
    "groups",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("selector", Text, nullable=False),
    Column("description", String(256), nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("at", String(40), nullable=False),
    Column("actor", String(128), nullable=False),
    Column("action", String(64), nullable=False),
    Column("target", String(256), nullable=False),
    Column("request_id", String(64), nullable=False),
    Column("details", JSON, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)

device_nonces = Table(
    "device_nonces",
    metadata,
    Column("device_id", String(64), primary_key=True),
    Column("nonce", String(64), primary_key=True),
    Column("expires_at", UTCDateTime, nullable=False),
)
Index("ix_device_nonces_expires_at", device_nonces.c.expires_at)

# Per device, the highest message sequence number forgotten: a bus message numbered at or
# below it is refused as stale (`repositories/nonces.py`).
message_floors = Table(
    "message_floors",
    metadata,
    Column("device_id", String(64), primary_key=True),
    Column("floor", BigInteger, nullable=False),
)

artifacts = Table(
    "artifacts",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("version", String(64), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("size_bytes", BigInteger, nullable=False),
    Column("file_name", String(128), nullable=False),
    Column("requirements", JSON, nullable=False),
    Column("facts", JSON, nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

releases = Table(
    "releases",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("version", String(64), primary_key=True),
    Column("artifacts", JSON, nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("targets_version", Integer, nullable=True),
)


# Telemetry: the ingest cursor per device, raw windows, hourly rollups, the fleet policy,
# KPI detectors and alerts.

telemetry_cursors = Table(
    "telemetry_cursors",
    metadata,
    Column("device_id", String(64), primary_key=True),
    Column("acked_through_seq", BigInteger, nullable=False),
    Column("batches_stored", BigInteger, nullable=False),
    Column("windows_stored", BigInteger, nullable=False),
    Column("dropped_batches_total", BigInteger, nullable=False),
    Column("dropped_windows_total", BigInteger, nullable=False),
    Column("last_batch_at", UTCDateTime, nullable=True),
    # The device's clock as its uploads showed it, and the windows moved onto server time.
    Column("clock_skew_s", BigInteger, nullable=True),
    Column("newest_window_end_s", BigInteger, nullable=True),
    Column("shifted_batches", BigInteger, nullable=False),
    Column("shifted_windows", BigInteger, nullable=False),
    Column("last_shift_s", BigInteger, nullable=False),
    Column("largest_shift_s", BigInteger, nullable=False),
    Column("last_shift_reason", Text, nullable=True),
)

# One row per window as the device sent it: (device, batch sequence, position in the batch)
# is its identity, so a batch can only ever be stored once.
telemetry_windows = Table(
    "telemetry_windows",
    metadata,
    Column("device_id", String(64), primary_key=True),
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("idx", Integer, primary_key=True, autoincrement=False),
    Column("name", String(200), nullable=False),
    Column("kind", String(8), nullable=False),
    Column("tags", Text, nullable=False),
    Column("start_s", BigInteger, nullable=False),
    Column("length_s", Integer, nullable=False),
    Column("count", BigInteger, nullable=False),
    Column("sum", Float, nullable=False),
    Column("min", Float, nullable=False),
    Column("max", Float, nullable=False),
    Column("last", Float, nullable=False),
    Column("sketch", LargeBinary, nullable=True),
)
Index(
    "ix_telemetry_windows_device_name_start",
    telemetry_windows.c.device_id,
    telemetry_windows.c.name,
    telemetry_windows.c.start_s,
)
Index("ix_telemetry_windows_start", telemetry_windows.c.start_s)

# Windows older than the raw retention, merged per series and hour.
telemetry_rollups = Table(
    "telemetry_rollups",
    metadata,
    Column("device_id", String(64), primary_key=True),
    Column("name", String(200), primary_key=True),
    Column("tags_key", String(32), primary_key=True),
    Column("start_s", BigInteger, primary_key=True, autoincrement=False),
    Column("kind", String(8), nullable=False),
    Column("tags", Text, nullable=False),
    Column("length_s", Integer, nullable=False),
    Column("count", BigInteger, nullable=False),
    Column("sum", Float, nullable=False),
    Column("min", Float, nullable=False),
    Column("max", Float, nullable=False),
    Column("last", Float, nullable=False),
    Column("sketch", LargeBinary, nullable=True),
)
Index("ix_telemetry_rollups_start", telemetry_rollups.c.start_s)

telemetry_policies = Table(
    "telemetry_policies",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("document", JSON, nullable=False),
    Column("version", Integer, nullable=False),
    Column("updated_by", String(128), nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

telemetry_detectors = Table(
    "telemetry_detectors",
    metadata,
    Column("device_id", String(64), primary_key=True),
    Column("kpi", String(64), primary_key=True),
    Column("state", JSON, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

alerts = Table(
    "alerts",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("device_id", String(64), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("kpi", String(64), nullable=False),
    Column("metrics", JSON, nullable=False),
    Column("status", String(8), nullable=False),
    Column("opened_at", UTCDateTime, nullable=False),
    Column("open_reason", Text, nullable=False),
    Column("value", Float, nullable=True),
    Column("score", Float, nullable=True),
    Column("closed_at", UTCDateTime, nullable=True),
    Column("close_reason", Text, nullable=True),
)
Index("ix_alerts_device_status", alerts.c.device_id, alerts.c.status)
Index("ix_alerts_status_opened_at", alerts.c.status, alerts.c.opened_at)


# Rollouts: each rollout with its manifest and the engine's progress (JSON), one record per
# device it targets, the devices it holds (a device is in at most one active rollout: the
# primary key enforces it), its timeline, and the release trains that start rollouts.

rollouts = Table(
    "rollouts",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(64), nullable=False),
    Column("release", String(200), nullable=False),
    Column("train", String(64), nullable=True),
    Column("manifest", JSON, nullable=False),
    Column("engine", JSON, nullable=False),
    Column("state", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("due_at", UTCDateTime, nullable=True),
    Column("version", Integer, nullable=False),
)
Index("ix_rollouts_due_at", rollouts.c.due_at)
Index("ix_rollouts_name", rollouts.c.name)

rollout_devices = Table(
    "rollout_devices",
    metadata,
    Column("rollout_id", String(32), primary_key=True),
    Column("device_id", String(64), primary_key=True),
    Column("wave", Integer, nullable=True),
    Column("state", String(24), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("assigned_at", UTCDateTime, nullable=True),
    Column("retry_at", UTCDateTime, nullable=True),
    Column("previous_release", String(200), nullable=True),
    Column("reason", Text, nullable=False),
    Column("assigned_release", String(200), nullable=True),
    Column("assigned_serial", Integer, nullable=True),
    Column("assigned_generation", Integer, nullable=True),
    Column("first_assigned_at", UTCDateTime, nullable=True),
    Column("installed_at", UTCDateTime, nullable=True),
)
Index("ix_rollout_devices_device_id", rollout_devices.c.device_id)

rollout_claims = Table(
    "rollout_claims",
    metadata,
    Column("device_id", String(64), primary_key=True),
    Column("rollout_id", String(32), nullable=False),
)
Index("ix_rollout_claims_rollout_id", rollout_claims.c.rollout_id)

rollout_events = Table(
    "rollout_events",
    metadata,
    Column("rollout_id", String(32), primary_key=True),
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("at", UTCDateTime, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("actor", String(128), nullable=False),
    Column("device_id", String(64), nullable=True),
    Column("reason", Text, nullable=False),
    Column("details", JSON, nullable=False),
)

release_trains = Table(
    "release_trains",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("manifest", JSON, nullable=False),
    Column("state", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("position", Integer, nullable=False),
    Column("rollout_id", String(32), nullable=True),
    Column("created_by", String(128), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("version", Integer, nullable=False),
)


# Workloads: what operators declared, the placement in force (one row, its generation
# fencing returning nodes), each device's liveness and node status as the controllers see
# them, and planned migrations with their reported steps.

workloads = Table(
    "workloads",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("document", JSON, nullable=False),
    Column("releases", JSON, nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_by", String(128), nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("version", Integer, nullable=False),
)

placement_state = Table(
    "placement_state",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("generation", Integer, nullable=False),
    Column("assignments", JSON, nullable=False),
    Column("decisions", JSON, nullable=False),
    Column("computed_at", UTCDateTime, nullable=True),
    Column("version", Integer, nullable=False),
)

node_health = Table(
    "node_health",
    metadata,
    Column("device_id", String(64), primary_key=True),
    Column("liveness", JSON, nullable=False),
    Column("state", String(16), nullable=False),
    Column("replicas", JSON, nullable=False),
    Column("checkpoints", JSON, nullable=False),
    Column("node", JSON, nullable=False),
    Column("samples", JSON, nullable=False),
    Column("drain", JSON, nullable=False),
    Column("reported_at", UTCDateTime, nullable=True),
)

# Every replica move (`core.placement_move`), written with the placement it changed; the
# newest MOVES_KEPT_PER_WORKLOAD of each workload are kept.
placement_moves = Table(
    "placement_moves",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("workload", String(64), nullable=False),
    Column("replica", Integer, nullable=False),
    Column("from_node_id", String(64), nullable=True),
    Column("to_node_id", String(64), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("generation", Integer, nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Index("ix_placement_moves_workload_id", "workload", "id"),
)

migrations = Table(
    "migrations",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("workload", String(64), nullable=False),
    Column("replica", Integer, nullable=False),
    Column("source", String(64), nullable=False),
    Column("target", String(64), nullable=False),
    Column("trigger", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("stateful", Boolean, nullable=False),
    Column("state", String(16), nullable=False),
    Column("state_since", UTCDateTime, nullable=True),
    Column("source_generation", Integer, nullable=False),
    Column("generation", Integer, nullable=False),
    Column("weight_pct", Integer, nullable=False),
    Column("checkpoint_sha256", String(64), nullable=True),
    Column("checkpoint_size_bytes", BigInteger, nullable=True),
    Column("steps", JSON, nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("version", Integer, nullable=False),
)
Index("ix_migrations_state", migrations.c.state)
Index("ix_migrations_workload", migrations.c.workload)

checkpoint_archives = Table(
    "checkpoint_archives",
    metadata,
    Column("device_id", String(64), primary_key=True),
    Column("sha256", String(64), primary_key=True),
    Column("size_bytes", BigInteger, nullable=False),
    Column("stored_at", UTCDateTime, nullable=False),
)
Index("ix_checkpoint_archives_sha256", checkpoint_archives.c.sha256)
Index("ix_checkpoint_archives_stored_at", checkpoint_archives.c.stored_at)

# hawkBit DDI: which devices are DDI targets (tenant, controller id, the TargetToken's
# hash), the GatewayTokens of a tenant, and the sha1/md5 of blobs DDI clients check.

ddi_targets = Table(
    "ddi_targets",
    metadata,
    Column("device_id", String(64), primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("controller_id", String(64), nullable=False),
    Column("token_hash", String(64), nullable=True, unique=True),
    Column("gateway_token_id", String(64), nullable=True),
    Column("config_received_at", UTCDateTime, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
)
Index("uq_ddi_targets_controller", ddi_targets.c.tenant, ddi_targets.c.controller_id,
      unique=True)  # fmt: skip

ddi_gateway_tokens = Table(
    "ddi_gateway_tokens",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("description", String(256), nullable=False),
    Column("secret_hash", String(64), nullable=False, unique=True),
    Column("auto_approve", Boolean, nullable=False),
    Column("revoked", Boolean, nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

ddi_hashes = Table(
    "ddi_hashes",
    metadata,
    Column("sha256", String(64), primary_key=True),
    Column("sha1", String(40), nullable=False),
    Column("md5", String(32), nullable=False),
)

# One row per controller lease (`core.lease`): the replica that may act for it until
# expires_at, and the fencing token every write of that controller carries.
leases = Table(
    "leases",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("holder", String(128), nullable=False),
    Column("token", BigInteger, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
)

# Attestation: each device's latest verdict on its measured software state (and what the
# policy withholds from it because of it), its TPM attestation key, its outstanding nonce.

device_attestations = Table(
    "device_attestations",
    metadata,
    Column("device_id", String(64), primary_key=True),
    Column("attestation_key_pem", Text, nullable=True),
    Column("nonce", String(64), nullable=True),
    Column("nonce_expires_at", UTCDateTime, nullable=True),
    Column("status", String(16), nullable=True),
    Column("reason", Text, nullable=False),
    Column("attested_at", UTCDateTime, nullable=True),
    Column("tpm", Boolean, nullable=False),
    Column("pcrs", JSON, nullable=False),
    Column("measurement_digest", String(64), nullable=True),
    Column("measurement", JSON, nullable=False),
    Column("withhold_releases", Boolean, nullable=False),
    Column("withhold_workloads", Boolean, nullable=False),
    # The attestation key certified by credential activation, under which TPM (EK name).
    Column("ak_certified", Boolean, nullable=False),
    Column("ek_name", String(132), nullable=True),
    Column("ek_certificate", Text, nullable=False),
    Column("credential", JSON, nullable=True),  # the outstanding credential
    Column("credential_problem", Text, nullable=True),
)

# Policies as code (`core.policy`): one row per Policy document, all of them in force.
policies = Table(
    "policies",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("document", JSON, nullable=False),
    Column("updated_by", String(128), nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

# Custom roles (`core/role.py`): the permissions API tokens bound to them hold.
roles = Table(
    "roles",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("permissions", JSON, nullable=False),  # sorted permission names
    Column("description", String(256), nullable=False),
    Column("updated_by", String(128), nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

# Changes waiting for a second operator (`core.approval`): a root rotation, its metadata in
# `payload`, until another operator approves it.
pending_changes = Table(
    "pending_changes",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("summary", Text, nullable=False),
    Column("payload", JSON, nullable=False),
    Column("requested_by", String(128), nullable=False),
    Column("requested_at", UTCDateTime, nullable=False),
    Column("state", String(16), nullable=False),
    Column("decided_by", String(128), nullable=True),
    Column("decided_at", UTCDateTime, nullable=True),
)

# Rehearsal reports uploaded by `edgefleet lab rehearse --save` (`core.rehearsal_record`),
# the newest few per rollout name.
rehearsals = Table(
    "rehearsals",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("rollout", String(128), nullable=False),
    Column("release", String(200), nullable=False),
    Column("outcome", String(32), nullable=False),
    Column("report", JSON, nullable=False),
    Column("size_bytes", Integer, nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_rehearsals_rollout_created", "rollout", "created_at"),
    Index("ix_rehearsals_created", "created_at"),
)

# Federated training jobs (`core.learning.job.JobRecord`) and the open or last round of each
# (`RoundRecord`: the secure-aggregation state, msgpack in `state`).
training_jobs = Table(
    "training_jobs",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("document", JSON, nullable=False),
    Column("status", String(16), nullable=False),
    Column("rounds_done", Integer, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("reason", Text, nullable=False),
    Column("model_sha256", String(64), nullable=False),
    Column("initial_sha256", String(64), nullable=False),
    Column("source_kind", String(8), nullable=False),
    Column("history", JSON, nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("version", Integer, nullable=False),
)

training_rounds = Table(
    "training_rounds",
    metadata,
    Column("job", String(64), primary_key=True),
    Column("number", Integer, primary_key=True),
    Column("phase", String(16), nullable=False),
    Column("clients", JSON, nullable=False),
    Column("state", LargeBinary, nullable=False),
    Column("task", JSON, nullable=False),
    Column("base_sha256", String(64), nullable=False),
    Column("traffic", JSON, nullable=False),
    Column("metrics", JSON, nullable=False),
    Column("opened_at", UTCDateTime, nullable=False),
    Column("step", LargeBinary, nullable=True),
    Column("version", Integer, nullable=False),
)
