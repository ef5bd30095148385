"""Migration 0012 (L7, M2): existing community members get a keyed account token in place of the
clear account id, and a running suspension is carried into the per-account table."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Engine, create_engine, inspect, text

from medvault.community import members
from medvault.store import migrate
from tests.conftest import PG_BASE, pg_skip_reason

ACCOUNT = "0123456789abcdef0123456789abcdef"
UNTIL = datetime(2031, 1, 1, tzinfo=UTC)


@pytest.fixture
def blank_engine(backend: str, tmp_path: Any) -> Iterator[Engine]:
    """An empty database on the parametrised backend (not initialised: we migrate it by hand)."""
    if backend == "sqlite":
        engine = create_engine(f"sqlite:///{tmp_path / 'old.db'}")
        yield engine
        engine.dispose()
        return
    reason = pg_skip_reason()
    if reason:
        pytest.skip(reason)
    name = f"mvtest_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_BASE, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{name}"'))
    engine = create_engine(f"{PG_BASE}?options=-csearch_path%3D{name}")
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{name}" CASCADE'))
        admin.dispose()


def _upgrade(engine: Engine, target: str, keys_path: Any) -> None:
    cfg = migrate._config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        cfg.attributes["keys_path"] = keys_path
        command.upgrade(cfg, target)


def test_0012_turns_account_ids_into_keyed_tokens_and_keeps_suspensions(blank_engine: Engine, vault_env: Any) -> None:
    keys = vault_env.settings.keys_path
    _upgrade(blank_engine, "0011", keys)
    micros = int(UNTIL.timestamp() * 1_000_000)
    with blank_engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO community_member (id, account_id, joined, key_owner, suspended_until) "
                "VALUES ('aa11', :acc, 0, :ko, :until), ('bb22', 'other', 0, :ko2, NULL)"
            ),
            {"acc": ACCOUNT, "ko": b"k" * 16, "ko2": b"j" * 16, "until": micros},
        )
    _upgrade(blank_engine, "head", keys)
    columns = {c["name"] for c in inspect(blank_engine).get_columns("community_member")}
    assert "account_id" not in columns
    with blank_engine.connect() as conn:
        rows = dict(conn.execute(text("SELECT id, account_token FROM community_member")).all())
        kept = conn.execute(text("SELECT account_token, until FROM community_hold")).all()
    expected = members.account_token(vault_env.crypto, ACCOUNT)
    assert bytes(rows["aa11"]) == expected
    assert bytes(rows["bb22"]) == members.account_token(vault_env.crypto, "other")
    assert [(bytes(t), u) for t, u in kept] == [(expected, micros)]


def test_0012_refuses_to_convert_members_without_the_keys(blank_engine: Engine) -> None:
    _upgrade(blank_engine, "0011", None)
    with blank_engine.begin() as conn:
        conn.execute(
            text("INSERT INTO community_member (id, account_id, joined, key_owner) VALUES ('aa11', :acc, 0, :ko)"),
            {"acc": ACCOUNT, "ko": b"k" * 16},
        )
    with pytest.raises(RuntimeError, match="key directory"):
        _upgrade(blank_engine, "head", None)


def test_the_membership_row_holds_no_account_id(vault_env: Any) -> None:
    from tests.community.support import new_member, raw_bytes

    actor, member = new_member(vault_env)
    assert actor.account_id.encode() not in raw_bytes(vault_env)
    from medvault.db import unit_of_work

    with unit_of_work(vault_env.factory) as session:
        found = members.by_account(session=session, crypto=vault_env.crypto, account_id=actor.account_id)
    assert found == member
    assert found is not None
    assert found.account_id == actor.account_id
