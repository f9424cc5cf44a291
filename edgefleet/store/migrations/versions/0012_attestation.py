"""Attestation: each device's latest verdict on its measured software state, the TPM
attestation key it registered, and the nonce it was last challenged with.

Revision ID: 0012_attestation
Revises: 0011_leases
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

from edgefleet.store.tables import UTCDateTime

revision = "0012_attestation"
down_revision = "0011_leases"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "device_attestations",
        sa.Column("device_id", sa.String(64), primary_key=True),
        sa.Column("attestation_key_pem", sa.Text, nullable=True),
        sa.Column("nonce", sa.String(64), nullable=True),
        sa.Column("nonce_expires_at", UTCDateTime, nullable=True),
        sa.Column("status", sa.String(16), nullable=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("attested_at", UTCDateTime, nullable=True),
        sa.Column("tpm", sa.Boolean, nullable=False),
        sa.Column("pcrs", sa.JSON, nullable=False),
        sa.Column("measurement_digest", sa.String(64), nullable=True),
        sa.Column("measurement", sa.JSON, nullable=False),
        sa.Column("withhold_releases", sa.Boolean, nullable=False),
        sa.Column("withhold_workloads", sa.Boolean, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("device_attestations")
