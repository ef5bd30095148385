"""The pages on both backends through the real app (cookies, CSP, CSRF, origin, second factor):
sign-in, the patient's pages, the clinician's "my patients" and patient record, the privacy
officer's alerts. The same flow in a real browser is tests/web/test_browser.py."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import pytest
from fastapi.testclient import TestClient

from medvault.auth import accounts, totp
from medvault.auth.passwords import Hasher
from medvault.db import unit_of_work
from medvault.records import service
from medvault.web.pages import COOKIE, CSP
from tests.helpers import open_vault, post_streamed
from tests.web.support import add_authenticator, enrolled, now_code

PASSWORD = "a long and private passphrase"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture
def site(vault_env: Any) -> Any:
    from medvault.api.app import create_app

    with open_vault(vault_env) as v:
        pid = service.create(vault=v, resource={"resourceType": "Patient", "gender": "female"}).rid
        oid = service.create(
            vault=v,
            resource={
                "resourceType": "Observation",
                "status": "final",
                "code": {"text": "x"},
                "subject": {"reference": f"Patient/{pid}"},
            },
        ).rid
    with unit_of_work(vault_env.factory) as session:
        accounts.create_account(
            session=session,
            crypto=vault_env.crypto,
            hasher=Hasher(),
            login="pat@example.org",
            password=PASSWORD,
            role="patient",
            patient_id=pid,
            now=datetime.now(UTC),
        )
    # https: the session cookie is Secure (and __Host-), so a client only sends it over https.
    with TestClient(create_app(vault_env.settings), base_url="https://testserver") as client:
        yield client, vault_env, pid, oid


# A browser sends Origin with every form POST; sign-in refuses a POST without it (or a Referer).
SIGN_IN = {**FORM, "Origin": "https://testserver"}


def _login(client: Any, password: str = PASSWORD, code: str = "", login: str = "pat@example.org") -> Any:
    body = urlencode({"login": login, "password": password, "code": code})
    return client.post("/login", content=body, headers=SIGN_IN, follow_redirects=False)


def test_pages_need_a_session(site: Any) -> None:
    client, *_ = site
    for path in ("/", "/me/access"):
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 303
        assert response.headers["location"] == "/login"
    page = client.get("/login")
    assert page.status_code == 200
    assert page.headers["content-security-policy"] == CSP
    assert "<script" not in page.text


def test_wrong_password_sets_no_cookie(site: Any) -> None:
    client, *_ = site
    response = _login(client, "not the password at all")
    assert response.status_code == 401
    assert "Sign-in failed" in response.text
    assert COOKIE not in response.headers.get("set-cookie", "")


def test_sign_in_cookie_flags_and_access_log(site: Any) -> None:
    client, env, pid, oid = site
    with open_vault(env) as v:  # the operator reads her Observation: it must show in her log
        service.read(vault=v, rtype="Observation", rid=oid)
    response = _login(client)
    assert response.status_code == 303
    cookie = response.headers["set-cookie"]
    for flag in ("HttpOnly", "Secure", "SameSite=strict", "Path=/"):
        assert flag.lower() in cookie.lower()
    assert cookie.startswith(f"{COOKIE}=")
    home = client.get("/")
    assert home.status_code == 200
    assert "Who accessed my record" in home.text
    log = client.get("/me/access")
    assert log.status_code == 200
    assert "the operator (administration)" in log.text
    assert "read a record" in log.text
    assert pid not in log.text  # the page speaks of "you", never an id


def test_logout_needs_the_csrf_token_and_ends_the_session(site: Any) -> None:
    client, *_ = site
    assert _login(client).status_code == 303
    refused = client.post("/logout", content="csrf=forged", headers=FORM, follow_redirects=False)
    assert refused.status_code == 403
    assert client.get("/", follow_redirects=False).status_code == 200
    csrf = client.get("/").text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    cross_site = client.post(
        "/logout", content=f"csrf={csrf}", headers={**FORM, "Origin": "https://evil.example"}, follow_redirects=False
    )
    assert cross_site.status_code == 403
    done = client.post("/logout", content=f"csrf={csrf}", headers=FORM, follow_redirects=False)
    assert done.status_code == 303
    assert client.get("/", follow_redirects=False).status_code == 303


def test_second_factor_when_enrolled(site: Any) -> None:
    client, env, *_ = site
    with unit_of_work(env.factory) as session:
        account_id = next(a.id for a in accounts.list_accounts(session=session, crypto=env.crypto))
    secret = add_authenticator(env, account_id)
    asked = _login(client)
    assert asked.status_code == 200
    assert "one-time code" in asked.text
    assert COOKIE not in asked.headers.get("set-cookie", "")
    code = totp.totp_code(secret=secret, step=totp.time_step(datetime.now(UTC)))
    assert _login(client, code=code).status_code == 303


def test_setting_up_an_authenticator(site: Any) -> None:
    client, *_ = site
    assert _login(client).status_code == 303
    setup = client.get("/me/authenticator")
    assert setup.status_code == 200
    assert 'src="data:image/svg+xml' in setup.text
    secret = setup.text.split("Key: <code>", 1)[1].split("<", 1)[0]
    csrf = setup.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    wrong = client.post("/me/authenticator", content=f"csrf={csrf}&code=000000", headers=FORM)
    assert wrong.status_code == 400
    assert f"Key: <code>{secret}<" in wrong.text  # a mistyped code keeps the QR code just scanned
    code = totp.totp_code(secret=secret, step=totp.time_step(datetime.now(UTC)))
    done = client.post("/me/authenticator", content=f"csrf={csrf}&code={code}", headers=FORM)
    assert done.status_code == 200
    codes = [c.split("</code>")[0] for c in done.text.split("<li><code>")[1:]]
    assert len(codes) == 10
    # Turning it on ended every session; the password alone no longer signs in.
    assert client.get("/", follow_redirects=False).status_code == 303
    assert "one-time code" in _login(client).text
    assert _login(client, code=codes[0]).status_code == 303


def test_sharing_grant_then_revoke(site: Any) -> None:
    from medvault.access.consent import grant_from_consent
    from medvault.auth.accounts import Actor
    from medvault.records import guard
    from medvault.records.errors import NotFound

    client, env, pid, oid = site
    with open_vault(env) as v:
        dr = service.create(
            vault=v, resource={"resourceType": "Practitioner", "name": [{"family": "Osler", "given": ["William"]}]}
        ).rid
    assert _login(client).status_code == 303
    sharing = client.get("/me/sharing")
    assert "William Osler" in sharing.text
    csrf = sharing.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    made = client.post(
        "/me/sharing",
        content=f"csrf={csrf}&practitioner={dr}&sensitive=hiv&until=2099-12-31",
        headers=FORM,
        follow_redirects=False,
    )
    assert made.status_code == 303
    doctor = Actor(account_id="d", role="clinician", practitioner_id=dr, mfa_enrolled=True)
    caller = guard.Caller(actor=doctor, via="page")
    with guard.unit_of_work(env.factory, env.crypto, caller) as v:
        assert service.read(vault=v, rtype="Observation", rid=oid)["id"] == oid
    with open_vault(env) as v:
        (consent,) = service.search(vault=v, rtype="Consent", params=[("patient", pid)]).resources
    grant = grant_from_consent(consent)
    assert grant is not None
    assert grant.sensitive == frozenset({"hiv"})
    page_text = client.get("/me/sharing").text
    assert "shared" in page_text
    revoked = client.post(
        "/me/sharing/revoke", content=f"csrf={csrf}&consent={consent['id']}", headers=FORM, follow_redirects=False
    )
    assert revoked.status_code == 303
    with pytest.raises(NotFound), guard.unit_of_work(env.factory, env.crypto, caller) as v:
        service.read(vault=v, rtype="Observation", rid=oid)  # the very next request is refused
    forged = client.post("/me/sharing", content=f"csrf=nope&practitioner={dr}", headers=FORM)
    assert forged.status_code == 403


def test_a_role_that_needs_a_second_factor_can_only_set_one_up(site: Any) -> None:
    client, env, *_ = site
    with open_vault(env) as v:
        dr = service.create(vault=v, resource={"resourceType": "Practitioner", "active": True}).rid
    with unit_of_work(env.factory) as session:
        accounts.create_account(
            session=session,
            crypto=env.crypto,
            hasher=Hasher(),
            login="dr@example.org",
            password="clinician passphrase",
            role="clinician",
            practitioner_id=dr,
            now=datetime.now(UTC),
        )
    signed = _login(client, "clinician passphrase", login="dr@example.org")
    assert signed.status_code == 303
    assert signed.headers["location"] == "/me/authenticator"
    assert client.get("/", follow_redirects=False).status_code == 303  # nothing else until enrolled
    assert "Scan this code" in client.get("/me/authenticator").text


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("testclient", "testclient"),
    ],
)
def test_throttle_counts_ipv6_per_64(host: str, key: str) -> None:
    from medvault.web.pages import throttle_address

    assert throttle_address(host) == key


def test_my_record_is_a_readable_timeline(site: Any) -> None:
    client, env, pid, _oid = site
    with open_vault(env) as v:
        service.create(
            vault=v,
            resource={
                "resourceType": "Observation",
                "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2", "display": "Body height"}]},
                "subject": {"reference": f"Patient/{pid}"},
                "effectiveDateTime": "2024-03-05T10:00:00Z",
                "valueQuantity": {"value": 172, "unit": "cm"},
            },
        )
    assert _login(client).status_code == 303
    record = client.get("/me/record")
    assert record.status_code == 200
    assert "2024-03-05" in record.text
    assert "Body height: 172 cm" in record.text
    assert '"resourceType"' not in record.text  # readable, not raw JSON
    log = client.get("/me/access").text
    assert "read the whole record" in log  # her own view is in her access log too


def test_sign_in_refuses_cross_site_and_headerless_posts(site: Any) -> None:
    client, *_ = site
    body = urlencode({"login": "pat@example.org", "password": PASSWORD})
    for headers in (
        FORM,  # neither Origin nor Referer
        {**FORM, "Origin": "https://evil.example"},
        {**FORM, "Origin": "null"},  # a sandboxed frame or a data: page
        {**FORM, "Referer": "https://evil.example/login"},
    ):
        refused = client.post("/login", content=body, headers=headers, follow_redirects=False)
        assert refused.status_code == 403, headers
        assert COOKIE not in refused.headers.get("set-cookie", "")
        assert "cross-site" in refused.text
    by_referer = client.post(
        "/login", content=body, headers={**FORM, "Referer": "https://testserver/login"}, follow_redirects=False
    )
    assert by_referer.status_code == 303
    assert by_referer.headers["set-cookie"].startswith(f"{COOKIE}=")


def _enrolled(env: Any, *, login: str, password: str, role: str, **link: str) -> str:
    """An account with a confirmed authenticator; returns its TOTP secret. The confirming code is
    the previous step's, so a sign-in with the current step's code is not a replay."""
    return enrolled(env, login=login, password=password, role=role, **link)[1]


def _now_code(secret: str) -> str:
    return now_code(secret)


def _grant(env: Any, pid: str, dr: str, **kw: Any) -> str:
    from medvault.access.consent import consent_resource

    consent = consent_resource(
        patient_id=pid,
        grantee=f"Practitioner/{dr}",
        resource_types=None,
        sensitive=frozenset(),
        start=None,
        end=kw.get("end", datetime(2099, 12, 31, tzinfo=UTC)),
        now=datetime.now(UTC),
    )
    with open_vault(env) as v:
        return service.create(vault=v, resource=consent).rid


def _revoke(env: Any, consent_id: str) -> None:
    from medvault.access.consent import revoked

    with open_vault(env) as v:
        current = service.read(vault=v, rtype="Consent", rid=consent_id)
        service.update(vault=v, rtype="Consent", rid=consent_id, resource=revoked(current))


def test_clinician_sees_granted_patients_and_their_record(site: Any) -> None:
    client, env, pid, _oid = site
    with open_vault(env) as v:
        dr = service.create(vault=v, resource={"resourceType": "Practitioner", "name": [{"family": "Osler"}]}).rid
        other = service.create(
            vault=v, resource={"resourceType": "Patient", "name": [{"family": "Stranger", "given": ["Sam"]}]}
        ).rid
        current = service.read(vault=v, rtype="Patient", rid=pid)
        service.update(
            vault=v, rtype="Patient", rid=pid, resource={**current, "name": [{"family": "Quinn", "given": ["Ada"]}]}
        )
        for text, when, security in (
            ("Blood pressure panel", "2023-04-01T09:00:00Z", None),
            ("Counselling note", "2023-05-01T09:00:00Z", "PSY"),
        ):
            service.create(
                vault=v,
                resource={
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"text": text},
                    "subject": {"reference": f"Patient/{pid}"},
                    "effectiveDateTime": when,
                    **(
                        {
                            "meta": {
                                "security": [
                                    {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": security}
                                ]
                            }
                        }
                        if security
                        else {}
                    ),
                },
            )
    consent_id = _grant(env, pid, dr)
    _grant(env, other, dr, end=datetime(2001, 1, 1, tzinfo=UTC))  # expired: not one of "my patients"
    secret = _enrolled(
        env, login="dr@example.org", password="clinician passphrase", role="clinician", practitioner_id=dr
    )
    assert _login(client, "clinician passphrase", _now_code(secret), login="dr@example.org").status_code == 303

    home = client.get("/")
    assert 'href="/patients"' in home.text
    assert 'href="/me/sharing"' not in home.text
    mine = client.get("/patients")
    assert mine.status_code == 200
    assert "Ada Quinn" in mine.text
    assert "whole record (not sensitive parts)" in mine.text
    assert "2099-12-31" in mine.text
    assert "Stranger" not in mine.text
    assert other not in mine.text
    record = client.get(f"/patients/{pid}")
    assert record.status_code == 200
    assert "Record of Ada Quinn" in record.text
    assert "2023-04-01" in record.text
    assert "Blood pressure panel" in record.text
    assert "Counselling note" not in record.text  # a sensitive entry the grant does not name
    assert client.get("/me/record", follow_redirects=False).status_code == 404  # a patient page

    # A stranger's record and an unknown id: the same page byte for byte but for the id asked for
    # (echoed in the emergency-access link); a malformed id: the same refusal, with no link.
    denied = client.get(f"/patients/{other}")
    missing = client.get("/patients/no-such-patient")
    malformed = client.get("/patients/%20bad%20")
    assert denied.status_code == missing.status_code == malformed.status_code == 404
    assert denied.text.replace(other, "ID") == missing.text.replace("no-such-patient", "ID")
    assert "not available" in denied.text
    assert "not available" in malformed.text
    assert "Stranger" not in denied.text
    assert f'href="/break-glass?patient={other}"' in denied.text

    _revoke(env, consent_id)
    after = client.get(f"/patients/{pid}")
    assert after.status_code == 404
    assert after.text.replace(pid, "ID") == missing.text.replace("no-such-patient", "ID")
    assert "Ada Quinn" not in client.get("/patients").text

    assert _login(client).status_code == 303  # the patient's view of it
    log = client.get("/me/access").text
    assert "Osler" in log  # named, not an id
    assert dr not in log
    assert "read the whole record" in log
    assert "refused" in log


def test_alerts_page_for_the_privacy_officer_only(site: Any) -> None:
    from medvault.audit import alerts

    client, env, pid, _oid = site
    with unit_of_work(env.factory) as session:
        alerts.mark_decoy(session=session, crypto=env.crypto, patient_id=pid)
    with open_vault(env) as v:
        service.read(vault=v, rtype="Patient", rid=pid)  # the operator touches a decoy: an alert
    secret = _enrolled(env, login="po@example.org", password="privacy passphrase", role="privacy-officer")
    assert _login(client, "privacy passphrase", _now_code(secret), login="po@example.org").status_code == 303
    page = client.get("/alerts")
    assert page.status_code == 200
    assert page.headers["content-security-policy"] == CSP
    assert "Decoy record touched" in page.text
    assert "the operator" in page.text
    assert pid not in page.text  # never a patient id
    assert 'href="/alerts"' in page.text
    alert_id = page.text.split('name="alert" value="', 1)[1].split('"', 1)[0]
    csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    forged = client.post("/alerts/acknowledge", content=f"csrf=nope&alert={alert_id}", headers=FORM)
    assert forged.status_code == 403
    done = client.post(
        "/alerts/acknowledge", content=f"csrf={csrf}&alert={alert_id}", headers=FORM, follow_redirects=False
    )
    assert done.status_code == 303
    assert "reviewed" in client.get("/alerts").text
    assert client.get("/patients").status_code == 404  # a clinician page

    assert _login(client).status_code == 303  # a patient may not see alerts
    assert client.get("/alerts").status_code == 404
    assert client.get("/patients").status_code == 404


def test_a_non_ascii_csrf_field_is_refused_not_a_server_error(site: Any) -> None:
    # Found by the schemathesis run: "%FF" decodes to U+FFFD and hmac.compare_digest raised TypeError.
    client, *_ = site
    assert _login(client).status_code == 303
    for path in ("/logout", "/me/sharing", "/me/sharing/revoke", "/me/authenticator"):
        response = client.post(path, content="csrf=%FF&code=%E9", headers=FORM, follow_redirects=False)
        assert response.status_code == 403, (path, response.status_code)
        assert "expired" in response.text


def test_sign_in_hashes_on_the_bounded_pool_holding_no_database_lock(
    site: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Argon2 runs on the hasher's own threads, between the sign-in's transactions: while it runs,
    another writer can take SQLite's write lock at once (PostgreSQL: the throttle and account rows),
    so a burst of sign-ins never makes other requests wait for a hash."""
    import sqlite3
    import threading

    from sqlalchemy import create_engine, text

    client, env, _pid, _oid = site
    seen: list[tuple[str, str | None]] = []
    real_verify = Hasher.verify

    def probing_verify(self: Hasher, *, stored: str, password: str) -> Any:
        problem = None
        try:
            if env.settings.is_sqlite:
                conn = sqlite3.connect(env.settings.data_dir / "medvault.db", timeout=0, isolation_level=None)
                try:
                    conn.execute("BEGIN IMMEDIATE")  # fails at once if the sign-in holds the write lock
                    conn.execute("ROLLBACK")
                finally:
                    conn.close()
            else:
                engine = create_engine(env.settings.sqlalchemy_url)
                try:
                    with engine.connect() as conn:
                        conn.execute(text("SELECT key FROM login_throttle FOR UPDATE NOWAIT")).all()
                        conn.execute(text("SELECT id FROM account FOR UPDATE NOWAIT")).all()
                        conn.rollback()
                finally:
                    engine.dispose()
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            problem = exc.__class__.__name__
        seen.append((threading.current_thread().name, problem))
        return real_verify(self, stored=stored, password=password)

    monkeypatch.setattr(Hasher, "verify", probing_verify)
    assert _login(client).status_code == 303
    assert _login(client, "not the password at all").status_code == 401
    assert len(seen) == 2
    assert all(name.startswith("medvault-argon2") for name, _ in seen), seen
    assert [problem for _, problem in seen] == [None, None]


