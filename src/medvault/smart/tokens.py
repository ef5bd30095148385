"""Registered apps, authorization codes and tokens: the storage-side service functions of SMART.

Nothing secret is stored in a usable form: client secrets, codes, access and refresh tokens are
kept as SHA-256 hashes (each is 32 random bytes, so a fast hash is enough: there is no dictionary
to try), and the granted scope with the launch patient is sealed under an identity data key.

Every sensitive step writes an AuditEvent through the access log in the caller's transaction:
approval, denial, token issue, refresh-token reuse and revocation. The entries name the account,
the app and (for a launch) the patient; never a token, code or secret.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal
from urllib.parse import urlsplit

import orjson
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from medvault.audit import log as audit_log
from medvault.auth import accounts
from medvault.auth.accounts import Actor
from medvault.errors import MedvaultError
from medvault.smart import scopes as sc
from medvault.store.crypto_context import CryptoContext
from medvault.store.models import OAuthClient, OAuthCode, OAuthToken

CODE_LIFETIME: Final = timedelta(seconds=60)
ACCESS_LIFETIME: Final = timedelta(hours=1)
REFRESH_LIFETIME: Final = timedelta(days=30)
# Owner of the identity data key that seals SMART rows (accounts use ...\x02).
SMART_OWNER: Final = bytes(15) + b"\x03"
_AAD: Final = b"medvault:smart:v1|"
SYSTEM_SCOPE: Final = "system/*.cruds"
MAX_NAME = 200
MAX_URI = 2000


class AppError(MedvaultError):
    code = "invalid"


def digest(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


def new_secret() -> str:
    """An opaque random 32-byte value, URL-safe (tokens, codes, client secrets)."""
    return secrets.token_urlsafe(32)


def _key(session: Session, crypto: CryptoContext) -> Any:
    return crypto.data_key(session, purpose="identity", owner=SMART_OWNER)[1]


def _seal(session: Session, crypto: CryptoContext, kind: str, ident: bytes, value: dict[str, Any]) -> bytes:
    return crypto.sealer.seal(_key(session, crypto), orjson.dumps(value), _AAD + kind.encode() + b"|" + ident)


def _open(session: Session, crypto: CryptoContext, kind: str, ident: bytes, blob: bytes) -> dict[str, Any]:
    value: dict[str, Any] = orjson.loads(
        crypto.sealer.open(_key(session, crypto), blob, _AAD + kind.encode() + b"|" + ident)
    )
    return value


# -- apps --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AppInfo:
    client_id: str
    name: str
    redirect_uris: tuple[str, ...]
    confidential: bool


def _check_redirect(uri: str) -> str:
    parts = urlsplit(uri)
    if len(uri) > MAX_URI or parts.fragment or not parts.netloc:
        raise AppError("a redirect URI is an absolute URL without a fragment")
    loopback = parts.hostname in ("127.0.0.1", "::1", "localhost")
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        # RFC 9700 / RFC 8252: https, or http only to the loopback address of a native app.
        raise AppError("a redirect URI must use https (http only for 127.0.0.1 or localhost)")
    return uri


def register_client(
    *, session: Session, name: str, redirect_uris: list[str], confidential: bool, now: datetime
) -> tuple[str, str | None]:
    """Register an app; returns (client_id, secret). The secret (confidential apps only) is shown
    once: only its hash is kept."""
    name = name.strip()
    if not name or len(name) > MAX_NAME:
        raise AppError(f"an app name is 1 to {MAX_NAME} characters")
    if not redirect_uris:
        raise AppError("an app needs at least one redirect URI")
    uris = [_check_redirect(u.strip()) for u in redirect_uris]
    client_id = secrets.token_urlsafe(16)
    secret = new_secret() if confidential else None
    session.add(
        OAuthClient(
            id=client_id,
            name=name,
            redirect_uris=orjson.dumps(uris).decode(),
            confidential=confidential,
            secret_hash=digest(secret) if secret else None,
            created=now,
        )
    )
    session.flush()
    return client_id, secret


def _info(row: OAuthClient) -> AppInfo:
    return AppInfo(row.id, row.name, tuple(orjson.loads(row.redirect_uris)), row.confidential)


def get_client(*, session: Session, client_id: str) -> AppInfo | None:
    if not client_id or len(client_id) > 64:
        return None
    row = session.get(OAuthClient, client_id)
    return _info(row) if row is not None else None


def list_clients(*, session: Session) -> list[AppInfo]:
    return [_info(r) for r in session.scalars(select(OAuthClient).order_by(OAuthClient.name, OAuthClient.id))]


def check_client_secret(*, session: Session, client_id: str, secret: str) -> bool:
    row = session.get(OAuthClient, client_id)
    if row is None or row.secret_hash is None:
        return False
    return hmac.compare_digest(row.secret_hash, digest(secret))


# -- authorization codes -----------------------------------------------------------------------


@dataclass(frozen=True)
class CodeGrant:
    """What an authorization code stands for, once found (not yet used)."""

    code_hash: bytes
    client_id: str
    account_id: str
    redirect_uri: str
    challenge: str
    scope: str
    patient: str | None
    granted: datetime
    nonce: str | None = None


def save_code(
    *,
    session: Session,
    crypto: CryptoContext,
    code: str,
    client_id: str,
    account_id: str,
    redirect_uri: str,
    challenge: str,
    scope: str,
    patient: str | None,
    now: datetime,
    nonce: str | None = None,
) -> None:
    code_hash = digest(code)
    session.add(
        OAuthCode(
            code_hash=code_hash,
            client_id=client_id,
            account_id=account_id,
            redirect_uri=redirect_uri,
            challenge=challenge,
            sealed=_seal(session, crypto, "code", code_hash, {"scope": scope, "patient": patient, "nonce": nonce}),
            granted=now,
            expires=now + CODE_LIFETIME,
        )
    )
    session.flush()


# The `challenge` of a code already exchanged. The row stays until the code would have expired, so
# that a second exchange is recognised as a replay rather than as an unknown code.
_USED: Final = ""


def code_family(code_hash: bytes) -> str:
    """The token family a code is exchanged for: derived from the code, so a replay finds it."""
    return code_hash.hex()[:32]


def find_code(*, session: Session, crypto: CryptoContext, code: str, client_id: str, now: datetime) -> CodeGrant | None:
    """The live code issued to this client, locked for this transaction (PostgreSQL; SQLite writers
    are exclusive): two exchanges of one code cannot both succeed. An expired one is deleted.
    A code exchanged already was copied: the tokens it was exchanged for are revoked (RFC 6749
    4.1.2) and the replay is logged."""
    if not code or len(code) > 256:
        return None
    code_hash = digest(code)
    row = session.scalars(select(OAuthCode).where(OAuthCode.code_hash == code_hash).with_for_update()).first()
    if row is None:
        return None
    if row.expires <= now:
        session.delete(row)
        return None
    if row.challenge == _USED:
        revoke_family(session=session, family=code_family(code_hash), now=now)
        try:
            actor: Actor | None = accounts.actor_for(session=session, crypto=crypto, account_id=row.account_id)
        except accounts.AccountNotFound:
            actor = None
        patient = _open(session, crypto, "code", code_hash, row.sealed).get("patient")
        audit(
            session=session,
            crypto=crypto,
            actor=actor,
            client_id=row.client_id,
            what="code-reuse",
            patient_id=patient,
            ok=False,
        )
        return None
    if row.client_id != client_id:
        return None
    sealed = _open(session, crypto, "code", code_hash, row.sealed)
    return CodeGrant(
        code_hash,
        row.client_id,
        row.account_id,
        row.redirect_uri,
        row.challenge,
        sealed["scope"],
        sealed.get("patient"),
        row.granted,
        sealed.get("nonce"),
    )


def use_code(*, session: Session, code_hash: bytes) -> bool:
    """Mark the code used (single use; `find_code` treats another exchange as a replay). False
    when it was gone or used already (a concurrent exchange)."""
    row = session.get(OAuthCode, code_hash)
    if row is None or row.challenge == _USED:
        return False
    row.challenge = _USED
    session.flush()
    return True


# -- tokens ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Issued:
    access_token: str
    refresh_token: str | None
    expires_in: int | None


@dataclass(frozen=True)
class TokenRecord:
    """A stored token, found by its access or refresh value."""

    id: str
    family: str
    client_id: str | None
    account_id: str | None
    scope: str
    patient: str | None
    granted: datetime
    access_expires: datetime | None
    refresh_expires: datetime | None
    refresh_used: bool
    revoked: datetime | None


def store_token(
    *,
    session: Session,
    crypto: CryptoContext | None,
    access_token: str,
    refresh_token: str | None,
    client_id: str | None,
    account_id: str | None,
    scope: str,
    patient: str | None,
    family: str | None,
    granted: datetime,
    now: datetime,
    expires: bool = True,
) -> str:
    token_id = secrets.token_hex(16)
    system = client_id is None and account_id is None
    if system and (scope != SYSTEM_SCOPE or patient is not None):
        raise AppError("an operator token has the scope system/*.cruds and no patient")
    # An operator token's scope is fixed and names no one: nothing to seal (and no data key to make
    # when `medvault init` issues the first one).
    if system:
        sealed = b""
    else:
        assert crypto is not None, "an app token is sealed"
        sealed = _seal(session, crypto, "token", token_id.encode(), {"scope": scope, "patient": patient})
    session.add(
        OAuthToken(
            id=token_id,
            access_hash=digest(access_token),
            refresh_hash=digest(refresh_token) if refresh_token else None,
            family=family or secrets.token_hex(16),
            client_id=client_id,
            account_id=account_id,
            sealed=sealed,
            granted=granted,
            issued=now,
            access_expires=now + ACCESS_LIFETIME if expires else None,
            refresh_expires=now + REFRESH_LIFETIME if refresh_token else None,
            refresh_used=False,
        )
    )
    session.flush()
    return token_id


def _sealed(session: Session, crypto: CryptoContext, row: OAuthToken) -> dict[str, Any]:
    if row.account_id is None and row.client_id is None:
        return {"scope": SYSTEM_SCOPE, "patient": None}
    return _open(session, crypto, "token", row.id.encode(), row.sealed)


def _record(session: Session, crypto: CryptoContext, row: OAuthToken) -> TokenRecord:
    sealed = _sealed(session, crypto, row)
    return TokenRecord(
        row.id,
        row.family,
        row.client_id,
        row.account_id,
        sealed["scope"],
        sealed.get("patient"),
        row.granted,
        row.access_expires,
        row.refresh_expires,
        row.refresh_used,
        row.revoked,
    )


def find_token(
    *, session: Session, crypto: CryptoContext, value: str, kind: Literal["access", "refresh", "any"]
) -> TokenRecord | None:
    if not value or len(value) > 256:
        return None
    h = digest(value)
    row = None
    if kind in ("access", "any"):
        row = session.scalars(select(OAuthToken).where(OAuthToken.access_hash == h)).first()
    if row is None and kind in ("refresh", "any"):
        row = session.scalars(select(OAuthToken).where(OAuthToken.refresh_hash == h).with_for_update()).first()
    return _record(session, crypto, row) if row is not None else None


def mark_rotated(*, session: Session, token_id: str, now: datetime) -> None:
    """The refresh token was exchanged: it must never work again, and its access token ends too."""
    session.execute(update(OAuthToken).where(OAuthToken.id == token_id).values(refresh_used=True, revoked=now))


def revoke_family(*, session: Session, family: str, now: datetime) -> int:
    result = session.execute(
        update(OAuthToken).where(OAuthToken.family == family, OAuthToken.revoked.is_(None)).values(revoked=now)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def issue_system_token(*, session: Session, crypto: CryptoContext | None, now: datetime) -> str:
    """An operator token (scope system/*.cruds) for bulk work from the CLI. It does not expire;
    `revoke_system_tokens` or a new `medvault token issue --system --replace` ends it.
    Audited when given `crypto`; `medvault init` gives none for the first token of a new store (its
    access log starts empty, and init must not need the store's keys to be usable yet)."""
    token = new_secret()
    store_token(
        session=session,
        crypto=crypto,
        access_token=token,
        refresh_token=None,
        client_id=None,
        account_id=None,
        scope=SYSTEM_SCOPE,
        patient=None,
        family=None,
        granted=now,
        now=now,
        expires=False,
    )
    if crypto is not None:
        audit(session=session, crypto=crypto, actor=None, client_id=None, what="token-issue", patient_id=None, ok=True)
    return token


def revoke_system_tokens(*, session: Session, crypto: CryptoContext, now: datetime) -> int:
    result = session.execute(
        update(OAuthToken)
        .where(OAuthToken.account_id.is_(None), OAuthToken.client_id.is_(None), OAuthToken.revoked.is_(None))
        .values(revoked=now)
    )
    count = int(getattr(result, "rowcount", 0) or 0)
    if count:
        audit(session=session, crypto=crypto, actor=None, client_id=None, what="revoke", patient_id=None, ok=True)
    return count


def system_token_valid(*, session: Session, token: str) -> bool:
    """Whether `token` is a live operator token (no keys needed: nothing of it is sealed)."""
    if not token or len(token) > 256:
        return False
    row = session.scalars(select(OAuthToken).where(OAuthToken.access_hash == digest(token))).first()
    return row is not None and row.account_id is None and row.client_id is None and row.revoked is None


# -- bearer tokens on /fhir --------------------------------------------------------------------


@dataclass(frozen=True)
class Bearer:
    """Who a valid access token acts for. `actor` None: an operator (system) token. `stale`: its
    "last used" is over a minute old (the face records the use in a writing transaction)."""

    actor: Actor | None
    client_id: str | None
    scopes: sc.Scopes
    patient: str | None
    token_id: str
    stale: bool


_TOUCH_EVERY = timedelta(minutes=1)


def resolve_bearer(*, session: Session, crypto: CryptoContext, token: str, now: datetime) -> Bearer | None:
    """The live token behind an Authorization header value, or None (unknown, expired, revoked, or
    its account disabled). Reads only."""
    if not token or len(token) > 256:
        return None
    row = session.scalars(select(OAuthToken).where(OAuthToken.access_hash == digest(token))).first()
    if row is None or row.revoked is not None:
        return None
    if row.access_expires is not None and row.access_expires <= now:
        return None
    actor = None
    if row.account_id is not None:
        try:
            actor = accounts.actor_for(session=session, crypto=crypto, account_id=row.account_id)
        except accounts.AccountNotFound:
            return None
    elif row.client_id is not None:
        return None  # an app token always acts for an account
    sealed = _sealed(session, crypto, row)
    stale = row.last_used is None or now - row.last_used > _TOUCH_EVERY
    return Bearer(actor, row.client_id, sc.parse(sealed["scope"]), sealed.get("patient"), row.id, stale)


def touch(*, session: Session, token_id: str, now: datetime) -> None:
    """Record that a token was used (for "my apps"); at most once a minute per token."""
    session.execute(update(OAuthToken).where(OAuthToken.id == token_id).values(last_used=now))


# -- "my apps" ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuthorisedApp:
    client_id: str
    name: str
    scope: str
    granted: datetime
    last_used: datetime | None


def my_apps(*, session: Session, crypto: CryptoContext, account_id: str, now: datetime) -> list[AuthorisedApp]:
    """The apps this account authorised that still hold a live token (access or refresh)."""
    rows = session.scalars(
        select(OAuthToken).where(
            OAuthToken.account_id == account_id, OAuthToken.revoked.is_(None), OAuthToken.client_id.is_not(None)
        )
    ).all()
    by_client: dict[str, AuthorisedApp] = {}
    names = {c.id: c.name for c in session.scalars(select(OAuthClient))}
    for row in rows:
        live = (row.access_expires is not None and row.access_expires > now) or (
            row.refresh_expires is not None and row.refresh_expires > now and not row.refresh_used
        )
        if not live or row.client_id is None:
            continue
        scope = _open(session, crypto, "token", row.id.encode(), row.sealed)["scope"]
        prev = by_client.get(row.client_id)
        last = max((t for t in (row.last_used, prev.last_used if prev else None) if t is not None), default=None)
        granted = min(row.granted, prev.granted) if prev else row.granted
        scopes = " ".join(sorted(set(scope.split()) | (set(prev.scope.split()) if prev else set())))
        by_client[row.client_id] = AuthorisedApp(row.client_id, names.get(row.client_id, "?"), scopes, granted, last)
    return sorted(by_client.values(), key=lambda a: (a.name, a.client_id))


def revoke_app(*, session: Session, crypto: CryptoContext, actor: Actor, client_id: str, now: datetime) -> int:
    """End every token of this app for this account; returns how many were live."""
    result = session.execute(
        update(OAuthToken)
        .where(
            OAuthToken.account_id == actor.account_id,
            OAuthToken.client_id == client_id,
            OAuthToken.revoked.is_(None),
        )
        .values(revoked=now)
    )
    count = int(getattr(result, "rowcount", 0) or 0)
    audit(
        session=session,
        crypto=crypto,
        actor=actor,
        client_id=client_id,
        what="revoke",
        patient_id=actor.patient_id,
        ok=True,
    )
    return count


def revoke_account(*, session: Session, crypto: CryptoContext, account_id: str, now: datetime) -> int:
    """End every app token of an account, by the operator: disabling an account or resetting its
    second factor answers a stolen sign-in, and the apps the thief approved must end with it (a
    disabled account's tokens would otherwise only pause, and live again on re-enabling)."""
    result = session.execute(
        update(OAuthToken).where(OAuthToken.account_id == account_id, OAuthToken.revoked.is_(None)).values(revoked=now)
    )
    count = int(getattr(result, "rowcount", 0) or 0)
    if count:
        audit(session=session, crypto=crypto, actor=None, client_id=None, what="revoke", patient_id=None, ok=True)
    return count


# -- audit -------------------------------------------------------------------------------------

AuditWhat = Literal["approve", "deny", "token-issue", "refresh-reuse", "code-reuse", "revoke"]


def audit(
    *,
    session: Session,
    crypto: CryptoContext,
    actor: Actor | None,
    client_id: str | None,
    what: AuditWhat,
    patient_id: str | None,
    ok: bool,
) -> None:
    """One AuditEvent (security-alert style) in the caller's transaction. No token values."""
    now = datetime.now(UTC)
    who: dict[str, Any]
    if actor is None:
        who = {"display": "operator"}
    elif actor.practitioner_id:
        who = {"reference": f"Practitioner/{actor.practitioner_id}"}
    elif actor.patient_id:
        who = {"reference": f"Patient/{actor.patient_id}"}
    else:
        who = {"identifier": {"system": "urn:medvault:account", "value": actor.account_id}}
    agent: dict[str, Any] = {"who": who, "requestor": True, "type": {"text": actor.role if actor else "operator"}}
    if actor is not None:
        agent["altId"] = actor.account_id
    agents = [agent]
    if client_id:
        agents.append({"who": {"identifier": {"value": client_id}}, "requestor": False, "altId": "app"})
    entity = []
    if patient_id:
        entity.append({"what": {"reference": f"Patient/{patient_id}"}, "type": {"code": "1"}})
    event = {
        "resourceType": "AuditEvent",
        "type": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110113"},
        "subtype": [{"system": "urn:medvault:smart", "code": f"smart-{what}"}],
        "action": "E",
        "recorded": now.isoformat().replace("+00:00", "Z"),
        "outcome": "0" if ok else "4",
        "outcomeDesc": what,
        "agent": agents,
        "source": {"observer": {"display": "medvault"}, "type": [{"code": "4"}]},
        "entity": entity,
    }
    audit_log.append(session=session, crypto=crypto, event=event, patient_id=patient_id, now=now)


def utcnow() -> datetime:
    return datetime.now(UTC)
