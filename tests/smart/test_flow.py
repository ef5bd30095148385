"""The authorization code flow with PKCE, refresh-token rotation and revocation, through the real
app on both backends (an https TestClient: the session cookie is Secure)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from joserfc import jwk, jwt
from sqlalchemy import select, update

from medvault.audit import log as audit_log
from medvault.db import unit_of_work
from medvault.store.models import OAuthCode, OAuthToken
from tests.smart.support import (
    FORM,
    REDIRECT,
    SIGN_IN,
    World,
    auth_params,
    bearer,
    decide,
    exchange,
    launch,
    pkce,
    redirect_query,
    sign_in,
)

FULL = "patient/Observation.rs launch/patient openid fhirUser offline_access"


def _refresh(client: Any, world: World, refresh_token: str) -> Any:
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": world.client_id}
    return client.post("/oauth/token", content=urlencode(form), headers=FORM)


def test_full_code_flow_with_pkce(world: World, client: Any) -> None:
    token = launch(client, world, FULL)
    assert token["token_type"] == "Bearer"
    assert token["patient"] == world.pid
    assert set(token["scope"].split()) == set(FULL.split())
    assert 0 < token["expires_in"] <= 3600
    assert token["refresh_token"]
    assert token["refresh_token"] != token["access_token"]
    # The id_token is signed with the key the JWKS publishes, and names the person.
    keys = client.get("/oauth/jwks").json()["keys"]
    claims = jwt.decode(token["id_token"], jwk.import_key(keys[0], "RSA")).claims
    assert claims["fhirUser"] == f"Patient/{world.pid}"
    assert claims["aud"] == world.client_id
    assert claims["iss"] == "https://testserver/fhir"
    found = client.get("/fhir/Observation", params={"patient": world.pid}, headers=bearer(token["access_token"]))
    assert found.status_code == 200, found.text
    assert sorted(e["resource"]["id"] for e in found.json()["entry"]) == sorted(world.obs)


def test_the_id_token_echoes_the_nonce(world: World, client: Any) -> None:
    sign_in(client, world)
    p = pkce()
    got = redirect_query(decide(client, auth_params(world, "patient/Observation.rs openid fhirUser", p, nonce="n-123")))
    token = exchange(client, world, got["code"], p.verifier).json()
    keys = client.get("/oauth/jwks").json()["keys"]
    claims = jwt.decode(token["id_token"], jwk.import_key(keys[0], "RSA")).claims
    assert claims["nonce"] == "n-123"
    assert claims["fhirUser"] == f"Patient/{world.pid}"


def test_no_refresh_token_without_offline_access(world: World, client: Any) -> None:
    token = launch(client, world, "patient/Observation.rs launch/patient")
    assert "refresh_token" not in token
    assert "id_token" not in token


def test_tokens_and_codes_are_stored_only_as_hashes(world: World, client: Any) -> None:
    token = launch(client, world, FULL)
    with unit_of_work(world.env.factory) as session:
        rows = session.scalars(select(OAuthToken).where(OAuthToken.account_id.is_not(None))).all()
        assert len(rows) == 1
        row = rows[0]
        assert row.access_hash == hashlib.sha256(token["access_token"].encode()).digest()
        assert row.refresh_hash == hashlib.sha256(token["refresh_token"].encode()).digest()
        # The launch patient is an identifier: sealed, not in the clear.
        assert world.pid.encode() not in row.sealed
        assert session.scalars(select(OAuthCode)).all() == []  # used codes are gone


def test_plain_or_missing_pkce_is_refused(world: World, client: Any) -> None:
    sign_in(client, world)
    p = pkce()
    for extra in ({"code_challenge_method": "plain", "code_challenge": p.verifier}, {"code_challenge_method": ""}):
        params = auth_params(world, "patient/Observation.rs", p, **extra)
        got = redirect_query(client.get("/oauth/authorize", params=params, follow_redirects=False))
        assert got["error"] == "invalid_request"
        assert got["state"] == params["state"]
    params = auth_params(world, "patient/Observation.rs", p, code_challenge="", code_challenge_method="")
    assert redirect_query(client.get("/oauth/authorize", params=params, follow_redirects=False))["error"] == (
        "invalid_request"
    )


def test_missing_or_wrong_verifier_is_refused_and_a_code_is_single_use(world: World, client: Any) -> None:
    sign_in(client, world)
    p = pkce()
    code = redirect_query(decide(client, auth_params(world, "patient/Observation.rs launch/patient", p)))["code"]
    missing = exchange(client, world, code, None)
    assert missing.status_code == 400
    assert missing.json()["error"] == "invalid_request"
    wrong = exchange(client, world, code, pkce().verifier)
    assert wrong.status_code == 400
    assert wrong.json()["error"] == "invalid_grant"
    assert exchange(client, world, code, p.verifier).status_code == 200
    again = exchange(client, world, code, p.verifier)
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"


def test_an_expired_code_is_refused(world: World, client: Any) -> None:
    sign_in(client, world)
    p = pkce()
    code = redirect_query(decide(client, auth_params(world, "patient/Observation.rs", p)))["code"]
    with unit_of_work(world.env.factory) as session:
        session.execute(update(OAuthCode).values(expires=datetime.now(UTC) - timedelta(seconds=1)))
    response = exchange(client, world, code, p.verifier)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


def test_redirect_uri_must_match_exactly(world: World, client: Any) -> None:
    sign_in(client, world)
    p = pkce()
    for bad in (REDIRECT + "/", REDIRECT.upper(), "https://evil.example/callback", REDIRECT + "?x=1"):
        page = client.get("/oauth/authorize", params=auth_params(world, "patient/Observation.rs", p, redirect_uri=bad))
        assert page.status_code == 400  # an error page here, never a redirect to an unchecked URL
        assert "location" not in page.headers
        assert "evil.example" not in page.text  # and the page does not quote the request
    unknown = client.get("/oauth/authorize", params=auth_params(world, "patient/Observation.rs", p, client_id="nope"))
    assert unknown.status_code == 400
    # At the token endpoint too: the code is bound to the redirect URI it was issued for.
    code = redirect_query(decide(client, auth_params(world, "patient/Observation.rs", p)))["code"]
    response = exchange(client, world, code, p.verifier, redirect_uri=REDIRECT + "/other")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


def test_deny_returns_access_denied_with_the_state(world: World, client: Any) -> None:
    sign_in(client, world)
    params = auth_params(world, "patient/Observation.rs", pkce())
    got = redirect_query(decide(client, params, decision="deny"))
    assert got["error"] == "access_denied"
    assert got["state"] == params["state"]
    assert "code" not in got


def test_state_and_audience_are_checked(world: World, client: Any) -> None:
    sign_in(client, world)
    no_state = auth_params(world, "patient/Observation.rs", pkce(), state="")
    assert redirect_query(client.get("/oauth/authorize", params=no_state, follow_redirects=False))["error"] == (
        "invalid_request"
    )
    params = auth_params(world, "patient/Observation.rs", pkce(), aud="https://other.example/fhir")
    got = redirect_query(client.get("/oauth/authorize", params=params, follow_redirects=False))
    assert got["error"] == "invalid_request"
    assert got["state"] == params["state"]


def test_unknown_or_system_scopes_are_refused(world: World, client: Any) -> None:
    sign_in(client, world)
    for scope in ("system/*.cruds", "patient/Observation.rsx", "patient/Nope.rs", "launch", "openid"):
        got = redirect_query(
            client.get("/oauth/authorize", params=auth_params(world, scope, pkce()), follow_redirects=False)
        )
        assert got["error"] == "invalid_scope", scope


def test_the_approval_page_says_what_the_app_asks_for(world: World, client: Any) -> None:
    sign_in(client, world)
    page = client.get("/oauth/authorize", params=auth_params(world, FULL, pkce()))
    assert page.status_code == 200
    assert "Growth Chart" in page.text
    assert "read your Observation records" in page.text
    assert "stay signed in (offline access)" in page.text
    assert "your own record" in page.text
    assert "<script" not in page.text
    # The form may send the browser on to the app's redirect URI, and nowhere else.
    assert "form-action 'self' https://app.example.org" in page.headers["content-security-policy"]


def test_sign_in_comes_back_to_the_request(world: World, client: Any) -> None:
    params = auth_params(world, "patient/Observation.rs", pkce())
    first = client.get("/oauth/authorize", params=params, follow_redirects=False)
    assert first.status_code == 303
    login_url = first.headers["location"]
    assert login_url.startswith("/login?next=")
    nxt = parse_qs(urlsplit(login_url).query)["next"][0]
    assert nxt.startswith("/oauth/authorize?")
    form = urlencode({"login": "pat@example.org", "password": "a long and private passphrase", "next": nxt})
    assert f'name="next" value="{nxt}"'.replace("&", "&amp;") in client.get(login_url).text
    signed = client.post("/login", content=form, headers=SIGN_IN, follow_redirects=False)
    assert signed.headers["location"] == nxt


def test_sign_in_never_sends_elsewhere(world: World, client: Any) -> None:
    for nxt in ("//evil.example/x", "https://evil.example/", "/\\evil.example", "/\tx", "oauth/authorize"):
        form = urlencode({"login": "pat@example.org", "password": "a long and private passphrase", "next": nxt})
        signed = client.post("/login", content=form, headers=SIGN_IN, follow_redirects=False)
        assert signed.headers["location"] == "/", nxt


def test_refresh_rotation_and_reuse_detection(world: World, client: Any) -> None:
    first = launch(client, world, FULL)
    second = _refresh(client, world, first["refresh_token"])
    assert second.status_code == 200, second.text
    second_body = second.json()
    assert second_body["refresh_token"] != first["refresh_token"]
    assert second_body["patient"] == world.pid
    assert (
        client.get(f"/fhir/Observation/{world.obs[0]}", headers=bearer(second_body["access_token"])).status_code == 200
    )
    # The rotated refresh token no longer works; presenting it again ends the whole family.
    reused = _refresh(client, world, first["refresh_token"])
    assert reused.status_code == 400
    assert reused.json()["error"] == "invalid_grant"
    assert (
        client.get(f"/fhir/Observation/{world.obs[0]}", headers=bearer(second_body["access_token"])).status_code == 401
    )
    assert _refresh(client, world, second_body["refresh_token"]).status_code == 400
    with unit_of_work(world.env.factory) as session:
        entries = audit_log.for_patient(session=session, crypto=world.env.crypto, patient_id=world.pid, limit=100)
    codes = [e.event["subtype"][0]["code"] for e in entries]
    assert "smart-refresh-reuse" in codes
    assert codes.count("smart-token-issue") == 2
    assert "smart-approve" in codes
    dumped = str([e.event for e in entries])
    for value in (first["access_token"], first["refresh_token"], second_body["access_token"]):
        assert value not in dumped


def test_revoked_access_token_is_refused_next_time(world: World, client: Any) -> None:
    token = launch(client, world, FULL)
    headers = bearer(token["access_token"])
    assert client.get(f"/fhir/Observation/{world.obs[0]}", headers=headers).status_code == 200
    form = urlencode({"token": token["access_token"], "client_id": world.client_id})
    assert client.post("/oauth/revoke", content=form, headers=FORM).status_code == 200
    gone = client.get(f"/fhir/Observation/{world.obs[0]}", headers=headers)
    assert gone.status_code == 401
    assert gone.headers["www-authenticate"].startswith("Bearer")
    # Revoking the grant ends its refresh token as well.
    assert _refresh(client, world, token["refresh_token"]).status_code == 400


def test_an_expired_access_token_is_refused(world: World, client: Any) -> None:
    token = launch(client, world, "patient/Observation.rs launch/patient")
    with unit_of_work(world.env.factory) as session:
        session.execute(
            update(OAuthToken)
            .where(OAuthToken.account_id.is_not(None))
            .values(access_expires=datetime.now(UTC) - timedelta(seconds=1))
        )
    assert client.get(f"/fhir/Observation/{world.obs[0]}", headers=bearer(token["access_token"])).status_code == 401


def test_smart_configuration(world: World, client: Any) -> None:
    conf = client.get("/fhir/.well-known/smart-configuration")
    assert conf.status_code == 200
    body = conf.json()
    assert body["authorization_endpoint"] == "https://testserver/oauth/authorize"
    assert body["token_endpoint"] == "https://testserver/oauth/token"
    assert body["revocation_endpoint"] == "https://testserver/oauth/revoke"
    assert body["jwks_uri"] == "https://testserver/oauth/jwks"
    assert body["code_challenge_methods_supported"] == ["S256"]
    assert set(body["grant_types_supported"]) == {"authorization_code", "refresh_token"}
    for capability in (
        "launch-standalone",
        "client-public",
        "client-confidential-symmetric",
        "context-standalone-patient",
        "permission-v2",
        "permission-patient",
        "permission-user",
        "sso-openid-connect",
        "permission-offline",
    ):
        assert capability in body["capabilities"]
    for scope in ("openid", "fhirUser", "launch/patient", "offline_access"):
        assert scope in body["scopes_supported"]


def test_a_confidential_client_must_authenticate(world: World, client: Any) -> None:
    from medvault.smart import tokens

    with unit_of_work(world.env.factory) as session:
        client_id, secret = tokens.register_client(
            session=session, name="Server app", redirect_uris=[REDIRECT], confidential=True, now=datetime.now(UTC)
        )
    assert secret
    confidential = World(**{**world.__dict__, "client_id": client_id})
    sign_in(client, confidential)
    p = pkce()

    def code() -> str:
        return redirect_query(decide(client, auth_params(confidential, "patient/Observation.rs launch/patient", p)))[
            "code"
        ]

    # Without its secret (as if it were public): refused.
    anonymous = exchange(client, confidential, code(), p.verifier)
    assert anonymous.status_code in (400, 401)
    assert anonymous.json()["error"] == "invalid_client"
    wrong = client.post(
        "/oauth/token",
        content=urlencode(
            {"grant_type": "authorization_code", "code": code(), "redirect_uri": REDIRECT, "code_verifier": p.verifier}
        ),
        headers=FORM,
        auth=(client_id, "not-the-secret"),
    )
    assert wrong.status_code == 401
    good = client.post(
        "/oauth/token",
        content=urlencode(
            {"grant_type": "authorization_code", "code": code(), "redirect_uri": REDIRECT, "code_verifier": p.verifier}
        ),
        headers=FORM,
        auth=(client_id, secret),
    )
    assert good.status_code == 200, good.text
    assert good.json()["patient"] == world.pid
