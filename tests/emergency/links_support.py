"""A small patient record for the SMART Health Links server tests: an allergy, a problem and an
alert (`Flag`), created through the records service, and the patient's own caller."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from medvault.auth.accounts import Actor
from medvault.auth.passwords import Hasher
from medvault.records import service
from medvault.records.guard import Caller
from tests.helpers import open_vault

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
ALLERGY = "Allergy to bee venom"
PROBLEM = "Chronic lymphoid leukemia"
FLAG = "Fludarabine-treated patient"
EXTRA_ALERT = "Irradiated blood only"
FAMILY = "Quintavalle"
BASE = "http://127.0.0.1"
PASSCODE = "314159"

# Cheap Argon2id (the subject of these tests is the protocol, not the parameters).
FAST_HASHER = Hasher(time_cost=1, memory_cost=8, parallelism=1, enforce_owasp_minimum=False)


@dataclass(frozen=True)
class Person:
    patient_id: str
    caller: Caller
    allergy_id: str


def make_patient(env: Any) -> Person:
    with open_vault(env) as v:
        pid = service.create(
            vault=v,
            resource={"resourceType": "Patient", "name": [{"family": FAMILY, "given": ["Ada"]}], "gender": "female"},
        ).rid
        subject = {"reference": f"Patient/{pid}"}
        allergy = service.create(
            vault=v,
            resource={
                "resourceType": "AllergyIntolerance",
                "patient": subject,
                "clinicalStatus": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
                            "code": "active",
                        }
                    ]
                },
                "criticality": "high",
                "code": {"text": ALLERGY},
            },
        ).rid
        service.create(
            vault=v,
            resource={
                "resourceType": "Condition",
                "subject": subject,
                "clinicalStatus": {
                    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]
                },
                "code": {"text": PROBLEM},
            },
        )
        service.create(
            vault=v,
            resource={"resourceType": "Flag", "status": "active", "subject": subject, "code": {"text": FLAG}},
        )
    actor = Actor(account_id=f"acct-{pid[:8]}", role="patient", patient_id=pid)
    return Person(pid, Caller(actor=actor, via="page"), allergy)


def http_over_testclient(client: Any) -> Any:
    """Our reader's transport over a FastAPI TestClient (in-process, no network)."""
    from urllib.parse import urlsplit

    from medvault.emergency.reader import HttpRequest, HttpResponse

    def send(request: HttpRequest) -> HttpResponse:
        parts = urlsplit(request.url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        response = client.request(
            request.method, path, content=request.body, headers=dict(request.headers), follow_redirects=False
        )
        headers = {k.lower(): v for k, v in response.headers.items()}
        return HttpResponse(status=response.status_code, body=response.content, headers=headers)

    return send


def serve(settings: Any) -> Any:
    """The real app under uvicorn on 127.0.0.1 (an ephemeral port), as a context manager."""
    import socket
    import threading
    import time
    from contextlib import contextmanager

    import uvicorn

    from medvault.api.app import create_app

    @contextmanager
    def running() -> Any:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        server = uvicorn.Server(
            uvicorn.Config(create_app(settings), log_level="warning", lifespan="on", access_log=False)
        )
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:  # uvicorn offers a flag, not an event: poll it, with a deadline
            assert thread.is_alive(), "the server did not start"
            assert time.monotonic() < deadline, "the server did not start within 30 s"
            time.sleep(0.02)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True
            thread.join(timeout=30)
            sock.close()

    return running()
