"""Breach detection: decoy (honeytoken) patients and a per-clinician distinct-patient rate.

`observe` runs for every audited access, in the access's own transaction, right after its audit
entry is appended (records/guard.py `record`). It raises

* a "honeytoken" alert on any access, allowed or refused, by any role (the operator included), to a
  patient marked as a decoy; at most one per decoy per transaction, so an access that is refused,
  rolled back and logged again by `record_refusal` leaves exactly one alert;
* a "rate" alert the first time, in an epoch hour, that a clinician has been shown more than
  `threshold` distinct patients (allowed accesses only); one per account per hour.

Alerts are rows for the privacy officer's page and WARNING lines on the `medvault.alerts` logger.
Neither carries a patient id, name or pseudonym: an alert says what happened and which account
did it; the audit log (sealed) says to whom.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, SessionTransaction

from medvault import logs
from medvault.store.models import AccessRate, Alert, Honeytoken

if TYPE_CHECKING:
    from medvault.records.vault import Vault
    from medvault.store.crypto_context import CryptoContext

__all__ = [
    "DEFAULT_PATIENTS_PER_HOUR",
    "AlertKind",
    "acknowledge",
    "create_decoys",
    "hour_of",
    "is_decoy",
    "list_alerts",
    "mark_decoy",
    "observe",
    "prune_rates",
    "raise_hourly",
]

AlertKind = Literal["honeytoken", "rate", "community-reading"]
DEFAULT_PATIENTS_PER_HOUR = 50
# Fixed texts: nothing from the request or the record is ever formatted into an alert.
_DETAIL: dict[str, str] = {
    "honeytoken": "A decoy patient record was accessed. No legitimate workflow touches decoys.",
    "honeytoken-refused": "A decoy patient record was requested and refused. No legitimate workflow touches decoys.",
    "rate": "This account was shown more distinct patients within one hour than the configured threshold.",
    "community-reading": (
        "This account read more distinct community profiles or posts within one hour than the configured threshold."
    ),
}
_MEMO = "medvault_alerts_raised"

log = logs.get("alerts")


def _rate_token(crypto: CryptoContext, patient_id: str) -> bytes:
    """Keyed 12-byte token for the rate table (its own domain: joins with no other column)."""
    return crypto.indexer.search_token(crypto.indexer.pseudonym(patient_id), "AccessRate", "patient", "")


def hour_of(now: datetime) -> int:
    """Epoch hour of an aware datetime."""
    if now.tzinfo is None:
        raise ValueError("observe needs an aware datetime")
    return int(now.timestamp()) // 3600


# ---------------------------------------------------------------------------------------------
# decoys


def _decoy_mark(crypto: CryptoContext, patient_id: str) -> bytes:
    """A keyed value of its own, not the pseudonym: with the pseudonym, anyone reading the
    database could join it to the records and learn which patients are decoys (and avoid them)."""
    return crypto.indexer.search_token(crypto.indexer.pseudonym(patient_id), "Honeytoken", "decoy", "") + bytes(4)


# Every audited access asks whether its patient is a decoy. The marks are few and change rarely, so
# each process keeps them per database and reloads them at most DECOY_REFRESH_S after loading: a
# decoy marked by another process is watched here within that time; one marked by this process at
# once (mark_decoy drops the cache). Saves a query on every request.
DECOY_REFRESH_S = 1.0
_decoy_cache: dict[str, tuple[float, frozenset[bytes]]] = {}
_decoy_lock = threading.Lock()


def _decoy_marks(session: Session) -> frozenset[bytes]:
    # Per database URL: an engine's id() can be reused once it is gone.
    bind = str(session.get_bind().engine.url)
    with _decoy_lock:
        hit = _decoy_cache.get(bind)
    if hit is not None and time.monotonic() - hit[0] < DECOY_REFRESH_S:
        return hit[1]
    marks = frozenset(bytes(m) for m in session.execute(select(Honeytoken.patient_link)).scalars())
    with _decoy_lock:
        _decoy_cache[bind] = (time.monotonic(), marks)
    return marks


def mark_decoy(*, session: Session, crypto: CryptoContext, patient_id: str) -> None:
    """Mark a patient as a decoy (idempotent). Only a keyed value is stored, unlinkable without the key."""
    link = _decoy_mark(crypto, patient_id)
    if session.execute(select(Honeytoken.patient_link).where(Honeytoken.patient_link == link)).first() is None:
        session.execute(insert(Honeytoken).values(patient_link=link))
    with _decoy_lock:
        _decoy_cache.clear()


def is_decoy(*, session: Session, crypto: CryptoContext, patient_id: str) -> bool:
    marks = _decoy_marks(session)
    return bool(marks) and _decoy_mark(crypto, patient_id) in marks


# ---------------------------------------------------------------------------------------------
# observing accesses


def _innermost(session: Session) -> SessionTransaction | None:
    return session.get_nested_transaction() or session.get_transaction()


def _chain(session: Session) -> list[SessionTransaction]:
    out = []
    txn = _innermost(session)
    while txn is not None:
        out.append(txn)
        txn = txn.parent
    return out


@dataclass
class _Raised:
    txn: SessionTransaction
    key: tuple[str, bytes]


def _already_raised(session: Session, key: tuple[str, bytes]) -> bool:
    """Whether this transaction (or an enclosing one still open) already holds this alert. A rolled
    back transaction or savepoint leaves the chain, so its alerts no longer count."""
    memo: list[_Raised] = session.info.setdefault(_MEMO, [])
    chain = _chain(session)
    memo[:] = [m for m in memo if any(m.txn is t for t in chain)]  # forget what was rolled back / ended
    return any(m.key == key for m in memo)


def _remember(session: Session, key: tuple[str, bytes]) -> None:
    txn = _innermost(session)
    if txn is not None:
        session.info.setdefault(_MEMO, []).append(_Raised(txn, key))


def _raise(session: Session, *, kind: AlertKind, detail: str, account_id: str | None, now: datetime) -> Alert:
    alert = Alert(
        id=secrets.token_hex(16),
        raised=now,
        kind=kind,
        account_id=account_id,
        detail=_DETAIL[detail],
        acknowledged=False,
    )
    # Core, not the ORM: the caller's session may hold unrelated pending objects to flush later.
    session.execute(
        insert(Alert).values(
            id=alert.id, raised=now, kind=kind, account_id=account_id, detail=alert.detail, acknowledged=False
        )
    )
    # Only the alert id, its kind and the account: never a patient id, name or pseudonym.
    log.warning("alert %s kind=%s account=%s", alert.id, kind, account_id or "operator")
    return alert


def _insert_ignoring_duplicate(session: Session, row: dict[str, Any]) -> bool:
    """Insert an AccessRate row unless it exists; True when it was new."""
    dialect = session.get_bind().dialect.name
    stmt: Any
    if dialect == "postgresql":
        stmt = postgresql.insert(AccessRate).values(**row).on_conflict_do_nothing()
    elif dialect == "sqlite":
        stmt = sqlite.insert(AccessRate).values(**row).on_conflict_do_nothing()
    else:  # pragma: no cover - only the two supported backends
        exists = select(AccessRate.hour).filter_by(**row)
        if session.execute(exists).first() is not None:
            return False
        session.execute(insert(AccessRate).values(**row))
        return True
    return bool(session.execute(stmt).rowcount)  # type: ignore[attr-defined]


def _rate_alert(
    session: Session, *, crypto: CryptoContext, account_id: str, patient_id: str, now: datetime, threshold: int
) -> Alert | None:
    hour = hour_of(now)
    row = {"account_id": account_id, "hour": hour, "patient_token": _rate_token(crypto, patient_id)}
    if not _insert_ignoring_duplicate(session, row):
        return None  # this patient was already counted this hour
    count = session.execute(
        select(func.count()).select_from(AccessRate).where(AccessRate.account_id == account_id, AccessRate.hour == hour)
    ).scalar_one()
    if count <= threshold:
        return None
    start = datetime.fromtimestamp(hour * 3600, tz=UTC)
    existing = session.execute(
        select(Alert.id)
        .where(
            Alert.account_id == account_id,
            Alert.kind == "rate",
            Alert.raised >= start,
            Alert.raised < start + timedelta(hours=1),
        )
        .limit(1)
    ).first()
    if existing is not None:
        return None  # one rate alert per account per hour
    return _raise(session, kind="rate", detail="rate", account_id=account_id, now=now)


def observe(
    *,
    session: Session,
    crypto: CryptoContext,
    account_id: str | None,
    role: str | None,
    patient_id: str | None,
    allowed: bool,
    now: datetime | None = None,
    threshold: int = DEFAULT_PATIENTS_PER_HOUR,
) -> list[Alert]:
    """Check one audited access (same transaction as the access and its audit entry); returns the
    alerts it raised. `account_id`/`role` None is the operator. Refused accesses count for decoys
    only; the rate counts a clinician's allowed accesses."""
    if not patient_id:
        return []
    now = now or datetime.now(UTC)
    raised: list[Alert] = []
    if is_decoy(session=session, crypto=crypto, patient_id=patient_id):
        key = ("honeytoken", crypto.indexer.pseudonym(patient_id))
        if not _already_raised(session, key):
            detail = "honeytoken" if allowed else "honeytoken-refused"
            raised.append(_raise(session, kind="honeytoken", detail=detail, account_id=account_id, now=now))
            _remember(session, key)
    if allowed and role == "clinician" and account_id is not None:
        alert = _rate_alert(
            session, crypto=crypto, account_id=account_id, patient_id=patient_id, now=now, threshold=threshold
        )
        if alert is not None:
            raised.append(alert)
    return raised


