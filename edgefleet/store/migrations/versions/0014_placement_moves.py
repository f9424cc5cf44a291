"""Placement move history: every replica move (first placement, failover, rebalance, a
migration's commit), the newest few hundred per workload (docs/workloads.md).

Revision ID: 0014_placement_moves
Revises: 0013_policies
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

from edgefleet.store.tables import UTCDateTime

revision = "0014_placement_moves"
down_revision = "0013_policies"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "placement_moves",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("workload", sa.String(64), nullable=False),
        sa.Column("replica", sa.Integer, nullable=False),
        sa.Column("from_node_id", sa.String(64), nullable=True),
        sa.Column("to_node_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_placement_moves_workload_id", "placement_moves", ["workload", "id"])


def downgrade() -> None:
    op.drop_index("ix_placement_moves_workload_id", table_name="placement_moves")
    op.drop_table("placement_moves")
