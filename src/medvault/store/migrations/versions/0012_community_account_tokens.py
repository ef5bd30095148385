"""Community membership holds a keyed token of the account id instead of the id (a stolen copy no
longer links a handle to an account), and suspensions are kept per account token so that leaving and
rejoining does not lift them

Existing rows are converted here, which needs the store's index key: `migrate.upgrade` passes the
key directory in the Alembic config attributes ("keys_path").

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import context, op

from medvault.crypto.indexes import Indexer
from medvault.crypto.keys import KeyRing

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def _tokens_for(rows: list[tuple[str, str]]) -> dict[str, bytes]:
    """member id -> keyed token of its account id, exactly as `community.members.account_token`."""

    keys_path = context.config.attributes.get("keys_path")
    if keys_path is None:
        raise RuntimeError("migration 0012 converts community members and needs the key directory (keys_path)")
    key = KeyRing(Path(keys_path)).index_key("search-token")
    # Only the search-token key is used by `search_token`; the others are never touched here.
    indexer = Indexer(pseudonym_key=key, handle_key=key, token_key=key, blind_key=key, blind_bits=1)
    return {
        member_id: indexer.search_token(b"community-account", "CommunityMember", "account", account_id)
        for member_id, account_id in rows
    }


def upgrade() -> None:
    op.create_table(
        "community_hold",
        sa.Column("account_token", sa.LargeBinary(length=16), nullable=False),
        sa.Column("until", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint("account_token", name="uq_community_hold_account_token"),
    )
    op.add_column("community_member", sa.Column("account_token", sa.LargeBinary(length=16), nullable=True))
    bind = op.get_bind()
    member = sa.table(
        "community_member",
        sa.column("id", sa.String),
        sa.column("account_id", sa.String),
        sa.column("account_token", sa.LargeBinary),
        sa.column("suspended_until", sa.BigInteger),
    )
    suspension = sa.table("community_hold", sa.column("account_token"), sa.column("until"))
    rows = bind.execute(sa.select(member.c.id, member.c.account_id, member.c.suspended_until)).all()
    if rows:
        tokens = _tokens_for([(r[0], r[1]) for r in rows])
        for member_id, _account_id, until in rows:
            bind.execute(member.update().where(member.c.id == member_id).values(account_token=tokens[member_id]))
            if until is not None:
                bind.execute(suspension.insert().values(account_token=tokens[member_id], until=until))
    with op.batch_alter_table("community_member") as batch:
        batch.drop_constraint("uq_community_member_account_id", type_="unique")
        batch.drop_column("account_id")
        batch.alter_column("account_token", existing_type=sa.LargeBinary(length=16), nullable=False)
        batch.create_unique_constraint("uq_community_member_account_token", ["account_token"])


def downgrade() -> None:
    # The account ids cannot be recovered from their keyed tokens: a downgrade would have to drop
    # every membership. Refuse rather than lose the community silently.
    raise RuntimeError("0012 cannot be downgraded: account ids are no longer stored")
