"""Break-the-glass: an eligible clinician without a grant asks for time-boxed emergency access to
one patient's record (design-emergency.md, "Break-the-glass"; issue 4 item 5).

A request needs an eligible role with a second factor (`policy.may_break_glass`), the purpose
`ETREAT` and a written reason. Granted, it stores in one transaction:

* the access (`break_glass_access`): patient as pseudonym, the account, start and end (start +
  `hours`), and the reason, patient id and Practitioner id sealed under the patient's clinical data
  key: the reason is free text a clinician wrote about a patient, so it is PHI and never stored or
  logged in clear;
* a notification for the patient (`notification`: a kind and a reference, no text);
* a review item for the privacy officers (`break_glass_review`, pending until a verdict);
* the AuditEvent, in the patient's access log, flagged as break-the-glass (ETREAT + extension).

Refusals are audited too (a refused emergency request is exactly what a privacy officer wants to
see): `request_emergency_access` writes the refusal's entry and then raises `BreakGlassRefused`;
the caller commits that transaction as it would a failed sign-in.

What the access then allows is decided where every access is decided: `access.policy.decide`,
fed the in-force accesses by `records.guard`. Reads during it are flagged in the audit log there.

A `Notifier` hook tells the outside world (e-mail, SMS) that a patient has a notification, after
the transaction commits; it gets only the kind and a random notification id, never PHI, and must
look up what to send through a path of its own.
"""

from __future__ import annotations

import logging
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, get_args

import orjson
from sqlalchemy import event, func, select, update
from sqlalchemy.orm import Session

from medvault.access.consent import require_aware
from medvault.access.errors import AccessError
from medvault.access.policy import may_break_glass
from medvault.fhir.types import is_fhir_id
from medvault.records import guard
from medvault.records.vault import Vault
from medvault.store.models import BreakGlassAccess, BreakGlassReview, Notification, Resource

if TYPE_CHECKING:
    from medvault.auth.accounts import Actor
    from medvault.store.crypto_context import CryptoContext

log = logging.getLogger(__name__)

PURPOSE: Final = "ETREAT"
REASON_MIN: Final = 20  # characters, after trimming: "emergency" alone is not a reason
REASON_MAX: Final = 2000
DEFAULT_HOURS: Final = 4
DEFAULT_ROLES: Final[frozenset[str]] = frozenset({"clinician"})
Verdict = Literal["justified", "not-justified", "unclear"]
VERDICTS: Final[tuple[Verdict, ...]] = get_args(Verdict)
NOTIFICATION_KIND: Final = "break-glass"
_AAD = b"medvault:break-glass:v1|"

RefusalCode = Literal[
    "break-glass-role-not-eligible",
    "break-glass-needs-mfa",
    "break-glass-purpose",
    "break-glass-reason-missing",
    "break-glass-reason-length",
    "break-glass-unknown-patient",
    "break-glass-not-reviewer",
    "break-glass-unknown-access",
    "break-glass-verdict",
]


class BreakGlassRefused(AccessError):
    """A refused break-the-glass request or review. `reason` is a fixed code; the message is one
    readable line that quotes no input."""

    code = "forbidden"

    def __init__(self, reason: RefusalCode, message: str) -> None:
        super().__init__(message)
        self.reason: RefusalCode = reason


class Notifier(Protocol):
    """The e-mail/SMS hook. Called after commit with no PHI: a kind and a random id."""

    def notify(self, *, kind: str, notification_id: str) -> None: ...


class LoggingNotifier:
    """The default hook: a log line naming the kind and the random notification id only."""

    def notify(self, *, kind: str, notification_id: str) -> None:
        log.info("patient notification queued: kind=%s id=%s", kind, notification_id)


@dataclass(frozen=True)
class EmergencyGrant:
    """A granted emergency access, as returned to the face (the reason stays sealed)."""

    id: str
    patient_id: str
    start: datetime
    end: datetime
    notification_id: str


