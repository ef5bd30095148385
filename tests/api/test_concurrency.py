"""Concurrent writers and readers never fail (SQLite: writers take the lock up front)."""

from __future__ import annotations

import threading
from typing import Any

from fastapi.testclient import TestClient

from medvault.api.app import create_app

FHIR = {"Content-Type": "application/fhir+json"}


def test_concurrent_writes_and_reads(settings: Any) -> None:
    app = create_app(settings)
    token = settings.token_path.read_text().strip()
    failures: list[int] = []
    created: list[str] = []

    def worker(i: int) -> None:
        with TestClient(app) as client:
            client.headers["Authorization"] = f"Bearer {token}"
            for j in range(25):
                r = client.post(
                    "/fhir/Patient", json={"resourceType": "Patient", "name": [{"family": f"W{i}x{j}"}]}, headers=FHIR
                )
                if r.status_code != 201:
                    failures.append(r.status_code)
                    continue
                created.append(r.json()["id"])
                if client.get("/fhir/Patient", params={"_count": "1"}).status_code != 200:
                    failures.append(-1)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert failures == []
    assert len(set(created)) == 100
    with TestClient(app) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        assert client.get("/fhir/Patient", params={"_count": "0"}).json()["total"] == 100
