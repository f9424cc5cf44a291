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
)
Index("ix_devices_name", devices.c.name)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(128), nullable=False),
    Column("role", String(16), nullable=False),
    Column("secret_hash", String(64), nullable=False, unique=True),
    Column("created_by", String(128), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=True),
    Column("revoked", Boolean, nullable=False),
    Column("last_used_at", UTCDateTime, nullable=True),
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
