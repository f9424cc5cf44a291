"""Workloads: declared workloads, the placement in force, node liveness and status, planned
migrations.

Revision ID: 0005_workloads
Revises: 0004_rollouts
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

from edgefleet.store.tables import UTCDateTime

revision = "0005_workloads"
down_revision = "0004_rollouts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workloads",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("document", sa.JSON, nullable=False),
        sa.Column("releases", sa.JSON, nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_by", sa.String(128), nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
    )
    op.create_table(
        "placement_state",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("assignments", sa.JSON, nullable=False),
        sa.Column("decisions", sa.JSON, nullable=False),
        sa.Column("computed_at", UTCDateTime, nullable=True),
        sa.Column("version", sa.Integer, nullable=False),
    )
    op.create_table(
        "node_health",
        sa.Column("device_id", sa.String(64), primary_key=True),
        sa.Column("liveness", sa.JSON, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("replicas", sa.JSON, nullable=False),
        sa.Column("checkpoints", sa.JSON, nullable=False),
        sa.Column("node", sa.JSON, nullable=False),
        sa.Column("samples", sa.JSON, nullable=False),
        sa.Column("drain", sa.JSON, nullable=False),
        sa.Column("reported_at", UTCDateTime, nullable=True),
    )
    op.create_table(
        "migrations",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("workload", sa.String(64), nullable=False),
        sa.Column("replica", sa.Integer, nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("target", sa.String(64), nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("stateful", sa.Boolean, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("state_since", UTCDateTime, nullable=True),
        sa.Column("source_generation", sa.Integer, nullable=False),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("weight_pct", sa.Integer, nullable=False),
        sa.Column("checkpoint_sha256", sa.String(64), nullable=True),
        sa.Column("checkpoint_size_bytes", sa.BigInteger, nullable=True),
        sa.Column("steps", sa.JSON, nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
    )
    op.create_index("ix_migrations_state", "migrations", ["state"])
    op.create_index("ix_migrations_workload", "migrations", ["workload"])


def downgrade() -> None:
    op.drop_index("ix_migrations_workload", "migrations")
    op.drop_index("ix_migrations_state", "migrations")
    for table in ("migrations", "node_health", "placement_state", "workloads"):
        op.drop_table(table)
