"""Custom roles: the `kind: Role` documents admins applied, and API tokens' role column
wide enough for their names (docs/operator-guide.md, "Governance").

Revision ID: 0015_custom_roles
Revises: 0014_placement_moves
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

from edgefleet.store.tables import UTCDateTime

revision = "0015_custom_roles"
down_revision = "0014_placement_moves"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "roles",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("permissions", sa.JSON, nullable=False),
        sa.Column("description", sa.String(256), nullable=False),
        sa.Column("updated_by", sa.String(128), nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )
    with op.batch_alter_table("api_tokens") as batch:
        batch.alter_column("role", existing_type=sa.String(16), type_=sa.String(64),
                           existing_nullable=False)  # fmt: skip


def downgrade() -> None:
    with op.batch_alter_table("api_tokens") as batch:
        batch.alter_column("role", existing_type=sa.String(64), type_=sa.String(16),
                           existing_nullable=False)  # fmt: skip
    op.drop_table("roles")
