"""breach detection: decoy patients, per-account hourly access rate, alerts

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "honeytoken",
        sa.Column("patient_link", sa.LargeBinary(length=16), nullable=False),
        sa.UniqueConstraint("patient_link", name="uq_honeytoken_patient_link"),
    )
    op.create_table(
        "access_rate",
        sa.Column("account_id", sa.String(length=32), nullable=False),
        sa.Column("hour", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("patient_token", sa.LargeBinary(length=12), nullable=False),
        sa.UniqueConstraint("account_id", "hour", "patient_token", name="uq_access_rate_account_id_hour_patient_token"),
    )
    op.create_table(
        "alert",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("raised", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.String(length=32), nullable=True),
        sa.Column("detail", sa.String(length=200), nullable=False),
        sa.Column("acknowledged", sa.Boolean(), nullable=False),
        sa.UniqueConstraint("id", name="uq_alert_id"),
    )
    op.create_index("ix_alert_acknowledged_raised", "alert", ["acknowledged", "raised"])
    op.create_index("ix_alert_account_id_kind", "alert", ["account_id", "kind"])


def downgrade() -> None:
    op.drop_table("alert")
    op.drop_table("access_rate")
    op.drop_table("honeytoken")
