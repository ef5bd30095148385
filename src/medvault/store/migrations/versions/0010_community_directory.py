"""Community directory ("people near me"): opt-in entries holding only sealed postcodes, sealed
fine cells and the plain effective cell; and per-root-cell rows that serialise recomputation

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "community_dir_entry",
        sa.Column("member_id", sa.String(length=32), nullable=False),
        sa.Column("region", sa.String(length=16), nullable=False),
        sa.Column("cell", sa.String(length=16), nullable=True),
        sa.Column("placed", sa.BigInteger(), nullable=False),
        sa.Column("counts_from", sa.BigInteger(), nullable=False),
        sa.Column("fine_sealed", sa.LargeBinary(), nullable=False),
        sa.Column("locality_sealed", sa.LargeBinary(), nullable=False),
        sa.Column("name_sealed", sa.LargeBinary(), nullable=True),
        sa.ForeignKeyConstraint(
            ["member_id"],
            ["community_member.id"],
            name="fk_community_dir_entry_member_id_community_member",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("member_id", name="uq_community_dir_entry_member_id"),
    )
    op.create_index("ix_community_dir_entry_region", "community_dir_entry", ["region"])
    op.create_index("ix_community_dir_entry_cell", "community_dir_entry", ["cell"])
    op.create_table(
        "community_dir_region",
        sa.Column("region", sa.String(length=16), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("due", sa.BigInteger(), nullable=True),
        sa.UniqueConstraint("region", name="uq_community_dir_region_region"),
    )
    op.create_index("ix_community_dir_region_due", "community_dir_region", ["due"])


def downgrade() -> None:
    op.drop_table("community_dir_region")
    op.drop_table("community_dir_entry")
