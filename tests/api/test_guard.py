"""The API's outer guard: deny by default, security headers, and no traceback to client or log."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.support import create, outcome


def _anonymous(module_api: Any, **kwargs: Any) -> TestClient:
    return TestClient(module_api.app, base_url="http://testserver", **kwargs)


@pytest.mark.parametrize(
    "path",
    ["/fhir/Patient", "/fhir", "/fhir/", "/FHIR/Patient", "/FHIR/metadata", "/fhir/metadata/", "/fhir/.well-known"],
)
def test_every_fhir_path_needs_the_token(module_api: Any, path: str) -> None:
    anonymous = _anonymous(module_api)
    response = anonymous.get(path)
    outcome(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer ")
    assert anonymous.get("/healthz").status_code == 200


@pytest.mark.parametrize("token", ["", "x" * 43, "Bearer", "a" * 300])
def test_a_wrong_token_is_a_401(module_api: Any, token: str) -> None:
    anonymous = _anonymous(module_api)
    outcome(anonymous.get("/fhir/Patient", headers={"Authorization": f"Bearer {token}"}), 401)
    outcome(anonymous.get("/fhir/Patient", headers={"Authorization": "Basic dXNlcjpwYXNz"}), 401)


def test_only_the_discovery_documents_are_public(module_api: Any) -> None:
    """A client reads these before it has a token (SMART App Launch 2.0, FHIR R4 3.1.0.2)."""
    anonymous = _anonymous(module_api)
    meta = anonymous.get("/fhir/metadata")
    assert meta.status_code == 200
    assert meta.json()["resourceType"] == "CapabilityStatement"
    smart = anonymous.get("/fhir/.well-known/smart-configuration")
    assert smart.status_code == 200
    assert smart.json()["code_challenge_methods_supported"] == ["S256"]


@pytest.mark.parametrize("path", ["/nowhere", "/openapi.json", "/docs", "/redoc"])
def test_other_paths_hold_nothing(module_api: Any, path: str) -> None:
    """Outside /fhir only pages live, each asking for its own session: unknown paths are 404s."""
    assert _anonymous(module_api).get(path).status_code == 404


@pytest.mark.parametrize("root_path", ["/api", "/fhir", "/x/y"])
def test_a_root_path_opens_no_door(module_api: Any, root_path: str) -> None:
    """Behind a proxy that mounts us under a prefix, /fhir must stay closed: a check on the raw
    request path (path.startswith('/fhir')) would have let '/api/fhir/...' through."""
    anonymous = _anonymous(module_api, root_path=root_path)
    for path in (f"{root_path}/fhir/Patient", "/fhir/Patient", f"{root_path}/fhir/Patient/x/_history"):
        response = anonymous.get(path)
        # 401, or 404 where stripping the prefix leaves a path that is no FHIR route at all.
        assert response.status_code in (401, 404), (path, response.status_code)
        assert "resourceType" not in response.text or "OperationOutcome" in response.text
    assert anonymous.get(f"{root_path}/healthz").status_code == 200


def test_no_openapi_schema_even_with_the_token(module_api: Any) -> None:
    assert module_api.get("/openapi.json").status_code == 404
    assert module_api.get("/docs").status_code == 404


def test_responses_are_not_cached(module_api: Any) -> None:
    pid = create(module_api, {"resourceType": "Patient", "gender": "other"})["id"]
    for response in (
        module_api.get(f"/fhir/Patient/{pid}"),
        module_api.get("/fhir/Patient/does-not-exist"),
        _anonymous(module_api).get(f"/fhir/Patient/{pid}"),
    ):
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["x-content-type-options"] == "nosniff"


def test_unexpected_error_is_a_bare_500_and_logs_only_the_class(
    module_api: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from medvault.records import service

    def explode(**_kwargs: Any) -> Any:
        raise RuntimeError("Ottilie Quartermaine 1961-04-09")

    monkeypatch.setattr(service, "read", explode)
    with caplog.at_level(logging.DEBUG):
        response = module_api.get("/fhir/Patient/anything")
    body = outcome(response, 500)
    assert "Quartermaine" not in response.text
    assert body["issue"][0]["code"] == "exception"
    assert "RuntimeError" in caplog.text
    assert "Quartermaine" not in caplog.text
    assert "Traceback" not in caplog.text
