"""The community's entries in the access log: one shape for every slice.

An entry says which account did what (a fixed action code) to which community item (ids only),
when. Never content: no text, no postcode, no name. It is appended in the caller's transaction,
so a failed audit write fails the action."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from medvault.audit import log as audit_log
from medvault.store.crypto_context import CryptoContext

__all__ = ["record"]

SYSTEM = "urn:medvault:community"


def record(
    *,
    session: Session,
    crypto: CryptoContext,
    account_id: str,
    code: str,
    now: datetime,
    deletes: bool = False,
    entity: tuple[str, str] | None = None,
    action: str | None = None,
    entities: Sequence[tuple[str, str]] = (),
) -> int:
    """Append one AuditEvent (`code`, e.g. "community-directory-opt-in"); `entity` is
    (identifier system, value), e.g. ("urn:medvault:community-member", handle), and `entities` more
    of them. `action`: the AuditEvent action code (C, R, U or D); by default U, or D with `deletes`.
    Returns its seq."""
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest"},
        "subtype": [{"system": SYSTEM, "code": code}],
        "action": action or ("D" if deletes else "U"),
        "recorded": now.isoformat().replace("+00:00", "Z"),
        "outcome": "0",
        "agent": [{"who": {"identifier": {"system": "urn:medvault:account", "value": account_id}}, "requestor": True}],
        "source": {"observer": {"display": "medvault"}, "type": [{"code": "4"}]},
    }
    whats = [*([entity] if entity is not None else []), *entities]
    if whats:
        event["entity"] = [{"what": {"identifier": {"system": system, "value": value}}} for system, value in whats]
    return audit_log.append(session=session, crypto=crypto, event=event, patient_id=None, now=now)
