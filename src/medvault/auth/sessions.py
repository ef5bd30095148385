"""Browser sessions: an opaque random cookie value, stored only as its SHA-256; idle expiry 15
minutes, absolute 12 hours; ended by logout, or for every session of an account by a password
change, MFA reset or disabling (the account's epoch moves on). The CSRF token is an HMAC of the
cookie value, so it needs no storage and dies with the session."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import delete
from sqlalchemy.orm import Session

from medvault.auth import accounts
from medvault.auth.accounts import Actor
from medvault.store.crypto_context import CryptoContext
from medvault.store.models import WebSession

IDLE = timedelta(minutes=15)
ABSOLUTE = timedelta(hours=12)
Stage = Literal["full", "second-factor", "enrol"]


@dataclass(frozen=True)
class Live:
    actor: Actor
    stage: Stage
    csrf: str


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def csrf_token(crypto: CryptoContext, token: str) -> str:
    return hmac.new(crypto.keyring.index_key("csrf"), token.encode(), hashlib.sha256).hexdigest()


def start(*, session: Session, actor: Actor, stage: Stage, now: datetime) -> str:
    """A new session (a fresh value at every sign-in step: no session fixation); returns the cookie value."""
    token = secrets.token_urlsafe(32)
    session.add(
        WebSession(
            token_hash=_hash(token),
            account_id=actor.account_id,
            epoch=actor.session_epoch,
            stage=stage,
            created=now,
            last_seen=now,
        )
    )
    session.flush()
    return token


def resume(*, session: Session, crypto: CryptoContext, token: str | None, now: datetime) -> Live | None:
    """The live session behind a cookie value, or None (and the row is removed if it expired)."""
    if not token or len(token) > 128:
        return None
    row = session.get(WebSession, _hash(token))
    if row is None:
        return None
    if now - row.last_seen > IDLE or now - row.created > ABSOLUTE:
        session.delete(row)
        return None
    try:
        actor = accounts.actor_for(session=session, crypto=crypto, account_id=row.account_id, session_epoch=row.epoch)
    except accounts.AccountNotFound:
        session.delete(row)
        return None
    row.last_seen = now
    return Live(actor=actor, stage=row.stage, csrf=csrf_token(crypto, token))  # type: ignore[arg-type]


def check_csrf(*, crypto: CryptoContext, token: str, submitted: str | None) -> bool:
    # Bytes: compare_digest raises TypeError on a str with any non-ASCII character, and a form
    # field is whatever the client sent ("csrf=%FF" decodes to U+FFFD): a 500, found by schemathesis.
    expected = csrf_token(crypto, token).encode()
    return bool(submitted) and hmac.compare_digest(expected, (submitted or "").encode("utf-8", "backslashreplace"))


def end(*, session: Session, token: str | None) -> None:
    if token:
        session.execute(delete(WebSession).where(WebSession.token_hash == _hash(token)))


def end_all(*, session: Session, account_id: str) -> None:
    """Every session of the account, now (the epoch bump also ends them lazily)."""
    accounts.end_sessions(session=session, account_id=account_id)
    session.execute(delete(WebSession).where(WebSession.account_id == account_id))
