"""Community messages and moderation: conversations sealed per conversation, their sides, blocks,
reports with sealed snapshots, the moderation history and notices to members

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "community_conversation",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("pair_token", sa.LargeBinary(length=16), nullable=False),
        sa.Column("key_owner", sa.LargeBinary(length=16), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.Column("last_seq", sa.Integer(), nullable=False),
        sa.UniqueConstraint("id", name="uq_community_conversation_id"),
        sa.UniqueConstraint("pair_token", name="uq_community_conversation_pair_token"),
    )
    op.create_table(
        "community_conversation_side",
        sa.Column("conversation_id", sa.String(length=32), nullable=False),
        sa.Column("member_token", sa.LargeBinary(length=16), nullable=False),
        sa.Column("peer_sealed", sa.LargeBinary(), nullable=False),
        sa.Column("read_upto", sa.Integer(), nullable=False),
        sa.Column("cleared_upto", sa.Integer(), nullable=False),
        sa.Column("muted", sa.Boolean(), nullable=False),
        sa.UniqueConstraint(
            "conversation_id", "member_token", name="uq_community_conversation_side_conversation_id_member_token"
        ),
    )
    op.create_index("ix_community_conversation_side_member_token", "community_conversation_side", ["member_token"])
    op.create_table(
        "community_message",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("conversation_id", sa.String(length=32), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("sender_token", sa.LargeBinary(length=16), nullable=False),
        sa.Column("sent", sa.BigInteger(), nullable=False),
        sa.Column("hidden", sa.Boolean(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.UniqueConstraint("id", name="uq_community_message_id"),
        sa.UniqueConstraint("conversation_id", "seq", name="uq_community_message_conversation_id_seq"),
    )
    op.create_table(
        "community_block",
        sa.Column("blocker_token", sa.LargeBinary(length=16), nullable=False),
        sa.Column("blocked_token", sa.LargeBinary(length=16), nullable=False),
        sa.Column("pair_sealed", sa.LargeBinary(), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint("blocker_token", "blocked_token", name="uq_community_block_blocker_token_blocked_token"),
    )
    op.create_index("ix_community_block_blocked_token", "community_block", ["blocked_token"])
    op.create_table(
        "community_report",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("content_id", sa.String(length=64), nullable=False),
        sa.Column("key_owner", sa.LargeBinary(length=16), nullable=False),
        sa.Column("reporter_token", sa.LargeBinary(length=16), nullable=False),
        sa.Column("author_token", sa.LargeBinary(length=16), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=True),
        sa.UniqueConstraint("id", name="uq_community_report_id"),
    )
    op.create_index("ix_community_report_state_created", "community_report", ["state", "created"])
    op.create_index("ix_community_report_author_token", "community_report", ["author_token"])
    op.create_table(
        "community_mod_action",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("report_id", sa.String(length=32), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("moderator_account", sa.String(length=32), nullable=False),
        sa.Column("days", sa.Integer(), nullable=True),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.Column("audit_seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.UniqueConstraint("id", name="uq_community_mod_action_id"),
    )
    op.create_index("ix_community_mod_action_created", "community_mod_action", ["created"])
    op.create_table(
        "community_notice",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("member_token", sa.LargeBinary(length=16), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.Column("seen", sa.Boolean(), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.UniqueConstraint("id", name="uq_community_notice_id"),
    )
    op.create_index("ix_community_notice_member_token_created", "community_notice", ["member_token", "created"])


def downgrade() -> None:
    op.drop_table("community_notice")
    op.drop_table("community_mod_action")
    op.drop_table("community_report")
    op.drop_table("community_block")
    op.drop_table("community_message")
    op.drop_table("community_conversation_side")
    op.drop_table("community_conversation")
