"""Telemetry: ingest cursors, raw windows, hourly rollups, the fleet policy, KPI detectors and
alerts.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

from edgefleet.store.tables import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _window_stats() -> list[sa.Column]:
    return [
        sa.Column("length_s", sa.Integer, nullable=False),
        sa.Column("count", sa.BigInteger, nullable=False),
        sa.Column("sum", sa.Float, nullable=False),
        sa.Column("min", sa.Float, nullable=False),
        sa.Column("max", sa.Float, nullable=False),
        sa.Column("last", sa.Float, nullable=False),
        sa.Column("sketch", sa.LargeBinary, nullable=True),
    ]


def upgrade() -> None:
    op.create_table(
        "telemetry_cursors",
        sa.Column("device_id", sa.String(64), primary_key=True),
        sa.Column("acked_through_seq", sa.BigInteger, nullable=False),
        sa.Column("batches_stored", sa.BigInteger, nullable=False),
        sa.Column("windows_stored", sa.BigInteger, nullable=False),
        sa.Column("dropped_batches_total", sa.BigInteger, nullable=False),
        sa.Column("dropped_windows_total", sa.BigInteger, nullable=False),
        sa.Column("last_batch_at", UTCDateTime, nullable=True),
    )
    op.create_table(
        "telemetry_windows",
        sa.Column("device_id", sa.String(64), primary_key=True),
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("idx", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("tags", sa.Text, nullable=False),
        sa.Column("start_s", sa.BigInteger, nullable=False),
        *_window_stats(),
    )
    op.create_index(
        "ix_telemetry_windows_device_name_start",
        "telemetry_windows",
        ["device_id", "name", "start_s"],
    )
    op.create_index("ix_telemetry_windows_start", "telemetry_windows", ["start_s"])
    op.create_table(
        "telemetry_rollups",
        sa.Column("device_id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("tags_key", sa.String(32), primary_key=True),
        sa.Column("start_s", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("tags", sa.Text, nullable=False),
        *_window_stats(),
    )
    op.create_index("ix_telemetry_rollups_start", "telemetry_rollups", ["start_s"])
    op.create_table(
        "telemetry_policies",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("document", sa.JSON, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("updated_by", sa.String(128), nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "telemetry_detectors",
        sa.Column("device_id", sa.String(64), primary_key=True),
        sa.Column("kpi", sa.String(64), primary_key=True),
        sa.Column("state", sa.JSON, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "alerts",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("kpi", sa.String(64), nullable=False),
        sa.Column("metrics", sa.JSON, nullable=False),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("opened_at", UTCDateTime, nullable=False),
        sa.Column("open_reason", sa.Text, nullable=False),
        sa.Column("value", sa.Float, nullable=True),
        sa.Column("score", sa.Float, nullable=True),
        sa.Column("closed_at", UTCDateTime, nullable=True),
        sa.Column("close_reason", sa.Text, nullable=True),
    )
    op.create_index("ix_alerts_device_status", "alerts", ["device_id", "status"])
    op.create_index("ix_alerts_status_opened_at", "alerts", ["status", "opened_at"])


def downgrade() -> None:
    op.drop_table("alerts")
    op.drop_table("telemetry_detectors")
    op.drop_table("telemetry_policies")
    op.drop_table("telemetry_rollups")
    op.drop_table("telemetry_windows")
    op.drop_table("telemetry_cursors")
