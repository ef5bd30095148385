"""Accounts: create, sign in (password, TOTP or recovery code, throttling), enrol and reset the
second factor, change the password, disable. Service functions over a SQLAlchemy session; the
caller owns the transaction (and must commit a failed sign-in too: its failure count is the point).

At rest: the login name is a keyed digest (lookups) plus a sealed copy (listing); the password hash
and TOTP secret are sealed under the identity KEK, so a stolen database cannot even be used for
offline password guessing without the key directory.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, get_args

import orjson
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from medvault.auth import totp
from medvault.auth.errors import AuthError, TotpRejected
from medvault.auth.passwords import Hasher, VerifyResult, check_new_password
from medvault.auth.throttle import ACCOUNT_POLICY, ADDRESS_POLICY, Throttle, ThrottleState
from medvault.store.crypto_context import CryptoContext
from medvault.store.models import Account, LoginThrottle, RecoveryCode, Resource

Role = Literal["patient", "clinician", "researcher", "privacy-officer", "admin", "moderator"]
ROLES: tuple[Role, ...] = get_args(Role)
# SP 800-63B AAL2 for anyone who can see other people's records or change the system.
MFA_REQUIRED: frozenset[str] = frozenset({"clinician", "privacy-officer", "admin", "moderator"})
SERVICE_NAME = "medvault"
# Owner of the one data key that seals account rows (identity purpose: the identity KEK wraps it).
ACCOUNTS_OWNER = bytes(15) + b"\x02"
_AAD = b"medvault:account:v1|"

_account_throttle = Throttle(ACCOUNT_POLICY)
_address_throttle = Throttle(ADDRESS_POLICY)


class AccountError(AuthError):
    code = "invalid"


class AccountNotFound(AuthError):
    code = "not-found"


@dataclass(frozen=True)
class Actor:
    """Who is acting: what every policy decision and audit entry is about."""

    account_id: str
    role: Role
    patient_id: str | None = None
    practitioner_id: str | None = None
    session_epoch: int = 0
    mfa_enrolled: bool = False

    @property
    def needs_mfa_enrolment(self) -> bool:
        return self.role in MFA_REQUIRED and not self.mfa_enrolled


LoginStatus = Literal["ok", "failed", "throttled", "second-factor-needed"]


@dataclass(frozen=True)
class LoginResult:
    """The outcome of one sign-in attempt. Faces show the same text for every failure kind."""

    status: LoginStatus
    actor: Actor | None = None
    retry_after: float = 0.0


@dataclass(frozen=True)
class AccountSummary:
    id: str
    login: str
    role: Role
    disabled: bool
    locked: bool
    mfa_enrolled: bool
    patient_id: str | None
    practitioner_id: str | None


# -- keyed values ------------------------------------------------------------------------------


def normalise_login(login: str) -> str:
    return unicodedata.normalize("NFKC", login).strip().casefold()


def _mac(crypto: CryptoContext, label: str, *parts: str) -> bytes:
    key = crypto.keyring.index_key(label)
    return hmac.new(key, b"\x00".join(p.encode() for p in parts), hashlib.sha256).digest()


def login_index(crypto: CryptoContext, login: str) -> bytes:
    return _mac(crypto, "account-login", normalise_login(login))


def _throttle_key(crypto: CryptoContext, kind: str, value: str) -> bytes:
    return _mac(crypto, "login-throttle", kind, value)


def _recovery_key(crypto: CryptoContext) -> bytes:
    return crypto.keyring.index_key("recovery-code")


# -- sealed fields -----------------------------------------------------------------------------


def _key(session: Session, crypto: CryptoContext) -> AESGCM:
    return crypto.data_key(session, purpose="identity", owner=ACCOUNTS_OWNER)[1]


def _seal(session: Session, crypto: CryptoContext, account_id: str, field: str, value: dict[str, Any]) -> bytes:
    aad = _AAD + account_id.encode() + b"|" + field.encode()
    return crypto.sealer.seal(_key(session, crypto), orjson.dumps(value), aad)


def _open(session: Session, crypto: CryptoContext, account_id: str, field: str, blob: bytes) -> dict[str, Any]:
    aad = _AAD + account_id.encode() + b"|" + field.encode()
    value: dict[str, Any] = orjson.loads(crypto.sealer.open(_key(session, crypto), blob, aad))
    return value


def _profile(session: Session, crypto: CryptoContext, row: Account) -> dict[str, Any]:
    return _open(session, crypto, row.id, "profile", row.profile)


def _secret(session: Session, crypto: CryptoContext, row: Account) -> dict[str, Any]:
    return _open(session, crypto, row.id, "secret", row.secret)


def _actor(session: Session, crypto: CryptoContext, row: Account) -> Actor:
    profile = _profile(session, crypto, row)
    return Actor(
        account_id=row.id,
        role=row.role,  # type: ignore[arg-type]
        patient_id=profile.get("patient"),
        practitioner_id=profile.get("practitioner"),
        session_epoch=row.session_epoch,
        mfa_enrolled=bool(_secret(session, crypto, row).get("totp")),
    )


# -- throttling state --------------------------------------------------------------------------


def _load_throttle(session: Session, key: bytes) -> ThrottleState:
    # Make sure the row exists, then lock it: concurrent attempts on a name (or from an address)
    # that never failed before would otherwise all pass the check and overwrite each other's counts.
    dialect = session.get_bind().dialect.name
    if dialect in ("postgresql", "sqlite"):
        ins = pg_insert if dialect == "postgresql" else sqlite_insert
        session.execute(
            ins(LoginThrottle)
            .values(key=key, failures=0, last_failure=None, locked=False)
            .on_conflict_do_nothing(index_elements=["key"])
        )
    row = session.get(LoginThrottle, key, with_for_update=True, populate_existing=True)
    if row is None:
        return ThrottleState()
    return ThrottleState(failures=row.failures, last_failure=row.last_failure, locked=row.locked)


def _peek_throttle(session: Session, key: bytes) -> ThrottleState:
    """The throttle state without creating or locking its row (`prepare_login` reads only)."""
    row = session.execute(select(LoginThrottle).where(LoginThrottle.key == key)).scalar_one_or_none()
    if row is None:
        return ThrottleState()
    return ThrottleState(failures=row.failures, last_failure=row.last_failure, locked=row.locked)


def _store_throttle(session: Session, key: bytes, state: ThrottleState) -> None:
    row = session.get(LoginThrottle, key)
    if row is None:
        if state == ThrottleState():
            return  # nothing to remember: keep the table to keys that have failed
        try:
            with session.begin_nested():
                session.add(
                    LoginThrottle(
                        key=key, failures=state.failures, last_failure=state.last_failure, locked=state.locked
                    )
                )
            return
        except IntegrityError:  # a concurrent attempt made the row first: update theirs
            row = session.get(LoginThrottle, key, populate_existing=True)
            assert row is not None
    row.failures, row.last_failure, row.locked = state.failures, state.last_failure, state.locked


# -- services ----------------------------------------------------------------------------------


def create_account(
    *,
    session: Session,
    crypto: CryptoContext,
    hasher: Hasher,
    login: str,
    password: str,
    role: str,
    now: datetime,
    patient_id: str | None = None,
    practitioner_id: str | None = None,
) -> str:
    """A new account; returns its id. Patients are linked to a Patient, clinicians to a Practitioner."""
    if role not in ROLES:
        raise AccountError(f"role must be one of: {', '.join(ROLES)}", location="role")
    name = normalise_login(login)
    if not 3 <= len(name) <= 254 or any(unicodedata.category(c).startswith("C") for c in name):
        raise AccountError("a login name has 3 to 254 printable characters", location="login")
    if role == "patient" and not patient_id:
        raise AccountError("a patient account needs the id of its Patient record", location="patient")
    if role == "clinician" and not practitioner_id:
        raise AccountError("a clinician account needs the id of its Practitioner record", location="practitioner")
    for rtype, rid in (("Patient", patient_id), ("Practitioner", practitioner_id)):
        if rid is not None and not _exists(session, rtype, rid):
            raise AccountError(f"no {rtype} with that id", location=rtype.lower())
    # Roles that must enrol TOTP may use 8-character passwords (SP 800-63B-4 with a second factor).
    normalised = check_new_password(
        password=password, has_second_factor=role in MFA_REQUIRED, context_words=(SERVICE_NAME, name)
    )
    if session.execute(select(Account.id).where(Account.login_index == login_index(crypto, name))).first():
        raise AccountError("that login name is taken", location="login")
    account_id = secrets.token_hex(16)
    password_hash = hasher.hash(normalised)
    session.add(
        Account(
            id=account_id,
            login_index=login_index(crypto, name),
            role=role,
            patient_link=crypto.indexer.pseudonym(patient_id) if patient_id else None,
            profile=_seal(
                session,
                crypto,
                account_id,
                "profile",
                {"login": name, "patient": patient_id, "practitioner": practitioner_id},
            ),
            secret=_seal(session, crypto, account_id, "secret", {"password": password_hash}),
            totp_last_step=None,
            disabled=False,
            session_epoch=0,
            created=now,
        )
    )
    session.flush()
    return account_id


def _exists(session: Session, rtype: str, rid: str) -> bool:
    row = session.get(Resource, (rtype, rid))
    return row is not None and not row.deleted


@dataclass(frozen=True)
class LoginLookup:
    """What a sign-in needs before hashing (`prepare_login`): a throttle refusal, or the hash to check."""

    throttled: LoginResult | None
    # The account's stored password hash; None for an unknown or disabled account (the dummy is checked).
    stored: str | None = None


@dataclass(frozen=True)
class PasswordCheck:
    """The Argon2 part of a sign-in (`check_password`), done outside any database transaction."""

    stored: str | None  # the hash checked (None: the dummy)
    result: VerifyResult
    new_hash: str | None = None  # when the stored hash needs new parameters and the password was right


def authenticate(
    *,
    session: Session,
    crypto: CryptoContext,
    hasher: Hasher,
    login: str,
    password: str,
    second_factor: str | None,
    client_address: str,
    now: datetime,
) -> LoginResult:
    """One sign-in attempt in one transaction (CLI, tests). Unknown names, disabled accounts and
    wrong passwords cost the same Argon2 verification and give the same answer; throttling counts
    per name (existing or not) and per client address.

    A server uses the three steps separately (`prepare_login`, `check_password` on the hasher's
    pool, `finish_login`), each step its own transaction, so no transaction is open while Argon2
    runs: on SQLite a hash inside the login's transaction would hold the write lock that every
    other request (its access-log entry) needs, for the whole hash."""
    lookup = prepare_login(session=session, crypto=crypto, login=login, client_address=client_address, now=now)
    if lookup.throttled is not None:
        return lookup.throttled
    check = check_password(hasher=hasher, lookup=lookup, password=password)
    return finish_login(
        session=session,
        crypto=crypto,
        login=login,
        second_factor=second_factor,
        client_address=client_address,
        now=now,
        check=check,
    )


def prepare_login(
    *, session: Session, crypto: CryptoContext, login: str, client_address: str, now: datetime
) -> LoginLookup:
    """Step 1 (reads only, no locks): refuse a throttled attempt before any hashing, else return the
    stored hash to check. `finish_login` checks the throttle again under lock: attempts that pass
    here concurrently are counted there, and one refused there reveals nothing about its password."""
    name_state = _peek_throttle(session, _throttle_key(crypto, "login", normalise_login(login)))
    address_state = _peek_throttle(session, _throttle_key(crypto, "address", client_address))
    refused = _throttled(name_state, address_state, now)
    if refused is not None:
        return LoginLookup(throttled=refused)
    row = session.execute(select(Account).where(Account.login_index == login_index(crypto, login))).scalar_one_or_none()
    if row is None or row.disabled:
        return LoginLookup(throttled=None, stored=None)
    stored = _secret(session, crypto, row).get("password")
    return LoginLookup(throttled=None, stored=stored if isinstance(stored, str) else None)


def check_password(*, hasher: Hasher, lookup: LoginLookup, password: str) -> PasswordCheck:
    """Step 2 (CPU only, no database): the Argon2 verification, the dummy one for an unknown or
    disabled account (same cost, same answer), and a rehash when the parameters changed."""
    if lookup.stored is None:
        return PasswordCheck(stored=None, result=hasher.dummy_verify(password))
    result = hasher.verify(stored=lookup.stored, password=password)
    new_hash = hasher.hash(password) if result.ok and result.needs_rehash else None
    return PasswordCheck(stored=lookup.stored, result=result, new_hash=new_hash)


def finish_login(
    *,
    session: Session,
    crypto: CryptoContext,
    login: str,
    second_factor: str | None,
    client_address: str,
    now: datetime,
    check: PasswordCheck,
) -> LoginResult:
    """Step 3 (locks the throttle rows and the account): throttle check again, second factor,
    counting the failure or the success, storing a rehash."""
    name_key = _throttle_key(crypto, "login", normalise_login(login))
    address_key = _throttle_key(crypto, "address", client_address)
    name_state, address_state = _load_throttle(session, name_key), _load_throttle(session, address_key)
    refused = _throttled(name_state, address_state, now)
    if refused is not None:
        return refused

    # Locked: two concurrent sign-ins with the same one-time code must not both see it unused.
    row = session.execute(
        select(Account).where(Account.login_index == login_index(crypto, login)).with_for_update()
    ).scalar_one_or_none()
    ok = False
    if row is not None and not row.disabled and check.stored is not None and check.result.ok:
        secret = _secret(session, crypto, row)
        # The password checked must still be the account's (not changed, nor the account
        # disabled, between the steps).
        ok = hmac.compare_digest(str(secret.get("password", "")), check.stored)
    if ok and row is not None:
        if secret.get("totp"):
            if not second_factor:
                # The password was right: no failure is counted, the face asks for the code.
                return LoginResult("second-factor-needed")
            ok = _check_second_factor(session, crypto, row, secret, second_factor, now)
        if ok and check.new_hash is not None:
            secret["password"] = check.new_hash
            row.secret = _seal(session, crypto, row.id, "secret", secret)
    if not ok or row is None:
        _store_throttle(session, name_key, _account_throttle.record_failure(state=name_state, now=now))
        _store_throttle(session, address_key, _address_throttle.record_failure(state=address_state, now=now))
        return LoginResult("failed")
    _store_throttle(session, name_key, _account_throttle.record_success(state=name_state))
    _store_throttle(session, address_key, _address_throttle.record_success(state=address_state))
    return LoginResult("ok", actor=_actor(session, crypto, row))


def _throttled(name_state: ThrottleState, address_state: ThrottleState, now: datetime) -> LoginResult | None:
    gates = (
        _account_throttle.check(state=name_state, now=now),
        _address_throttle.check(state=address_state, now=now),
    )
    blocked = [g for g in gates if not g.allowed]
    if blocked:
        return LoginResult("throttled", retry_after=max(g.retry_after for g in blocked))
    return None


def _check_second_factor(
    session: Session, crypto: CryptoContext, row: Account, secret: dict[str, Any], code: str, now: datetime
) -> bool:
    if any(c.isalpha() for c in code):  # recovery codes have letters; TOTP codes never do
        digest = totp.recovery_code_digest(key=_recovery_key(crypto), code=code)
        used = session.execute(
            delete(RecoveryCode).where(RecoveryCode.account_id == row.id, RecoveryCode.digest == digest)
        )
        return bool(used.rowcount)  # type: ignore[attr-defined]
    try:
        row.totp_last_step = totp.verify_totp(
            secret=secret["totp"], code=code, last_used_step=row.totp_last_step, now=now
        )
    except TotpRejected:
        return False
    return True


def actor_for(*, session: Session, crypto: CryptoContext, account_id: str, session_epoch: int | None = None) -> Actor:
    """The actor of a live sign-in; raises AccountNotFound when the account is gone, disabled, or
    (given an epoch) when its sessions were ended since."""
    row = session.get(Account, account_id)
    if row is None or row.disabled or (session_epoch is not None and session_epoch != row.session_epoch):
        raise AccountNotFound("the sign-in is no longer valid")
    return _actor(session, crypto, row)


def login_taken(*, session: Session, crypto: CryptoContext, login: str) -> bool:
    return (
        session.execute(select(Account.id).where(Account.login_index == login_index(crypto, login))).first() is not None
    )


def _row(session: Session, crypto: CryptoContext, login: str) -> Account:
    row = session.execute(select(Account).where(Account.login_index == login_index(crypto, login))).scalar_one_or_none()
    if row is None:
        raise AccountNotFound("no account with that login name", location="login")
    return row


def begin_totp(
    *, session: Session, crypto: CryptoContext, account_id: str, keep_pending: bool = False
) -> tuple[str, str]:
    """A new TOTP secret, pending until `confirm_totp`; returns (secret, otpauth URI for a QR code).
    `keep_pending`: show the secret already pending, if any (a mistyped code must not change the QR
    code the user has just scanned)."""
    row = session.get(Account, account_id)
    if row is None:
        raise AccountNotFound("no such account")
    secret = _secret(session, crypto, row)
    if not (keep_pending and secret.get("pending_totp")):
        secret["pending_totp"] = totp.new_secret()
    row.secret = _seal(session, crypto, row.id, "secret", secret)
    login = _profile(session, crypto, row)["login"]
    uri = totp.provisioning_uri(secret=secret["pending_totp"], account_label=login, issuer=SERVICE_NAME)
    return secret["pending_totp"], uri


def confirm_totp(*, session: Session, crypto: CryptoContext, account_id: str, code: str, now: datetime) -> list[str]:
    """Activate the pending secret once the user proves their app has it; returns fresh recovery
    codes (shown once, stored only as keyed digests). Ends the account's other sessions."""
    row = session.get(Account, account_id)
    if row is None:
        raise AccountNotFound("no such account")
    secret = _secret(session, crypto, row)
    pending = secret.get("pending_totp")
    if not pending:
        raise AccountError("start the authenticator set-up first")
    row.totp_last_step = totp.verify_totp(secret=pending, code=code, last_used_step=None, now=now)
    secret["totp"] = secret.pop("pending_totp")
    row.secret = _seal(session, crypto, row.id, "secret", secret)
    row.session_epoch += 1
    return _replace_recovery_codes(session, crypto, row.id)


