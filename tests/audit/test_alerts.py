"""Breach detection on both backends: decoy patients and the per-clinician distinct-patient rate.

`observe` is called here exactly as records/guard.py `record` calls it after each audit entry (the
caller's account id and role, the patient, allowed or refused), in the access's transaction."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from medvault.audit import alerts
from medvault.db import unit_of_work
from medvault.records.guard import OPERATOR_CLI, Caller
from medvault.records.vault import Vault
from medvault.store.models import AccessRate, Alert, Honeytoken

T0 = datetime(2026, 11, 30, 9, 5, tzinfo=UTC)
DOCTOR = "a" * 32
OTHER_DOCTOR = "b" * 32
PATIENT_ACCOUNT = "c" * 32


@pytest.fixture
def alert_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    # `logs.setup` (run by other tests in this worker) stops "medvault" propagating to the root
    # logger, where caplog listens: let it through for this test.
    parent = logging.getLogger("medvault")
    propagate = parent.propagate
    parent.propagate = True
    caplog.set_level(logging.WARNING, logger="medvault.alerts")
    try:
        yield caplog
    finally:
        parent.propagate = propagate


def _decoys(env: Any, count: int = 1) -> list[str]:
    with unit_of_work(env.factory) as session:
        return alerts.create_decoys(vault=Vault(session, env.crypto, caller=OPERATOR_CLI), count=count)


def _observe(
    env: Any,
    *,
    account_id: str | None,
    role: str | None,
    patient_id: str,
    allowed: bool = True,
    now: datetime = T0,
    threshold: int = 3,
) -> list[Alert]:
    with unit_of_work(env.factory) as session:
        return alerts.observe(
            session=session,
            crypto=env.crypto,
            account_id=account_id,
            role=role,
            patient_id=patient_id,
            allowed=allowed,
            now=now,
            threshold=threshold,
        )


def _all_alerts(env: Any) -> list[Alert]:
    with env.factory() as session:
        return alerts.list_alerts(session=session, unacknowledged_only=False)


def test_decoys_are_marked_by_a_keyed_value_not_their_pseudonym(vault_env: Any) -> None:
    ids = _decoys(vault_env, 3)
    assert len(set(ids)) == 3
    with vault_env.factory() as session:
        assert all(alerts.is_decoy(session=session, crypto=vault_env.crypto, patient_id=i) for i in ids)
        assert not alerts.is_decoy(session=session, crypto=vault_env.crypto, patient_id="real-patient")
        links = set(session.execute(select(Honeytoken.patient_link)).scalars())
    # Not the pseudonym: that would let a reader of the database join decoys to their records.
    assert not links & {vault_env.crypto.indexer.pseudonym(i) for i in ids}
    assert len(links) == 3
    assert not any(i.encode() in link for i in ids for link in links)
    with unit_of_work(vault_env.factory) as session:  # marking again is harmless
        alerts.mark_decoy(session=session, crypto=vault_env.crypto, patient_id=ids[0])
    with vault_env.factory() as session:
        assert session.execute(select(func.count()).select_from(Honeytoken)).scalar_one() == 3


def test_creating_decoys_needs_the_operator(vault_env: Any) -> None:
    with vault_env.factory() as session, pytest.raises(ValueError, match="operator"):
        alerts.create_decoys(vault=Vault(session, vault_env.crypto, caller=None), count=1)


@pytest.mark.parametrize(
    ("account_id", "role"),
    [(DOCTOR, "clinician"), (PATIENT_ACCOUNT, "patient"), (None, None)],
    ids=["clinician", "patient", "operator"],
)
def test_any_access_to_a_decoy_raises_one_alert(
    vault_env: Any, alert_log: pytest.LogCaptureFixture, account_id: str | None, role: str | None
) -> None:
    (decoy,) = _decoys(vault_env)
    raised = _observe(vault_env, account_id=account_id, role=role, patient_id=decoy, threshold=100)
    assert [(a.kind, a.account_id) for a in raised] == [("honeytoken", account_id)]
    stored = _all_alerts(vault_env)
    assert [(a.id, a.kind, a.account_id, a.acknowledged) for a in stored] == [
        (raised[0].id, "honeytoken", account_id, False)
    ]
    assert stored[0].raised == T0
    lines = [r for r in alert_log.records if r.name == "medvault.alerts"]
    assert len(lines) == 1
    assert lines[0].levelno == logging.WARNING
    assert raised[0].id in lines[0].getMessage()
    assert "honeytoken" in lines[0].getMessage()
    assert (account_id or "operator") in lines[0].getMessage()


def test_refused_access_to_a_decoy_raises_one_alert_even_after_a_rollback(vault_env: Any) -> None:
    (decoy,) = _decoys(vault_env)
    # guard.unit_of_work on a refusal: the unit (which may already have audited the decoy as
    # withheld) rolls back, then record_refusal audits it again in a fresh transaction.
    with vault_env.factory() as session:
        first = alerts.observe(
            session=session,
            crypto=vault_env.crypto,
            account_id=DOCTOR,
            role="clinician",
            patient_id=decoy,
            allowed=False,
            now=T0,
        )
        assert len(first) == 1
        session.rollback()
        again = alerts.observe(
            session=session,
            crypto=vault_env.crypto,
            account_id=DOCTOR,
            role="clinician",
            patient_id=decoy,
            allowed=False,
            now=T0,
        )
        assert len(again) == 1
        session.commit()
    stored = _all_alerts(vault_env)
    assert [(a.kind, a.account_id) for a in stored] == [("honeytoken", DOCTOR)]
    assert "refused" in stored[0].detail
    # A refused access is no shown patient: the rate table did not count it.
    with vault_env.factory() as session:
        assert session.execute(select(func.count()).select_from(AccessRate)).scalar_one() == 0


def test_one_decoy_alert_per_transaction(vault_env: Any) -> None:
    """A search and a read of the same decoy in one unit of work: one alert; a new unit: another."""
    (decoy,) = _decoys(vault_env)
    with unit_of_work(vault_env.factory) as session:
        for allowed in (True, False, True):
            alerts.observe(
                session=session,
                crypto=vault_env.crypto,
                account_id=None,
                role=None,
                patient_id=decoy,
                allowed=allowed,
                now=T0,
            )
    assert len(_all_alerts(vault_env)) == 1
    _observe(vault_env, account_id=None, role=None, patient_id=decoy)
    assert len(_all_alerts(vault_env)) == 2


def test_a_rolled_back_savepoint_does_not_swallow_the_decoy_alert(vault_env: Any) -> None:
    """Batch entries run in savepoints; a refusal's entry is logged again after the savepoint."""
    (decoy,) = _decoys(vault_env)
    with unit_of_work(vault_env.factory) as session:
        session.connection()
        nested = session.begin_nested()
        alerts.observe(
            session=session,
            crypto=vault_env.crypto,
            account_id=DOCTOR,
            role="clinician",
            patient_id=decoy,
            allowed=False,
            now=T0,
        )
        nested.rollback()
        again = alerts.observe(
            session=session,
            crypto=vault_env.crypto,
            account_id=DOCTOR,
            role="clinician",
            patient_id=decoy,
            allowed=False,
            now=T0,
        )
        assert len(again) == 1
    assert len(_all_alerts(vault_env)) == 1


