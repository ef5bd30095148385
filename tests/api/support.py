"""Helpers for API tests that share one data set per backend (module-scoped), and FHIR shortcuts."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy import create_engine, text

from medvault.config import Settings, load_settings
from medvault.store.setup import initialise
from tests.conftest import PG_BASE, pg_skip_reason
from tests.helpers import FHIR

JSON_HEADERS = {"Content-Type": FHIR}


@contextmanager
def fresh_settings(backend: str, data_dir: Path) -> Iterator[Settings]:
    """An initialised data directory on `backend`; PostgreSQL gets its own schema, dropped afterwards."""
    if backend == "sqlite":
        settings = load_settings(data_dir=data_dir, environment="development")
        initialise(settings)
        yield settings
        return
    reason = pg_skip_reason()
    if reason:
        pytest.skip(reason)
    name = f"mvtest_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_BASE, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{name}"'))
    try:
        settings = load_settings(
            data_dir=data_dir, database_url=f"{PG_BASE}?options=-csearch_path%3D{name}", environment="development"
        )
        initialise(settings)
        yield settings
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{name}" CASCADE'))
        admin.dispose()


@contextmanager
def client_for(settings: Settings) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from medvault.api.app import create_app

    token = settings.token_path.read_text().strip()
    with TestClient(create_app(settings), base_url="http://testserver") as client:
        client.headers.update({"Authorization": f"Bearer {token}"})
        yield client


def ok(response: Any, status: int = 200) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    return body


def create(api: Any, resource: dict[str, Any]) -> dict[str, Any]:
    return ok(api.post(f"/fhir/{resource['resourceType']}", json=resource, headers=JSON_HEADERS), 201)


def outcome(response: Any, status: int | tuple[int, ...]) -> dict[str, Any]:
    """Asserts an OperationOutcome error with `status`; returns it."""
    statuses = status if isinstance(status, tuple) else (status,)
    assert response.status_code in statuses, (response.status_code, response.text)
    assert response.headers["content-type"].startswith(FHIR)
    body: dict[str, Any] = response.json()
    assert body["resourceType"] == "OperationOutcome", body
    assert body["issue"], body
    assert all(i["severity"] in ("error", "fatal") for i in body["issue"]), body
    assert "Traceback" not in response.text
    return body


def relative(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def search_all(api: Any, path: str, params: Any = None, headers: dict[str, str] | None = None) -> tuple[int, list[Any]]:
    """Runs a search and walks every `next` link. Returns (total, resources of every page).

    Checks along the way: every page reports the same total, and pages stop when they should."""
    page = ok(api.get(path, params=params, headers=headers))
    assert page["resourceType"] == "Bundle"
    assert page["type"] == "searchset"
    total = page["total"]
    resources = [e["resource"] for e in page.get("entry", [])]
    pages = 1
    while True:
        nxt = [link["url"] for link in page.get("link", []) if link["relation"] == "next"]
        if not nxt:
            break
        assert pages < 1000, "next links do not end"
        page = ok(api.get(relative(nxt[0]), headers=headers))
        assert page["total"] == total, "total changed between pages"
        resources += [e["resource"] for e in page.get("entry", [])]
        pages += 1
    return total, resources


def ids(resources: list[dict[str, Any]]) -> list[str]:
    return [r["id"] for r in resources]
