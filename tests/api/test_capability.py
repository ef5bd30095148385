"""GET /fhir/metadata tells the truth: what it lists works, what it does not list is refused."""

from __future__ import annotations

from typing import Any

from tests.api.support import ok, outcome

ISSUE_TYPES = (
    "Patient",
    "Observation",
    "Condition",
    "AllergyIntolerance",
    "MedicationRequest",
    "MedicationStatement",
    "Immunization",
    "Procedure",
    "Encounter",
    "DiagnosticReport",
    "DocumentReference",
    "CarePlan",
    "Flag",
    "Consent",
    "Practitioner",
    "Organization",
)
SAMPLE = {"token": "x-1", "date": "ge2020-01-01", "string": "smith", "reference": "Patient/x-1"}
REFERENCE_SAMPLE = {"encounter": "Encounter/x-1"}


def _statement(api: Any) -> dict[str, Any]:
    r = api.get("/fhir/metadata")
    body = ok(r)
    assert r.headers["content-type"].startswith("application/fhir+json")
    return body


def test_metadata_is_a_capability_statement(module_api: Any) -> None:
    cs = _statement(module_api)
    assert cs["resourceType"] == "CapabilityStatement"
    assert cs["fhirVersion"] == "4.0.1"
    assert cs["kind"] == "instance"
    assert "application/fhir+json" in cs["format"]
    assert cs["implementation"]["url"] == "http://testserver/fhir"
    (rest,) = cs["rest"]
    assert rest["mode"] == "server"
    assert {i["code"] for i in rest["interaction"]} == {"transaction", "batch"}
    by_type = {r["type"]: r for r in rest["resource"]}
    for rtype in ISSUE_TYPES:
        codes = {i["code"] for i in by_type[rtype]["interaction"]}
        assert codes >= {
            "read",
            "vread",
            "update",
            "delete",
            "history-instance",
            "history-type",
            "create",
            "search-type",
        }
        names = {p["name"] for p in by_type[rtype]["searchParam"]}
        assert {"_id", "_lastUpdated"} <= names
    assert {p["name"] for p in by_type["Patient"]["searchParam"]} >= {
        "identifier",
        "family",
        "given",
        "name",
        "birthdate",
        "phone",
        "email",
    }
    for rtype in ISSUE_TYPES[1:14]:  # the clinical types
        assert {
            "patient",
            "date",
            "status" if rtype not in ("AllergyIntolerance", "Condition") else "clinical-status",
        } <= {p["name"] for p in by_type[rtype]["searchParam"]}, rtype
    assert by_type["Patient"]["conditionalDelete"] == "single"
    assert by_type["Patient"]["updateCreate"] is True
    assert by_type["Patient"]["operation"][0]["name"] == "everything"
    # Types stored by id only still appear, with the common parameters.
    assert {p["name"] for p in by_type["Basic"]["searchParam"]} == {"_id", "_lastUpdated"}


def test_every_listed_search_parameter_works(module_api: Any) -> None:
    cs = _statement(module_api)
    by_type = {r["type"]: r for r in cs["rest"][0]["resource"]}
    refused: list[str] = []
    for rtype in ISSUE_TYPES:
        for param in by_type[rtype]["searchParam"]:
            name, kind = param["name"], param["type"]
            value = REFERENCE_SAMPLE.get(name, SAMPLE[kind])
            r = module_api.get(f"/fhir/{rtype}", params={name: value})
            if r.status_code != 200:
                refused.append(f"{rtype}?{name} -> {r.status_code}")
                continue
            assert ok(r)["type"] == "searchset"
            if kind == "date":  # every date parameter can sort, as _sort's documentation says
                assert module_api.get(f"/fhir/{rtype}", params={"_sort": f"-{name}"}).status_code == 200, (rtype, name)
        # Result parameters listed at the rest level work on every type.
        assert (
            module_api.get(f"/fhir/{rtype}", params={"_count": 5, "_offset": 0, "_sort": "_lastUpdated"}).status_code
            == 200
        )
    assert refused == []


def test_parameters_not_listed_are_refused(module_api: Any) -> None:
    cs = _statement(module_api)
    by_type = {r["type"]: r for r in cs["rest"][0]["resource"]}
    for rtype, name in (("Observation", "value-quantity"), ("Patient", "address-city"), ("Organization", "patient")):
        assert name not in {p["name"] for p in by_type[rtype]["searchParam"]}
        outcome(module_api.get(f"/fhir/{rtype}", params={name: "1"}), 400)


def test_metadata_is_public_and_names_the_oauth_endpoints(module_api: Any) -> None:
    """SMART clients read the CapabilityStatement before they have a token (a wrong one is ignored)."""
    r = module_api.get("/fhir/metadata", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 200
    security = r.json()["rest"][0]["security"]
    (ext,) = [e for e in security["extension"] if e["url"].endswith("/oauth-uris")]
    uris = {e["url"]: e["valueUri"] for e in ext["extension"]}
    assert uris == {
        "authorize": "http://testserver/oauth/authorize",
        "token": "http://testserver/oauth/token",
        "revoke": "http://testserver/oauth/revoke",
    }
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
