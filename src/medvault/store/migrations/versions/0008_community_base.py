"""Community foundation: members, and the fixed-window rate counter shared by the community's limits

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "community_member",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.String(length=32), nullable=False),
        sa.Column("joined", sa.BigInteger(), nullable=False),
        sa.Column("key_owner", sa.LargeBinary(length=16), nullable=False),
        sa.Column("suspended_until", sa.BigInteger(), nullable=True),
        sa.UniqueConstraint("id", name="uq_community_member_id"),
        sa.UniqueConstraint("account_id", name="uq_community_member_account_id"),
    )
    op.create_table(
        "community_rate",
        sa.Column("bucket", sa.String(length=32), nullable=False),
        sa.Column("subject", sa.LargeBinary(length=16), nullable=False),
        sa.Column("window", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.UniqueConstraint("bucket", "subject", "window", name="uq_community_rate_bucket_subject_window"),
    )


def downgrade() -> None:
    op.drop_table("community_rate")
    op.drop_table("community_member")