@dataclass(frozen=True)
class AccessDetail:
    """One emergency access with its sealed fields opened (for the patient and the reviewers)."""

    id: str
    patient_id: str
    account_id: str
    practitioner_id: str | None
    reason: str
    start: datetime
    end: datetime
    verdict: str | None
    reviewer: str | None
    reviewed: datetime | None


@dataclass(frozen=True)
class PatientNotice:
    id: str
    created: datetime
    kind: str
    seen: bool
    access: AccessDetail


def clean_reason(reason: str | None) -> str:
    """The reason as stored: NFC, trimmed, control characters (other than line breaks) removed."""
    text = unicodedata.normalize("NFC", reason or "").strip()
    return "".join(c for c in text if c in "\n\t" or unicodedata.category(c)[0] != "C")


def request_emergency_access(
    *,
    session: Session,
    crypto: CryptoContext,
    actor: Actor,
    patient_id: str,
    reason: str | None,
    purpose: str,
    now: datetime,
    hours: int = DEFAULT_HOURS,
    eligible_roles: frozenset[str] = DEFAULT_ROLES,
    address: str | None = None,
    notifier: Notifier | None = None,
) -> EmergencyGrant:
    """Grant `actor` emergency access to `patient_id` for `hours`, or audit the refusal and raise
    `BreakGlassRefused` (the caller still commits: the refusal's entry is the point)."""
    require_aware(now, what="now")
    vault = Vault(session, crypto, caller=guard.Caller(actor=actor, via="page", address=address, purpose=PURPOSE))
    exists = is_fhir_id(patient_id) and _patient_exists(session, patient_id)
    # The refusal goes to the patient's log when there is such a patient (they should know someone
    # tried), otherwise to the log without a patient: never a key made for a made-up id.
    logged_patient = patient_id if exists else None

    def refuse(code: RefusalCode, message: str) -> BreakGlassRefused:
        guard.record(
            vault,
            action="read",
            interaction="break-glass",
            patient_id=logged_patient,
            entities=[],
            allowed=False,
            reason=code,
            event_action="E",
        )
        return BreakGlassRefused(code, message)

    allowed = may_break_glass(actor=actor, eligible_roles=eligible_roles)
    if not allowed.allowed:
        if allowed.reason == "break-glass-needs-mfa":
            raise refuse("break-glass-needs-mfa", "emergency access needs a second factor; set up your authenticator")
        raise refuse("break-glass-role-not-eligible", "your role cannot ask for emergency access")
    if purpose != PURPOSE:
        raise refuse("break-glass-purpose", "emergency access is only for emergency treatment (ETREAT)")
    text = clean_reason(reason)
    if not text:
        raise refuse("break-glass-reason-missing", "write why you need emergency access")
    if not REASON_MIN <= len(text) <= REASON_MAX:
        raise refuse("break-glass-reason-length", f"the reason must be {REASON_MIN} to {REASON_MAX} characters long")
    if not exists:
        raise refuse("break-glass-unknown-patient", "no patient with this id")

    access_id, notification_id = secrets.token_hex(16), secrets.token_hex(16)
    link = crypto.indexer.pseudonym(patient_id)
    dk_id, key = crypto.data_key(session, purpose="clinical", owner=link)
    sealed = crypto.sealer.seal(
        key,
        orjson.dumps({"reason": text, "patient": patient_id, "practitioner": actor.practitioner_id}),
        _AAD + access_id.encode(),
    )
    end = now + timedelta(hours=hours)
    session.add(
        BreakGlassAccess(
            id=access_id,
            patient_link=link,
            account_id=actor.account_id,
            started=now,
            expires=end,
            data_key_id=dk_id,
            sealed=sealed,
        )
    )
    session.add(BreakGlassReview(access_id=access_id, created=now))
    session.add(Notification(id=notification_id, patient_link=link, created=now, kind=NOTIFICATION_KIND, ref=access_id))
    session.flush()
    guard.record(
        vault,
        action="read",
        interaction="break-glass",
        patient_id=patient_id,
        entities=[f"Patient/{patient_id}"],
        allowed=True,
        reason="break-glass",
        event_action="C",
    )
    # The next decision in this session must see the new access.
    session.info.pop("medvault_grants", None)
    if notifier is not None:
        _after_commit(session, lambda: notifier.notify(kind=NOTIFICATION_KIND, notification_id=notification_id))
    return EmergencyGrant(access_id, patient_id, now, end, notification_id)


