"""SMART Health Links, server side: the patient's links and what a responder's request opens.

The patient (or the operator, for `medvault emergency card`) creates, pauses, resumes, revokes and
re-issues links; each management action runs in a `records.guard` unit of work as that caller and
is audited there. A responder's request carries no account: `open_manifest`, `open_file` and
`open_direct` find the link by the SHA-256 of the presented id or token, check it on the database's
current state (so a revocation applies to the very next request), and write one AuditEvent to the
patient's access log in the same transaction, naming the stated recipient and the outcome, never
the manifest id, key or passcode.

Storage (see docs/design-emergency.md): the manifest id is `base64url(HMAC(index key, link id))`,
stored only as its SHA-256, re-derivable by a server holding the key files (the patient's page can
show the QR again) but by no one holding only the database. The file key is sealed under the
patient's clinical data key; the summary is stored as the compact JWE that is served.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import queue
import re
import secrets
import threading
import uuid
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, Literal, TypeVar, cast

import anyio.to_thread
import orjson
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from medvault import logs
from medvault.audit import log as audit_log
from medvault.auth.passwords import Hasher
from medvault.db import unit_of_work
from medvault.emergency import card, ips, jwe, shl
from medvault.emergency.errors import ShlError, ShlPasscodeError, ShlUnavailable
from medvault.emergency.summary import _NAMESPACE as summary_ns  # the summary's fullUrl rule
from medvault.emergency.summary import SummaryOptions, build_summary
from medvault.errors import MedvaultError
from medvault.records import guard
from medvault.records import service as records
from medvault.records.guard import Caller
from medvault.records.vault import Vault
from medvault.store.crypto_context import CryptoContext
from medvault.store.models import ShlLink, ShlLocation
from medvault.store.types import UtcMicros

LinkPurpose = Literal["emergency", "sharing"]
Share = Literal["summary", "record"]
Status = Literal["active", "paused", "revoked"]

DEFAULT_BUDGET = 10
MAX_BUDGET = 100
LOCATION_TTL = timedelta(minutes=15)  # the spec allows at most one hour
MAX_RECIPIENT_CHARS = 256
MAX_PASSCODE_CHARS = 256
MIN_PASSCODE_CHARS = 6
FHIR_JSON = "application/fhir+json"
_KEY_AAD = b"medvault:shl-key:v1|"
_SEALED_AAD = b"medvault:shl:v1|"
_LOCATION_AAD = b"medvault:shl-location:v1|"
_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class LinkError(MedvaultError):
    """A management request that cannot be done (unknown link for this patient, bad passcode rule)."""

    code = "invalid"


class LinkNotFound(LinkError):
    code = "not-found"


class BadShlRequest(ShlError):
    """A responder's request is malformed (no recipient, a passcode that is not text): HTTP 400."""

    code = "invalid"


@dataclass(frozen=True)
class LinkInfo:
    """What the patient's page shows about one link."""

    link_id: int
    purpose: LinkPurpose
    status: Status
    flags: str
    label: str
    created: datetime
    expires: datetime | None
    failures: int
    budget: int
    has_passcode: bool
    share: Share
    options: SummaryOptions
    print_alerts: tuple[str, ...]


@dataclass(frozen=True)
class IssuedLink:
    link_id: int
    payload: shl.ShlPayload = field(repr=False)  # holds the key

    def shlink(self) -> str:
        return shl.to_shlink(self.payload)

    def viewer_link(self, *, base_url: str) -> str:
        return shl.to_viewer_link(self.payload, viewer_url=f"{base_url}/shl/view")


@dataclass(frozen=True)
class ServedFile:
    content_type: str
    jwe: bytes = field(repr=False)


# ---------------------------------------------------------------------------------------------
# helpers


def _utc(value: datetime | None) -> datetime:
    now = value or datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now


def manifest_id(crypto: CryptoContext, link_id: int) -> str:
    mac = hmac.new(crypto.keyring.index_key("shl-manifest"), link_id.to_bytes(8, "big"), hashlib.sha256).digest()
    return shl.encode_key(mac)  # 43 base64url characters, like a key


def _hash(text: str) -> bytes:
    return hashlib.sha256(text.encode("ascii")).digest()


def _patient_key(session: Session, crypto: CryptoContext, owner: bytes) -> AESGCM:
    return crypto.data_key(session, purpose="clinical", owner=owner)[1]


def _seal(session: Session, crypto: CryptoContext, row: ShlLink, doc: dict[str, Any]) -> bytes:
    key = _patient_key(session, crypto, row.owner)
    return crypto.sealer.seal(key, orjson.dumps(doc), _SEALED_AAD + str(row.id).encode())


def _open_sealed(session: Session, crypto: CryptoContext, row: Any) -> dict[str, Any]:
    key = _patient_key(session, crypto, row.owner)
    doc: dict[str, Any] = orjson.loads(crypto.sealer.open(key, row.sealed, _SEALED_AAD + str(row.id).encode()))
    return doc


def _file_key(session: Session, crypto: CryptoContext, row: ShlLink) -> bytes:
    if row.wrapped_key is None:
        raise LinkError("this link was revoked")
    key = _patient_key(session, crypto, row.owner)
    return crypto.sealer.open(key, row.wrapped_key, _KEY_AAD + str(row.id).encode())


def _options_doc(options: SummaryOptions) -> dict[str, Any]:
    return {
        "hidden": sorted(options.hidden),
        "include_sensitive": sorted(options.include_sensitive),
        "extra_alerts": list(options.extra_alerts),
    }


def _options_of(doc: dict[str, Any]) -> SummaryOptions:
    o = doc.get("options") or {}
    return SummaryOptions(
        hidden=frozenset(o.get("hidden", ())),
        include_sensitive=frozenset(o.get("include_sensitive", ())),
        extra_alerts=tuple(o.get("extra_alerts", ())),
    )


def _check_owner(caller: Caller, patient_id: str) -> None:
    """Links are the patient's own business (and the operator's, for the CLI card)."""
    actor = caller.actor
    if actor is None or (actor.role == "patient" and actor.patient_id == patient_id):
        return
    raise guard.forbid(
        action="write",
        interaction="shl-manage",
        patient_id=patient_id,
        entities=(),
        reason="not-own-record",
        message="only the patient manages their links",
    )


