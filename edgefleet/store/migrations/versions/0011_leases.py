"""Controller leases: which replica runs each background controller, with a fencing token.

Revision ID: 0011_leases
Revises: 0010_governance
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

from edgefleet.store.tables import UTCDateTime

revision = "0011_leases"
down_revision = "0010_governance"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "leases",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("token", sa.BigInteger, nullable=False),
        sa.Column("expires_at", UTCDateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("leases")