def _after_commit(session: Session, action: Any) -> None:
    """Run `action` once, when this transaction commits; never if it rolls back first (a
    notification about an access that does not exist would be worse than none)."""
    armed = [True]

    def fire(s: Session) -> None:
        if not armed[0] or s.get_nested_transaction() is not None:
            return  # already fired or disarmed, or a savepoint was released (not the transaction)
        armed[0] = False
        action()

    def disarm(_s: Session, previous: Any) -> None:
        if not getattr(previous, "nested", False):  # a savepoint rolled back: the transaction lives on
            armed[0] = False

    event.listen(session, "after_commit", fire)
    event.listen(session, "after_soft_rollback", disarm)


def _patient_exists(session: Session, patient_id: str) -> bool:
    row = session.get(Resource, ("Patient", patient_id))
    return row is not None and not row.deleted


def _open(session: Session, crypto: CryptoContext, row: BreakGlassAccess) -> dict[str, Any]:
    key = crypto.data_key_by_id(session, row.data_key_id)
    opened: dict[str, Any] = orjson.loads(crypto.sealer.open(key, row.sealed, _AAD + row.id.encode()))
    return opened


def _detail(session: Session, crypto: CryptoContext, row: BreakGlassAccess, review: BreakGlassReview) -> AccessDetail:
    opened = _open(session, crypto, row)
    return AccessDetail(
        id=row.id,
        patient_id=str(opened["patient"]),
        account_id=row.account_id,
        practitioner_id=opened.get("practitioner"),
        reason=str(opened["reason"]),
        start=row.started,
        end=row.expires,
        verdict=review.verdict,
        reviewer=review.reviewer,
        reviewed=review.reviewed,
    )


def review_queue(
    *,
    session: Session,
    crypto: CryptoContext,
    actor: Actor,
    pending_only: bool = False,
    limit: int = 200,
    address: str | None = None,
) -> list[AccessDetail]:
    """Emergency accesses for a privacy officer to review, oldest pending first, then reviewed
    ones newest first. The officer reads each reason (written about a patient): one audit entry
    per patient shown, in this transaction."""
    _require_reviewer(actor)
    query = select(BreakGlassAccess, BreakGlassReview).join(
        BreakGlassReview, BreakGlassReview.access_id == BreakGlassAccess.id
    )
    if pending_only:
        query = query.where(BreakGlassReview.reviewed.is_(None))
    rows = session.execute(query.order_by(BreakGlassReview.created).limit(limit)).all()
    details = [_detail(session, crypto, a, r) for a, r in rows]
    vault = Vault(session, crypto, caller=guard.Caller(actor=actor, via="page", address=address, purpose="HOPERAT"))
    for patient_id in sorted({d.patient_id for d in details}):
        guard.record(
            vault,
            action="read",
            interaction="break-glass-review-read",
            patient_id=patient_id,
            entities=[],
            allowed=True,
            reason="break-glass-review",
        )
    pending = [d for d in details if d.reviewed is None]
    done = sorted((d for d in details if d.reviewed is not None), key=lambda d: d.start, reverse=True)
    return pending + done


def _require_reviewer(actor: Actor) -> None:
    if actor.role != "privacy-officer" or not actor.mfa_enrolled:
        raise BreakGlassRefused("break-glass-not-reviewer", "only a privacy officer reviews emergency accesses")


