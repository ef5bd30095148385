"""SMART on FHIR: registered apps, authorization codes, access/refresh tokens (hashes only)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "oauth_client",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("redirect_uris", sa.String(length=4000), nullable=False),
        sa.Column("confidential", sa.Boolean(), nullable=False),
        sa.Column("secret_hash", sa.LargeBinary(length=32), nullable=True),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint("id", name="uq_oauth_client_id"),
    )
    op.create_table(
        "oauth_code",
        sa.Column("code_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.String(length=32), nullable=False),
        sa.Column("redirect_uri", sa.String(length=2000), nullable=False),
        sa.Column("challenge", sa.String(length=128), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.Column("granted", sa.BigInteger(), nullable=False),
        sa.Column("expires", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["client_id"], ["oauth_client.id"], name="fk_oauth_code_client_id_oauth_client", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["account_id"], ["account.id"], name="fk_oauth_code_account_id_account", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("code_hash", name="uq_oauth_code_code_hash"),
    )
    op.create_table(
        "oauth_token",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("access_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("refresh_hash", sa.LargeBinary(length=32), nullable=True),
        sa.Column("family", sa.String(length=32), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=True),
        sa.Column("account_id", sa.String(length=32), nullable=True),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.Column("granted", sa.BigInteger(), nullable=False),
        sa.Column("issued", sa.BigInteger(), nullable=False),
        sa.Column("access_expires", sa.BigInteger(), nullable=True),
        sa.Column("refresh_expires", sa.BigInteger(), nullable=True),
        sa.Column("refresh_used", sa.Boolean(), nullable=False),
        sa.Column("revoked", sa.BigInteger(), nullable=True),
        sa.Column("last_used", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["client_id"], ["oauth_client.id"], name="fk_oauth_token_client_id_oauth_client", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["account_id"], ["account.id"], name="fk_oauth_token_account_id_account", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("id", name="uq_oauth_token_id"),
        sa.UniqueConstraint("access_hash", name="uq_oauth_token_access_hash"),
        sa.UniqueConstraint("refresh_hash", name="uq_oauth_token_refresh_hash"),
    )
    op.create_index("ix_oauth_token_family", "oauth_token", ["family"])
    op.create_index("ix_oauth_token_account_id_client_id", "oauth_token", ["account_id", "client_id"])


def downgrade() -> None:
    op.drop_table("oauth_token")
    op.drop_table("oauth_code")
    op.drop_table("oauth_client")
