"""The patient's /me/emergency page through the real app: preview with hide and alerts, creating
the emergency link, the downloads, pause/revoke applying to the next responder request, sharing
links with a passcode, CSRF, and other roles kept out."""

from __future__ import annotations

import io
import re
import zipfile
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import pytest
from fastapi.testclient import TestClient

from medvault.auth import accounts
from medvault.db import unit_of_work
from medvault.emergency import card, shl
from tests.emergency.links_support import ALLERGY, FAST_HASHER, FLAG, PROBLEM, Person, make_patient

PASSWORD = "a long and private passphrase"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
ORIGIN = "https://testserver"


@pytest.fixture
def site(vault_env: Any) -> Any:
    from medvault.api.app import create_app

    person = make_patient(vault_env)
    with unit_of_work(vault_env.factory) as session:
        accounts.create_account(
            session=session,
            crypto=vault_env.crypto,
            hasher=FAST_HASHER,
            login="ada@example.org",
            password=PASSWORD,
            role="patient",
            patient_id=person.patient_id,
            now=datetime.now(UTC),
        )
    with TestClient(create_app(vault_env.settings), base_url=ORIGIN) as client:
        body = urlencode({"login": "ada@example.org", "password": PASSWORD, "code": ""})
        signed = client.post("/login", content=body, headers={**FORM, "Origin": ORIGIN}, follow_redirects=False)
        assert signed.status_code == 303
        yield client, vault_env, person


def _csrf(html: str) -> str:
    return html.split('name="csrf" value="', 1)[1].split('"', 1)[0]


def _post(client: TestClient, path: str, fields: list[tuple[str, str]]) -> Any:
    return client.post(path, content=urlencode(fields), headers=FORM, follow_redirects=False)


def _mid_of(link: str) -> str:
    return shl.parse_shlink(link).url.rsplit("/", 1)[1]


def test_preview_create_download_pause_revoke(site: tuple[TestClient, Any, Person]) -> None:
    client, _env, person = site
    first = client.get("/me/emergency")
    assert first.status_code == 200
    assert "Emergency card" in first.text  # the nav link
    for text in (ALLERGY, PROBLEM, FLAG):
        assert text in first.text
    assert "Create my emergency link" in first.text
    csrf = _csrf(first.text)
    allergy_key = f"AllergyIntolerance/{person.allergy_id}"
    assert f'value="{allergy_key}"' in first.text
    preview = _post(
        client,
        "/me/emergency",
        [("csrf", csrf), ("hide", allergy_key), ("alerts", "Irradiated blood only"), ("action", "preview")],
    )
    assert preview.status_code == 200
    assert ALLERGY not in preview.text
    assert "Irradiated blood only" in preview.text
    assert client.get("/me/emergency/card.pdf").status_code == 404  # no link yet
    made = _post(
        client,
        "/me/emergency",
        [
            ("csrf", csrf),
            ("hide", allergy_key),
            ("alerts", "Irradiated blood only"),
            ("print", "on"),
            ("label", "Ada's card"),
            ("action", "create"),
        ],
    )
    assert made.status_code == 303
    page = client.get("/me/emergency").text
    assert "active" in page
    pdf = client.get("/me/emergency/card.pdf")
    assert pdf.status_code == 200
    assert pdf.content.startswith(b"%PDF")
    assert pdf.headers["cache-control"] == "no-store"
    assert client.get("/me/emergency/qr.png").content.startswith(b"\x89PNG")
    drive = zipfile.ZipFile(io.BytesIO(client.get("/me/emergency/drive.zip").content))
    assert set(drive.namelist()) == {card.LINK_FILE, card.QR_FILE, card.HTML_FILE}
    link = drive.read(card.LINK_FILE).decode().strip()
    mid = _mid_of(link)
    opened = client.post(f"/shl/m/{mid}", json={"recipient": "Paramedic", "embeddedLengthMax": 10**6})
    assert opened.status_code == 200
    from medvault.emergency import jwe

    plain = jwe.decrypt_file(token=opened.json()["files"][0]["embedded"], key=shl.parse_shlink(link).key_bytes)
    assert b"Irradiated blood only" in plain.plaintext
    assert ALLERGY.encode() not in plain.plaintext  # hidden by the patient
    link_id = re.search(r'action="/me/emergency/links/(\d+)"', page)
    assert link_id is not None
    action = f"/me/emergency/links/{link_id.group(1)}"
    assert _post(client, action, [("csrf", csrf), ("action", "paused")]).status_code == 303
    assert client.post(f"/shl/m/{mid}", json={"recipient": "Paramedic"}).status_code == 404
    assert _post(client, action, [("csrf", csrf), ("action", "active")]).status_code == 303
    assert client.post(f"/shl/m/{mid}", json={"recipient": "Paramedic"}).status_code == 200
    reissued = _post(client, action, [("csrf", csrf), ("action", "reissue")])
    assert reissued.status_code == 200
    assert "no longer work" in reissued.text
    assert client.post(f"/shl/m/{mid}", json={"recipient": "Paramedic"}).status_code == 404
    access = client.get("/me/access").text
    assert "Paramedic" in access


def test_sharing_link_with_passcode(site: tuple[TestClient, Any, Person]) -> None:
    client, _env, _person = site
    csrf = _csrf(client.get("/me/emergency").text)
    made = _post(
        client,
        "/me/emergency/share",
        [("csrf", csrf), ("label", "For Dr Rao"), ("share", "record"), ("passcode", "271828"), ("days", "7")],
    )
    assert made.status_code == 200
    link = re.search(r'value="(https://testserver/shl/view#shlink:/[^"]+)"', made.text)
    assert link is not None
    mid = _mid_of(link.group(1))
    assert client.post(f"/shl/m/{mid}", json={"recipient": "Dr Rao", "passcode": "000000"}).status_code == 401
    assert client.post(f"/shl/m/{mid}", json={"recipient": "Dr Rao", "passcode": "271828"}).status_code == 200
    page = client.get("/me/emergency").text
    assert "For Dr Rao" in page
    assert "9 tries left" in page
    short = _post(client, "/me/emergency/share", [("csrf", csrf), ("passcode", "12"), ("days", "7")])
    assert short.status_code == 400
    assert "passcode" in short.text


def test_forms_need_csrf_and_pages_need_a_patient(site: tuple[TestClient, Any, Person]) -> None:
    client, _env, _person = site
    forged = _post(client, "/me/emergency", [("csrf", "nope"), ("action", "create")])
    assert forged.status_code == 403
    assert _post(client, "/me/emergency/links/1", [("csrf", "nope"), ("action", "revoked")]).status_code == 403
    csrf = _csrf(client.get("/me/emergency").text)
    assert _post(client, "/me/emergency/links/12345", [("csrf", csrf), ("action", "revoked")]).status_code == 404
    assert _post(client, "/me/emergency/links/abc", [("csrf", csrf), ("action", "revoked")]).status_code == 404
    client.cookies.clear()
    assert client.get("/me/emergency", follow_redirects=False).status_code == 303
