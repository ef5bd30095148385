"""Shared helpers of the community tests: members made straight through the services."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from medvault.auth.accounts import Actor
from medvault.community import members
from medvault.db import unit_of_work

NOW = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)


def new_member(env: Any, role: str = "patient") -> tuple[Actor, members.Member]:
    actor = Actor(account_id=secrets.token_hex(16), role=role, patient_id=None)  # type: ignore[arg-type]
    with unit_of_work(env.factory) as session:
        member = members.join(session=session, actor=actor, now=NOW)
    return actor, member


def raw_bytes(env: Any) -> bytes:
    """Every stored value of every table, as bytes (the canary scan of the tests)."""
    from sqlalchemy import MetaData, select

    out = bytearray()
    meta = MetaData()
    meta.reflect(bind=env.engine)
    with env.engine.connect() as conn:
        for table in meta.sorted_tables:
            for row in conn.execute(select(table)):
                for value in row:
                    if isinstance(value, bytes | bytearray | memoryview):
                        out += bytes(value)
                    elif value is not None:
                        out += str(value).encode()
                    out += b"\x00"
    return bytes(out)
