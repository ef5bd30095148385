"""'My apps': the apps an account authorised, and revoking one ends its tokens."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest

from medvault.audit import log as audit_log
from medvault.db import unit_of_work
from tests.smart.support import FORM, World, bearer, build_world, csrf_of, https_client, launch


@pytest.fixture
def world(vault_env: Any) -> World:
    return build_world(vault_env)


@pytest.fixture
def client(world: World) -> Iterator[Any]:
    with https_client(world.env) as c:
        yield c


def test_my_apps_lists_and_revokes(world: World, client: Any) -> None:
    token = launch(client, world, "patient/Observation.rs launch/patient offline_access")
    h = bearer(token["access_token"])
    assert client.get(f"/fhir/Observation/{world.obs[0]}", headers=h).status_code == 200
    page = client.get("/me/apps")
    assert page.status_code == 200
    assert "Growth Chart" in page.text
    assert "read your Observation records" in page.text
    assert "<script" not in page.text
    assert world.client_id in page.text
    assert "not yet" not in page.text  # it was used just above
    # Revoking without the CSRF token is refused and changes nothing.
    forged = client.post("/me/apps/revoke", content=urlencode({"client": world.client_id}), headers=FORM)
    assert forged.status_code == 403
    assert client.get(f"/fhir/Observation/{world.obs[0]}", headers=h).status_code == 200
    form = urlencode({"client": world.client_id, "csrf": csrf_of(page.text)})
    done = client.post("/me/apps/revoke", content=form, headers=FORM, follow_redirects=False)
    assert done.status_code == 303
    assert client.get(f"/fhir/Observation/{world.obs[0]}", headers=h).status_code == 401
    refresh = urlencode(
        {"grant_type": "refresh_token", "refresh_token": token["refresh_token"], "client_id": world.client_id}
    )
    assert client.post("/oauth/token", content=refresh, headers=FORM).status_code == 400
    after = client.get("/me/apps")
    assert "Growth Chart" not in after.text
    assert "not allowed any app" in after.text
    with unit_of_work(world.env.factory) as session:
        entries = audit_log.for_patient(session=session, crypto=world.env.crypto, patient_id=world.pid, limit=100)
    assert "smart-revoke" in [e.event["subtype"][0]["code"] for e in entries]


def test_my_apps_needs_a_session(world: World, client: Any) -> None:
    response = client.get("/me/apps", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/login"


def test_the_approval_page_cannot_be_framed(world: World, client: Any) -> None:
    # Clickjacking: a page of another site framing the approval page could steer the patient's
    # click onto "Allow". Its CSP is rewritten (form-action gains the app's origin): the rewrite
    # must keep frame-ancestors 'none', and X-Frame-Options covers browsers without CSP 3.
    from tests.smart.support import auth_params, pkce, sign_in

    sign_in(client, world)
    page = client.get("/oauth/authorize", params=auth_params(world, "patient/Observation.rs", pkce()))
    assert page.status_code == 200, page.text
    csp = [d.strip() for d in page.headers["content-security-policy"].split(";")]
    assert "frame-ancestors 'none'" in csp
    assert "form-action 'self' https://app.example.org" in csp
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["cache-control"] == "no-store"
    # The person sees where the answer goes, not only the name the app was registered under.
    assert "<strong>app.example.org</strong>" in page.text


def test_a_clinician_opening_the_approval_page_leaves_other_patients_logs_alone(world: World, client: Any) -> None:
    # Choosing the launch patient lists the patients who granted this clinician. It used to search
    # every Consent in the store as the clinician, so each patient with any grant (to anyone) got a
    # refused search by this clinician in "who accessed my record", on every page load.
    from datetime import UTC, datetime

    from medvault.access.consent import consent_resource
    from medvault.records import service
    from tests.helpers import open_vault
    from tests.smart.support import auth_params, pkce, sign_in

    with open_vault(world.env) as v:
        elsewhere = service.create(vault=v, resource={"resourceType": "Practitioner", "name": [{"family": "B"}]}).rid
        grant = consent_resource(
            patient_id=world.other,
            grantee=f"Practitioner/{elsewhere}",
            resource_types=None,
            sensitive=frozenset(),
            start=None,
            end=None,
            now=datetime.now(UTC),
        )
        service.create(vault=v, resource=grant)

    def other_log() -> list[Any]:
        with unit_of_work(world.env.factory) as session:
            return audit_log.for_patient(session=session, crypto=world.env.crypto, patient_id=world.other, limit=100)

    before = len(other_log())
    sign_in(client, world, clinician=True)
    page = client.get("/oauth/authorize", params=auth_params(world, "patient/*.rs launch/patient", pkce()))
    assert page.status_code == 200, page.text
    assert f'value="{world.pid}"' in page.text
    assert world.other not in page.text
    assert len(other_log()) == before
