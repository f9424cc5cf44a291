"""Checkpoint archives: which device uploaded which state archive, for its quota.

Revision ID: 0006_checkpoint_archives
Revises: 0005_workloads
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

from edgefleet.store.tables import UTCDateTime

revision = "0006_checkpoint_archives"
down_revision = "0005_workloads"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "checkpoint_archives",
        sa.Column("device_id", sa.String(64), primary_key=True),
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("stored_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_checkpoint_archives_sha256", "checkpoint_archives", ["sha256"])
    op.create_index("ix_checkpoint_archives_stored_at", "checkpoint_archives", ["stored_at"])


def downgrade() -> None:
    op.drop_table("checkpoint_archives")