def _replace_recovery_codes(session: Session, crypto: CryptoContext, account_id: str) -> list[str]:
    session.execute(delete(RecoveryCode).where(RecoveryCode.account_id == account_id))
    codes = totp.new_recovery_codes()
    key = _recovery_key(crypto)
    for code in codes:
        session.add(RecoveryCode(account_id=account_id, digest=totp.recovery_code_digest(key=key, code=code)))
    session.flush()
    return codes


class WrongPassword(AccountError):
    """The current password given to change it is not right. The failure has been counted in the
    caller's transaction: commit it (as a failed sign-in is), then answer with this error."""


class PasswordChangeThrottled(AccountError):
    code = "throttled"

    def __init__(self, retry_after: float) -> None:
        super().__init__("too many attempts; try again later")
        self.retry_after = retry_after


def change_password(
    *,
    session: Session,
    crypto: CryptoContext,
    hasher: Hasher,
    account_id: str,
    current: str,
    new: str,
    client_address: str | None = None,
    now: datetime | None = None,
) -> None:
    """Replace the password (the current one must verify) and end every session of the account.

    Guessing the current password here is a sign-in attempt by other means: the same throttle
    (per account and, when given, per client address) refuses it once it has failed too often,
    and a wrong one counts (`WrongPassword`: commit, then answer)."""
    when = now or datetime.now(UTC)
    row = session.get(Account, account_id)
    if row is None:
        raise AccountNotFound("no such account")
    secret = _secret(session, crypto, row)
    login = _profile(session, crypto, row)["login"]
    keys = [_throttle_key(crypto, "login", normalise_login(login))]
    if client_address is not None:
        keys.append(_throttle_key(crypto, "address", client_address))
    states = [_load_throttle(session, key) for key in keys]
    gates = [_account_throttle.check(state=states[0], now=when)]
    if client_address is not None:
        gates.append(_address_throttle.check(state=states[1], now=when))
    blocked = [g for g in gates if not g.allowed]
    if blocked:
        raise PasswordChangeThrottled(max(g.retry_after for g in blocked))
    right = hasher.verify(stored=secret["password"], password=current).ok
    if not right:
        _store_throttle(session, keys[0], _account_throttle.record_failure(state=states[0], now=when))
        if client_address is not None:
            _store_throttle(session, keys[1], _address_throttle.record_failure(state=states[1], now=when))
        raise WrongPassword("the current password is not right", location="current")
    normalised = check_new_password(
        password=new,
        has_second_factor=bool(secret.get("totp")) or row.role in MFA_REQUIRED,
        context_words=(SERVICE_NAME, login),
    )
    secret["password"] = hasher.hash(normalised)
    row.secret = _seal(session, crypto, row.id, "secret", secret)
    row.session_epoch += 1


