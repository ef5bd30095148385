"""access log (Merkle-logged AuditEvents)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint("id", name="uq_audit_head_id"),
    )
    op.execute("INSERT INTO audit_head (id, size) VALUES (1, 0)")
    op.create_table(
        "audit_entry",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("recorded", sa.BigInteger(), nullable=False),
        sa.Column("data_key_id", sa.BigInteger(), nullable=False),
        sa.Column("blob", sa.LargeBinary(), nullable=False),
        sa.Column("patient_token", sa.LargeBinary(length=12), nullable=False),
        sa.UniqueConstraint("seq", name="uq_audit_entry_seq"),
    )
    op.create_index("ix_audit_entry_patient_token_seq", "audit_entry", ["patient_token", "seq"])


def downgrade() -> None:
    op.drop_table("audit_entry")
    op.drop_table("audit_head")
