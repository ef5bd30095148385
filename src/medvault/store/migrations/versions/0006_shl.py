"""SMART Health Links: links (manifest id as a hash only) and short-lived file locations

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "shl_link",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("manifest_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("owner", sa.LargeBinary(length=16), nullable=False),
        sa.Column("purpose", sa.String(length=16), nullable=False),
        sa.Column("flags", sa.String(length=8), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.Column("expires", sa.BigInteger(), nullable=True),
        sa.Column("passcode_hash", sa.String(length=256), nullable=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("budget", sa.Integer(), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary(), nullable=True),
        sa.Column("content_type", sa.String(length=64), nullable=False),
        sa.Column("file_jwe", sa.LargeBinary(), nullable=True),
        sa.Column("file_updated", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint("id", name="uq_shl_link_id"),
        sa.UniqueConstraint("manifest_hash", name="uq_shl_link_manifest_hash"),
    )
    op.create_index("ix_shl_link_owner", "shl_link", ["owner"])
    op.create_table(
        "shl_location",
        sa.Column("token_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("link_id", sa.BigInteger(), nullable=False),
        sa.Column("expires", sa.BigInteger(), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["link_id"], ["shl_link.id"], name="fk_shl_location_link_id_shl_link", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("token_hash", name="uq_shl_location_token_hash"),
    )
    op.create_index("ix_shl_location_link_id", "shl_location", ["link_id"])
    op.create_index("ix_shl_location_expires", "shl_location", ["expires"])


def downgrade() -> None:
    op.drop_table("shl_location")
    op.drop_table("shl_link")
