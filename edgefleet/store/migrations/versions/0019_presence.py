"""Presence on the MQTT channel: each device's last presence message taken (online when it
connected, offline from its Last Will), when, its sequence number, and the heartbeat
interval it is told while online and hosting nothing.

Revision ID: 0019_presence
Revises: 0018_ak_credential
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

from edgefleet.store.tables import UTCDateTime

revision = "0019_presence"
down_revision = "0018_ak_credential"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("presence", sa.String(8), nullable=True))
        batch.add_column(sa.Column("presence_at", UTCDateTime, nullable=True))
        batch.add_column(sa.Column("presence_seq", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("presence_interval_s", sa.Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        for column in ("presence_interval_s", "presence_seq", "presence_at", "presence"):
            batch.drop_column(column)
