"""The in-process OpenAPI schema (api/openapi.py): every route, the right security requirement on each,
FHIR parameters described tightly, and still no HTTP endpoint serving it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from medvault.api import openapi
from medvault.api.app import create_app
from medvault.fhir.type_names import RESOURCE_TYPE_NAMES
from medvault.fhir.types import is_fhir_id
from medvault.web.pages import COOKIE
from tests.api.support import fresh_settings

BEARER = [{"bearer": []}]
SESSION = [{"session": []}]
PUBLIC: list[dict[str, list[str]]] = []


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    with fresh_settings("sqlite", tmp_path_factory.mktemp("openapi") / "data") as settings:
        yield create_app(settings)


def _operations(raw: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(path, method): op for path, item in raw["paths"].items() for method, op in item.items()}


def test_every_route_has_its_security_requirement(app: FastAPI) -> None:
    operations = _operations(app.openapi())
    expected = {
        ("/healthz", "get"): PUBLIC,
        ("/login", "get"): PUBLIC,
        ("/login", "post"): PUBLIC,
        ("/fhir/metadata", "get"): PUBLIC,
        ("/fhir", "post"): BEARER,
        ("/fhir/{rtype}/{rid}", "get"): BEARER,
        ("/fhir/{rtype}/{rid}", "put"): BEARER,
        ("/fhir/{rtype}/{rid}", "delete"): BEARER,
        ("/fhir/{rtype}", "get"): BEARER,
        ("/fhir/{rtype}", "delete"): BEARER,
        ("/fhir/{rtype}/_search", "post"): BEARER,
        ("/fhir/Patient/{rid}/$everything", "get"): BEARER,
        ("/fhir/{rtype}/{rid}/_history/{vid}", "get"): BEARER,
        ("/", "get"): SESSION,
        ("/logout", "post"): SESSION,
        ("/me/record", "get"): SESSION,
        ("/me/access", "get"): SESSION,
        ("/me/sharing", "post"): SESSION,
        ("/me/sharing/revoke", "post"): SESSION,
        ("/me/authenticator", "post"): SESSION,
    }
    for key, security in expected.items():
        assert operations[key]["security"] == security, key
    # No operation is left without a requirement (a missing one would read as "no auth needed").
    assert all("security" in op for op in operations.values())
    # Pages and /healthz are in, though FastAPI leaves include_in_schema=False routes out.
    assert len(operations) >= len(expected)
    schemes = app.openapi()["components"]["securitySchemes"]
    assert schemes == {
        "bearer": {"type": "http", "scheme": "bearer"},
        "session": {"type": "apiKey", "in": "cookie", "name": COOKIE},
    }


@pytest.mark.parametrize(
    ("path", "method", "expected"),
    [
        ("/.well-known/smart-configuration", "get", PUBLIC),
        ("/fhir/.well-known/smart-configuration", "get", PUBLIC),
        ("/fhir/Patient", "get", BEARER),
        ("/FHIR/Patient", "get", BEARER),  # the guard in app.py ignores letter case too
        ("/login", "delete", SESSION),
        ("/oauth/authorize", "get", SESSION),
    ],
)
def test_security_rules(path: str, method: str, expected: list[dict[str, list[str]]]) -> None:
    assert openapi.security_for(path, method) == expected


def test_fhir_parameters_are_tight_and_search_values_free(app: FastAPI) -> None:
    operations = _operations(app.openapi())
    read = {p["name"]: p["schema"] for p in operations[("/fhir/{rtype}/{rid}", "get")]["parameters"]}
    assert read["rtype"]["enum"] == sorted(RESOURCE_TYPE_NAMES)
    # JSON Schema patterns are ECMA-262 (there `$` never matches before a final newline, unlike Python's).
    anchored = read["rid"]["pattern"]
    assert anchored.startswith("^")
    assert anchored.endswith("$")
    for candidate in ("abc", "A-1.b", "x" * 64, "x" * 65, "", "a b", "é", "a/b", "a\n"):
        assert (re.fullmatch(anchored[1:-1], candidate) is not None) == is_fhir_id(candidate), candidate
    vid = operations[("/fhir/{rtype}/{rid}/_history/{vid}", "get")]["parameters"][2]
    assert vid["name"] == "vid"
    assert {"type": "string", "minLength": 1} in vid["schema"]["anyOf"]  # any text too: the error path
    search = {p["name"]: p["schema"] for p in operations[("/fhir/{rtype}", "get")]["parameters"]}
    assert search["patient"] == {"type": "string"}
    create = operations[("/fhir/{rtype}", "post")]["requestBody"]["content"]["application/fhir+json"]
    assert create["schema"]["required"] == ["resourceType"]
    login = operations[("/login", "post")]["requestBody"]["content"]["application/x-www-form-urlencoded"]
    assert set(login["schema"]["properties"]) == {"login", "password", "code"}


def test_the_schema_is_built_once_and_served_nowhere(app: FastAPI, tmp_path: Path) -> None:
    assert app.openapi() is app.openapi()
    client = TestClient(app)
    for path in ("/openapi.json", "/docs", "/redoc", "/fhir/openapi.json"):
        assert client.get(path).status_code in (401, 404), path
