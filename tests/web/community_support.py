"""A running app with community members for the page, API and matrix tests: accounts are made
through the services and signed in by starting their sessions directly (no password round trip)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from fastapi.testclient import TestClient

from medvault.auth import accounts, sessions
from medvault.auth.passwords import Hasher
from medvault.community import members
from medvault.db import unit_of_work
from medvault.records import service
from medvault.smart import tokens
from medvault.web.pages import COOKIE
from tests.helpers import open_vault

ORIGIN = "https://testserver"
FORM = {"Content-Type": "application/x-www-form-urlencoded", "Origin": ORIGIN}
_HASHER = Hasher(time_cost=1, memory_cost=1024, enforce_owasp_minimum=False)  # test accounts only


@dataclass
class Person:
    role: str
    account_id: str
    cookie: str
    member_id: str | None = None
    csrf: str = ""

    @property
    def headers(self) -> dict[str, str]:
        return {"Cookie": f"{COOKIE}={self.cookie}"}


@dataclass
class Site:
    client: TestClient
    env: Any
    people: dict[str, Person] = field(default_factory=dict)
    operator_token: str = ""
    smart_token: str = ""

    def get(self, path: str, who: str | None = None, **kw: Any) -> Any:
        headers = dict(kw.pop("headers", {}))
        if who == "operator-api":
            headers["Authorization"] = f"Bearer {self.operator_token}"
        elif who is not None:
            headers.update(self.people[who].headers)
        return self.client.get(path, headers=headers, follow_redirects=False, **kw)

    def post_form(self, path: str, who: str, data: dict[str, str]) -> Any:
        person = self.people[who]
        body = urlencode({"csrf": person.csrf, **data})
        return self.client.post(path, content=body, headers={**FORM, **person.headers}, follow_redirects=False)

    def api(self, method: str, path: str, who: str | None = None, json: Any = None) -> Any:
        headers = {"Origin": ORIGIN}
        if who == "operator-api":
            headers["Authorization"] = f"Bearer {self.operator_token}"
        elif who == "smart-app":
            headers["Authorization"] = f"Bearer {self.smart_token}"
        elif who is not None:
            headers.update(self.people[who].headers)
        return self.client.request(method, path, headers=headers, json=json, follow_redirects=False)


def _person(env: Any, role: str, n: int, *, join: bool) -> Person:
    now = datetime.now(UTC)
    patient_id = None
    if role == "patient":
        with open_vault(env) as v:
            patient_id = service.create(vault=v, resource={"resourceType": "Patient", "gender": "female"}).rid
    with unit_of_work(env.factory) as session:
        account_id = accounts.create_account(
            session=session,
            crypto=env.crypto,
            hasher=_HASHER,
            login=f"{role}{n}@example.org",
            password="a long and private passphrase",
            role=role,
            patient_id=patient_id,
            now=now,
        )
        actor = accounts.actor_for(session=session, crypto=env.crypto, account_id=account_id)
        token = sessions.start(session=session, actor=actor, stage="full", now=now)
        member_id = members.join(session=session, crypto=env.crypto, actor=actor, now=now).id if join else None
    return Person(role, account_id, token, member_id, sessions.csrf_token(env.crypto, token))


def site(env: Any, *, with_people: bool = True, **overrides: Any) -> Iterator[Site]:
    """The app on `env`'s store; `overrides`: settings to change (e.g. community limits)."""
    from medvault.api.app import create_app

    app = create_app(env.settings.model_copy(update=overrides) if overrides else env.settings)
    with TestClient(app, base_url=ORIGIN) as client:
        s = Site(client, env)
        with unit_of_work(env.factory) as session:
            s.operator_token = tokens.issue_system_token(session=session, crypto=env.crypto, now=datetime.now(UTC))
        if with_people:
            s.people["author"] = _person(env, "patient", 1, join=True)
            s.people["member"] = _person(env, "patient", 2, join=True)
            s.people["moderator"] = _person(env, "moderator", 3, join=True)
            s.people["admin"] = _person(env, "admin", 4, join=False)
            # A SMART app token of the author's (for their record): not a community credential.
            s.smart_token = tokens.new_secret()
            with unit_of_work(env.factory) as session:
                now = datetime.now(UTC)
                client_id, _ = tokens.register_client(
                    session=session,
                    name="Some app",
                    redirect_uris=["https://app.example/cb"],
                    confidential=False,
                    now=now,
                )
                tokens.store_token(
                    session=session,
                    crypto=env.crypto,
                    access_token=s.smart_token,
                    refresh_token=None,
                    client_id=client_id,
                    account_id=s.people["author"].account_id,
                    scope="patient/*.rs",
                    patient=None,
                    family=None,
                    granted=now,
                    now=now,
                )
        yield s


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no csrf field on the page"
    return found.group(1)
