"""Basic FHIR REST round trip on both backends."""

from __future__ import annotations

from typing import Any

from tests.helpers import FHIR


def test_create_read_search_delete(api: Any) -> None:
    patient = {
        "resourceType": "Patient",
        "name": [{"family": "Quartermaine", "given": ["Ottilie"]}],
        "birthDate": "1961-04-09",
        "gender": "female",
    }
    r = api.post("/fhir/Patient", json=patient, headers={"Content-Type": FHIR})
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    assert r.headers["location"].endswith(f"/Patient/{pid}/_history/1")
    obs = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": "2024-05-01T10:00:00Z",
    }
    r = api.post("/fhir/Observation", json=obs, headers={"Content-Type": FHIR})
    assert r.status_code == 201, r.text
    got = api.get(f"/fhir/Patient/{pid}").json()
    assert got["name"][0]["family"] == "Quartermaine"
    s = api.get("/fhir/Patient", params={"family": "quartermaine"}).json()
    assert s["total"] == 1
    assert s["entry"][0]["resource"]["id"] == pid
    s = api.get(
        "/fhir/Observation",
        params={"patient": pid, "code": "http://loinc.org|8867-4", "date": "ge2024-01-01"},
    ).json()
    assert s["total"] == 1
    s = api.get("/fhir/Observation", params={"patient": pid, "date": "lt2024"}).json()
    assert s["total"] == 0
    assert api.delete(f"/fhir/Patient/{pid}").status_code == 204
    assert api.get(f"/fhir/Patient/{pid}").status_code == 410


def test_requires_token(api: Any) -> None:
    r = api.get("/fhir/Patient", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401
    assert r.json()["resourceType"] == "OperationOutcome"
