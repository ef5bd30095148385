"""Break-the-glass through the real app on both backends: a refused record offers emergency
access, the form refuses without CSRF, confirmation or reason, grants with them and opens the
record; the patient sees the banner, the notification and the flagged log entries; the privacy
officer records a verdict; other roles get the page-not-found."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import pytest

from medvault.auth import accounts
from medvault.auth.passwords import Hasher
from medvault.db import unit_of_work
from medvault.records import service
from tests.helpers import open_vault
from tests.web.test_pages import FORM, _enrolled, _login, _now_code, site  # noqa: F401 - `site` is a fixture

REASON = "Found unconscious at home, brought in by ambulance; need allergies and medication list"


def _csrf(text: str) -> str:
    return text.split('name="csrf" value="', 1)[1].split('"', 1)[0]


def _post(client: Any, path: str, fields: dict[str, str]) -> Any:
    return client.post(path, content=urlencode(fields), headers=FORM, follow_redirects=False)


def test_break_glass_flow_end_to_end(site: Any, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    client, env, pid, _oid = site
    with open_vault(env) as v:
        dr = service.create(vault=v, resource={"resourceType": "Practitioner", "name": [{"family": "Lister"}]}).rid
    dr_secret = _enrolled(
        env, login="er@example.org", password="emergency passphrase", role="clinician", practitioner_id=dr
    )
    po_secret = _enrolled(env, login="po@example.org", password="privacy passphrase", role="privacy-officer")

    # Signed out (a responder following the viewer's link): sign in first, then back to the form.
    to_login = client.get(f"/break-glass?patient={pid}", follow_redirects=False)
    assert to_login.status_code == 303
    assert to_login.headers["location"] == "/login?" + urlencode({"next": f"/break-glass?patient={pid}"})
    assert f'value="/break-glass?patient={pid}"' in client.get(to_login.headers["location"]).text
    assert _login(client, "emergency passphrase", _now_code(dr_secret), login="er@example.org").status_code == 303
    refused = client.get(f"/patients/{pid}")
    assert refused.status_code == 404
    offer = f"/break-glass?patient={pid}"
    assert f'href="{offer}"' in refused.text
    form = client.get(offer)
    assert form.status_code == 200
    assert f'value="{pid}"' in form.text
    assert "<script" not in form.text
    csrf = _csrf(form.text)
    good = {"csrf": csrf, "patient": pid, "purpose": "ETREAT", "reason": REASON, "confirm": "yes"}

    assert _post(client, "/break-glass", {**good, "csrf": "forged"}).status_code == 403
    no_confirm = _post(client, "/break-glass", {k: v for k, v in good.items() if k != "confirm"})
    assert no_confirm.status_code == 400
    no_reason = _post(client, "/break-glass", {**good, "reason": ""})
    assert no_reason.status_code == 400
    assert "write why you need emergency access" in no_reason.text.lower()
    wrong_purpose = _post(client, "/break-glass", {**good, "purpose": "TREAT"})
    assert wrong_purpose.status_code == 400
    assert client.get(f"/patients/{pid}").status_code == 404  # nothing granted so far

    with caplog.at_level(logging.INFO):
        granted = _post(client, "/break-glass", good)
    assert granted.status_code == 303
    assert granted.headers["location"] == f"/patients/{pid}"
    assert "kind=break-glass" in caplog.text  # the notification hook ran
    assert REASON not in caplog.text
    assert pid not in caplog.text
    record = client.get(f"/patients/{pid}")
    assert record.status_code == 200
    assert "Record of" in record.text
    assert "Result" in record.text  # her Observation, on the timeline
    assert pid in client.get("/break-glass").text  # listed among the accesses in force

    assert _login(client).status_code == 303  # the patient
    home = client.get("/")
    assert "emergency access" in home.text
    assert 'href="/me/notifications"' in home.text
    notes = client.get("/me/notifications")
    assert notes.status_code == 200
    assert "Lister" in notes.text
    assert REASON in notes.text
    assert "waiting for review" in notes.text
    log = client.get("/me/access").text
    assert "asked for emergency access" in log
    assert "(emergency access)" in log
    note_id = notes.text.split('name="notification" value="', 1)[1].split('"', 1)[0]
    seen = _post(client, "/me/notifications/seen", {"csrf": _csrf(notes.text), "notification": note_id})
    assert seen.status_code == 303
    assert "new)" not in client.get("/").text
    assert client.get("/reviews").status_code == 404
    assert client.get("/break-glass").status_code == 404
    patient_try = _post(client, "/break-glass", {**good, "csrf": _csrf(notes.text)})
    assert patient_try.status_code == 404

    assert _login(client, "privacy passphrase", _now_code(po_secret), login="po@example.org").status_code == 303
    queue = client.get("/reviews")
    assert queue.status_code == 200
    assert REASON in queue.text
    access_id = queue.text.split('name="access" value="', 1)[1].split('"', 1)[0]
    bad = _post(client, "/reviews/verdict", {"csrf": _csrf(queue.text), "access": access_id, "verdict": "maybe"})
    assert bad.status_code == 400
    unknown = _post(client, "/reviews/verdict", {"csrf": _csrf(queue.text), "access": "nope", "verdict": "unclear"})
    assert unknown.status_code == 404
    done = _post(client, "/reviews/verdict", {"csrf": _csrf(queue.text), "access": access_id, "verdict": "justified"})
    assert done.status_code == 303
    assert "Verdict: Justified" in client.get("/reviews").text
    assert client.get("/break-glass").status_code == 404

    assert _login(client).status_code == 303
    assert "review: Justified" in client.get("/me/notifications").text
    assert "reviewed an emergency access" in client.get("/me/access").text
    # A stolen copy of the data directory (database and its WAL on SQLite, the logs on both)
    # does not hold the reason in clear (resource ids are random and stored as such by design).
    files = [f for f in env.settings.data_dir.rglob("*") if f.is_file() and env.settings.keys_path not in f.parents]
    assert any(f.parent.name == "logs" for f in files)
    for f in files:
        raw = f.read_bytes()
        assert REASON.encode() not in raw, f.name


def test_a_clinician_without_a_second_factor_cannot_break_the_glass(site: Any) -> None:  # noqa: F811
    client, env, pid, _oid = site
    with open_vault(env) as v:
        dr = service.create(vault=v, resource={"resourceType": "Practitioner", "active": True}).rid
    with unit_of_work(env.factory) as session:
        accounts.create_account(
            session=session,
            crypto=env.crypto,
            hasher=Hasher(),
            login="new@example.org",
            password="new clinician passphrase",
            role="clinician",
            practitioner_id=dr,
            now=datetime.now(UTC),
        )
    signed_in = _login(client, "new clinician passphrase", login="new@example.org")
    assert signed_in.headers["location"] == "/me/authenticator"
    # The session can only set up a second factor: the emergency form is not reachable, and a
    # posted request is refused before the domain is asked.
    assert client.get(f"/break-glass?patient={pid}", follow_redirects=False).status_code == 303
    posted = _post(client, "/break-glass", {"csrf": "x", "patient": pid, "reason": REASON, "confirm": "yes"})
    assert posted.status_code == 303
    assert posted.headers["location"] == "/login"