# -- form bodies are read only up to their limit --------------------------------------------------

_CHUNK = 4096
_CHUNKS = 1024  # 4 MiB offered; the limit is 16 KiB


@pytest.mark.parametrize("path", ["/login", "/logout", "/oauth/authorize", "/oauth/token", "/oauth/revoke"])
@pytest.mark.parametrize("declared", [False, True])
def test_a_huge_form_is_refused_without_reading_it_all(vault_env: Any, path: str, declared: bool) -> None:
    # Unauthenticated endpoints: reading a whole body before checking its size let anyone make the
    # server buffer gigabytes in memory (no proxy in front sets a limit for us).
    from medvault.api.app import create_app

    app = create_app(vault_env.settings)
    headers = {"origin": "https://testserver", "content-type": "application/x-www-form-urlencoded"}
    length = _CHUNK * _CHUNKS if declared else None
    status, read = post_streamed(app, path, headers=headers, chunk=_CHUNK, chunks=_CHUNKS, content_length=length)
    assert status in (400, 413), status
    # A declared length over the limit is refused before reading; an undeclared one at the limit.
    assert read == 0 if declared else read <= 16 * 1024 // _CHUNK + 1, read


# -- changing the password -------------------------------------------------------------------------

NEW_PASSWORD = "a different and equally long passphrase"


