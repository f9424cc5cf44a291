"""Policies as code and four-eyes approval: the stored Policy documents, and the changes
waiting for a second operator (docs/operator-guide.md, "Governance").

Revision ID: 0013_policies
Revises: 0012_attestation
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

from edgefleet.store.tables import UTCDateTime

revision = "0013_policies"
down_revision = "0012_attestation"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "policies",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("document", sa.JSON, nullable=False),
        sa.Column("updated_by", sa.String(128), nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "pending_changes",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("requested_by", sa.String(128), nullable=False),
        sa.Column("requested_at", UTCDateTime, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("decided_by", sa.String(128), nullable=True),
        sa.Column("decided_at", UTCDateTime, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("pending_changes")
    op.drop_table("policies")