def raise_hourly(*, session: Session, kind: AlertKind, account_id: str, now: datetime) -> Alert | None:
    """Raise a fixed-text alert of `kind` for `account_id`, at most one per account per epoch hour
    (other detectors than `observe`, such as the community's scraping guard, call this)."""
    start = datetime.fromtimestamp(hour_of(now) * 3600, tz=UTC)
    existing = session.execute(
        select(Alert.id)
        .where(
            Alert.account_id == account_id,
            Alert.kind == kind,
            Alert.raised >= start,
            Alert.raised < start + timedelta(hours=1),
        )
        .limit(1)
    ).first()
    if existing is not None:
        return None
    return _raise(session, kind=kind, detail=kind, account_id=account_id, now=now)


def prune_rates(*, session: Session, before: datetime) -> int:
    """Drop rate rows of hours that ended before `before` (they only count the current hour)."""
    result = session.execute(delete(AccessRate).where(AccessRate.hour < hour_of(before)))
    return int(result.rowcount)  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------------
# the privacy officer's list


def list_alerts(*, session: Session, unacknowledged_only: bool = True, limit: int = 200) -> list[Alert]:
    """Alerts, newest first."""
    query = select(Alert)
    if unacknowledged_only:
        query = query.where(Alert.acknowledged.is_(False))
    return list(session.execute(query.order_by(Alert.raised.desc(), Alert.id).limit(limit)).scalars())