def _audit_manage(vault: Vault, *, patient_id: str, what: str) -> None:
    guard.record(
        vault, action="write", interaction=what, patient_id=patient_id, entities=(), allowed=True, reason="own-record"
    )


def _content(vault: Vault, *, patient_id: str, share: Share, options: SummaryOptions, now: datetime) -> bytes:
    """The shared document, read through the guard as the caller (audited as their read)."""
    resources = records.everything(vault=vault, patient_id=patient_id)
    patient = resources[0]
    if share == "record":
        bundle: dict[str, Any] = {
            "resourceType": "Bundle",
            "type": "collection",
            "timestamp": now.isoformat().replace("+00:00", "Z"),
            "entry": [{"fullUrl": f"{r['resourceType']}/{r['id']}", "resource": r} for r in resources],
        }
    else:
        bundle = build_summary(patient=patient, resources=resources[1:], now=now, options=options)
    return orjson.dumps(bundle)


def _check_label(label: str | None) -> str:
    text = (label or "").strip()
    if len(text.encode("utf-16-le")) // 2 > shl.MAX_LABEL_CHARS or _CONTROL.search(text):
        raise LinkError(f"the label must be at most {shl.MAX_LABEL_CHARS} characters of plain text")
    return text


def _payload(crypto: CryptoContext, row: ShlLink, *, key: bytes, label: str, base_url: str) -> shl.ShlPayload:
    exp = int(row.expires.timestamp()) if row.expires is not None else None
    return shl.build_payload(
        url=f"{base_url}/shl/m/{manifest_id(crypto, row.id)}",
        key=key,
        exp=exp,
        flags=row.flags,
        label=label or None,
    )


# ---------------------------------------------------------------------------------------------
# the patient's side


def create_link(
    *,
    factory: sessionmaker[Session],
    crypto: CryptoContext,
    caller: Caller,
    patient_id: str,
    purpose: LinkPurpose,
    base_url: str,
    label: str | None = None,
    options: SummaryOptions | None = None,
    print_alerts: tuple[str, ...] = (),
    share: Share = "summary",
    passcode: str | None = None,
    hasher: Hasher | None = None,
    budget: int = DEFAULT_BUDGET,
    expires: datetime | None = None,
    direct: bool = False,
    now: datetime | None = None,
    _passcode_hash: str | None = None,
) -> IssuedLink:
    """A new link. Emergency links carry no passcode and only the summary; `direct` sets the `U`
    flag (one file, fetched with a GET), never together with a passcode."""
    now = _utc(now)
    opts = options or SummaryOptions()
    label = _check_label(label)
    if purpose == "emergency" and (passcode is not None or _passcode_hash is not None or share != "summary"):
        raise LinkError("an emergency link carries no passcode and only the emergency summary")
    if (passcode is not None or _passcode_hash is not None) and direct:
        raise LinkError("a link with a passcode cannot be a direct (U) link")
    if not 1 <= budget <= MAX_BUDGET:
        raise LinkError(f"the attempt budget must be 1..{MAX_BUDGET}")
    if expires is not None and _utc(expires) <= now:
        raise LinkError("the expiry must be in the future")
    passcode_hash = _passcode_hash  # re-issue keeps the hash (the passcode itself is never kept)
    if passcode is not None:
        if not MIN_PASSCODE_CHARS <= len(passcode) <= MAX_PASSCODE_CHARS:
            raise LinkError(f"a passcode needs at least {MIN_PASSCODE_CHARS} characters")
        passcode_hash = (hasher or Hasher()).hash(passcode)
    flags = "".join(sorted(("P" if passcode_hash is not None else "") + ("U" if direct else "")))
    _check_owner(caller, patient_id)
    with guard.unit_of_work(factory, crypto, caller) as vault:
        content = _content(vault, patient_id=patient_id, share=share, options=opts, now=now)
        key = shl.new_key()
        row = ShlLink(
            id=secrets.randbits(62) or 1,
            owner=crypto.indexer.pseudonym(patient_id),
            purpose=purpose,
            flags=flags,
            status="active",
            created=now,
            expires=expires,
            passcode_hash=passcode_hash,
            failures=0,
            budget=budget,
            content_type=FHIR_JSON,
            file_updated=now,
        )
        row.manifest_hash = _hash(manifest_id(crypto, row.id))
        row.sealed = _seal(
            vault.session,
            crypto,
            row,
            {
                "patient": patient_id,
                "label": label,
                "share": share,
                "options": _options_doc(opts),
                "print_alerts": list(print_alerts),
            },
        )
        row.wrapped_key = crypto.sealer.seal(
            _patient_key(vault.session, crypto, row.owner), key, _KEY_AAD + str(row.id).encode()
        )
        row.file_jwe = jwe.encrypt_file(plaintext=content, key=key, content_type=FHIR_JSON, compress=True).encode()
        vault.session.add(row)
        _audit_manage(vault, patient_id=patient_id, what="shl-create")
        return IssuedLink(row.id, _payload(crypto, row, key=key, label=label, base_url=base_url))


def _own_row(vault: Vault, crypto: CryptoContext, patient_id: str, link_id: int, *, lock: bool = False) -> ShlLink:
    query = select(ShlLink).where(ShlLink.id == link_id, ShlLink.owner == crypto.indexer.pseudonym(patient_id))
    if lock:
        query = query.with_for_update()
    row = vault.session.execute(query).scalar_one_or_none()
    if row is None:
        raise LinkNotFound("no such link")
    return row


def list_links(
    *, factory: sessionmaker[Session], crypto: CryptoContext, caller: Caller, patient_id: str
) -> list[LinkInfo]:
    """The patient's links, newest first (revoked ones included: the log refers to them)."""
    _check_owner(caller, patient_id)
    out: list[LinkInfo] = []
    with guard.unit_of_work(factory, crypto, caller) as vault:
        rows = vault.session.execute(
            select(ShlLink)
            .where(ShlLink.owner == crypto.indexer.pseudonym(patient_id))
            .order_by(ShlLink.created.desc())
        ).scalars()
        for row in rows:
            doc = _open_sealed(vault.session, crypto, row)
            out.append(
                LinkInfo(
                    link_id=row.id,
                    purpose=row.purpose,  # type: ignore[arg-type]
                    status=row.status,  # type: ignore[arg-type]
                    flags=row.flags,
                    label=str(doc.get("label", "")),
                    created=row.created,
                    expires=row.expires,
                    failures=row.failures,
                    budget=row.budget,
                    has_passcode=row.passcode_hash is not None,
                    share=doc.get("share", "summary"),
                    options=_options_of(doc),
                    print_alerts=tuple(doc.get("print_alerts", ())),
                )
            )
    return out


