"""Shared helpers of the community tests: members and moderators made straight through the services,
the community's access-log entries, and a raw read of every stored value (the canary scan)."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import select

from medvault.audit import log as audit_log
from medvault.auth.accounts import Actor
from medvault.community import members
from medvault.community.members import Member
from medvault.db import unit_of_work
from medvault.store.models import AuditEntry

NOW = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)


def new_member(env: Any, role: str = "patient", *, now: datetime = NOW) -> tuple[Actor, Member]:
    actor = Actor(account_id=secrets.token_hex(16), role=role, mfa_enrolled=role == "moderator")  # type: ignore[arg-type]
    with unit_of_work(env.factory) as session:
        member = members.join(session=session, crypto=env.crypto, actor=actor, now=now)
    return actor, member


def fresh(env: Any, member: Member) -> Member:
    """The member as stored now (suspension changes)."""
    with unit_of_work(env.factory) as session:
        return members.by_id(session=session, member_id=member.id)


def community_audit(env: Any) -> list[dict[str, Any]]:
    """Every access-log entry about no patient (the community's), opened, oldest first."""
    with unit_of_work(env.factory) as session:
        rows = session.execute(
            select(AuditEntry).where(AuditEntry.patient_token == audit_log.NO_PATIENT).order_by(AuditEntry.seq)
        ).scalars()
        out = []
        for row in rows:
            key = env.crypto.data_key_by_id(session, row.data_key_id)
            event = orjson.loads(env.crypto.sealer.open(key, row.blob, audit_log._AAD + str(row.seq).encode()))
            out.append({"seq": row.seq, **event})
    return out


def codes(events: list[dict[str, Any]]) -> list[str]:
    return [
        e["subtype"][0]["code"]
        for e in events
        if e.get("subtype") and e["subtype"][0].get("system") == "urn:medvault:community"
    ]


def raw_bytes(env: Any) -> bytes:
    """Every stored value of every table, as bytes (the canary scan of the tests)."""
    from sqlalchemy import MetaData

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
