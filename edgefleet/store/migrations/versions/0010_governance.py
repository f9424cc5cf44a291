"""Governance: API tokens bound to a device scope (a label selector), and changes waiting
for a second operator's approval (docs/operator-guide.md, "Governance").

Revision ID: 0010_governance
Revises: 0009_ddi
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0010_governance"
down_revision = "0009_ddi"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_tokens") as batch:
        batch.add_column(sa.Column("scope", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_tokens") as batch:
        batch.drop_column("scope")