def issued(
    *,
    factory: sessionmaker[Session],
    crypto: CryptoContext,
    caller: Caller,
    patient_id: str,
    link_id: int,
    base_url: str,
) -> IssuedLink:
    """An active or paused link's payload again (to show or print its QR)."""
    _check_owner(caller, patient_id)
    with guard.unit_of_work(factory, crypto, caller) as vault:
        row = _own_row(vault, crypto, patient_id, link_id)
        key = _file_key(vault.session, crypto, row)
        label = str(_open_sealed(vault.session, crypto, row).get("label", ""))
        return IssuedLink(row.id, _payload(crypto, row, key=key, label=label, base_url=base_url))


def summary_jwe(
    *, factory: sessionmaker[Session], crypto: CryptoContext, caller: Caller, patient_id: str, link_id: int
) -> str:
    """The link's file as served (the flash-drive page embeds it)."""
    _check_owner(caller, patient_id)
    with guard.unit_of_work(factory, crypto, caller) as vault:
        row = _own_row(vault, crypto, patient_id, link_id)
        if row.file_jwe is None:
            raise LinkError("this link was revoked")
        return row.file_jwe.decode()


def set_status(
    *,
    factory: sessionmaker[Session],
    crypto: CryptoContext,
    caller: Caller,
    patient_id: str,
    link_id: int,
    status: Status,
) -> None:
    """Pause, resume (status active) or revoke. Revocation is final: it deletes the wrapped key,
    the file and every outstanding location, so nothing of the link can be served again."""
    _check_owner(caller, patient_id)
    with guard.unit_of_work(factory, crypto, caller) as vault:
        row = _own_row(vault, crypto, patient_id, link_id, lock=True)
        if row.status == "revoked":
            if status == "revoked":
                return
            raise LinkError("a revoked link cannot be resumed; re-issue it instead")
        values: dict[str, Any] = {"status": status}
        if status == "revoked":
            values.update(wrapped_key=None, file_jwe=None)
        if status != "active":
            vault.session.execute(delete(ShlLocation).where(ShlLocation.link_id == row.id))
        vault.session.execute(update(ShlLink).where(ShlLink.id == row.id).values(**values))
        _audit_manage(vault, patient_id=patient_id, what=f"shl-{status}")


def reissue(
    *,
    factory: sessionmaker[Session],
    crypto: CryptoContext,
    caller: Caller,
    patient_id: str,
    link_id: int,
    base_url: str,
    now: datetime | None = None,
) -> IssuedLink:
    """Revoke the link and make a new one with the same choices (new id, new key: the old QR dies).
    A passcode carries over (as its hash); the attempt counter starts again."""
    now = _utc(now)
    _check_owner(caller, patient_id)
    with guard.unit_of_work(factory, crypto, caller) as vault:
        old = _own_row(vault, crypto, patient_id, link_id)
        doc = _open_sealed(vault.session, crypto, old)
        purpose, flags, budget, expires, passcode_hash = (
            old.purpose,
            old.flags,
            old.budget,
            old.expires,
            old.passcode_hash,
        )
    if expires is not None and expires <= now:
        expires = None  # an expired link re-issued is a fresh one
    new = create_link(
        factory=factory,
        crypto=crypto,
        caller=caller,
        patient_id=patient_id,
        purpose=purpose,  # type: ignore[arg-type]
        base_url=base_url,
        label=doc.get("label"),
        options=_options_of(doc),
        print_alerts=tuple(doc.get("print_alerts", ())),
        share=doc.get("share", "summary"),
        budget=budget,
        expires=expires,
        direct="U" in flags,
        now=now,
        _passcode_hash=passcode_hash,
    )
    set_status(factory=factory, crypto=crypto, caller=caller, patient_id=patient_id, link_id=link_id, status="revoked")
    return new


