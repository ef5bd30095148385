"""Accounts on both backends: creation rules, sign-in answers, throttling and lock with an injected
clock, TOTP enrolment and replay, recovery codes, session epochs, and nothing readable at rest."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, text

from medvault.auth import accounts, totp
from medvault.auth.accounts import AccountError, AccountNotFound
from medvault.auth.errors import PasswordRejected, TotpRejected
from medvault.auth.passwords import Hasher
from medvault.db import unit_of_work
from medvault.records import service
from medvault.store.models import Account
from tests.helpers import open_vault

NOW = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
GOOD = "correct horse battery staple"
ADDR = "192.0.2.10"


@pytest.fixture(scope="module")
def hasher() -> Hasher:
    # The Argon2 cost is not under test here (tests/auth/test_passwords.py covers it).
    return Hasher(time_cost=1, memory_cost=256, enforce_owasp_minimum=False)


@pytest.fixture
def patient_id(vault_env: Any) -> str:
    with open_vault(vault_env) as v:
        return service.create(vault=v, resource={"resourceType": "Patient", "name": [{"family": "Zebedee"}]}).rid


def _create(env: Any, hasher: Hasher, **kwargs: Any) -> str:
    with unit_of_work(env.factory) as session:
        return accounts.create_account(session=session, crypto=env.crypto, hasher=hasher, now=NOW, **kwargs)


def _login(env: Any, hasher: Hasher, login: str, password: str, *, code: str | None = None, **kw: Any) -> Any:
    with unit_of_work(env.factory) as session:
        return accounts.authenticate(
            session=session,
            crypto=env.crypto,
            hasher=hasher,
            login=login,
            password=password,
            second_factor=code,
            client_address=kw.get("address", ADDR),
            now=kw.get("now", NOW),
        )


def test_patient_account_signs_in_and_is_linked(vault_env: Any, hasher: Hasher, patient_id: str) -> None:
    account_id = _create(
        vault_env, hasher, login="Zeb@Example.org", password=GOOD, role="patient", patient_id=patient_id
    )
    result = _login(vault_env, hasher, "  zeb@example.ORG ", GOOD)
    assert result.status == "ok"
    assert result.actor.account_id == account_id
    assert result.actor.patient_id == patient_id
    assert result.actor.role == "patient"
    assert not result.actor.needs_mfa_enrolment


@pytest.mark.parametrize(
    ("kwargs", "where"),
    [
        ({"role": "superuser"}, "role"),
        ({"role": "patient"}, "patient"),
        ({"role": "patient", "patient_id": "no-such-patient"}, "patient"),
        ({"role": "clinician"}, "practitioner"),
        ({"role": "admin", "login": "x"}, "login"),
    ],
)
def test_creation_rules(vault_env: Any, hasher: Hasher, kwargs: dict[str, Any], where: str) -> None:
    args = {"login": "someone", "password": GOOD, **kwargs}
    with pytest.raises(AccountError) as info:
        _create(vault_env, hasher, **args)
    assert info.value.location == where


def test_weak_password_and_taken_name(vault_env: Any, hasher: Hasher) -> None:
    with pytest.raises(PasswordRejected):
        _create(vault_env, hasher, login="ada", password="abcabcabcabcabcabc", role="researcher")
    with pytest.raises(PasswordRejected):  # built from the login name
        _create(vault_env, hasher, login="adalovelace", password="adalovelace2026!", role="researcher")
    _create(vault_env, hasher, login="ada", password=GOOD, role="researcher")
    with pytest.raises(AccountError, match="taken"):
        _create(vault_env, hasher, login="ADA", password=GOOD, role="researcher")


def test_unknown_name_and_wrong_password_answer_alike(vault_env: Any, hasher: Hasher) -> None:
    _create(vault_env, hasher, login="ada", password=GOOD, role="researcher")
    assert _login(vault_env, hasher, "ada", "wrong password here").status == "failed"
    assert _login(vault_env, hasher, "nobody", GOOD).status == "failed"


def test_throttle_grows_and_locks_at_100(vault_env: Any, hasher: Hasher) -> None:
    _create(vault_env, hasher, login="ada", password=GOOD, role="researcher")
    now = NOW
    for n in range(1, 100):
        assert _login(vault_env, hasher, "ada", "wrong", now=now, address=f"198.51.100.{n % 250}").status == "failed"
        if n == 5:
            # After five failures the next attempt must wait, even with the right password.
            early = _login(vault_env, hasher, "ada", GOOD, now=now, address="203.0.113.1")
            assert early.status == "throttled"
            assert early.retry_after == pytest.approx(1.0)
        now += timedelta(minutes=16)  # past the largest delay: every attempt is allowed
    assert _login(vault_env, hasher, "ada", "wrong", now=now, address="203.0.113.2").status == "failed"  # 100th
    later = _login(vault_env, hasher, "ada", GOOD, now=now + timedelta(days=30), address="203.0.113.3")
    assert later.status == "throttled"
    assert later.retry_after == float("inf")
    with unit_of_work(vault_env.factory) as session:
        summary = {a.login: a for a in accounts.list_accounts(session=session, crypto=vault_env.crypto)}
        assert summary["ada"].locked
        accounts.set_disabled(session=session, crypto=vault_env.crypto, login="ada", disabled=False)
    assert _login(vault_env, hasher, "ada", GOOD, now=now + timedelta(days=30)).status == "ok"


def test_unknown_names_are_throttled_like_known_ones(vault_env: Any, hasher: Hasher) -> None:
    for _ in range(5):
        assert _login(vault_env, hasher, "ghost", "wrong", address="198.51.100.7").status == "failed"
    assert _login(vault_env, hasher, "ghost", "wrong", address="198.51.100.8").status == "throttled"


def test_address_is_throttled_across_names(vault_env: Any, hasher: Hasher) -> None:
    for n in range(5):
        assert _login(vault_env, hasher, f"name{n}", "wrong").status == "failed"
    assert _login(vault_env, hasher, "name-new", "wrong").status == "throttled"
    assert _login(vault_env, hasher, "name-new", "wrong", address="192.0.2.99").status == "failed"


def _enrol(env: Any, account_id: str, now: datetime) -> tuple[str, list[str]]:
    with unit_of_work(env.factory) as session:
        secret, uri = accounts.begin_totp(session=session, crypto=env.crypto, account_id=account_id)
    assert uri.startswith("otpauth://totp/")
    code = totp.totp_code(secret=secret, step=totp.time_step(now))
    with unit_of_work(env.factory) as session:
        codes = accounts.confirm_totp(session=session, crypto=env.crypto, account_id=account_id, code=code, now=now)
    return secret, codes


def test_totp_required_once_enrolled_and_never_replayed(vault_env: Any, hasher: Hasher) -> None:
    account_id = _create(vault_env, hasher, login="dr-who", password="tardis-blue-box", role="admin")
    first = _login(vault_env, hasher, "dr-who", "tardis-blue-box")
    assert first.status == "ok"
    assert first.actor.needs_mfa_enrolment
    secret, codes = _enrol(vault_env, account_id, NOW)
    assert len(codes) == 10
    assert _login(vault_env, hasher, "dr-who", "tardis-blue-box").status == "second-factor-needed"
    later = NOW + timedelta(minutes=1)
    code = totp.totp_code(secret=secret, step=totp.time_step(later))
    ok = _login(vault_env, hasher, "dr-who", "tardis-blue-box", code=code, now=later)
    assert ok.status == "ok"
    assert ok.actor.mfa_enrolled
    assert _login(vault_env, hasher, "dr-who", "tardis-blue-box", code=code, now=later).status == "failed"
    # A recovery code works once, in any spelling.
    spelled = codes[0].lower().replace("-", " ")
    assert _login(vault_env, hasher, "dr-who", "tardis-blue-box", code=spelled, now=later).status == "ok"
    assert _login(vault_env, hasher, "dr-who", "tardis-blue-box", code=codes[0], now=later).status == "failed"


def test_confirm_needs_a_right_code(vault_env: Any, hasher: Hasher) -> None:
    account_id = _create(vault_env, hasher, login="dr-no", password="tardis-blue-box", role="privacy-officer")
    with unit_of_work(vault_env.factory) as session:
        accounts.begin_totp(session=session, crypto=vault_env.crypto, account_id=account_id)
    with pytest.raises(TotpRejected), unit_of_work(vault_env.factory) as session:
        accounts.confirm_totp(session=session, crypto=vault_env.crypto, account_id=account_id, code="000000", now=NOW)


def test_password_change_disable_and_mfa_reset_end_sessions(vault_env: Any, hasher: Hasher) -> None:
    account_id = _create(vault_env, hasher, login="ada", password=GOOD, role="researcher")
    epoch = _login(vault_env, hasher, "ada", GOOD).actor.session_epoch
    with unit_of_work(vault_env.factory) as session:
        accounts.actor_for(session=session, crypto=vault_env.crypto, account_id=account_id, session_epoch=epoch)
        accounts.change_password(
            session=session,
            crypto=vault_env.crypto,
            hasher=hasher,
            account_id=account_id,
            current=GOOD,
            new="an entirely new passphrase",
        )
    with vault_env.factory() as session, pytest.raises(AccountNotFound):
        accounts.actor_for(session=session, crypto=vault_env.crypto, account_id=account_id, session_epoch=epoch)
    assert _login(vault_env, hasher, "ada", GOOD).status == "failed"
    assert _login(vault_env, hasher, "ada", "an entirely new passphrase").status == "ok"
    with unit_of_work(vault_env.factory) as session:
        accounts.set_disabled(session=session, crypto=vault_env.crypto, login="ada", disabled=True)
    assert _login(vault_env, hasher, "ada", "an entirely new passphrase").status == "failed"
    with vault_env.factory() as session, pytest.raises(AccountNotFound):
        accounts.actor_for(session=session, crypto=vault_env.crypto, account_id=account_id)


def test_rehash_when_parameters_rise(vault_env: Any, hasher: Hasher) -> None:
    account_id = _create(vault_env, hasher, login="ada", password=GOOD, role="researcher")
    with vault_env.factory() as session:
        before = session.get(Account, account_id).secret  # type: ignore[union-attr]
    stronger = Hasher(time_cost=2, memory_cost=512, enforce_owasp_minimum=False)
    assert _login(vault_env, stronger, "ada", GOOD).status == "ok"
    with vault_env.factory() as session:
        after = session.get(Account, account_id).secret  # type: ignore[union-attr]
    assert after != before
    assert _login(vault_env, stronger, "ada", GOOD).status == "ok"


def test_nothing_readable_at_rest(vault_env: Any, hasher: Hasher, patient_id: str) -> None:
    _create(vault_env, hasher, login="zebedee.q@example.org", password=GOOD, role="patient", patient_id=patient_id)
    with vault_env.factory() as session:
        rows = session.execute(text("SELECT * FROM account")).all()
        dump = b"".join(bytes(c) if isinstance(c, bytes | memoryview) else str(c).encode() for r in rows for c in r)
        assert session.execute(select(Account)).scalar_one().role == "patient"
    for needle in (b"zebedee", b"example.org", b"argon2", patient_id.encode(), b"horse"):
        assert needle not in dump.lower()


def _prepare(env: Any, login: str, address: str = ADDR) -> accounts.LoginLookup:
    with unit_of_work(env.factory) as session:
        return accounts.prepare_login(session=session, crypto=env.crypto, login=login, client_address=address, now=NOW)


def _finish(env: Any, login: str, check: accounts.PasswordCheck, address: str = ADDR) -> accounts.LoginResult:
    with unit_of_work(env.factory) as session:
        return accounts.finish_login(
            session=session,
            crypto=env.crypto,
            login=login,
            second_factor=None,
            client_address=address,
            now=NOW,
            check=check,
        )


def test_concurrent_attempts_cannot_outrun_the_throttle(vault_env: Any, hasher: Hasher) -> None:
    """A server hashes between two transactions, so many attempts on one name can pass the
    read-only throttle check at once. The check under lock in `finish_login` still counts every
    failure and refuses the attempts beyond the free ones, even the one with the right password
    (which then reveals nothing)."""
    _create(vault_env, hasher, login="ada", password=GOOD, role="researcher")
    attempts = ["wrong passphrase number one"] * 5 + [GOOD]
    lookups = [_prepare(vault_env, "ada", address=f"192.0.2.{20 + i}") for i in range(len(attempts))]
    assert all(lookup.throttled is None for lookup in lookups)  # all passed before any was counted
    checks = [
        accounts.check_password(hasher=hasher, lookup=lookup, password=pw)
        for lookup, pw in zip(lookups, attempts, strict=True)
    ]
    assert [c.result.ok for c in checks] == [False] * 5 + [True]
    answers = [_finish(vault_env, "ada", check, address=f"192.0.2.{20 + i}").status for i, check in enumerate(checks)]
    assert answers == ["failed"] * 5 + ["throttled"]


def test_a_password_changed_between_the_steps_does_not_sign_in(vault_env: Any, hasher: Hasher) -> None:
    account_id = _create(vault_env, hasher, login="ada", password=GOOD, role="researcher")
    lookup = _prepare(vault_env, "ada")
    check = accounts.check_password(hasher=hasher, lookup=lookup, password=GOOD)
    assert check.result.ok
    with unit_of_work(vault_env.factory) as session:
        accounts.change_password(
            session=session,
            crypto=vault_env.crypto,
            hasher=hasher,
            account_id=account_id,
            current=GOOD,
            new="an entirely new passphrase",
        )
    assert _finish(vault_env, "ada", check).status == "failed"


def test_unknown_and_disabled_accounts_check_the_dummy(vault_env: Any, hasher: Hasher) -> None:
    _create(vault_env, hasher, login="ada", password=GOOD, role="researcher")
    with unit_of_work(vault_env.factory) as session:
        accounts.set_disabled(session=session, crypto=vault_env.crypto, login="ada", disabled=True)
    for name in ("ada", "nobody"):
        lookup = _prepare(vault_env, name)
        assert lookup == accounts.LoginLookup(throttled=None, stored=None)
        check = accounts.check_password(hasher=hasher, lookup=lookup, password=GOOD)
        assert (check.stored, check.result.ok) == (None, False)
        assert _finish(vault_env, name, check).status == "failed"