def test_ordinary_patients_raise_nothing(vault_env: Any, alert_log: pytest.LogCaptureFixture) -> None:
    _decoys(vault_env)
    for role, account in (("clinician", DOCTOR), ("patient", PATIENT_ACCOUNT), (None, None)):
        assert _observe(vault_env, account_id=account, role=role, patient_id="real-patient") == []
    assert _observe(vault_env, account_id=None, role=None, patient_id="") == []
    with unit_of_work(vault_env.factory) as session:
        assert (
            alerts.observe(
                session=session,
                crypto=vault_env.crypto,
                account_id=DOCTOR,
                role="clinician",
                patient_id=None,
                allowed=True,
                now=T0,
            )
            == []
        )
    assert _all_alerts(vault_env) == []
    assert not [r for r in alert_log.records if r.name == "medvault.alerts"]


def test_rate_alert_once_per_clinician_per_hour(vault_env: Any, alert_log: pytest.LogCaptureFixture) -> None:
    patients = [f"patient-{n}" for n in range(7)]

    def shown(patient: str, *, now: datetime = T0, account: str = DOCTOR) -> list[Alert]:
        return _observe(vault_env, account_id=account, role="clinician", patient_id=patient, now=now, threshold=3)

    # Three distinct patients, each shown twice: at the threshold, not above it.
    for patient in patients[:3]:
        assert shown(patient) == []
        assert shown(patient, now=T0 + timedelta(minutes=10)) == []
    fourth = shown(patients[3], now=T0 + timedelta(minutes=20))
    assert [(a.kind, a.account_id) for a in fourth] == [("rate", DOCTOR)]
    assert shown(patients[3], now=T0 + timedelta(minutes=21)) == []  # a repeat
    assert shown(patients[4], now=T0 + timedelta(minutes=30)) == []  # fifth: same hour, no second alert
    # Another clinician has their own count.
    assert all(shown(p, account=OTHER_DOCTOR) == [] for p in patients[:3])
    # The next hour starts a new count: the fourth distinct patient alerts again.
    next_hour = T0 + timedelta(hours=1)
    for patient in patients[:3]:
        assert shown(patient, now=next_hour) == []
    again = shown(patients[5], now=next_hour + timedelta(minutes=1))
    assert [(a.kind, a.account_id) for a in again] == [("rate", DOCTOR)]
    assert shown(patients[6], now=next_hour + timedelta(minutes=2)) == []

    stored = _all_alerts(vault_env)
    assert sorted((a.kind, a.account_id, a.raised) for a in stored) == [
        ("rate", DOCTOR, T0 + timedelta(minutes=20)),
        ("rate", DOCTOR, next_hour + timedelta(minutes=1)),
    ]
    lines = [r.getMessage() for r in alert_log.records if r.name == "medvault.alerts"]
    assert len(lines) == 2
    assert all("kind=rate" in line and DOCTOR in line for line in lines)
    # The rate table holds keyed tokens, never the patient ids.
    with vault_env.factory() as session:
        tokens = list(session.execute(select(AccessRate.patient_token)).scalars())
    assert tokens
    assert not any(p.encode() in t for p in patients for t in tokens)
    assert not {vault_env.crypto.indexer.pseudonym(p)[:12] for p in patients} & set(tokens)


