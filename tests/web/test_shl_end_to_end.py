"""Acceptance, end to end: our generated QR image, decoded by an independent reader (zbarimg), holds
a URL that Chromium (Playwright) opens against the real app under uvicorn on 127.0.0.1; the viewer
fetches the manifest and file from our /shl/ routes and shows the alerts and allergies. The server's
request log for the run holds no key, manifest id or link payload; the patient's access log names the
recipient; after revocation the same URL says the link is revoked."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from medvault.emergency import links, shl
from medvault.records import guard, service
from tests.emergency.card_support import zbar_decode
from tests.emergency.links_support import ALLERGY, EXTRA_ALERT, FLAG, Person, make_patient, serve

CHROMIUM = Path("/usr/bin/chromium")
sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists() and shutil.which("chromium") is None, reason="chromium not installed"
)
RECIPIENT = "Paramedic Okoye, unit 7"


@pytest.fixture(params=["sqlite"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def page() -> Iterator[Any]:
    executable = str(CHROMIUM) if CHROMIUM.exists() else shutil.which("chromium")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, headless=True)
        context = browser.new_context()
        pg = context.new_page()
        pg.set_default_timeout(15_000)
        problems: list[str] = []
        pg.on("pageerror", lambda exc: problems.append(str(exc)))
        pg.problems = problems
        yield pg
        context.close()
        browser.close()


def test_qr_to_summary_in_the_browser(vault_env: Any, page: Any, tmp_path: Path) -> None:
    person: Person = make_patient(vault_env)
    with serve(vault_env.settings) as root:
        files = links.emergency_card(
            factory=vault_env.factory,
            crypto=vault_env.crypto,
            caller=person.caller,
            patient_id=person.patient_id,
            base_url=root,
            label="Ada's card",
            alerts=(EXTRA_ALERT,),
        )
        qr = tmp_path / "qr.png"
        qr.write_bytes(files.qr_png)
        url = zbar_decode(qr)
        assert url == files.viewer_link
        assert url.startswith(f"{root}/shl/view#shlink:/")
        page.goto(url)
        page.fill("#shl-recipient", RECIPIENT)
        page.click("#shl-start-form button[type=submit]")
        summary = page.locator("#shl-summary")
        expect(summary.locator("section.shl-alerts")).to_contain_text(EXTRA_ALERT)
        expect(summary.locator("section.shl-alerts")).to_contain_text(FLAG)
        expect(summary).to_contain_text(ALLERGY)
        links.set_status(
            factory=vault_env.factory,
            crypto=vault_env.crypto,
            caller=person.caller,
            patient_id=person.patient_id,
            link_id=files.link_id,
            status="revoked",
        )
        page.reload()
        if page.locator("#shl-recipient").is_visible():
            page.fill("#shl-recipient", RECIPIENT)
            page.click("#shl-start-form button[type=submit]")
        expect(page.locator("body")).to_contain_text("revoked or has expired")
    assert page.problems == []
    payload = shl.parse_shlink(url)
    log = "".join(p.read_text() for p in vault_env.settings.log_path.glob("medvault.log*"))
    assert "POST /shl/m/{link_id} 200" in log
    assert "POST /shl/m/{link_id} 404" in log
    assert "GET /shl/view 200" in log
    assert payload.key not in log
    assert payload.url.rsplit("/", 1)[1] not in log
    assert url.split("#", 1)[1] not in log
    assert "shlink" not in log
    with guard.unit_of_work(vault_env.factory, vault_env.crypto, person.caller) as v:
        events, _ = service.access_log(vault=v, patient_id=person.patient_id, count=100)
    who = [e["agent"][0]["who"].get("display") for e in events if e["subtype"][0]["code"].startswith("shl-")]
    assert who.count(RECIPIENT) >= 2  # the manifest and the file
