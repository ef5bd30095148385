"""The "people near me" page through the real app on both backends: off by default with the why
and what is stored, errors shown on the form, CSRF and origin checks, bands and paging, the
per-account listing limit as a 429 page, opt-out deleting the entry, other roles refused."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from medvault.auth import accounts
from medvault.auth.accounts import Actor
from medvault.auth.passwords import Hasher
from medvault.community import directory, limits, members
from medvault.db import unit_of_work
from medvault.records import service
from medvault.store.models import CommunityDirEntry
from medvault.web.pages import CSP
from tests.community.attacker import state_zips, urban_targets
from tests.helpers import open_vault

PASSWORD = "a long and private passphrase"
ORIGIN = "https://testserver"
FORM = {"Content-Type": "application/x-www-form-urlencoded", "Origin": ORIGIN}
POLICY = directory.DirectoryPolicy(
    settle=timedelta(0),
    listing=limits.Limit(bucket="dir-list", count=4, seconds=3600),
    placing=limits.Limit(bucket="dir-place", count=100, seconds=60),
    page_size=5,
)
CITY = sorted(urban_targets(state_zips("NY"), (40.75, -73.98), 12))


def _account(env: Any, login: str, role: str) -> None:
    rtype = "Patient" if role == "patient" else "Practitioner"  # a researcher is linked to neither
    with open_vault(env) as v:
        rid = service.create(vault=v, resource={"resourceType": rtype}).rid
    with unit_of_work(env.factory) as session:
        accounts.create_account(
            session=session,
            crypto=env.crypto,
            hasher=Hasher(),
            login=login,
            password=PASSWORD,
            role=role,
            patient_id=rid if role == "patient" else None,
            practitioner_id=rid if role == "clinician" else None,
            now=datetime.now(UTC),
        )


def _sign_in(client: Any, login: str) -> None:
    body = urlencode({"login": login, "password": PASSWORD, "code": ""})
    assert client.post("/login", content=body, headers=FORM, follow_redirects=False).status_code == 303


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None
    return found.group(1)


def neighbours(vault_env: Any) -> None:
    """11 members in and around Manhattan, in the directory at once (POLICY: no settle period)."""
    now = datetime.now(UTC)
    for i, z in enumerate(CITY[::6][:11]):
        with unit_of_work(vault_env.factory) as session:
            m = members.join(
                session=session, crypto=vault_env.crypto, actor=Actor(account_id=f"{i:032x}", role="patient"), now=now
            )
            directory.opt_in(
                session=session,
                crypto=vault_env.crypto,
                member=m,
                country="US",
                postcode=z,
                name=f"Neighbour {i}",
                now=now,
                policy=POLICY,
            )


@pytest.fixture
def site(vault_env: Any) -> Any:
    from medvault.api.app import create_app

    _account(vault_env, "pat@example.org", "patient")
    neighbours(vault_env)
    app = create_app(vault_env.settings)
    app.state.community_directory_policy = POLICY
    with TestClient(app, base_url=ORIGIN) as client:
        yield client, vault_env


def test_off_by_default_with_why_and_what_is_stored(site: Any) -> None:
    client, _env = site
    assert client.get("/community/near", follow_redirects=False).status_code == 303  # signed out
    _sign_in(client, "pat@example.org")
    page = client.get("/community/near")
    assert page.status_code == 200
    assert page.headers["content-security-policy"] == CSP
    assert "<script" not in page.text
    assert "Turn on the directory" in page.text
    assert "no map coordinates" in page.text
    assert "Members near you" not in page.text
    for field in ('id="country"', 'name="postcode"', 'name="name"'):
        assert field in page.text
    assert '<label for="country">' in page.text


def test_errors_show_on_the_form_and_forged_posts_are_refused(site: Any) -> None:
    client, env = site
    _sign_in(client, "pat@example.org")
    csrf = _csrf(client.get("/community/near").text)
    for fields, text in (
        ({"country": "other", "postcode": "SW1A 1AA"}, "Only US ZIP codes are supported so far."),
        ({"country": "US", "postcode": "12"}, "Enter a 5-digit US ZIP code."),
    ):
        refused = client.post("/community/near/opt-in", content=urlencode({**fields, "csrf": csrf}), headers=FORM)
        assert refused.status_code == 400
        assert text in refused.text
        assert 'role="alert"' in refused.text
    forged = client.post(
        "/community/near/opt-in", content=urlencode({"country": "US", "postcode": CITY[0], "csrf": "x"}), headers=FORM
    )
    assert forged.status_code == 403
    cross = client.post(
        "/community/near/opt-in",
        content=urlencode({"country": "US", "postcode": CITY[0], "csrf": csrf}),
        headers={**FORM, "Origin": "https://evil.example"},
    )
    assert cross.status_code == 403
    with unit_of_work(env.factory) as session:
        assert session.execute(select(CommunityDirEntry)).scalars().all().__len__() == 11


def test_opt_in_lists_neighbours_by_band_pages_and_limits_then_opt_out_deletes(site: Any) -> None:
    client, env = site
    _sign_in(client, "pat@example.org")
    csrf = _csrf(client.get("/community/near").text)
    done = client.post(
        "/community/near/opt-in",
        content=urlencode({"country": "US", "postcode": CITY[1], "name": "Sam", "csrf": csrf}),
        headers=FORM,
        follow_redirects=False,
    )
    assert done.status_code == 303
    first = client.get("/community/near")  # listing view 1 of 4
    assert first.status_code == 200
    assert "Your directory entry" in first.text
    assert CITY[1] in first.text  # the member's own ZIP, shown to them alone
    assert "Members near you" in first.text
    assert first.text.count("<li><strong>") == 5
    assert "Neighbour" in first.text
    assert re.search(r"same area|within 25 km", first.text)
    assert 'href="/community/near?page=2"' in first.text
    second = client.get("/community/near?page=2")
    assert 'href="/community/near?page=1"' in second.text
    assert client.get("/community/near?page=abc").status_code == 404
    client.get("/community/near?page=3")
    client.get("/community/near")
    limited = client.get("/community/near")  # the fifth view in the hour
    assert limited.status_code == 429
    assert "Too many requests" in limited.text
    assert "Members near you" not in limited.text
    csrf = _csrf(limited.text)
    gone = client.post(
        "/community/near/opt-out", content=urlencode({"csrf": csrf}), headers=FORM, follow_redirects=False
    )
    assert gone.status_code == 303
    with unit_of_work(env.factory) as session:
        assert len(session.execute(select(CommunityDirEntry)).scalars().all()) == 11
    assert "Turn on the directory" in client.get("/community/near").text


def test_roles_outside_the_community_are_refused(site: Any) -> None:
    client, env = site
    _account(env, "res@example.org", "researcher")  # a role without a second factor to set up
    _sign_in(client, "res@example.org")
    assert client.get("/community/near").status_code == 404


def test_page_numbers_in_other_scripts_are_a_404_not_a_500(site: Any) -> None:
    """Superscript two, Arabic-Indic three and full-width three pass str.isdigit(); they are no
    page numbers (and superscript two made int() raise: a 500)."""
    client, _env = site
    _sign_in(client, "pat@example.org")
    for raw in ("%C2%B2", "%D9%A3", "%EF%BC%93", "1%C2%B2", "%00"):
        assert client.get(f"/community/near?page={raw}").status_code == 404, raw
    assert client.get("/community/near?page=1").status_code == 200