def preview(
    *,
    factory: sessionmaker[Session],
    crypto: CryptoContext,
    caller: Caller,
    patient_id: str,
    options: SummaryOptions | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The emergency summary as it would be shared with these choices (for the patient to check)."""
    now = _utc(now)
    _check_owner(caller, patient_id)
    with guard.unit_of_work(factory, crypto, caller) as vault:
        doc: dict[str, Any] = orjson.loads(
            _content(vault, patient_id=patient_id, share="summary", options=options or SummaryOptions(), now=now)
        )
        return doc


@dataclass(frozen=True)
class PreviewItem:
    key: str | None  # "Type/id" in the record (what the patient can hide); None for their own alerts
    text: str


@dataclass(frozen=True)
class PreviewSection:
    title: str
    items: tuple[PreviewItem, ...]


def readable(bundle: dict[str, Any], keys: list[str]) -> list[PreviewSection]:
    """The summary's sections as plain text items, for the patient's preview. `keys` are the record's
    "Type/id"s: a summary entry's fullUrl is `urn:uuid:uuid5(namespace, key)` (emergency/summary.py)."""
    by_url = {str(e.get("fullUrl")): e.get("resource") or {} for e in bundle.get("entry") or []}
    key_of = {f"urn:uuid:{uuid.uuid5(summary_ns, k)}": k for k in keys}
    composition = (bundle.get("entry") or [{}])[0].get("resource") or {}
    out = []
    for section in composition.get("section") or []:
        items = []
        for ref in section.get("entry") or []:
            url = str(ref.get("reference"))
            res = by_url.get(url, {})
            items.append(PreviewItem(key_of.get(url), ips.item_text(res)))
        out.append(PreviewSection(str(section.get("title", "")), tuple(items)))
    return out


def preview_sections(
    *,
    factory: sessionmaker[Session],
    crypto: CryptoContext,
    caller: Caller,
    patient_id: str,
    options: SummaryOptions | None = None,
    now: datetime | None = None,
) -> list[PreviewSection]:
    """The summary as the patient's preview page shows it (each record item with its key, to hide)."""
    now = _utc(now)
    _check_owner(caller, patient_id)
    with guard.unit_of_work(factory, crypto, caller) as vault:
        resources = records.everything(vault=vault, patient_id=patient_id)
        bundle = build_summary(patient=resources[0], resources=resources[1:], now=now, options=options)
    return readable(bundle, [f"{r['resourceType']}/{r['id']}" for r in resources])


def update_choices(
    *,
    factory: sessionmaker[Session],
    crypto: CryptoContext,
    caller: Caller,
    patient_id: str,
    link_id: int,
    options: SummaryOptions,
    label: str | None = None,
    print_alerts: tuple[str, ...] | None = None,
    now: datetime | None = None,
) -> None:
    """New choices for a live link: the file is rebuilt and encrypted again under the same key
    (fresh IV), so the printed card keeps working and shows the new summary from the next request."""
    now = _utc(now)
    _check_owner(caller, patient_id)
    with guard.unit_of_work(factory, crypto, caller) as vault:
        row = _own_row(vault, crypto, patient_id, link_id, lock=True)
        key = _file_key(vault.session, crypto, row)
        doc = _open_sealed(vault.session, crypto, row)
        doc["options"] = _options_doc(options)
        if label is not None:
            doc["label"] = _check_label(label)
        if print_alerts is not None:
            doc["print_alerts"] = list(print_alerts)
        content = _content(vault, patient_id=patient_id, share=doc.get("share", "summary"), options=options, now=now)
        row.sealed = _seal(vault.session, crypto, row, doc)
        row.file_jwe = jwe.encrypt_file(plaintext=content, key=key, content_type=FHIR_JSON, compress=True).encode()
        row.file_updated = now
        _audit_manage(vault, patient_id=patient_id, what="shl-update")


@dataclass(frozen=True)
class CardFiles:
    """Everything printable or copyable for one emergency link (all of it a bearer copy of the summary)."""

    link_id: int
    viewer_link: str = field(repr=False)
    qr_png: bytes = field(repr=False)
    wallet_pdf: bytes = field(repr=False)
    drive: tuple[card.BundleFile, ...] = field(repr=False)
    created: bool = False


DEFAULT_CARD_LABEL = "Emergency medical information"


def emergency_card(
    *,
    factory: sessionmaker[Session],
    crypto: CryptoContext,
    caller: Caller,
    patient_id: str,
    base_url: str,
    label: str | None = None,
    alerts: tuple[str, ...] = (),
    create_missing: bool = True,
    now: datetime | None = None,
) -> CardFiles:
    """The QR, wallet card and flash-drive files of the patient's live emergency link, made first
    when there is none (with `label` and `alerts`: the alerts go into the summary and onto the card)."""
    live = [
        i
        for i in list_links(factory=factory, crypto=crypto, caller=caller, patient_id=patient_id)
        if i.purpose == "emergency" and i.status == "active" and (i.expires is None or i.expires > _utc(now))
    ]
    created = not live
    if created and not create_missing:
        raise LinkNotFound("there is no live emergency link; create one first")
    if live:
        info = live[0]
        link_id, card_label, printed = info.link_id, info.label, info.print_alerts
        # Rebuilt from the record as it is now (same key, fresh IV): the new card, the flash drive's
        # page and what the link serves all show today's summary.
        update_choices(
            factory=factory,
            crypto=crypto,
            caller=caller,
            patient_id=patient_id,
            link_id=link_id,
            options=info.options,
            now=now,
        )
    else:
        card_label = (label or "").strip() or DEFAULT_CARD_LABEL
        printed = alerts
        link_id = create_link(
            factory=factory,
            crypto=crypto,
            caller=caller,
            patient_id=patient_id,
            purpose="emergency",
            base_url=base_url,
            label=card_label,
            options=SummaryOptions(extra_alerts=alerts),
            print_alerts=alerts,
            now=now,
        ).link_id
    payload = issued(
        factory=factory, crypto=crypto, caller=caller, patient_id=patient_id, link_id=link_id, base_url=base_url
    )
    text = payload.viewer_link(base_url=base_url)
    file = summary_jwe(factory=factory, crypto=crypto, caller=caller, patient_id=patient_id, link_id=link_id)
    return CardFiles(
        link_id=link_id,
        viewer_link=text,
        qr_png=card.qr_png(text),
        wallet_pdf=card.wallet_card_pdf(link_text=text, label=card_label or DEFAULT_CARD_LABEL, alerts=printed),
        drive=tuple(card.flash_drive_bundle(link_text=text, summary_jwe=file, label=card_label)),
        created=created,
    )


# ---------------------------------------------------------------------------------------------
# the responder's side (no account: the link is the credential)


def _check_recipient(recipient: object) -> str:
    if not isinstance(recipient, str) or not recipient.strip():
        raise BadShlRequest("recipient is required")
    if len(recipient) > MAX_RECIPIENT_CHARS or _CONTROL.search(recipient):
        raise BadShlRequest(f"recipient must be at most {MAX_RECIPIENT_CHARS} characters of plain text")
    return recipient.strip()


def _log_opening(
    session: Session,
    crypto: CryptoContext,
    *,
    patient_id: str,
    purpose: str,
    recipient: str,
    interaction: str,
    outcome: str,
    allowed: bool,
    now: datetime,
    address: str | None,
) -> None:
    """One AuditEvent in the patient's access log: when, who said they were reading, what happened."""
    agent: dict[str, Any] = {
        "type": {"text": "SMART Health Link recipient"},
        "who": {"display": recipient},
        "requestor": True,
    }
    if address:
        agent["network"] = {"address": address, "type": "2"}
    event = {
        "resourceType": "AuditEvent",
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest"},
        "subtype": [{"system": "urn:medvault:shl", "code": interaction}],
        "action": "R",
        "recorded": now.isoformat().replace("+00:00", "Z"),
        "outcome": "0" if allowed else "4",
        "outcomeDesc": outcome,
        "purposeOfEvent": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                        "code": "ETREAT" if purpose == "emergency" else "TREAT",
                    }
                ]
            }
        ],
        "agent": [agent],
        "source": {"observer": {"display": "medvault"}, "type": [{"code": "4"}]},
        "entity": [
            {"what": {"display": f"{purpose} link"}},
            {"what": {"reference": f"Patient/{patient_id}"}, "type": {"code": "1"}},
        ],
    }
    audit_log.append(session=session, crypto=crypto, event=event, patient_id=patient_id, now=now)