def _password_form(client: Any, current: str, new: str, again: str | None = None) -> Any:
    csrf = client.get("/me/password").text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    body = urlencode({"csrf": csrf, "current": current, "new": new, "again": new if again is None else again})
    return client.post("/me/password", content=body, headers=SIGN_IN, follow_redirects=False)


def test_changing_the_password_ends_sessions_and_app_tokens(site: Any) -> None:
    from medvault.smart import tokens

    client, env, pid, _oid = site
    assert _login(client).status_code == 303
    refused = client.post("/me/password", content="csrf=forged&current=x&new=y&again=y", headers=SIGN_IN)
    assert refused.status_code == 403
    mismatch = _password_form(client, PASSWORD, NEW_PASSWORD, again=NEW_PASSWORD + "!")
    assert mismatch.status_code == 400
    assert "not the same" in mismatch.text
    too_short = _password_form(client, PASSWORD, "short")
    assert too_short.status_code == 400
    # An app this account allowed: its token must end with the change.
    now = datetime.now(UTC)
    app_token = tokens.new_secret()
    with unit_of_work(env.factory) as session:
        (account,) = accounts.list_accounts(session=session, crypto=env.crypto)
        client_id, _ = tokens.register_client(
            session=session, name="App", redirect_uris=["https://app.example.org/cb"], confidential=False, now=now
        )
        tokens.store_token(
            session=session,
            crypto=env.crypto,
            access_token=app_token,
            refresh_token=None,
            client_id=client_id,
            account_id=account.id,
            scope="patient/Observation.rs launch/patient",
            patient=pid,
            family=None,
            granted=now,
            now=now,
        )
    bearer = {"Authorization": f"Bearer {app_token}"}
    assert client.get("/fhir/Observation", headers=bearer).status_code == 200
    done = _password_form(client, PASSWORD, NEW_PASSWORD)
    assert done.status_code == 303
    assert done.headers["location"] == "/login"
    # This session (and every other) has ended; the old password no longer signs in, the new one does.
    assert client.get("/", follow_redirects=False).status_code == 303
    assert _login(client).status_code == 401
    assert _login(client, NEW_PASSWORD).status_code == 303
    assert client.get("/fhir/Observation", headers=bearer).status_code == 401  # the app's token ended too


def test_wrong_current_passwords_count_towards_the_throttle(site: Any) -> None:
    client, *_ = site
    assert _login(client).status_code == 303
    statuses = [_password_form(client, "not the current password", NEW_PASSWORD).status_code for _ in range(8)]
    assert statuses[0] == 400
    assert 429 in statuses  # the account's sign-in throttle holds guesses made here too
    # And the throttle is the sign-in's own: the right password is now refused there as well.
    assert _login(client).status_code == 429
