"""Attestation keys certified by credential activation: whether the registered key is
certified, the name of the endorsement key (the TPM) it was certified under, what its EK
certificate showed, the outstanding credential, and why a key was refused.

Revision ID: 0018_ak_credential
Revises: 0017_training
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0018_ak_credential"
down_revision = "0017_training"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("device_attestations") as batch:
        batch.add_column(sa.Column("ak_certified", sa.Boolean, nullable=False,
                                   server_default=sa.false()))  # fmt: skip
        batch.add_column(sa.Column("ek_name", sa.String(132), nullable=True))
        batch.add_column(sa.Column("ek_certificate", sa.Text, nullable=False, server_default=""))
        batch.add_column(sa.Column("credential", sa.JSON, nullable=True))
        batch.add_column(sa.Column("credential_problem", sa.Text, nullable=True))
    with op.batch_alter_table("device_attestations") as batch:
        batch.alter_column("ak_certified", server_default=None)
        batch.alter_column("ek_certificate", server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("device_attestations") as batch:
        for column in ("credential_problem", "credential", "ek_certificate", "ek_name",
                       "ak_certified"):  # fmt: skip
            batch.drop_column(column)
