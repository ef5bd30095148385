"""Your data (issue 5 item 7): download everything you wrote and your profile, or delete your
community account.

Each slice of the community registers a *part* (`register_part`): how to export a member's share
of it and how to delete it. Every slice is registered here, at the bottom of the imports' graph
(profiles, posts, messages, reports; the directory too). Deleting runs
every part's delete, then destroys the member's data key (crypto-shred: anything sealed under it
that survives somewhere, a backup or a dead database row, is unreadable for good), then removes the
membership, with one audit entry, all in the caller's transaction: it happens whole or not at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import delete
from sqlalchemy.orm import Session

from medvault.audit import log as audit_log
from medvault.auth.accounts import Actor
from medvault.community import directory, members, messages, moderation, posts, profiles
from medvault.community.errors import Forbidden
from medvault.store.crypto_context import CryptoContext
from medvault.store.models import CommunityMember

__all__ = ["Part", "delete_account", "export_all", "parts", "register_part"]


class Exporter(Protocol):
    def __call__(self, *, session: Session, crypto: CryptoContext, member: members.Member, now: datetime) -> Any: ...


class Deleter(Protocol):
    def __call__(self, *, session: Session, crypto: CryptoContext, member: members.Member, now: datetime) -> Any: ...


class _Timeless(Protocol):
    def __call__(self, *, session: Session, crypto: CryptoContext, member: members.Member) -> Any: ...


def _timeless(fn: _Timeless) -> Exporter:
    """A part's function that needs no clock, called like the others."""

    def call(*, session: Session, crypto: CryptoContext, member: members.Member, now: datetime) -> Any:
        del now
        return fn(session=session, crypto=crypto, member=member)

    return call


@dataclass(frozen=True)
class Part:
    name: str
    export: Exporter
    delete: Deleter


_PARTS: dict[str, Part] = {}


def register_part(name: str, *, export: Exporter, delete: Deleter) -> None:
    """Add (or replace, by name) a slice's export and delete. Names are the export's JSON keys."""
    if not name or not name.replace("-", "").isalnum():
        raise ValueError("a part is named with letters, digits and hyphens")
    _PARTS[name] = Part(name, export, delete)


def parts() -> list[Part]:
    return list(_PARTS.values())


register_part("profile", export=_timeless(profiles.export), delete=_timeless(profiles.delete_profile))
register_part("posts", export=_timeless(posts.export), delete=_timeless(posts.delete_all_of))
# Messages before moderation: a leaving member's reports are withdrawn after their messages go.
register_part("messages", export=messages.export_member, delete=messages.delete_member)
register_part("reports", export=_timeless(moderation.export_member), delete=_timeless(moderation.delete_member))
register_part("directory", export=_timeless(directory.export_member), delete=directory.delete_member)


def _audit(
    session: Session, crypto: CryptoContext, actor: Actor, action: str, member: members.Member, now: datetime
) -> None:
    # Ids and an action code only: never content.
    event = {
        "resourceType": "AuditEvent",
        "type": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110110"},
        "subtype": [{"system": "urn:medvault:community", "code": f"community-{action}"}],
        "action": "D" if action == "account-deleted" else "R",
        "recorded": now.isoformat().replace("+00:00", "Z"),
        "outcome": "0",
        "agent": [
            {
                "who": {"identifier": {"system": "urn:medvault:account", "value": actor.account_id}},
                "requestor": True,
                "type": {"text": actor.role},
            }
        ],
        "entity": [{"what": {"identifier": {"system": "urn:medvault:community-member", "value": member.id}}}],
        "source": {"observer": {"display": "medvault"}, "type": [{"code": "4"}]},
    }
    audit_log.append(session=session, crypto=crypto, event=event, patient_id=None, now=now)


def export_all(
    *, session: Session, crypto: CryptoContext, actor: Actor, member: members.Member, now: datetime
) -> dict[str, Any]:
    """Everything of the member's in the community, as JSON-ready data (audited)."""
    out: dict[str, Any] = {"member": member.id, "joined": member.joined.isoformat(), "exported": now.isoformat()}
    for part in _PARTS.values():
        out[part.name] = part.export(session=session, crypto=crypto, member=member, now=now)
    _audit(session, crypto, actor, "export", member, now)
    return out


def delete_account(
    *,
    session: Session,
    crypto: CryptoContext,
    actor: Actor,
    member: members.Member,
    now: datetime,
) -> None:
    """Remove the member's content (every part), destroy their data key, remove the membership, and
    audit it."""
    if member.account_token != members.account_token(crypto, actor.account_id):
        raise Forbidden("a member deletes only their own community account")
    for part in _PARTS.values():
        part.delete(session=session, crypto=crypto, member=member, now=now)
    crypto.destroy_data_key(session, purpose="identity", owner=member.key_owner)
    session.execute(delete(CommunityMember).where(CommunityMember.id == member.id))
    _audit(session, crypto, actor, "account-deleted", member, now)
