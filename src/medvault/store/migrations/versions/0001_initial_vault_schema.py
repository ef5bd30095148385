"""initial vault schema

Revision ID: 0001
Revises:
Create Date: 2026-11-23

Keys are NOT NULL UNIQUE constraints (see store/models.py for why not PRIMARY KEY); resource types
are integer codes and timestamps integer microseconds (store/types.py).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "meta",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.String(length=256), nullable=False),
        sa.UniqueConstraint("key", name="uq_meta_key"),
    )
    op.create_table(
        "data_key",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("purpose", sa.String(length=16), nullable=False),
        sa.Column("owner", sa.LargeBinary(length=16), nullable=False),
        sa.Column("kek_id", sa.String(length=80), nullable=False),
        sa.Column("wrapped", sa.LargeBinary(), nullable=False),
        sa.UniqueConstraint("id", name="uq_data_key_id"),
        sa.UniqueConstraint("purpose", "owner", name="uq_data_key_purpose_owner"),
    )
    op.create_index("ix_data_key_kek_id", "data_key", ["kek_id"])
    op.create_table(
        "resource",
        sa.Column("rtype", sa.Integer(), nullable=False),
        sa.Column("rid", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("patient_link", sa.LargeBinary(length=16), nullable=True),
        sa.Column("last_updated", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint("rid", "rtype", name="uq_resource_rid_rtype"),
    )
    op.create_index("ix_resource_patient_link_rtype", "resource", ["patient_link", "rtype"])
    op.create_index("ix_resource_rtype_last_updated", "resource", ["rtype", "last_updated"])
    op.create_table(
        "resource_version",
        sa.Column("rtype", sa.Integer(), nullable=False),
        sa.Column("rid", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("data_key_id", sa.BigInteger(), nullable=False),
        sa.Column("blob", sa.LargeBinary(), nullable=True),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("method", sa.String(length=8), nullable=False),
        sa.Column("last_updated", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["data_key_id"], ["data_key.id"], name="fk_resource_version_data_key_id_data_key"),
        sa.UniqueConstraint("rtype", "rid", "version", name="uq_resource_version_rtype_rid_version"),
    )
    op.create_index("ix_resource_version_rtype_last_updated", "resource_version", ["rtype", "last_updated"])
    op.create_table(
        "search_token",
        sa.Column("token", sa.LargeBinary(length=12), nullable=False),
        sa.Column("rid", sa.String(length=64), nullable=False),
        sa.UniqueConstraint("token", "rid", name="uq_search_token_token_rid"),
    )
    op.create_table(
        "identity_version",
        sa.Column("handle", sa.LargeBinary(length=16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("data_key_id", sa.BigInteger(), nullable=False),
        sa.Column("blob", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["data_key_id"], ["data_key.id"], name="fk_identity_version_data_key_id_data_key"),
        sa.UniqueConstraint("handle", "version", name="uq_identity_version_handle_version"),
    )
    op.create_table(
        "identity_index",
        sa.Column("bucket", sa.Integer(), nullable=False),
        sa.Column("handle", sa.LargeBinary(length=16), nullable=False),
        sa.UniqueConstraint("bucket", "handle", name="uq_identity_index_bucket_handle"),
    )
    op.create_index("ix_identity_index_handle", "identity_index", ["handle"])


def downgrade() -> None:
    for table in (
        "identity_index",
        "identity_version",
        "search_token",
        "resource_version",
        "resource",
        "data_key",
        "meta",
    ):
        op.drop_table(table)