# What a responder's request reads of a link. The responder path (manifest, file, direct) has a
# 50 ms p95 budget under 20 concurrent responders; through the ORM session its five statements cost
# more than everything else in the request together (about 0.5 ms each, mostly statement
# compilation and result processing), so, like the audit append, it runs statements compiled once
# per dialect on the session's own DBAPI cursor: same transaction, same locks, same SQL.
_SERVED_COLUMNS = (
    ShlLink.id,
    ShlLink.owner,
    ShlLink.purpose,
    ShlLink.flags,
    ShlLink.status,
    ShlLink.expires,
    ShlLink.passcode_hash,
    ShlLink.failures,
    ShlLink.budget,
    ShlLink.sealed,
    ShlLink.content_type,
    ShlLink.file_jwe,
    ShlLink.file_updated,
)
_SERVED = select(*_SERVED_COLUMNS)
_UTC_MICROS = UtcMicros()


@dataclass(frozen=True)
class _Served:
    """One link as a responder's request reads it (the columns of `_SERVED_COLUMNS`)."""

    id: int
    owner: bytes
    purpose: str
    flags: str
    status: str
    expires: datetime | None
    passcode_hash: str | None
    failures: int
    budget: int
    sealed: bytes
    content_type: str
    file_jwe: bytes | None
    file_updated: datetime


def _from_micros(value: int | None) -> datetime | None:
    return _UTC_MICROS.process_result_value(value, None)  # type: ignore[arg-type]


def _to_micros(value: datetime) -> int:
    bound = _UTC_MICROS.process_bind_param(value, None)  # type: ignore[arg-type]
    assert bound is not None
    return bound


def _served(raw: Any) -> _Served | None:
    if raw is None:
        return None
    (lid, owner, purpose, flags, status, expires, passcode, failures, budget, sealed, ctype, jwe_, updated) = raw
    return _Served(
        id=int(lid),
        owner=bytes(owner),
        purpose=purpose,
        flags=flags,
        status=status,
        expires=_from_micros(expires),
        passcode_hash=passcode,
        failures=int(failures),
        budget=int(budget),
        sealed=bytes(sealed),
        content_type=ctype,
        file_jwe=bytes(jwe_) if jwe_ is not None else None,
        file_updated=_from_micros(updated) or datetime.fromtimestamp(0, UTC),
    )


_HOT_STATEMENTS: dict[str, Any] = {
    "by_hash": _SERVED.where(ShlLink.manifest_hash == bindparam("h")),
    "by_id": _SERVED.where(ShlLink.id == bindparam("i")),
    "add_location": insert(ShlLocation).values(
        token_hash=bindparam("h"), link_id=bindparam("i"), expires=bindparam("e"), sealed=bindparam("s")
    ),
    "purge_locations": delete(ShlLocation).where(ShlLocation.expires <= bindparam("e")),
    "peek_location": select(ShlLocation.link_id, ShlLocation.expires, ShlLocation.sealed).where(
        ShlLocation.token_hash == bindparam("h")
    ),
    "take_location": delete(ShlLocation)
    .where(ShlLocation.token_hash == bindparam("h"))
    .returning(ShlLocation.link_id, ShlLocation.expires, ShlLocation.sealed),
}


@dataclass(frozen=True)
class _Compiled:
    sql: str
    order: tuple[str, ...] | None  # parameter names for a positional paramstyle (SQLite's qmark)


_compiled: dict[tuple[str, str], _Compiled] = {}
_CONN_KEY = "medvault_shl_connection"


def _hot(session: Session, name: str, **params: Any) -> list[tuple[Any, ...]]:
    """Run one of `_HOT_STATEMENTS` on the session's connection (its transaction); all rows.
    Values are passed raw: timestamps as integer microseconds, like UtcMicros stores them."""
    # The session's Connection, asked of the session once per transaction (each ask walks its
    # transaction state: ~0.1 ms, as much as the statement itself).
    conn = session.info.get(_CONN_KEY)
    if conn is None or conn.closed or not conn.in_transaction():
        conn = session.info[_CONN_KEY] = session.connection()
    dialect = conn.dialect
    found = _compiled.get((dialect.name, name))
    if found is None:
        compiled = _HOT_STATEMENTS[name].compile(dialect=dialect)
        order = tuple(compiled.positiontup) if compiled.positional and compiled.positiontup is not None else None
        found = _compiled[(dialect.name, name)] = _Compiled(str(compiled), order)
    args: Any = params if found.order is None else tuple(params[k] for k in found.order)
    cursor = conn.connection.cursor()
    dbapi_error = dialect.loaded_dbapi.Error
    try:
        cursor.execute(found.sql, args)
        return list(cursor.fetchall()) if cursor.description is not None else []
    except dbapi_error as exc:
        # The exception classes SQLAlchemy raises for its own statements, without parameters.
        raise DBAPIError.instance(found.sql, None, exc, dbapi_error, hide_parameters=True, dialect=dialect) from exc
    finally:
        cursor.close()


@dataclass(frozen=True)
class _RaiseAfterCommit:
    """A responder outcome whose writes must commit although the request fails (a counted wrong
    passcode, a spent location deleted): the transaction commits, then `error` is raised."""

    error: Exception


_T = TypeVar("_T")
_BATCH_MAX = 64


class _Work(Generic[_T]):
    def __init__(self, fn: Callable[[Session], _T], notify: Callable[[], None] | None = None) -> None:
        self.fn = fn
        self.done = threading.Event()
        self.notify = notify  # called once the outcome is set (an event loop's waiter), besides `done`
        self.result: _T | None = None
        self.error: BaseException | None = None


