"""Community profiles, posts and replies with their revisions, and the distinct-reads table of the
scraping guard

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "community_profile",
        sa.Column("member_id", sa.String(length=32), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.Column("picture", sa.LargeBinary(), nullable=True),
        sa.Column("hidden", sa.Boolean(), nullable=False),
        sa.Column("updated", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint("member_id", name="uq_community_profile_member_id"),
    )
    op.create_table(
        "community_post",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("author_id", sa.String(length=32), nullable=False),
        sa.Column("thread_id", sa.String(length=32), nullable=True),
        sa.Column("quote_id", sa.String(length=32), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("audience", sa.String(length=16), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.Column("updated", sa.BigInteger(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("hidden", sa.Boolean(), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.UniqueConstraint("id", name="uq_community_post_id"),
    )
    op.create_index("ix_community_post_thread_id_created", "community_post", ["thread_id", "created"])
    op.create_index("ix_community_post_author_id", "community_post", ["author_id"])
    op.create_index("ix_community_post_audience_created", "community_post", ["audience", "created"])
    op.create_table(
        "community_revision",
        sa.Column("post_id", sa.String(length=32), nullable=False),
        sa.Column("number", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.UniqueConstraint("post_id", "number", name="uq_community_revision_post_id_number"),
    )
    op.create_table(
        "community_seen",
        sa.Column("subject", sa.LargeBinary(length=16), nullable=False),
        sa.Column("hour", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("item", sa.LargeBinary(length=16), nullable=False),
        sa.UniqueConstraint("subject", "hour", "item", name="uq_community_seen_subject_hour_item"),
    )


def downgrade() -> None:
    op.drop_table("community_seen")
    op.drop_table("community_revision")
    op.drop_index("ix_community_post_audience_created", table_name="community_post")
    op.drop_index("ix_community_post_author_id", table_name="community_post")
    op.drop_index("ix_community_post_thread_id_created", table_name="community_post")
    op.drop_table("community_post")
    op.drop_table("community_profile")
