"""Stored rehearsals: lab reports uploaded with `edgefleet lab rehearse --save`, under the
rollout's name (docs/simulator.md).

Revision ID: 0016_rehearsals
Revises: 0015_custom_roles
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

from edgefleet.store.tables import UTCDateTime

revision = "0016_rehearsals"
down_revision = "0015_custom_roles"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rehearsals",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("rollout", sa.String(128), nullable=False),
        sa.Column("release", sa.String(200), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("report", sa.JSON, nullable=False),
        sa.Column("size_bytes", sa.Integer, nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_rehearsals_rollout_created", "rehearsals", ["rollout", "created_at"])
    op.create_index("ix_rehearsals_created", "rehearsals", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_rehearsals_created", table_name="rehearsals")
    op.drop_index("ix_rehearsals_rollout_created", table_name="rehearsals")
    op.drop_table("rehearsals")
