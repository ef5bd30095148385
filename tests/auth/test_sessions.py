"""Browser sessions on both backends: expiry (idle 15 min, absolute 12 h), ending, CSRF tokens."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from medvault.auth import accounts, sessions
from medvault.auth.passwords import Hasher
from medvault.db import unit_of_work
from medvault.store.models import WebSession

T0 = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)


@pytest.fixture
def signed_in(vault_env: Any) -> tuple[Any, str]:
    hasher = Hasher(time_cost=1, memory_cost=256, enforce_owasp_minimum=False)
    with unit_of_work(vault_env.factory) as session:
        accounts.create_account(
            session=session,
            crypto=vault_env.crypto,
            hasher=hasher,
            login="reader",
            password="a perfectly fine passphrase",
            role="researcher",
            now=T0,
        )
        result = accounts.authenticate(
            session=session,
            crypto=vault_env.crypto,
            hasher=hasher,
            login="reader",
            password="a perfectly fine passphrase",
            second_factor=None,
            client_address="192.0.2.1",
            now=T0,
        )
        assert result.actor is not None
        token = sessions.start(session=session, actor=result.actor, stage="full", now=T0)
    return vault_env, token


def _resume(env: Any, token: str, now: datetime) -> sessions.Live | None:
    with unit_of_work(env.factory) as session:
        return sessions.resume(session=session, crypto=env.crypto, token=token, now=now)


def test_activity_keeps_it_alive_until_the_absolute_limit(signed_in: tuple[Any, str]) -> None:
    env, token = signed_in
    now = T0
    while now + timedelta(minutes=14) <= T0 + sessions.ABSOLUTE:
        now += timedelta(minutes=14)
        assert _resume(env, token, now) is not None
    assert _resume(env, token, T0 + sessions.ABSOLUTE + timedelta(seconds=1)) is None
    assert _resume(env, token, now) is None  # the expired row is gone for good


def test_idle_expiry(signed_in: tuple[Any, str]) -> None:
    env, token = signed_in
    assert _resume(env, token, T0 + timedelta(minutes=15)) is not None
    assert _resume(env, token, T0 + timedelta(minutes=30, seconds=1)) is None


def test_logout_and_end_all(signed_in: tuple[Any, str]) -> None:
    env, token = signed_in
    live = _resume(env, token, T0)
    assert live is not None
    with unit_of_work(env.factory) as session:
        other = sessions.start(session=session, actor=live.actor, stage="full", now=T0)
        sessions.end(session=session, token=token)
    assert _resume(env, token, T0) is None
    assert _resume(env, other, T0) is not None
    with unit_of_work(env.factory) as session:
        sessions.end_all(session=session, account_id=live.actor.account_id)
    assert _resume(env, other, T0) is None


def test_csrf_and_storage(signed_in: tuple[Any, str]) -> None:
    env, token = signed_in
    live = _resume(env, token, T0)
    assert live is not None
    assert sessions.check_csrf(crypto=env.crypto, token=token, submitted=live.csrf)
    assert not sessions.check_csrf(crypto=env.crypto, token=token, submitted=None)
    assert not sessions.check_csrf(
        crypto=env.crypto, token=token, submitted=live.csrf[:-1] + ("1" if live.csrf[-1] == "0" else "0")
    )
    # Not ASCII (a form's "%FF" arrives as U+FFFD, a lone surrogate from JSON): refused, never a TypeError.
    for odd in ("\ufffd", live.csrf[:-1] + "\u00e9", "\ud800", "\x00"):
        assert not sessions.check_csrf(crypto=env.crypto, token=token, submitted=odd)
    assert _resume(env, "not-a-session", T0) is None
    with env.factory() as session:
        stored = session.execute(select(WebSession.token_hash)).scalar_one()
    assert token.encode() not in stored
