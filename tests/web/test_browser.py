"""The issue's browser acceptance test: a real Chromium (Playwright) drives the real app served by
uvicorn on 127.0.0.1. A patient signs in with a password and TOTP, shares her record with a
clinician; the clinician signs in (TOTP), finds her on "my patients" and reads her record; she
revokes; the clinician's next page load is refused; her "who accessed my record" lists both.

Served over plain http: Chromium treats http://127.0.0.1 as a secure context and keeps the
`__Host-` (Secure) session cookie there, so no certificate is needed. Each account signs in once:
a TOTP code is single use per 30 s step, and the two accounts have separate secrets.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from medvault.auth import totp
from medvault.db import unit_of_work
from medvault.records import service
from medvault.records.importer import Importer, ImportReport
from tests.helpers import open_vault
from tests.web import support
from tests.web.support import enrolled, new_account

# The fixture and helper other browser tests import from here.
served, _free_port = support.served, support.free_port
CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Chromium at /usr/bin/chromium (bin/test)")

PATIENT_LOGIN, PATIENT_PASSWORD = "ada@example.org", "a long and private passphrase"
DOCTOR_LOGIN, DOCTOR_PASSWORD = "osler@example.org", "clinician passphrase here"
PHONE = {"width": 360, "height": 740}


def _bundle() -> dict[str, Any]:
    """A small record in the shape an import receives: a Patient, a visit, a result and a
    sensitive (mental health) condition the grant will not name."""
    pid = "urn:uuid:8a4c4b1e-6a53-4c1c-9d8e-0b7f7f6b2c11"

    def entry(n: int, resource: dict[str, Any]) -> dict[str, Any]:
        return {
            "fullUrl": f"urn:uuid:00000000-0000-4000-8000-00000000000{n}",
            "resource": resource,
            "request": {"method": "POST", "url": resource["resourceType"]},
        }

    subject = {"reference": pid}
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": pid,
                "resource": {
                    "resourceType": "Patient",
                    "name": [{"family": "Quinn", "given": ["Ada"]}],
                    "gender": "female",
                    "birthDate": "1984-02-29",
                },
                "request": {"method": "POST", "url": "Patient"},
            },
            entry(
                1,
                {
                    "resourceType": "Encounter",
                    "status": "finished",
                    "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                    "type": [{"text": "Annual check-up"}],
                    "subject": subject,
                    "period": {"start": "2024-03-05T09:00:00Z", "end": "2024-03-05T09:30:00Z"},
                },
            ),
            entry(
                2,
                {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2", "display": "Body height"}]},
                    "subject": subject,
                    "effectiveDateTime": "2024-03-05T09:10:00Z",
                    "valueQuantity": {"value": 172, "unit": "cm"},
                },
            ),
            entry(
                3,
                {
                    "resourceType": "Condition",
                    "code": {"text": "Therapy for low mood"},
                    "meta": {
                        "security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PSY"}]
                    },
                    "subject": subject,
                    "recordedDate": "2023-11-02",
                },
            ),
        ],
    }


def _account(env: Any, *, login: str, password: str, role: str, **link: str) -> str:
    """An account with a confirmed authenticator (the current step's code is still unused); its
    TOTP secret."""
    return enrolled(env, login=login, password=password, role=role, **link)[1]


def _sign_in(page: Any, base: str, login: str, password: str, secret: str) -> None:
    page.goto(f"{base}/login")
    page.get_by_label("Login name").fill(login)
    page.get_by_label("Password").fill(password)
    page.get_by_label("One-time code or recovery code").fill(
        totp.totp_code(secret=secret, step=totp.time_step(datetime.now(UTC)))
    )
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base}/")


def _no_sideways_scroll(page: Any) -> None:
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"{page.url} scrolls sideways by {overflow}px at 360 px"


@pytest.mark.parametrize("backend", ["sqlite"])  # one backend: the storage legs run elsewhere on both
def test_share_view_revoke_denied_and_logged(vault_env: Any, served: str) -> None:
    from playwright.sync_api import sync_playwright

    env, base = vault_env, served
    Importer(env.factory, env.crypto).import_bytes("browser-test", orjson.dumps(_bundle()), report := ImportReport())
    assert report.stored == 4, report
    with open_vault(env) as v:
        (patient,) = service.search(vault=v, rtype="Patient", params=[]).resources
        dr = service.create(
            vault=v, resource={"resourceType": "Practitioner", "name": [{"prefix": ["Dr."], "family": "Osler"}]}
        ).rid
    pid = str(patient["id"])
    patient_secret = _account(env, login=PATIENT_LOGIN, password=PATIENT_PASSWORD, role="patient", patient_id=pid)
    doctor_secret = _account(env, login=DOCTOR_LOGIN, password=DOCTOR_PASSWORD, role="clinician", practitioner_id=dr)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            # Two browser contexts: two people on two devices, each with their own cookie jar.
            ada = browser.new_context(viewport=PHONE).new_page()
            osler = browser.new_context(viewport=PHONE).new_page()
            console_errors: list[str] = []
            for page in (ada, osler):
                page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)

            _sign_in(ada, base, PATIENT_LOGIN, PATIENT_PASSWORD, patient_secret)
            ada.get_by_role("link", name="My record").first.click()
            assert "Body height: 172 cm" in ada.content()
            _no_sideways_scroll(ada)
            ada.goto(f"{base}/me/sharing")
            _no_sideways_scroll(ada)
            ada.get_by_label("Clinician").select_option(label="Dr. Osler")
            ada.get_by_role("button", name="Share").click()
            ada.wait_for_url(f"{base}/me/sharing")
            assert ada.locator("table.log tbody tr").filter(has_text="Dr. Osler").filter(has_text="shared").count() == 1

            _sign_in(osler, base, DOCTOR_LOGIN, DOCTOR_PASSWORD, doctor_secret)
            osler.get_by_role("link", name="My patients").first.click()
            osler.wait_for_url(f"{base}/patients")
            _no_sideways_scroll(osler)
            osler.get_by_role("link", name="Ada Quinn").click()
            osler.wait_for_url(f"{base}/patients/{pid}")
            record = osler.content()
            assert "Record of Ada Quinn" in record
            assert "Body height: 172 cm" in record
            assert "Annual check-up" in record
            assert "low mood" not in record  # sensitive, and the grant does not name it
            _no_sideways_scroll(osler)

            ada.goto(f"{base}/me/sharing")
            ada.get_by_role("button", name="Revoke").click()
            ada.wait_for_url(f"{base}/me/sharing")
            assert ada.locator("table.log tbody tr").filter(has_text="revoked").count() == 1

            denied = osler.reload()
            assert denied is not None
            assert denied.status == 404
            assert "not available" in osler.content()
            assert "Ada Quinn" not in osler.content()

            ada.goto(f"{base}/me/access")
            _no_sideways_scroll(ada)
            rows = (
                ada.locator("table.log tbody tr").filter(has_text="Dr. Osler").filter(has_text="read the whole record")
            )
            outcomes = [rows.nth(i).locator("td").nth(3).inner_text() for i in range(rows.count())]
            assert "allowed" in outcomes, outcomes
            assert "refused" in outcomes, outcomes
            # The newest entry (first row) is the refused reload.
            assert outcomes[0] == "refused"
            # Chromium reports every Content-Security-Policy violation on the console.
            assert [m for m in console_errors if "Content Security Policy" in m] == []
        finally:
            browser.close()


@pytest.mark.parametrize("backend", ["sqlite"])
def test_other_pages_fit_a_phone(vault_env: Any, served: str) -> None:
    """Sign-in, authenticator set-up (QR code and key), the privacy officer's alerts: no sideways
    scroll at 360 px, and the officer's navigation offers alerts and emergency access reviews only."""
    from playwright.sync_api import sync_playwright

    from medvault.audit import alerts

    env, base = vault_env, served
    with open_vault(env) as v:
        decoy = service.create(vault=v, resource={"resourceType": "Patient", "gender": "other"}).rid
    with unit_of_work(env.factory) as session:
        alerts.mark_decoy(session=session, crypto=env.crypto, patient_id=decoy)
    with open_vault(env) as v:
        service.read(vault=v, rtype="Patient", rid=decoy)  # raises a honeytoken alert
    officer = _account(env, login="po@example.org", password="privacy officer passphrase", role="privacy-officer")
    # A patient without an authenticator yet.
    new_account(env, login=PATIENT_LOGIN, password=PATIENT_PASSWORD, role="patient", patient_id=decoy)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_context(viewport=PHONE).new_page()
            page.goto(f"{base}/login")
            _no_sideways_scroll(page)
            _sign_in(page, base, "po@example.org", "privacy officer passphrase", officer)
            _no_sideways_scroll(page)
            assert page.locator("nav.main a").all_inner_texts() == ["Alerts", "Emergency access reviews"]
            page.locator("nav.main a", has_text="Alerts").click()
            page.wait_for_url(f"{base}/alerts")
            assert page.get_by_text("Decoy record touched").count() == 1
            assert decoy not in page.content()
            _no_sideways_scroll(page)

            other = browser.new_context(viewport=PHONE).new_page()
            other.goto(f"{base}/login")
            other.get_by_label("Login name").fill(PATIENT_LOGIN)
            other.get_by_label("Password").fill(PATIENT_PASSWORD)
            other.get_by_role("button", name="Sign in").click()
            other.wait_for_url(f"{base}/")
            other.goto(f"{base}/me/authenticator")
            assert other.get_by_alt_text("QR code for your authenticator app").is_visible()
            _no_sideways_scroll(other)
        finally:
            browser.close()
