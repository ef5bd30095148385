"""Community membership: who may take part, and the public handle they are known by.

Patients join (the community is theirs); moderators are members too, so that they can read what
members read. Other roles (clinicians, researchers, the privacy officer, the operator) are not
members: to the community they are visitors, or the operator. A member is known to others only by
a random handle, never by their account id or record id.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from medvault.auth.accounts import Actor
from medvault.community.audience import Viewer
from medvault.community.errors import Forbidden, NotFound
from medvault.store.models import CommunityMember

__all__ = ["MEMBER_ROLES", "Member", "by_account", "by_id", "join", "viewer_of"]

MEMBER_ROLES = frozenset({"patient", "moderator"})


@dataclass(frozen=True)
class Member:
    id: str
    account_id: str
    joined: datetime
    key_owner: bytes
    suspended_until: datetime | None

    def suspended(self, now: datetime) -> bool:
        return self.suspended_until is not None and self.suspended_until > now


def _member(row: CommunityMember) -> Member:
    return Member(
        id=row.id,
        account_id=row.account_id,
        joined=row.joined,
        key_owner=row.key_owner,
        suspended_until=row.suspended_until,
    )


def by_account(*, session: Session, account_id: str) -> Member | None:
    row = session.execute(select(CommunityMember).where(CommunityMember.account_id == account_id)).scalar_one_or_none()
    return _member(row) if row is not None else None


def by_id(*, session: Session, member_id: str) -> Member:
    """The member with this public handle, or NotFound (also for malformed handles)."""
    if not (0 < len(member_id) <= 32) or not member_id.isalnum():
        raise NotFound("no such member")
    row = session.get(CommunityMember, member_id)
    if row is None:
        raise NotFound("no such member")
    return _member(row)


def join(*, session: Session, actor: Actor, now: datetime) -> Member:
    """Make `actor` a member (idempotent: joining twice returns the same membership)."""
    if actor.role not in MEMBER_ROLES:
        raise Forbidden("only patients and moderators take part in the community")
    existing = by_account(session=session, account_id=actor.account_id)
    if existing is not None:
        return existing
    row = CommunityMember(
        id=secrets.token_hex(10),
        account_id=actor.account_id,
        joined=now,
        key_owner=secrets.token_bytes(16),
        suspended_until=None,
    )
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:  # a concurrent join of the same account won: use theirs
        found = by_account(session=session, account_id=actor.account_id)
        assert found is not None
        return found
    return _member(row)


def viewer_of(*, actor: Actor | None, member: Member | None, author_id: str | None) -> Viewer:
    """How the community sees this caller for one item by `author_id` (see audience.Viewer).
    `actor` None: signed out (a visitor). The operator (admin) is never more than the operator."""
    if actor is None:
        return "visitor"
    if actor.role == "admin":
        return "operator"
    if member is None:
        return "visitor"
    if author_id is not None and member.id == author_id:
        return "author"
    if actor.role == "moderator":
        return "moderator"
    return "member"
