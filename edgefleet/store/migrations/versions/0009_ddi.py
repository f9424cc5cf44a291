"""hawkBit DDI: DDI targets (device, tenant, controller id, TargetToken hash), the tenants'
GatewayTokens, and the sha1/md5 of blobs that DDI clients check.

Revision ID: 0009_ddi
Revises: 0008_telemetry_clock
Create Date: 2026-12-09
"""

import sqlalchemy as sa
from alembic import op

from edgefleet.store.tables import UTCDateTime

revision = "0009_ddi"
down_revision = "0008_telemetry_clock"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ddi_targets",
        sa.Column("device_id", sa.String(64), primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("controller_id", sa.String(64), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=True, unique=True),
        sa.Column("gateway_token_id", sa.String(64), nullable=True),
        sa.Column("config_received_at", UTCDateTime, nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
    )
    op.create_index("uq_ddi_targets_controller", "ddi_targets", ["tenant", "controller_id"],
                    unique=True)  # fmt: skip
    op.create_table(
        "ddi_gateway_tokens",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("description", sa.String(256), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("auto_approve", sa.Boolean, nullable=False),
        sa.Column("revoked", sa.Boolean, nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "ddi_hashes",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("sha1", sa.String(40), nullable=False),
        sa.Column("md5", sa.String(32), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("ddi_hashes")
    op.drop_table("ddi_gateway_tokens")
    op.drop_table("ddi_targets")
