"""Model updates: artifacts, releases, and each device's release assignment and status.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

from edgefleet.store.tables import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("release_assignment", sa.JSON, nullable=True))
        batch.add_column(sa.Column("release_status", sa.JSON, nullable=False, server_default="{}"))
    with op.batch_alter_table("devices") as batch:
        batch.alter_column("release_status", server_default=None)
    op.create_table(
        "artifacts",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("version", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("file_name", sa.String(128), nullable=False),
        sa.Column("requirements", sa.JSON, nullable=False),
        sa.Column("facts", sa.JSON, nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "releases",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("version", sa.String(64), primary_key=True),
        sa.Column("artifacts", sa.JSON, nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("targets_version", sa.Integer, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("releases")
    op.drop_table("artifacts")
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("release_status")
        batch.drop_column("release_assignment")