class _GroupWriter:
    """SQLite's responder writes, committed in groups by one thread.

    SQLite has one writer, and every responder request writes (its access-log entry, a location).
    Twenty responders each taking the write lock in turn spent most of the time handing it over
    (and the GIL with it); here the requests queue, and one thread runs all that are waiting in
    one transaction and commits once: each is on record before any of them is answered. A work
    item may raise only before it writes (a link that is not available, a malformed request):
    those are answered alone and the group goes on. Any other failure rolls the whole group back
    and every item in it gets the error, so nothing is answered that is not on record."""

    def __init__(self, factory: sessionmaker[Session]) -> None:
        self._factory = factory
        self._queue: queue.SimpleQueue[_Work[Any]] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name=_WRITER_THREAD, daemon=True)
        self._thread.start()

    def submit(self, work: _Work[Any]) -> None:
        self._queue.put(work)

    def _loop(self) -> None:
        while True:
            try:
                group = [self._queue.get(timeout=_IDLE_SECONDS)]
            except queue.Empty:
                with _writers_lock:  # submissions happen under this lock: none can slip in now
                    if self._queue.empty():
                        if _writers.get(self._factory) is self:
                            del _writers[self._factory]
                        return  # idle: the thread ends, the next request makes a new writer
                continue
            while len(group) < _BATCH_MAX:
                try:
                    group.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._run_group(group)

    def _run_group(self, group: list[_Work[Any]]) -> None:
        try:
            with unit_of_work(self._factory) as session:
                for work in group:
                    try:
                        work.result = work.fn(session)
                    except (ShlError, LinkError) as exc:  # raised before any write: answered alone
                        work.error = exc
        except BaseException as exc:  # noqa: BLE001 - the group is rolled back: every item fails
            for work in group:
                work.error = exc
        finally:
            for work in group:
                work.done.set()
                if work.notify is not None:
                    try:
                        work.notify()
                    except Exception as exc:  # noqa: BLE001 - one waiter's failure must not strand the rest
                        log.warning("a responder waiter could not be woken: %s", exc.__class__.__name__)


_writers: dict[sessionmaker[Session], _GroupWriter] = {}
_writers_lock = threading.Lock()
_IDLE_SECONDS = 30.0
log = logs.get("shl")
_WRITER_THREAD = "medvault-shl-writer"


def _grouped(factory: sessionmaker[Session]) -> bool:
    bind = factory.kw.get("bind")
    return bind is not None and bind.dialect.name == "sqlite"


def _submit(factory: sessionmaker[Session], work: _Work[Any]) -> None:
    if threading.current_thread().name == _WRITER_THREAD:
        # A work item waiting on its own writer would wait forever: a programming error.
        raise RuntimeError("a responder work item must not start another responder write")
    with _writers_lock:
        writer = _writers.get(factory)
        if writer is None or not writer._thread.is_alive():  # never queue to a writer that died
            writer = _writers[factory] = _GroupWriter(factory)
        writer.submit(work)


def _outcome(work: _Work[Any]) -> Any:
    if work.error is not None:
        raise work.error
    result = work.result
    if isinstance(result, _RaiseAfterCommit):
        raise result.error
    return result


def _alone(factory: sessionmaker[Session], fn: Callable[[Session], Any]) -> Any:
    with unit_of_work(factory) as session:
        result = fn(session)
    if isinstance(result, _RaiseAfterCommit):
        raise result.error
    return result


def _write(factory: sessionmaker[Session], fn: Callable[[Session], Any]) -> Any:
    """Run `fn` in a write transaction and commit it: grouped with other responders' on SQLite,
    its own transaction on PostgreSQL (row locks; concurrent writers scale there)."""
    if not _grouped(factory):
        if threading.current_thread().name == _WRITER_THREAD:
            raise RuntimeError("a responder work item must not start another responder write")
        return _alone(factory, fn)
    work: _Work[Any] = _Work(fn)
    _submit(factory, work)
    work.done.wait()
    return _outcome(work)


async def _write_async(factory: sessionmaker[Session], fn: Callable[[Session], Any]) -> Any:
    """`_write` for the event loop: on SQLite the request waits for its group without a worker
    thread of its own (one hand-over less per request); PostgreSQL runs it on a worker thread."""
    if not _grouped(factory):
        return await anyio.to_thread.run_sync(_alone, factory, fn)
    loop = asyncio.get_running_loop()
    settled: asyncio.Future[None] = loop.create_future()

    def settle() -> None:
        if not settled.done():
            settled.set_result(None)

    def wake() -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
            loop.call_soon_threadsafe(settle)

    work: _Work[Any] = _Work(fn, notify=wake)
    _submit(factory, work)
    await settled
    return _outcome(work)


# The responder flows are written once, as generators that yield what they need done: a database
# step (`_Db`, run by `_write`) or a passcode check (`_Verify`, Argon2). `_run` drives one in the
# calling thread (the CLI, tests); `run_async` on the event loop (the server), where Argon2 goes
# to a worker thread and database steps wait for their group without one.


@dataclass(frozen=True)
class _Db:
    fn: Callable[[Session], Any]


@dataclass(frozen=True)
class _Verify:
    stored: str
    passcode: object


_Flow = Generator[_Db | _Verify, Any, _T]


def _verify(hasher: Hasher, step: _Verify) -> bool:
    # The hasher bounds its concurrent Argon2 calls (64 MiB each): the rest queue.
    return isinstance(step.passcode, str) and hasher.verify(stored=step.stored, password=step.passcode).ok


def _run(factory: sessionmaker[Session], hasher: Hasher | None, flow: _Flow[_T]) -> _T:
    value: Any = None
    while True:
        # Only the flow's own resumption is inside the try: a StopIteration out of a step must
        # not pass for the flow's return.
        try:
            step = flow.send(value)
        except StopIteration as stop:
            return cast(_T, stop.value)
        if isinstance(step, _Db):
            value = _write(factory, step.fn)
        else:
            assert hasher is not None
            value = _verify(hasher, step)


