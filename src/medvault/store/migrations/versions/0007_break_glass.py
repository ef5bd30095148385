"""Break-the-glass: emergency accesses, their privacy-officer reviews, patient notifications

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "break_glass_access",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("patient_link", sa.LargeBinary(length=16), nullable=False),
        sa.Column("account_id", sa.String(length=32), nullable=False),
        sa.Column("started", sa.BigInteger(), nullable=False),
        sa.Column("expires", sa.BigInteger(), nullable=False),
        sa.Column("data_key_id", sa.BigInteger(), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.UniqueConstraint("id", name="uq_break_glass_access_id"),
    )
    op.create_index(
        "ix_break_glass_access_patient_link_account_id", "break_glass_access", ["patient_link", "account_id"]
    )
    op.create_table(
        "break_glass_review",
        sa.Column("access_id", sa.String(length=32), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.Column("verdict", sa.String(length=16), nullable=True),
        sa.Column("reviewer", sa.String(length=32), nullable=True),
        sa.Column("reviewed", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["access_id"],
            ["break_glass_access.id"],
            name="fk_break_glass_review_access_id_break_glass_access",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("access_id", name="uq_break_glass_review_access_id"),
    )
    op.create_index("ix_break_glass_review_reviewed_created", "break_glass_review", ["reviewed", "created"])
    op.create_table(
        "notification",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("patient_link", sa.LargeBinary(length=16), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("ref", sa.String(length=32), nullable=False),
        sa.Column("seen", sa.Boolean(), nullable=False),
        sa.UniqueConstraint("id", name="uq_notification_id"),
    )
    op.create_index("ix_notification_patient_link_created", "notification", ["patient_link", "created"])


def downgrade() -> None:
    op.drop_table("notification")
    op.drop_table("break_glass_review")
    op.drop_table("break_glass_access")
