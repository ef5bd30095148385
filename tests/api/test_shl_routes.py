"""The public /shl/ routes over HTTP (in-process TestClient): status codes and bodies the spec asks
for, the U-flag GET, the viewer page's own CSP, our reader resolving our links, and a request log
that never holds a manifest id, location token or key."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from medvault.emergency import links, reader
from medvault.emergency.errors import ShlPasscodeError, ShlUnavailable
from medvault.emergency.summary import SummaryOptions
from medvault.web.shl_viewer import VIEWER_CSP
from tests.emergency.links_support import (
    ALLERGY,
    BASE,
    EXTRA_ALERT,
    FLAG,
    PASSCODE,
    Person,
    http_over_testclient,
    make_patient,
)


@pytest.fixture
def client(vault_env: Any) -> Iterator[TestClient]:
    from medvault.api.app import create_app

    with TestClient(create_app(vault_env.settings), base_url=BASE) as c:
        yield c


@pytest.fixture
def person(vault_env: Any) -> Person:
    return make_patient(vault_env)


def _create(env: Any, p: Person, **kw: Any) -> links.IssuedLink:
    args: dict[str, Any] = {"purpose": "emergency", "label": "Ada's card"}
    args.update(kw)
    return links.create_link(
        factory=env.factory, crypto=env.crypto, caller=p.caller, patient_id=p.patient_id, base_url=BASE, **args
    )


def _path(issued: links.IssuedLink) -> str:
    return issued.payload.url.removeprefix(BASE)


def _log_text(env: Any) -> str:
    return "".join(p.read_text() for p in env.settings.log_path.glob("medvault.log*"))


def test_reader_resolves_our_emergency_link(client: TestClient, vault_env: Any, person: Person) -> None:
    issued = _create(vault_env, person, options=SummaryOptions(extra_alerts=(EXTRA_ALERT,)))
    link = issued.viewer_link(base_url=BASE)
    resolved = reader.resolve(link, recipient="Paramedic Lee", http=http_over_testclient(client))
    [file] = resolved.files
    assert file.content_type == "application/fhir+json"
    assert file.source == "location"
    text = file.plaintext.decode()
    for wanted in (ALLERGY, FLAG, EXTRA_ALERT):
        assert wanted in text
    log = _log_text(vault_env)
    assert "POST /shl/m/{link_id} 200" in log
    assert "GET /shl/f/{token} 200" in log
    assert _path(issued).rsplit("/", 1)[1] not in log
    assert issued.payload.key not in log


def test_reader_with_passcode_and_embedded(client: TestClient, vault_env: Any, person: Person) -> None:
    issued = _create(vault_env, person, purpose="sharing", passcode=PASSCODE, budget=2)
    http = http_over_testclient(client)
    resolved = reader.resolve(
        issued.shlink(), recipient="Dr Rao", passcode=PASSCODE, http=http, embedded_length_max=10**6
    )
    assert resolved.files[0].source == "embedded"
    assert ALLERGY in resolved.files[0].plaintext.decode()
    with pytest.raises(ShlPasscodeError) as wrong:
        reader.resolve(issued.shlink(), recipient="Dr Rao", passcode="nope-nope", http=http)
    assert wrong.value.remaining_attempts == 1
    response = client.post(_path(issued), json={"recipient": "x", "passcode": "wrong!"})
    assert response.status_code == 401
    assert response.json() == {"remainingAttempts": 0}
    with pytest.raises(ShlUnavailable):
        reader.resolve(issued.shlink(), recipient="Dr Rao", passcode=PASSCODE, http=http)


def test_unavailable_answers_are_identical(client: TestClient, vault_env: Any, person: Person) -> None:
    paused = _create(vault_env, person)
    revoked = _create(vault_env, person)
    for issued, status in ((paused, "paused"), (revoked, "revoked")):
        links.set_status(
            factory=vault_env.factory,
            crypto=vault_env.crypto,
            caller=person.caller,
            patient_id=person.patient_id,
            link_id=issued.link_id,
            status=status,
        )
    spent = _create(vault_env, person, purpose="sharing", passcode=PASSCODE, budget=1)
    assert client.post(_path(spent), json={"recipient": "x", "passcode": "000000"}).status_code == 401
    answers = [
        client.post(path, json={"recipient": "Paramedic", "passcode": PASSCODE})
        for path in (_path(paused), _path(revoked), _path(spent), "/shl/m/" + "A" * 43, "/shl/m/nonsense")
    ]
    assert {a.status_code for a in answers} == {404}
    assert len({a.content for a in answers}) == 1
    assert len({a.headers["content-type"] for a in answers}) == 1
    assert client.get("/shl/f/" + "B" * 43).content == answers[0].content


def test_bad_requests(client: TestClient, vault_env: Any, person: Person) -> None:
    issued = _create(vault_env, person)
    assert client.post(_path(issued), content=b"not json").status_code == 400
    assert client.post(_path(issued), json=["recipient"]).status_code == 400
    assert client.post(_path(issued), json={}).status_code == 400
    assert client.post(_path(issued), json={"recipient": "x", "embeddedLengthMax": "big"}).status_code == 400
    assert client.post(_path(issued), content=b"{" + b" " * 20000 + b"}").status_code == 400
    ok = client.post(_path(issued), json={"recipient": "x"})
    assert ok.status_code == 200
    assert ok.headers["cache-control"] == "no-store"


def test_direct_link_get(client: TestClient, vault_env: Any, person: Person) -> None:
    issued = _create(vault_env, person, direct=True)
    assert client.get(_path(issued)).status_code == 400  # recipient is required
    response = client.get(_path(issued), params={"recipient": "ER nurse"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/jose"
    resolved = reader.resolve(issued.shlink(), recipient="ER nurse", http=http_over_testclient(client))
    assert FLAG in resolved.files[0].plaintext.decode()
    assert client.post(_path(issued), json={"recipient": "x"}).status_code == 404  # no manifest for U
    assert "recipient=" not in _log_text(vault_env)


def test_viewer_page(client: TestClient) -> None:
    response = client.get("/shl/view")
    assert response.status_code == 200
    assert response.headers["content-security-policy"] == VIEWER_CSP
    assert response.headers["referrer-policy"] == "no-referrer"
    assert 'src="/static/shl-viewer.js"' in response.text
    assert client.get("/static/shl-viewer.js").status_code == 200


def test_no_bearer_needed_and_openapi_says_public(client: TestClient) -> None:
    from medvault.api import openapi

    for path, method in (("/shl/m/{link_id}", "post"), ("/shl/f/{token}", "get"), ("/shl/view", "get")):
        assert openapi.security_for(path, method) == []
    schema = client.app.openapi()  # type: ignore[attr-defined]
    body = schema["paths"]["/shl/m/{link_id}"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["recipient"]
    assert json.dumps(body)


@pytest.mark.parametrize("declared", [False, True])
def test_a_huge_manifest_request_is_refused_without_reading_it_all(vault_env: Any, declared: bool) -> None:
    # Public and unauthenticated: buffering a whole body before checking its size would let anyone
    # make the server hold gigabytes in memory.
    from medvault.api.app import create_app
    from tests.helpers import post_streamed

    app = create_app(vault_env.settings)
    chunk, chunks = 4096, 1024  # 4 MiB offered; the limit is 16 KiB
    status, read = post_streamed(
        app,
        "/shl/m/" + "A" * 43,
        headers={"content-type": "application/json"},
        chunk=chunk,
        chunks=chunks,
        content_length=chunk * chunks if declared else None,
    )
    assert status == 400
    assert read == 0 if declared else read <= 16 * 1024 // chunk + 1, read
