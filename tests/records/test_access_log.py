"""`GET /fhir/AuditEvent?patient=`: a patient's "who accessed my record" over the API, for that patient
only; what it shows of other people; and that a refused attempt is itself logged for the patient."""

from __future__ import annotations

from typing import Any

import pytest

from medvault.auth.accounts import Actor
from medvault.records import guard, service
from medvault.records.errors import BadRequest, NotFound
from medvault.records.guard import Caller, Forbidden
from tests.helpers import FHIR, open_vault


def _patient(pid: str) -> Actor:
    return Actor(account_id=f"acct-{pid[:8]}", role="patient", patient_id=pid)


def _acting(env: Any, actor: Actor | None) -> Any:
    return guard.unit_of_work(env.factory, env.crypto, Caller(actor=actor, via="api", address="192.0.2.9"))


@pytest.fixture
def two(vault_env: Any) -> tuple[str, str]:
    with open_vault(vault_env) as v:
        alice = service.create(vault=v, resource={"resourceType": "Patient", "gender": "female"}).rid
        bob = service.create(vault=v, resource={"resourceType": "Patient", "gender": "male"}).rid
    return alice, bob


def test_patient_reads_own_log_with_others_reduced(vault_env: Any, two: tuple[str, str]) -> None:
    alice, bob = two
    # Bob (a stranger) tries Alice's record: refused as missing, and logged for Alice.
    with pytest.raises(NotFound), _acting(vault_env, _patient(bob)) as v:
        service.read(vault=v, rtype="Patient", rid=alice)
    with _acting(vault_env, _patient(alice)) as v:
        service.read(vault=v, rtype="Patient", rid=alice)
    with _acting(vault_env, _patient(alice)) as v:
        events, cursor = service.access_log(vault=v, patient_id=alice, count=50)
    assert cursor is None
    assert all(e["resourceType"] == "AuditEvent" for e in events)
    outcomes = [e["outcome"] for e in events]
    assert "0" in outcomes
    assert "4" in outcomes
    text = repr(events)
    assert bob not in text  # another patient's identity is never shown
    assert "another patient's account" in text
    assert "altId" not in text
    assert "192.0.2.9" not in text
    assert [int(e["id"]) for e in events] == sorted((int(e["id"]) for e in events), reverse=True)


def test_paging_cursor(vault_env: Any, two: tuple[str, str]) -> None:
    alice, _ = two
    for _ in range(3):
        with _acting(vault_env, _patient(alice)) as v:
            service.read(vault=v, rtype="Patient", rid=alice)
    with _acting(vault_env, None) as v:
        first, cursor = service.access_log(vault=v, patient_id=alice, count=2)
        assert cursor is not None
        assert len(first) == 2
        rest, _ = service.access_log(vault=v, patient_id=alice, count=50, before=cursor)
    seen = [e["id"] for e in first + rest]
    assert len(seen) == len(set(seen))
    assert len(rest) >= 2


@pytest.mark.parametrize(
    "who",
    [
        "other-patient",
        "clinician",
        "researcher",
        "privacy-officer",
        "admin",
    ],
)
def test_only_the_patient_reads_their_log(vault_env: Any, two: tuple[str, str], who: str) -> None:
    alice, bob = two
    actor = {
        "other-patient": _patient(bob),
        "clinician": Actor(account_id="c", role="clinician", practitioner_id="p1", mfa_enrolled=True),
        "researcher": Actor(account_id="r", role="researcher"),
        "privacy-officer": Actor(account_id="o", role="privacy-officer", mfa_enrolled=True),
        "admin": Actor(account_id="a", role="admin", mfa_enrolled=True),
    }[who]
    with pytest.raises(Forbidden), _acting(vault_env, actor) as v:
        service.access_log(vault=v, patient_id=alice)
    # The attempt itself is in Alice's log.
    with _acting(vault_env, _patient(alice)) as v:
        events, _ = service.access_log(vault=v, patient_id=alice)
    assert any(e["outcome"] == "4" and e["outcomeDesc"] == "not-own-compartment" for e in events)


def test_bad_arguments(vault_env: Any, two: tuple[str, str]) -> None:
    alice, _ = two
    with _acting(vault_env, _patient(alice)) as v:
        with pytest.raises(BadRequest):
            service.access_log(vault=v, patient_id=alice, count=0)
        with pytest.raises(NotFound):
            service.access_log(vault=v, patient_id="bad id!")


def test_api_search(api: Any) -> None:
    pid = api.post("/fhir/Patient", json={"resourceType": "Patient"}, headers={"Content-Type": FHIR}).json()["id"]
    api.get(f"/fhir/Patient/{pid}")
    got = api.get(f"/fhir/AuditEvent?patient=Patient/{pid}&_count=1")
    assert got.status_code == 200, got.text
    bundle = got.json()
    assert bundle["type"] == "searchset"
    assert len(bundle["entry"]) == 1
    assert bundle["entry"][0]["resource"]["resourceType"] == "AuditEvent"
    nxt = next(link["url"] for link in bundle["link"] if link["relation"] == "next")
    assert api.get(nxt.replace("http://testserver", "")).status_code == 200
    for bad in ("", "?patient=", f"?patient={pid}&code=x", f"?patient={pid}&_before=99999999999999999999"):
        r = api.get(f"/fhir/AuditEvent{bad}")
        assert r.status_code == 400, bad
        assert r.json()["resourceType"] == "OperationOutcome"
    assert api.get(f"/fhir/AuditEvent?patient={pid}", headers={"Authorization": ""}).status_code == 401