def end_sessions(*, session: Session, account_id: str) -> None:
    row = session.get(Account, account_id)
    if row is not None:
        row.session_epoch += 1


def set_disabled(*, session: Session, crypto: CryptoContext, login: str, disabled: bool) -> str:
    """Disable (ends every session at once) or re-enable an account; enabling also lifts a lock."""
    row = _row(session, crypto, login)
    row.disabled = disabled
    row.session_epoch += 1
    if not disabled:
        _store_throttle(session, _throttle_key(crypto, "login", normalise_login(login)), ThrottleState())
        lock = session.get(LoginThrottle, _throttle_key(crypto, "login", normalise_login(login)))
        if lock is not None:
            session.delete(lock)
    return row.id


def reset_mfa(*, session: Session, crypto: CryptoContext, login: str) -> str:
    """Forget the TOTP secret and recovery codes (the user enrols again at next sign-in)."""
    row = _row(session, crypto, login)
    secret = _secret(session, crypto, row)
    secret.pop("totp", None)
    secret.pop("pending_totp", None)
    row.secret = _seal(session, crypto, row.id, "secret", secret)
    row.totp_last_step = None
    row.session_epoch += 1
    session.execute(delete(RecoveryCode).where(RecoveryCode.account_id == row.id))
    return row.id


def list_accounts(*, session: Session, crypto: CryptoContext) -> list[AccountSummary]:
    out = []
    for row in session.execute(select(Account).order_by(Account.created)).scalars():
        profile = _profile(session, crypto, row)
        lock = session.get(LoginThrottle, _throttle_key(crypto, "login", profile["login"]))
        out.append(
            AccountSummary(
                id=row.id,
                login=profile["login"],
                role=row.role,  # type: ignore[arg-type]
                disabled=row.disabled,
                locked=bool(lock and lock.locked),
                mfa_enrolled=bool(_secret(session, crypto, row).get("totp")),
                patient_id=profile.get("patient"),
                practitioner_id=profile.get("practitioner"),
            )
        )
    return sorted(out, key=lambda a: a.login)