def acknowledge(*, session: Session, alert_id: str) -> bool:
    """Mark an alert as seen; False when there is no such alert."""
    result = session.execute(update(Alert).where(Alert.id == alert_id).values(acknowledged=True))
    return bool(result.rowcount)  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------------
# demo: synthetic decoys

_GIVEN = ("Amelia", "Rowan", "Tobias", "Imogen", "Felix", "Margot", "Casper", "Linnea", "Osric", "Wren")
_FAMILY = ("Ashdown", "Bellweather", "Corrigan", "Dunmore", "Everleigh", "Fairbairn", "Halloway", "Quennell")


def _decoy_patient(rng: secrets.SystemRandom) -> dict[str, Any]:
    born = date(1940, 1, 1) + timedelta(days=rng.randrange(365 * 65))
    return {
        "resourceType": "Patient",
        "active": True,
        "name": [{"use": "official", "family": rng.choice(_FAMILY), "given": [rng.choice(_GIVEN)]}],
        "gender": rng.choice(("female", "male")),
        "birthDate": born.isoformat(),
    }


def create_decoys(*, vault: Vault, count: int) -> list[str]:
    """Create `count` synthetic decoy Patients (generated names, no real data), mark them, return
    their ids. The vault must act as the operator (`Vault(session, crypto, caller=OPERATOR_CLI)`)."""
    from medvault.records import service  # noqa: PLC0415 - late: records.guard calls into this module

    caller = vault.caller
    if caller is None or caller.actor is not None:
        raise ValueError("decoys are created by the operator only")
    rng = secrets.SystemRandom()
    ids = []
    for _ in range(count):
        written = service.create(vault=vault, resource=_decoy_patient(rng))
        mark_decoy(session=vault.session, crypto=vault.crypto, patient_id=written.rid)
        ids.append(written.rid)
    return ids
