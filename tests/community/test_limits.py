"""The community's fixed-window rate limits, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from medvault.community import limits
from medvault.community.errors import RateLimited
from medvault.db import unit_of_work
from medvault.store.models import CommunityRate, DataKey

NOW = datetime(2026, 11, 29, 12, 0, 10, tzinfo=UTC)
LIMIT = limits.Limit(bucket="profile-view", count=3, seconds=60)


def test_the_fourth_hit_in_a_window_is_refused_and_the_next_window_starts_afresh(vault_env) -> None:
    subject = limits.subject_token(vault_env.crypto, kind="account", value="acct-1")
    counts = []
    for _ in range(3):
        with unit_of_work(vault_env.factory) as session:
            counts.append(limits.take(session=session, limit=LIMIT, subject=subject, now=NOW))
    assert counts == [1, 2, 3]
    with pytest.raises(RateLimited) as refused, unit_of_work(vault_env.factory) as session:
        limits.take(session=session, limit=LIMIT, subject=subject, now=NOW)
    assert refused.value.retry_after == 50
    other = limits.subject_token(vault_env.crypto, kind="account", value="acct-2")
    with unit_of_work(vault_env.factory) as session:
        assert limits.take(session=session, limit=LIMIT, subject=other, now=NOW) == 1
        assert limits.take(session=session, limit=LIMIT, subject=subject, now=NOW + timedelta(seconds=50)) == 1


def test_a_refused_hit_rolled_back_is_not_counted_and_rows_hold_no_plain_subject(vault_env) -> None:
    subject = limits.subject_token(vault_env.crypto, kind="address", value="203.0.113.7")
    assert b"203.0.113.7" not in subject
    assert len(subject) >= 12

    def failing_request() -> None:
        with unit_of_work(vault_env.factory) as session:
            limits.take(session=session, limit=LIMIT, subject=subject, now=NOW)
            raise RuntimeError("the request failed")

    with pytest.raises(RuntimeError):
        failing_request()
    with unit_of_work(vault_env.factory) as session:
        assert limits.take(session=session, limit=LIMIT, subject=subject, now=NOW) == 1
        rows = session.execute(select(CommunityRate.subject, CommunityRate.count)).all()
    assert rows == [(subject, 1)]
    with unit_of_work(vault_env.factory) as session:
        assert limits.prune(session=session, limit=LIMIT, before=NOW + timedelta(minutes=5)) == 1


def test_destroying_a_data_key_makes_its_ciphertext_unreadable(vault_env) -> None:
    from medvault.crypto.errors import KeyMissing

    owner = b"\x07" * 16
    with unit_of_work(vault_env.factory) as session:
        dk_id, key = vault_env.crypto.data_key(session, purpose="identity", owner=owner)
        sealed = vault_env.crypto.sealer.seal(key, b"a private message", b"aad")
    with unit_of_work(vault_env.factory) as session:
        assert vault_env.crypto.destroy_data_key(session, purpose="identity", owner=owner)
        assert session.execute(select(DataKey).where(DataKey.id == dk_id)).first() is None
    with pytest.raises(KeyMissing), unit_of_work(vault_env.factory) as session:
        vault_env.crypto.data_key_by_id(session, dk_id)
    with unit_of_work(vault_env.factory) as session:
        assert not vault_env.crypto.destroy_data_key(session, purpose="identity", owner=owner)
    assert sealed  # the ciphertext alone is all that is left


def test_joining_is_idempotent_and_only_for_patients_and_moderators(vault_env) -> None:
    from medvault.auth.accounts import Actor
    from medvault.community import members
    from medvault.community.errors import Forbidden, NotFound

    patient = Actor(account_id="a" * 32, role="patient", patient_id="p1")
    with unit_of_work(vault_env.factory) as session:
        first = members.join(session=session, crypto=vault_env.crypto, actor=patient, now=NOW)
    with unit_of_work(vault_env.factory) as session:
        again = members.join(session=session, crypto=vault_env.crypto, actor=patient, now=NOW)
        assert members.by_id(session=session, member_id=first.id) == first
        with pytest.raises(NotFound):
            members.by_id(session=session, member_id="../etc")
        with pytest.raises(Forbidden):
            members.join(
                session=session, crypto=vault_env.crypto, actor=Actor(account_id="b" * 32, role="clinician"), now=NOW
            )
    assert again == first
    assert first.id != patient.account_id
    assert len(first.key_owner) == 16
    assert members.viewer_of(actor=None, member=None, author_id=first.id) == "visitor"
    assert members.viewer_of(actor=patient, member=first, author_id=first.id) == "author"
    assert members.viewer_of(actor=patient, member=first, author_id="someone") == "member"
    assert members.viewer_of(actor=Actor(account_id="c" * 32, role="admin"), member=None, author_id=None) == "operator"