def record_verdict(
    *,
    session: Session,
    crypto: CryptoContext,
    actor: Actor,
    access_id: str,
    verdict: str,
    now: datetime,
    address: str | None = None,
) -> AccessDetail:
    """A privacy officer's verdict on one emergency access (a later verdict replaces an earlier
    one; each is audited in the patient's log, in this transaction)."""
    require_aware(now, what="now")
    _require_reviewer(actor)
    if verdict not in VERDICTS:
        raise BreakGlassRefused("break-glass-verdict", "the verdict must be justified, not justified or unclear")
    found = session.execute(
        select(BreakGlassAccess, BreakGlassReview)
        .join(BreakGlassReview, BreakGlassReview.access_id == BreakGlassAccess.id)
        .where(BreakGlassAccess.id == access_id[:64])
    ).first()
    if found is None:
        raise BreakGlassRefused("break-glass-unknown-access", "no such emergency access")
    row, _review = found
    session.execute(
        update(BreakGlassReview)
        .where(BreakGlassReview.access_id == row.id)
        .values(verdict=verdict, reviewer=actor.account_id, reviewed=now)
    )
    opened = _open(session, crypto, row)
    # Purpose: healthcare operations (an oversight review), not treatment.
    vault = Vault(session, crypto, caller=guard.Caller(actor=actor, via="page", address=address, purpose="HOPERAT"))
    guard.record(
        vault,
        action="write",
        interaction="break-glass-review",
        patient_id=str(opened["patient"]),
        entities=[],
        allowed=True,
        reason=f"break-glass-verdict-{verdict}",
        event_action="U",
    )
    session.flush()
    review = session.execute(select(BreakGlassReview).where(BreakGlassReview.access_id == row.id)).scalar_one()
    session.refresh(review)
    return _detail(session, crypto, row, review)


def notifications(*, session: Session, crypto: CryptoContext, patient_id: str, limit: int = 100) -> list[PatientNotice]:
    """A patient's notifications, newest first, with the emergency access each is about."""
    link = crypto.indexer.pseudonym(patient_id)
    rows = session.execute(
        select(Notification, BreakGlassAccess, BreakGlassReview)
        .join(BreakGlassAccess, BreakGlassAccess.id == Notification.ref)
        .join(BreakGlassReview, BreakGlassReview.access_id == BreakGlassAccess.id)
        .where(Notification.patient_link == link, Notification.kind == NOTIFICATION_KIND)
        .order_by(Notification.created.desc())
        .limit(limit)
    ).all()
    return [PatientNotice(n.id, n.created, n.kind, n.seen, _detail(session, crypto, a, r)) for n, a, r in rows]


def unseen_count(*, session: Session, crypto: CryptoContext, patient_id: str) -> int:
    """How many of this patient's notifications are not yet marked as read."""
    link = crypto.indexer.pseudonym(patient_id)
    return int(
        session.execute(
            select(func.count()).select_from(Notification).where(Notification.patient_link == link, ~Notification.seen)
        ).scalar_one()
    )


def mark_seen(*, session: Session, crypto: CryptoContext, patient_id: str, notification_id: str) -> bool:
    """Mark one of this patient's notifications as read (False: not theirs, or no such one)."""
    link = crypto.indexer.pseudonym(patient_id)
    result = session.execute(
        update(Notification)
        .where(Notification.id == notification_id[:64], Notification.patient_link == link)
        .values(seen=True)
    )
    return bool(getattr(result, "rowcount", 0))


def active_accesses(*, session: Session, crypto: CryptoContext, actor: Actor, now: datetime) -> list[AccessDetail]:
    """The actor's own emergency accesses still in force (for the clinician's pages)."""
    require_aware(now, what="now")
    rows = session.execute(
        select(BreakGlassAccess, BreakGlassReview)
        .join(BreakGlassReview, BreakGlassReview.access_id == BreakGlassAccess.id)
        .where(BreakGlassAccess.account_id == actor.account_id, BreakGlassAccess.expires > now)
        .order_by(BreakGlassAccess.started.desc())
    ).all()
    return [_detail(session, crypto, a, r) for a, r in rows if a.started <= now]