async def run_async(factory: sessionmaker[Session], hasher: Hasher | None, flow: _Flow[_T]) -> _T:
    """Drive a responder flow (`manifest_flow`, `file_flow`, `direct_flow`) on the event loop: the
    server's responder endpoints. `open_manifest` and the others drive the same flows in the
    calling thread."""
    value: Any = None
    while True:
        try:
            step = flow.send(value)
        except StopIteration as stop:
            return cast(_T, stop.value)
        if isinstance(step, _Db):
            value = await _write_async(factory, step.fn)
        else:
            assert hasher is not None
            # On the hasher's own pool and bound: a queued check holds none of the threads that
            # other requests (FastAPI's sync endpoints, PostgreSQL steps) need.
            passcode = step.passcode
            value = isinstance(passcode, str) and (await hasher.verify_async(stored=step.stored, password=passcode)).ok


def _live(row: _Served | None, now: datetime) -> _Served:
    """The one answer for unknown, paused, revoked, expired and spent links."""
    if (
        row is None
        or row.status != "active"
        or row.file_jwe is None
        or (row.expires is not None and row.expires <= now)
        or (row.passcode_hash is not None and row.failures >= row.budget)
    ):
        raise ShlUnavailable("this link is not available")
    return row


def _why_unavailable(row: _Served, now: datetime) -> str | None:
    if row.status != "active":
        return str(row.status)  # paused | revoked
    if row.file_jwe is None:
        return "revoked"
    if row.expires is not None and row.expires <= now:
        return "expired"
    if row.passcode_hash is not None and row.failures >= row.budget:
        return "attempts-spent"
    return None


def _live_or_logged(
    session: Session,
    crypto: CryptoContext,
    row: _Served | None,
    *,
    who: str,
    interaction: str,
    now: datetime,
    address: str | None,
) -> _Served | _RaiseAfterCommit:
    """The link if it can be opened. A real link that cannot (paused, revoked, expired, spent) is
    refused with the same 404 as an unknown one, and the attempt goes in its patient's access log
    (issue 4: every opening, whatever its outcome); an unknown id has no patient to tell."""
    if row is None:
        raise ShlUnavailable("this link is not available")
    why = _why_unavailable(row, now)
    if why is None:
        return row
    patient_id = str(_open_sealed(session, crypto, row)["patient"])
    _log_opening(
        session,
        crypto,
        patient_id=patient_id,
        purpose=row.purpose,
        recipient=who,
        interaction=interaction,
        outcome=why,
        allowed=False,
        now=now,
        address=address,
    )
    return _RaiseAfterCommit(ShlUnavailable("this link is not available"))


def _find(session: Session, presented: str) -> _Served | None:
    if not _TOKEN.fullmatch(presented):
        return None
    rows = _hot(session, "by_hash", h=_hash(presented))
    return _served(rows[0]) if rows else None


