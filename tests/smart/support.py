"""A small SMART world for tests: two patients with records, a patient account, a clinician account
(with a second factor) who holds a grant from one patient, a registered public app, and helpers that
drive the authorization page and the token endpoint through the real app."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from authlib.oauth2.rfc7636.challenge import create_s256_code_challenge
from fastapi.testclient import TestClient

from medvault.access.consent import consent_resource
from medvault.auth import accounts, totp
from medvault.auth.passwords import Hasher
from medvault.db import unit_of_work
from medvault.records import service
from medvault.smart import tokens
from tests.helpers import open_vault

PASSWORD = "a long and private passphrase"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
# Sign-in refuses a POST that does not say it comes from our own origin (login CSRF).
SIGN_IN = {**FORM, "Origin": "https://testserver"}
REDIRECT = "https://app.example.org/callback"


@dataclass
class World:
    env: Any
    pid: str  # the signed-in patient
    other: str  # another patient
    practitioner: str
    obs: list[str]  # the patient's Observations
    condition: str
    other_obs: str
    client_id: str
    clinician_totp: str = ""


def _observation(pid: str, text: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": text},
        "subject": {"reference": f"Patient/{pid}"},
    }


def build_world(env: Any, *, redirect: str = REDIRECT) -> World:
    now = datetime.now(UTC)
    with open_vault(env) as v:
        pid = service.create(vault=v, resource={"resourceType": "Patient", "name": [{"family": "Own"}]}).rid
        other = service.create(vault=v, resource={"resourceType": "Patient", "name": [{"family": "Other"}]}).rid
        prac = service.create(vault=v, resource={"resourceType": "Practitioner", "name": [{"family": "Doc"}]}).rid
        obs = [service.create(vault=v, resource=_observation(pid, f"obs {i}")).rid for i in range(3)]
        condition = service.create(
            vault=v,
            resource={"resourceType": "Condition", "code": {"text": "c"}, "subject": {"reference": f"Patient/{pid}"}},
        ).rid
        other_obs = service.create(vault=v, resource=_observation(other, "theirs")).rid
        # The patient shares their whole record with the clinician; the other patient does not.
        service.create(
            vault=v,
            resource=consent_resource(
                patient_id=pid,
                grantee=f"Practitioner/{prac}",
                resource_types=None,
                sensitive=frozenset(),
                start=None,
                end=None,
                now=now,
            ),
        )
    hasher = Hasher()
    with unit_of_work(env.factory) as session:
        accounts.create_account(
            session=session,
            crypto=env.crypto,
            hasher=hasher,
            login="pat@example.org",
            password=PASSWORD,
            role="patient",
            patient_id=pid,
            now=now,
        )
        doc_id = accounts.create_account(
            session=session,
            crypto=env.crypto,
            hasher=hasher,
            login="doc@example.org",
            password=PASSWORD,
            role="clinician",
            practitioner_id=prac,
            now=now,
        )
        client_id, _ = tokens.register_client(
            session=session, name="Growth Chart", redirect_uris=[redirect], confidential=False, now=now
        )
    with unit_of_work(env.factory) as session:
        secret, _uri = accounts.begin_totp(session=session, crypto=env.crypto, account_id=doc_id)
    with unit_of_work(env.factory) as session:
        accounts.confirm_totp(
            session=session,
            crypto=env.crypto,
            account_id=doc_id,
            code=totp.totp_code(secret=secret, step=totp.time_step(now) - 1),
            now=now,
        )
    return World(env, pid, other, prac, obs, condition, other_obs, client_id, secret)


@contextmanager
def https_client(env: Any) -> Iterator[TestClient]:
    from medvault.api.app import create_app

    # https: the session cookie is Secure, and OAuth2 refuses plain http except on loopback.
    with TestClient(create_app(env.settings), base_url="https://testserver") as client:
        yield client


def sign_in(client: TestClient, world: World, *, clinician: bool = False) -> None:
    login = "doc@example.org" if clinician else "pat@example.org"
    code = totp.totp_code(secret=world.clinician_totp, step=totp.time_step(datetime.now(UTC))) if clinician else ""
    body = urlencode({"login": login, "password": PASSWORD, "code": code})
    response = client.post("/login", content=body, headers=SIGN_IN, follow_redirects=False)
    assert response.status_code == 303, response.text


@dataclass
class Pkce:
    verifier: str
    challenge: str


def pkce() -> Pkce:
    verifier = secrets.token_urlsafe(48)
    return Pkce(verifier, create_s256_code_challenge(verifier))


def auth_params(world: World, scope: str, p: Pkce, **extra: str) -> dict[str, str]:
    params = {
        "response_type": "code",
        "client_id": world.client_id,
        "redirect_uri": REDIRECT,
        "scope": scope,
        "state": "st-" + secrets.token_hex(4),
        "aud": "https://testserver/fhir",
        "code_challenge": p.challenge,
        "code_challenge_method": "S256",
    }
    params.update(extra)
    return {k: v for k, v in params.items() if v != ""}


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


def decide(client: TestClient, params: dict[str, str], *, decision: str = "approve", patient: str | None = None) -> Any:
    """Open the approval page, then press a button. Returns the POST's response (a redirect)."""
    page = client.get("/oauth/authorize", params=params, follow_redirects=False)
    assert page.status_code == 200, page.text
    form = {**params, "csrf": csrf_of(page.text), "decision": decision}
    if patient is not None:
        form["patient"] = patient
    return client.post("/oauth/authorize", content=urlencode(form), headers=FORM, follow_redirects=False)


def redirect_query(response: Any) -> dict[str, str]:
    assert response.status_code in (302, 303), response.text
    location = response.headers["location"]
    assert location.startswith(REDIRECT + "?"), location
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def exchange(client: TestClient, world: World, code: str, verifier: str | None, **extra: str) -> Any:
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "client_id": world.client_id}
    if verifier is not None:
        form["code_verifier"] = verifier
    form.update(extra)
    return client.post("/oauth/token", content=urlencode(form), headers=FORM)


def launch(
    client: TestClient, world: World, scope: str, *, clinician: bool = False, patient: str | None = None
) -> dict[str, Any]:
    """Sign in, approve, exchange: the token response."""
    sign_in(client, world, clinician=clinician)
    p = pkce()
    params = auth_params(world, scope, p)
    got = redirect_query(decide(client, params, patient=patient))
    assert got["state"] == params["state"]
    response = exchange(client, world, got["code"], p.verifier)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
