"""Break-the-glass in a real Chromium (Playwright) on a phone-sized screen, against the real app on
127.0.0.1: a clinician with no grant is refused, follows the page's emergency-access link, fills
the form (reason and confirmation, no script involved) and reads the record, without the
patient's sensitive entry; the patient then sees the banner and the notification."""

from __future__ import annotations

import os
from typing import Any

import pytest

from medvault.records import service
from tests.helpers import open_vault
from tests.web.test_browser import CHROMIUM, PHONE, _account, _no_sideways_scroll, _sign_in, served  # noqa: F401

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Chromium at /usr/bin/chromium")
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
DR_PASSWORD, PATIENT_PASSWORD = "emergency passphrase", "a long and private passphrase"
REASON = "Collapsed in the waiting room, unresponsive; need allergies and current medication"


@pytest.mark.parametrize("backend", ["sqlite"])  # the storage legs run on both backends elsewhere
def test_break_glass_in_a_browser(vault_env: Any, served: str) -> None:  # noqa: F811
    from playwright.sync_api import sync_playwright

    env, base = vault_env, served
    with open_vault(env) as v:
        pid = service.create(vault=v, resource={"resourceType": "Patient", "name": [{"family": "Quinn"}]}).rid
        dr = service.create(vault=v, resource={"resourceType": "Practitioner", "name": [{"family": "Lister"}]}).rid
        for text, security in (("Body height", None), ("Therapy for low mood", "PSY")):
            service.create(
                vault=v,
                resource={
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"text": text},
                    "subject": {"reference": f"Patient/{pid}"},
                    "effectiveDateTime": "2024-03-05T09:10:00Z",
                    **({"meta": {"security": [{"system": ACT_CODE, "code": security}]}} if security else {}),
                },
            )
    doctor = _account(env, login="er@example.org", password=DR_PASSWORD, role="clinician", practitioner_id=dr)
    patient = _account(env, login="quinn@example.org", password=PATIENT_PASSWORD, role="patient", patient_id=pid)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_context(viewport=PHONE).new_page()
            _sign_in(page, base, "er@example.org", DR_PASSWORD, doctor)
            page.goto(f"{base}/patients/{pid}")
            assert "not available" in page.content()
            page.get_by_role("link", name="emergency access", exact=True).click()
            page.wait_for_url(f"{base}/break-glass?patient={pid}")
            _no_sideways_scroll(page)
            assert page.get_by_label("Patient id").input_value() == pid
            page.get_by_label("Why do you need access now?").fill(REASON)
            page.get_by_label("I confirm this is an emergency").check()
            page.get_by_role("button", name="Open the record in an emergency").click()
            page.wait_for_url(f"{base}/patients/{pid}")
            assert page.get_by_text("Body height").count() == 1
            assert page.get_by_text("Therapy for low mood").count() == 0  # hidden by the patient's label
            _no_sideways_scroll(page)

            mine = browser.new_context(viewport=PHONE).new_page()
            _sign_in(mine, base, "quinn@example.org", PATIENT_PASSWORD, patient)
            mine.get_by_role("link", name="see your notifications").click()
            mine.wait_for_url(f"{base}/me/notifications")
            assert mine.get_by_text(REASON).count() == 1
            assert "Lister" in mine.content()
            _no_sideways_scroll(mine)
        finally:
            browser.close()