def open_manifest(
    *,
    factory: sessionmaker[Session],
    crypto: CryptoContext,
    hasher: Hasher,
    link_id: str,
    recipient: object,
    passcode: object = None,
    embedded_length_max: object = None,
    base_url: str,
    address: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The manifest for a responder. Raises ShlUnavailable (404) for any link that cannot be opened,
    ShlPasscodeError (401, with the remaining attempts) for a wrong or missing passcode, and
    BadShlRequest (400) for a malformed request."""
    flow = manifest_flow(
        crypto=crypto,
        link_id=link_id,
        recipient=recipient,
        passcode=passcode,
        embedded_length_max=embedded_length_max,
        base_url=base_url,
        address=address,
        now=now,
    )
    return _run(factory, hasher, flow)


def manifest_flow(
    *,
    crypto: CryptoContext,
    link_id: str,
    recipient: object,
    passcode: object = None,
    embedded_length_max: object = None,
    base_url: str,
    address: str | None = None,
    now: datetime | None = None,
) -> _Flow[dict[str, Any]]:
    """The manifest for a responder. Raises ShlUnavailable (404) for any link that cannot be opened,
    ShlPasscodeError (401, with the remaining attempts) for a wrong or missing passcode, and
    BadShlRequest (400) for a malformed request."""
    now = _utc(now)
    who = _check_recipient(recipient)
    if passcode is not None and (not isinstance(passcode, str) or len(passcode) > MAX_PASSCODE_CHARS):
        raise BadShlRequest("passcode must be text")
    if embedded_length_max is not None and (
        not isinstance(embedded_length_max, int) or isinstance(embedded_length_max, bool) or embedded_length_max < 0
    ):
        raise BadShlRequest("embeddedLengthMax must be a non-negative integer")
    verified: bool | None = None
    stored_hash: str | None = None
    for _ in range(2):

        def attempt(session: Session, verified: bool | None = verified, stored_hash: str | None = stored_hash) -> Any:
            row = _live_or_logged(
                session, crypto, _find(session, link_id), who=who, interaction="shl-manifest", now=now, address=address
            )
            if isinstance(row, _RaiseAfterCommit):
                return row
            if "U" in row.flags:
                raise ShlUnavailable("this link is not available")  # a U link has no manifest
            if row.passcode_hash is not None and (verified is None or row.passcode_hash != stored_hash):
                # Argon2 (~0.1-0.2 s) runs outside the transaction: holding the database (SQLite's
                # one writer) for it would stall every other responder.
                return _NeedsPasscode(row.passcode_hash)
            return _serve_manifest(
                session,
                crypto,
                row,
                verified=verified,
                who=who,
                embedded_length_max=embedded_length_max,
                base_url=base_url,
                address=address,
                now=now,
            )

        outcome = yield _Db(attempt)
        if not isinstance(outcome, _NeedsPasscode):
            return cast(dict[str, Any], outcome)
        stored_hash = outcome.stored
        verified = yield _Verify(stored_hash, passcode)
    raise ShlUnavailable("this link is not available")  # its passcode changed twice while we checked


@dataclass(frozen=True)
class _NeedsPasscode:
    stored: str


def _serve_manifest(
    session: Session,
    crypto: CryptoContext,
    row: _Served,
    *,
    verified: bool | None,
    who: str,
    embedded_length_max: object,
    base_url: str,
    address: str | None,
    now: datetime,
) -> dict[str, Any] | _RaiseAfterCommit:
    patient_id = str(_open_sealed(session, crypto, row)["patient"])
    if row.passcode_hash is not None and not verified:
        # One statement counts the failure only while the budget lasts: K concurrent wrong
        # guesses count exactly min(K, budget), whatever the interleaving.
        counted = session.execute(
            update(ShlLink)
            .where(ShlLink.id == row.id, ShlLink.failures < ShlLink.budget)
            .values(failures=ShlLink.failures + 1)
            .returning(ShlLink.failures)
        ).scalar_one_or_none()
        outcome = "wrong-passcode" if counted is not None else "attempts-spent"
        _log_opening(
            session,
            crypto,
            patient_id=patient_id,
            purpose=row.purpose,
            recipient=who,
            interaction="shl-manifest",
            outcome=outcome,
            allowed=False,
            now=now,
            address=address,
        )
        if counted is None:
            return _RaiseAfterCommit(ShlUnavailable("this link is not available"))
        return _RaiseAfterCommit(ShlPasscodeError("wrong passcode", remaining_attempts=row.budget - counted))
    entry: dict[str, Any] = {"contentType": row.content_type, "lastUpdated": _iso(row.file_updated)}
    assert row.file_jwe is not None
    if isinstance(embedded_length_max, int) and len(row.file_jwe) <= embedded_length_max:
        entry["embedded"] = row.file_jwe.decode()
    else:
        token = secrets.token_urlsafe(32)
        expires = now + LOCATION_TTL
        if row.expires is not None:
            expires = min(expires, row.expires)
        key = _patient_key(session, crypto, row.owner)
        token_hash = _hash(token)
        sealed = crypto.sealer.seal(key, who.encode(), _LOCATION_AAD + token_hash.hex().encode())
        _hot(session, "add_location", h=token_hash, i=row.id, e=_to_micros(expires), s=sealed)
        entry["location"] = f"{base_url}/shl/f/{token}"
    # Expired locations of any link go with each manifest: the table stays small.
    _hot(session, "purge_locations", e=_to_micros(now))
    _log_opening(
        session,
        crypto,
        patient_id=patient_id,
        purpose=row.purpose,
        recipient=who,
        interaction="shl-manifest",
        outcome="opened",
        allowed=True,
        now=now,
        address=address,
    )
    return {"files": [entry]}


def open_file(
    *,
    factory: sessionmaker[Session],
    crypto: CryptoContext,
    location_token: str,
    recipient: str | None = None,
    address: str | None = None,
    now: datetime | None = None,
) -> ServedFile:
    """The file behind a manifest's `location` (single use, at most an hour). The recipient is the
    one the manifest was opened for (kept sealed with the location), unless given."""
    return _run(
        factory,
        None,
        file_flow(crypto=crypto, location_token=location_token, recipient=recipient, address=address, now=now),
    )


def file_flow(
    *,
    crypto: CryptoContext,
    location_token: str,
    recipient: str | None = None,
    address: str | None = None,
    now: datetime | None = None,
) -> _Flow[ServedFile]:
    """The file behind a manifest's `location` (single use, at most an hour). The recipient is the
    one the manifest was opened for (kept sealed with the location), unless given."""
    now = _utc(now)
    if not _TOKEN.fullmatch(location_token):
        raise ShlUnavailable("this link is not available")
    token_hash = _hash(location_token)
    aad = _LOCATION_AAD + token_hash.hex().encode()

    def attempt(session: Session) -> ServedFile | _RaiseAfterCommit:
        # Reads first (a link that is not available raises before anything is written), then take
        # the location: the DELETE ... RETURNING decides who used it, so it is used once.
        found = _hot(session, "peek_location", h=token_hash)
        if not found:
            raise ShlUnavailable("this link is not available")
        link_id, expires, _sealed = found[0]
        if int(expires) <= _to_micros(now):
            _hot(session, "take_location", h=token_hash)  # an expired one is deleted all the same
            return _RaiseAfterCommit(ShlUnavailable("this link is not available"))
        by_id = _hot(session, "by_id", i=int(link_id))
        row = _live(_served(by_id[0]) if by_id else None, now)
        taken = _hot(session, "take_location", h=token_hash)
        if not taken:  # another request took it first
            return _RaiseAfterCommit(ShlUnavailable("this link is not available"))
        key = _patient_key(session, crypto, row.owner)
        who = recipient or crypto.sealer.open(key, bytes(taken[0][2]), aad).decode()
        return _serve(session, crypto, row, who=who, interaction="shl-file", now=now, address=address)

    served: ServedFile = yield _Db(attempt)
    return served


def open_direct(
    *,
    factory: sessionmaker[Session],
    crypto: CryptoContext,
    link_id: str,
    recipient: object,
    address: str | None = None,
    now: datetime | None = None,
) -> ServedFile:
    """A `U` link's single file, fetched with `GET url?recipient=`."""
    return _run(
        factory, None, direct_flow(crypto=crypto, link_id=link_id, recipient=recipient, address=address, now=now)
    )


def direct_flow(
    *,
    crypto: CryptoContext,
    link_id: str,
    recipient: object,
    address: str | None = None,
    now: datetime | None = None,
) -> _Flow[ServedFile]:
    """A `U` link's single file, fetched with `GET url?recipient=`."""
    now = _utc(now)
    who = _check_recipient(recipient)

    def attempt(session: Session) -> ServedFile | _RaiseAfterCommit:
        row = _live_or_logged(
            session, crypto, _find(session, link_id), who=who, interaction="shl-direct", now=now, address=address
        )
        if isinstance(row, _RaiseAfterCommit):
            return row
        if "U" not in row.flags:
            raise ShlUnavailable("this link is not available")
        return _serve(session, crypto, row, who=who, interaction="shl-direct", now=now, address=address)

    served: ServedFile = yield _Db(attempt)
    return served


def _serve(
    session: Session,
    crypto: CryptoContext,
    row: _Served,
    *,
    who: str,
    interaction: str,
    now: datetime,
    address: str | None,
) -> ServedFile:
    """Log the download in the patient's access log and commit it with the answer: a file is
    served only once its opening is on record."""
    patient_id = str(_open_sealed(session, crypto, row)["patient"])
    _log_opening(
        session,
        crypto,
        patient_id=patient_id,
        purpose=row.purpose,
        recipient=who,
        interaction=interaction,
        outcome="downloaded",
        allowed=True,
        now=now,
        address=address,
    )
    assert row.file_jwe is not None
    return ServedFile(row.content_type, row.file_jwe)


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
