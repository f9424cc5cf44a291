"""Rollouts: rollouts, their device records, device claims, timelines; release trains.

Revision ID: 0004_rollouts
Revises: 0003
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

from edgefleet.store.tables import UTCDateTime

revision = "0004_rollouts"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rollouts",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("release", sa.String(200), nullable=False),
        sa.Column("train", sa.String(64), nullable=True),
        sa.Column("manifest", sa.JSON, nullable=False),
        sa.Column("engine", sa.JSON, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Column("due_at", UTCDateTime, nullable=True),
        sa.Column("version", sa.Integer, nullable=False),
    )
    op.create_index("ix_rollouts_due_at", "rollouts", ["due_at"])
    op.create_index("ix_rollouts_name", "rollouts", ["name"])
    op.create_table(
        "rollout_devices",
        sa.Column("rollout_id", sa.String(32), primary_key=True),
        sa.Column("device_id", sa.String(64), primary_key=True),
        sa.Column("wave", sa.Integer, nullable=True),
        sa.Column("state", sa.String(24), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("assigned_at", UTCDateTime, nullable=True),
        sa.Column("retry_at", UTCDateTime, nullable=True),
        sa.Column("previous_release", sa.String(200), nullable=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("assigned_release", sa.String(200), nullable=True),
        sa.Column("assigned_serial", sa.Integer, nullable=True),
        sa.Column("assigned_generation", sa.Integer, nullable=True),
        sa.Column("first_assigned_at", UTCDateTime, nullable=True),
        sa.Column("installed_at", UTCDateTime, nullable=True),
    )
    op.create_index("ix_rollout_devices_device_id", "rollout_devices", ["device_id"])
    op.create_table(
        "rollout_claims",
        sa.Column("device_id", sa.String(64), primary_key=True),
        sa.Column("rollout_id", sa.String(32), nullable=False),
    )
    op.create_index("ix_rollout_claims_rollout_id", "rollout_claims", ["rollout_id"])
    op.create_table(
        "rollout_events",
        sa.Column("rollout_id", sa.String(32), primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("device_id", sa.String(64), nullable=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("details", sa.JSON, nullable=False),
    )
    op.create_table(
        "release_trains",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("manifest", sa.JSON, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("rollout_id", sa.String(32), nullable=True),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("release_trains")
    op.drop_table("rollout_events")
    op.drop_index("ix_rollout_claims_rollout_id", "rollout_claims")
    op.drop_table("rollout_claims")
    op.drop_index("ix_rollout_devices_device_id", "rollout_devices")
    op.drop_table("rollout_devices")
    op.drop_index("ix_rollouts_name", "rollouts")
    op.drop_index("ix_rollouts_due_at", "rollouts")
    op.drop_table("rollouts")
