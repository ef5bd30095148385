"""Community membership: who may take part, and the public handle they are known by.

Patients join (the community is theirs); moderators are members too, so that they can read what
members read. Other roles (clinicians, researchers, the privacy officer, the operator) are not
members: to the community they are visitors, or the operator. A member is known to others only by
a random handle, never by their account id or record id.

The membership row holds a keyed token of the account id (`account_token`), never the id itself: a
stolen copy cannot link a handle (and its posts) to an account and through it to a record. A
suspension is kept per account token too (`CommunitySuspension`), so that leaving and rejoining
does not lift it.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from medvault.auth.accounts import Actor
from medvault.community.audience import Viewer
from medvault.community.errors import Forbidden, NotFound
from medvault.store.models import CommunityMember, CommunitySuspension

if TYPE_CHECKING:
    from medvault.store.crypto_context import CryptoContext

__all__ = ["MEMBER_ROLES", "Member", "account_token", "by_account", "by_id", "join", "suspend", "viewer_of"]

MEMBER_ROLES = frozenset({"patient", "moderator"})


@dataclass(frozen=True)
class Member:
    id: str
    joined: datetime
    key_owner: bytes
    suspended_until: datetime | None
    account_token: bytes = field(repr=False)
    # Not stored (the table holds only `account_token`): known when the member was looked up by
    # their account (`by_account`, `join`), i.e. for the signed-in caller; None from `by_id`.
    account_id: str | None = field(default=None, compare=False)

    def suspended(self, now: datetime) -> bool:
        return self.suspended_until is not None and self.suspended_until > now

    def account(self) -> str:
        """The account id of a member looked up by account (the caller); a bug otherwise."""
        if self.account_id is None:
            raise LookupError("this member was looked up by handle: their account is not known here")
        return self.account_id


def account_token(crypto: CryptoContext, account_id: str) -> bytes:
    """The keyed token of an account id that the membership and suspension rows hold."""
    return crypto.indexer.search_token(b"community-account", "CommunityMember", "account", account_id)


def _member(row: CommunityMember, account_id: str | None = None) -> Member:
    return Member(
        id=row.id,
        joined=row.joined,
        key_owner=row.key_owner,
        suspended_until=row.suspended_until,
        account_token=row.account_token,
        account_id=account_id,
    )


def by_account(*, session: Session, crypto: CryptoContext, account_id: str) -> Member | None:
    token = account_token(crypto, account_id)
    row = session.execute(select(CommunityMember).where(CommunityMember.account_token == token)).scalar_one_or_none()
    return _member(row, account_id) if row is not None else None


def by_id(*, session: Session, member_id: str) -> Member:
    """The member with this public handle, or NotFound (also for malformed handles)."""
    if not (0 < len(member_id) <= 32) or not member_id.isalnum():
        raise NotFound("no such member")
    row = session.get(CommunityMember, member_id)
    if row is None:
        raise NotFound("no such member")
    return _member(row)


def join(*, session: Session, crypto: CryptoContext, actor: Actor, now: datetime) -> Member:
    """Make `actor` a member (idempotent: joining twice returns the same membership). A suspension
    of the account that is still running applies to the new membership too."""
    if actor.role not in MEMBER_ROLES:
        raise Forbidden("only patients and moderators take part in the community")
    existing = by_account(session=session, crypto=crypto, account_id=actor.account_id)
    if existing is not None:
        return existing
    token = account_token(crypto, actor.account_id)
    suspension = session.get(CommunitySuspension, token)
    until = suspension.until if suspension is not None and suspension.until > now else None
    if suspension is not None and until is None:
        session.delete(suspension)  # over: nothing left to carry
    row = CommunityMember(
        id=secrets.token_hex(10),
        account_token=token,
        joined=now,
        key_owner=secrets.token_bytes(16),
        suspended_until=until,
    )
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:  # a concurrent join of the same account won: use theirs
        found = by_account(session=session, crypto=crypto, account_id=actor.account_id)
        assert found is not None
        return found
    return _member(row, actor.account_id)


def suspend(*, session: Session, token: bytes, until: datetime) -> None:
    """Suspend the account behind `token` (a member's `account_token`) until `until`, or longer if
    it already is: on the membership and on the account, so that rejoining does not lift it."""
    member = session.execute(select(CommunityMember).where(CommunityMember.account_token == token)).scalar_one_or_none()
    if member is not None and (member.suspended_until is None or member.suspended_until < until):
        member.suspended_until = until
    kept = session.get(CommunitySuspension, token)
    if kept is None:
        session.add(CommunitySuspension(account_token=token, until=until))
    elif kept.until < until:
        kept.until = until
    session.flush()


def prune_suspensions(*, session: Session, now: datetime) -> int:
    """Forget suspensions that are over (a housekeeping job may call this)."""
    result = session.execute(delete(CommunitySuspension).where(CommunitySuspension.until <= now))
    return int(getattr(result, "rowcount", 0) or 0)


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
