"""Scopes enforced inside the one access decision: an app token reaches what its account may reach,
narrowed by its scopes; patient/ scopes stay inside the launch patient's compartment."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import pytest

from medvault.access.consent import consent_resource, revoked
from medvault.auth import accounts
from medvault.auth.passwords import Hasher
from medvault.db import unit_of_work
from medvault.smart import tokens
from tests.api.support import JSON_HEADERS, outcome
from tests.smart.support import (
    FORM,
    World,
    auth_params,
    bearer,
    build_world,
    csrf_of,
    https_client,
    launch,
    pkce,
    sign_in,
)


@pytest.fixture
def world(vault_env: Any) -> World:
    return build_world(vault_env)


@pytest.fixture
def client(world: World) -> Iterator[Any]:
    with https_client(world.env) as c:
        yield c


def _ids(response: Any) -> list[str]:
    assert response.status_code == 200, response.text
    return sorted(e["resource"]["id"] for e in response.json().get("entry", []))


def test_patient_observation_token(world: World, client: Any) -> None:
    token = launch(client, world, "patient/Observation.rs launch/patient")["access_token"]
    h = bearer(token)
    assert client.get(f"/fhir/Observation/{world.obs[0]}", headers=h).status_code == 200
    assert _ids(client.get("/fhir/Observation", params={"patient": world.pid}, headers=h)) == sorted(world.obs)
    # Without a patient parameter: still only the launch patient's.
    assert _ids(client.get("/fhir/Observation", headers=h)) == sorted(world.obs)
    # Their own Condition is outside the scope: refused openly (they know it exists).
    outcome(client.get(f"/fhir/Condition/{world.condition}", headers=h), 403)
    outcome(client.get("/fhir/Condition", params={"patient": world.pid}, headers=h), 403)
    # Another patient's anything: the same answer as a record that does not exist.
    other = client.get(f"/fhir/Observation/{world.other_obs}", headers=h)
    missing = client.get("/fhir/Observation/does-not-exist", headers=h)
    assert other.status_code == missing.status_code == 404
    assert other.json()["issue"][0]["code"] == missing.json()["issue"][0]["code"]
    assert _ids(client.get("/fhir/Observation", params={"patient": world.other}, headers=h)) == []
    # No write: read/search scopes only (and patients do not author Observations anyway).
    new = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}
    new["subject"] = {"reference": f"Patient/{world.pid}"}
    outcome(client.post("/fhir/Observation", json=new, headers={**h, **JSON_HEADERS}), 403)
    outcome(client.delete(f"/fhir/Observation/{world.obs[0]}", headers=h), 403)


def test_patient_everything_is_filtered_by_scope(world: World, client: Any) -> None:
    token = launch(client, world, "patient/Observation.rs patient/Patient.rs launch/patient")["access_token"]
    found = client.get(f"/fhir/Patient/{world.pid}/$everything", headers=bearer(token))
    assert found.status_code == 200, found.text
    types = {e["resource"]["resourceType"] for e in found.json()["entry"]}
    assert "Observation" in types
    assert "Condition" not in types


def test_clinician_user_token_sees_only_granting_patients(world: World, client: Any) -> None:
    token = launch(client, world, "user/Observation.rs openid fhirUser", clinician=True)
    h = bearer(token["access_token"])
    assert "patient" not in token
    assert client.get(f"/fhir/Observation/{world.obs[0]}", headers=h).status_code == 200
    outcome(client.get(f"/fhir/Observation/{world.other_obs}", headers=h), 404)
    assert _ids(client.get("/fhir/Observation", headers=h)) == sorted(world.obs)
    outcome(client.get(f"/fhir/Condition/{world.condition}", headers=h), 403)


def test_clinician_patient_token_stays_in_the_chosen_compartment(world: World, client: Any) -> None:
    token = launch(client, world, "patient/*.rs launch/patient", clinician=True, patient=world.pid)
    assert token["patient"] == world.pid
    h = bearer(token["access_token"])
    assert client.get(f"/fhir/Condition/{world.condition}", headers=h).status_code == 200
    assert _ids(client.get("/fhir/Observation", headers=h)) == sorted(world.obs)
    # Shared directory resources are outside any compartment: readable.
    assert client.get(f"/fhir/Practitioner/{world.practitioner}", headers=h).status_code == 200


def test_a_clinician_cannot_launch_for_a_patient_who_did_not_grant(world: World, client: Any) -> None:
    sign_in(client, world, clinician=True)
    params = auth_params(world, "patient/*.rs launch/patient", pkce())
    page = client.get("/oauth/authorize", params=params)
    assert page.status_code == 200
    assert f'value="{world.pid}"' in page.text
    assert world.other not in page.text
    form = urlencode({**params, "csrf": csrf_of(page.text), "decision": "approve", "patient": world.other})
    refused = client.post("/oauth/authorize", content=form, headers=FORM, follow_redirects=False)
    assert refused.status_code == 400
    assert "location" not in refused.headers


def test_the_system_token_still_does_everything(world: World, client: Any) -> None:
    token = world.env.settings.token_path.read_text().strip()
    h = bearer(token)
    assert client.get(f"/fhir/Observation/{world.other_obs}", headers=h).status_code == 200
    assert client.get(f"/fhir/Condition/{world.condition}", headers=h).status_code == 200
    assert len(_ids(client.get("/fhir/Observation", headers=h))) == 4


def test_the_access_log_needs_an_audit_event_scope(world: World, client: Any) -> None:
    # "Who accessed my record" names the clinicians who looked and when: an app granted only the
    # patient's Observations must not read it (it did: the AuditEvent search ignored the scopes).
    token = launch(client, world, "patient/Observation.rs launch/patient")["access_token"]
    outcome(client.get("/fhir/AuditEvent", params={"patient": world.pid}, headers=bearer(token)), 403)
    allowed = launch(client, world, "patient/AuditEvent.s launch/patient")["access_token"]
    found = client.get("/fhir/AuditEvent", params={"patient": world.pid}, headers=bearer(allowed))
    assert found.status_code == 200, found.text
    assert found.json()["entry"]


def _grant_to(world: World) -> dict[str, Any]:
    return consent_resource(
        patient_id=world.pid,
        grantee=f"Practitioner/{world.practitioner}",
        resource_types=None,
        sensitive=frozenset({"mental-health", "hiv"}),
        start=None,
        end=None,
        now=datetime.now(UTC),
    )


def test_a_wildcard_scope_does_not_let_an_app_share_the_record(world: World, client: Any) -> None:
    # A Consent is who may see the record: an app the patient let "add and change your records"
    # must not be able to grant someone (sensitive parts included) access that outlives the app's
    # own tokens. Only a scope naming Consent writes may.
    h = {**bearer(launch(client, world, "patient/*.cruds launch/patient")["access_token"]), **JSON_HEADERS}
    outcome(client.post("/fhir/Consent", json=_grant_to(world), headers=h), 403)
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": _grant_to(world), "request": {"method": "POST", "url": "Consent"}}],
    }
    outcome(client.post("/fhir", json=bundle, headers=h), 403)
    # Reading their grants through the wildcard is still fine.
    assert client.get("/fhir/Consent", params={"patient": world.pid}, headers=h).status_code == 200
    named = {**bearer(launch(client, world, "patient/Consent.cru launch/patient")["access_token"]), **JSON_HEADERS}
    created = client.post("/fhir/Consent", json=_grant_to(world), headers=named)
    assert created.status_code == 201, created.text


def test_a_withdrawn_grant_ends_a_live_clinician_token_at_once(world: World, client: Any) -> None:
    token = launch(client, world, "patient/*.rs launch/patient", clinician=True, patient=world.pid)
    h = bearer(token["access_token"])
    assert client.get(f"/fhir/Observation/{world.obs[0]}", headers=h).status_code == 200
    operator = bearer(world.env.settings.token_path.read_text().strip())
    consents = client.get("/fhir/Consent", params={"patient": world.pid}, headers=operator).json()["entry"]
    for entry in consents:
        current = entry["resource"]
        put = client.put(f"/fhir/Consent/{current['id']}", json=revoked(current), headers={**operator, **JSON_HEADERS})
        assert put.status_code == 200, put.text
    # The token is still live, but the grant behind it is gone: the very next request is refused
    # like a record that does not exist, on every path.
    other = client.get(f"/fhir/Observation/{world.obs[0]}", headers=h)
    missing = client.get("/fhir/Observation/does-not-exist", headers=h)
    assert other.status_code == missing.status_code == 404
    assert _ids(client.get("/fhir/Observation", params={"patient": world.pid}, headers=h)) == []
    outcome(client.get(f"/fhir/Patient/{world.pid}/$everything", headers=h), 404)
    outcome(client.get(f"/fhir/Observation/{world.obs[0]}/_history", headers=h), 404)


def test_a_patients_search_leaves_other_patients_logs_alone(world: World, client: Any) -> None:
    # A patient (or a patient/-only token) can reach one compartment. A search without a patient
    # parameter used to judge every patient's records of the type, writing a refused search by
    # "another patient's account" into each of their access logs (a decoy's included: a false
    # breach alert), at the cost of the whole store. It is now narrowed to that compartment first.
    from medvault.audit import log as audit_log
    from medvault.db import unit_of_work

    def other_log() -> int:
        with unit_of_work(world.env.factory) as session:
            found = audit_log.for_patient(session=session, crypto=world.env.crypto, patient_id=world.other, limit=200)
        return len(found)

    before = other_log()
    token = launch(client, world, "patient/Observation.rs patient/Practitioner.rs launch/patient")["access_token"]
    h = bearer(token)
    assert _ids(client.get("/fhir/Observation", headers=h)) == sorted(world.obs)
    # Outside any compartment stays searchable.
    assert _ids(client.get("/fhir/Practitioner", headers=h)) == [world.practitioner]
    assert other_log() == before


def _minted(world: World, scope: str) -> dict[str, str]:
    """A token as the token endpoint stores one, minted directly (no sign-in page in the way) for a
    second account of the world's patient."""
    env, now = world.env, datetime.now(UTC)
    token = tokens.new_secret()
    with unit_of_work(env.factory) as session:
        account = accounts.create_account(
            session=session,
            crypto=env.crypto,
            hasher=Hasher(),
            login="pat-app@example.org",
            password="a long and private passphrase",
            role="patient",
            patient_id=world.pid,
            now=now,
        )
        tokens.store_token(
            session=session,
            crypto=env.crypto,
            access_token=token,
            refresh_token=None,
            client_id=world.client_id,
            account_id=account,
            scope=scope,
            patient=world.pid,
            family=None,
            granted=now,
            now=now,
        )
    return bearer(token)


def test_type_history_outside_the_scopes_is_refused_not_empty(world: World, client: Any) -> None:
    """Regression (schemathesis, narrow token): GET /fhir/Condition/_history with patient/Observation.rs
    answered 200 with an empty history instead of the 403 a search of Condition gets."""
    h = _minted(world, "patient/Observation.rs launch/patient")
    outcome(client.get("/fhir/Condition/_history", headers=h), 403)
    outcome(client.get("/fhir/Patient/_history", headers=h), 403)
    own = client.get("/fhir/Observation/_history", headers=h)
    assert own.status_code == 200, own.text
    assert sorted(e["resource"]["id"] for e in own.json()["entry"]) == sorted(world.obs)
