"""Replay protection for bus messages by sequence number: per device, the highest message
sequence number whose memory was let go; anything at or below it is refused, whatever its
timestamp, so a message the broker held for a control plane that was down is still taken.

Revision ID: 0020_message_floors
Revises: 0019_presence
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0020_message_floors"
down_revision = "0019_presence"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "message_floors",
        sa.Column("device_id", sa.String(64), primary_key=True),
        sa.Column("floor", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("message_floors")
