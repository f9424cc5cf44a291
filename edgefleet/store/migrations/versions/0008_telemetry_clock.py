"""Telemetry clock: each device's clock skew as its uploads showed it, and the windows the
control plane moved onto its own clock (docs/telemetry.md, "Device clocks").

Revision ID: 0008_telemetry_clock
Revises: 0007_device_names
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_telemetry_clock"
down_revision = "0007_device_names"
branch_labels = None
depends_on = None

COUNTERS = ("shifted_batches", "shifted_windows", "last_shift_s", "largest_shift_s")


def upgrade() -> None:
    with op.batch_alter_table("telemetry_cursors") as batch:
        batch.add_column(sa.Column("clock_skew_s", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("newest_window_end_s", sa.BigInteger, nullable=True))
        for name in COUNTERS:
            batch.add_column(sa.Column(name, sa.BigInteger, nullable=False, server_default="0"))
        batch.add_column(sa.Column("last_shift_reason", sa.Text, nullable=True))
    # Existing rows got zeros; new rows always carry their values.
    with op.batch_alter_table("telemetry_cursors") as batch:
        for name in COUNTERS:
            batch.alter_column(name, server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("telemetry_cursors") as batch:
        for name in (
            "last_shift_reason",
            *reversed(COUNTERS),
            "newest_window_end_s",
            "clock_skew_s",
        ):
            batch.drop_column(name)