def test_only_allowed_clinician_accesses_count(vault_env: Any) -> None:
    for n in range(6):
        for role, account in (("patient", PATIENT_ACCOUNT), ("researcher", OTHER_DOCTOR), (None, None)):
            assert _observe(vault_env, account_id=account, role=role, patient_id=f"p{n}", threshold=3) == []
        assert (
            _observe(vault_env, account_id=DOCTOR, role="clinician", patient_id=f"p{n}", allowed=False, threshold=3)
            == []
        )
    assert _all_alerts(vault_env) == []
    with vault_env.factory() as session:
        assert session.execute(select(func.count()).select_from(AccessRate)).scalar_one() == 0


def test_default_threshold(vault_env: Any) -> None:
    assert alerts.DEFAULT_PATIENTS_PER_HOUR == 50
    with unit_of_work(vault_env.factory) as session:
        raised = [
            alerts.observe(
                session=session,
                crypto=vault_env.crypto,
                account_id=DOCTOR,
                role="clinician",
                patient_id=f"p{n}",
                allowed=True,
                now=T0,
            )
            for n in range(51)
        ]
    assert [n for n, r in enumerate(raised) if r] == [50]


def test_no_patient_data_in_alerts_or_log_lines(vault_env: Any, alert_log: pytest.LogCaptureFixture) -> None:
    decoys = _decoys(vault_env, 2)
    with vault_env.factory() as session:
        # Read the decoys' names without auditing: an audited read would (rightly) raise alerts itself.
        quiet = Caller(actor=None, via="cli", audited=False)
        names = [name for d in decoys for name in _names(Vault(session, vault_env.crypto, caller=quiet), d)]
    assert names
    for decoy in decoys:
        _observe(vault_env, account_id=DOCTOR, role="clinician", patient_id=decoy, threshold=1)
    stored = _all_alerts(vault_env)
    assert sorted(a.kind for a in stored) == ["honeytoken", "honeytoken", "rate"]
    lines = [r.getMessage() for r in alert_log.records if r.name == "medvault.alerts"]
    assert len(lines) == 3
    secrets_ = [*decoys, *names]
    pseudonyms = [vault_env.crypto.indexer.pseudonym(d) for d in decoys]
    for alert in stored:
        text = " ".join(str(v) for v in (alert.id, alert.kind, alert.account_id, alert.detail))
        assert not any(s in text for s in secrets_)
        assert not any(p.hex() in text for p in pseudonyms)
    for line in lines:
        assert not any(s in line for s in secrets_)
        assert not any(p.hex() in line or repr(p) in line for p in pseudonyms)


def _names(vault: Vault, patient_id: str) -> list[str]:
    from medvault.records import service

    doc = service.read(vault=vault, rtype="Patient", rid=patient_id)
    out: list[str] = []
    for name in doc.get("name", []):
        out.append(name["family"])
        out.extend(name.get("given", []))
    return out


def test_acknowledge_hides_an_alert(vault_env: Any) -> None:
    decoys = _decoys(vault_env, 2)
    first = _observe(vault_env, account_id=None, role=None, patient_id=decoys[0])[0]
    second = _observe(vault_env, account_id=None, role=None, patient_id=decoys[1], now=T0 + timedelta(seconds=1))[0]
    with vault_env.factory() as session:
        assert [a.id for a in alerts.list_alerts(session=session)] == [second.id, first.id]  # newest first
    with unit_of_work(vault_env.factory) as session:
        assert alerts.acknowledge(session=session, alert_id=first.id) is True
        assert alerts.acknowledge(session=session, alert_id="f" * 32) is False
    with vault_env.factory() as session:
        assert [a.id for a in alerts.list_alerts(session=session)] == [second.id]
        everything = alerts.list_alerts(session=session, unacknowledged_only=False)
    assert {(a.id, a.acknowledged) for a in everything} == {(first.id, True), (second.id, False)}


def test_prune_rates_drops_past_hours(vault_env: Any) -> None:
    for n in range(2):
        _observe(vault_env, account_id=DOCTOR, role="clinician", patient_id=f"p{n}", now=T0 - timedelta(hours=2))
    _observe(vault_env, account_id=DOCTOR, role="clinician", patient_id="p9", now=T0)
    with unit_of_work(vault_env.factory) as session:
        assert alerts.prune_rates(session=session, before=T0) == 2
    with vault_env.factory() as session:
        assert session.execute(select(func.count()).select_from(AccessRate)).scalar_one() == 1


def test_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        alerts.hour_of(datetime(2026, 1, 1))
