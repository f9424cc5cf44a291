"""Device names: legal (NFC, no hidden characters, no outer whitespace) and held by one
device that is not revoked.

Names stored before these rules are repaired first (`core.device_names.plan_device_renames`:
the oldest device keeps a name, later ones become NAME-2, NAME-3, ...); each rename bumps
the device's version and is appended to the audit chain as `device.rename` with the old
name, the new one and the reason. Then a unique index over the names of devices that are
not revoked enforces the rule.

Revision ID: 0007_device_names
Revises: 0006_checkpoint_archives
Create Date: 2026-12-02
"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from edgefleet.clock import isoformat_utc
from edgefleet.core.device_names import DeviceRename, NamedDevice, plan_device_renames
from edgefleet.security.audit import GENESIS_HASH, hash_record

revision = "0007_device_names"
down_revision = "0006_checkpoint_archives"
branch_labels = None
depends_on = None

ACTOR = "migration 0007_device_names"

_devices = sa.table(
    "devices",
    sa.column("id", sa.String),
    sa.column("name", sa.String),
    sa.column("enrollment", sa.String),
    sa.column("created_at", sa.DateTime),
    sa.column("version", sa.Integer),
)
_audit_log = sa.table(
    "audit_log",
    sa.column("seq", sa.Integer),
    sa.column("at", sa.String),
    sa.column("actor", sa.String),
    sa.column("action", sa.String),
    sa.column("target", sa.String),
    sa.column("request_id", sa.String),
    sa.column("details", sa.JSON),
    sa.column("prev_hash", sa.String),
    sa.column("hash", sa.String),
)


def upgrade() -> None:
    connection = op.get_bind()
    rows = connection.execute(
        sa.select(_devices.c.id, _devices.c.name, _devices.c.enrollment).order_by(
            _devices.c.created_at, _devices.c.id
        )
    )
    renames = plan_device_renames(
        [NamedDevice(row.id, row.name, row.enrollment == "revoked") for row in rows]
    )
    if renames:
        _apply(connection, renames)
    op.create_index(
        "uq_devices_live_name",
        "devices",
        ["name"],
        unique=True,
        sqlite_where=sa.text("enrollment != 'revoked'"),
        postgresql_where=sa.text("enrollment != 'revoked'"),
    )


def _apply(connection: sa.Connection, renames: list[DeviceRename]) -> None:
    head = connection.execute(
        sa.select(_audit_log.c.seq, _audit_log.c.hash).order_by(_audit_log.c.seq.desc()).limit(1)
    ).first()
    seq, prev_hash = (head.seq, head.hash) if head is not None else (0, GENESIS_HASH)
    at = isoformat_utc(datetime.now(UTC))
    for rename in renames:
        connection.execute(
            sa.update(_devices)
            .where(_devices.c.id == rename.device_id)
            .values(name=rename.new_name, version=_devices.c.version + 1)
        )
        seq += 1
        target = f"device/{rename.device_id}"
        details = {"from": rename.old_name, "to": rename.new_name, "reason": rename.reason}
        digest = hash_record(seq, at, ACTOR, "device.rename", target, revision, details,
                             prev_hash)  # fmt: skip
        connection.execute(
            sa.insert(_audit_log).values(
                seq=seq,
                at=at,
                actor=ACTOR,
                action="device.rename",
                target=target,
                request_id=revision,
                details=details,
                prev_hash=prev_hash,
                hash=digest,
            )
        )
        prev_hash = digest


def downgrade() -> None:
    op.drop_index("uq_devices_live_name", table_name="devices")
