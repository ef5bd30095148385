"""Bad requests get a 4xx OperationOutcome: never a 500, a traceback, or the input echoed back."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.support import JSON_HEADERS, create, ok, outcome, search_all

SECRET = "Zyxwquartz"  # a value that must never come back in an error message


def _patient(**extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": "Ng"}], **extra}


def test_malformed_json(api: Any) -> None:
    for raw in (b"{bad", b'{"resourceType": "Patient", ', b"", b"\xff\xfe"):
        body = outcome(api.post("/fhir/Patient", content=raw, headers=JSON_HEADERS), 400)
        assert body["issue"][0]["code"] == "structure"
    outcome(api.post("/fhir/Patient", content=b'["Patient"]', headers=JSON_HEADERS), 400)
    outcome(api.put("/fhir/Patient/x", content=b"{", headers=JSON_HEADERS), 400)
    outcome(api.post("/fhir", content=b"{", headers=JSON_HEADERS), 400)
    assert search_all(api, "/fhir/Patient")[0] == 0


def test_wrong_content_type_is_415(api: Any) -> None:
    raw = b'{"resourceType": "Patient"}'
    for ctype in ("text/plain", "application/xml", "application/fhir+xml", ""):
        outcome(api.post("/fhir/Patient", content=raw, headers={"Content-Type": ctype}), 415)
        outcome(api.put("/fhir/Patient/x", content=raw, headers={"Content-Type": ctype}), 415)
    # Parameters of the media type and plain JSON are fine.
    assert (
        api.post(
            "/fhir/Patient", content=raw, headers={"Content-Type": "application/fhir+json; charset=utf-8"}
        ).status_code
        == 201
    )
    assert api.post("/fhir/Patient", content=raw, headers={"Content-Type": "application/json"}).status_code == 201


def test_unknown_resource_type_is_404_without_echo(api: Any) -> None:
    raw = {"resourceType": "Patient"}
    responses = [
        api.get(f"/fhir/{SECRET}"),
        api.get(f"/fhir/{SECRET}/1"),
        api.get(f"/fhir/{SECRET}/1/_history/1"),
        api.get(f"/fhir/{SECRET}/_history"),
        api.post(f"/fhir/{SECRET}", json=raw, headers=JSON_HEADERS),
        api.put(f"/fhir/{SECRET}/1", json={**raw, "id": "1"}, headers=JSON_HEADERS),
        api.delete(f"/fhir/{SECRET}/1"),
        api.delete(f"/fhir/{SECRET}", params={"_id": "1"}),
        api.get("/fhir/patient"),  # type names are case-sensitive
    ]
    for r in responses:
        outcome(r, 404)
        assert SECRET not in r.text


def test_wrong_resource_type_for_the_url(api: Any) -> None:
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}
    outcome(api.post("/fhir/Patient", json=obs, headers=JSON_HEADERS), (400, 422))
    outcome(api.put("/fhir/Patient/p1", json={**obs, "id": "p1"}, headers=JSON_HEADERS), (400, 422))
    r = api.post("/fhir/Patient", json=obs, headers={**JSON_HEADERS, "If-None-Exist": "_id=p1"})
    outcome(r, (400, 422))
    assert search_all(api, "/fhir/Observation")[0] == 0
    assert search_all(api, "/fhir/Patient")[0] == 0


def test_put_id_must_match_the_url(api: Any) -> None:
    body = outcome(api.put("/fhir/Patient/p1", json=_patient(id="p2"), headers=JSON_HEADERS), 400)
    assert body["issue"][0]["expression"] == ["Patient.id"]
    outcome(api.put("/fhir/Patient/p1", json=_patient(), headers=JSON_HEADERS), 400)  # no id at all
    outcome(api.get("/fhir/Patient/p1"), 404)
    outcome(api.get("/fhir/Patient/p2"), 404)


@pytest.mark.parametrize("rid", ["a" * 65, "bad id", "semi;colon", "under_score"])
def test_put_with_an_invalid_id_is_400(api: Any, rid: str) -> None:
    outcome(api.put(f"/fhir/Patient/{rid}", json=_patient(id=rid), headers=JSON_HEADERS), 400)
    assert search_all(api, "/fhir/Patient")[0] == 0


def test_invalid_if_match(api: Any) -> None:
    pid = create(api, _patient())["id"]
    for header in ('W/"abc"', "*", "", "W/", '"1.5"'):
        r = api.put(f"/fhir/Patient/{pid}", json=_patient(id=pid), headers={**JSON_HEADERS, "If-Match": header})
        outcome(r, 400)
    assert ok(api.get(f"/fhir/Patient/{pid}"))["meta"]["versionId"] == "1"


def test_invalid_resource_names_the_location_and_never_the_value(api: Any) -> None:
    bad = _patient(birthDate=f"{SECRET}-01-01")
    r = api.post("/fhir/Patient", json=bad, headers=JSON_HEADERS)
    body = outcome(r, (400, 422))
    assert SECRET not in r.text
    assert any("birthDate" in e for i in body["issue"] for e in i.get("expression", [])), body
    # Our own checks (empty string, active content) also locate the problem.
    r = api.post("/fhir/Patient", json=_patient(gender=""), headers=JSON_HEADERS)
    assert any("gender" in e for i in outcome(r, (400, 422))["issue"] for e in i.get("expression", []))
    narrative = {
        "status": "generated",
        "div": f'<div xmlns="http://www.w3.org/1999/xhtml"><script>{SECRET}</script></div>',
    }
    r = api.post("/fhir/Patient", json=_patient(text=narrative), headers=JSON_HEADERS)
    outcome(r, (400, 422))
    assert SECRET not in r.text
    assert search_all(api, "/fhir/Patient")[0] == 0


def test_bad_searches(api: Any) -> None:
    cases: list[tuple[str, dict[str, str]]] = [
        ("Observation", {"nonsense": "1"}),
        ("Observation", {"code:text": "x"}),  # unsupported modifier
        ("Observation", {"date": "2024-13-01"}),
        ("Observation", {"date": "xx2024"}),
        ("Observation", {"date": "9999-12-31"}),
        ("Observation", {"date": "0001-01-01T00:00:00+01:00"}),
        ("Observation", {"_count": "-1"}),
        ("Observation", {"_count": "lots"}),
        ("Observation", {"_count": "100000"}),
        ("Observation", {"_offset": "-3"}),
        ("Observation", {"_sort": "code"}),
        ("Observation", {"subject": "Group/1"}),
        ("Observation", {"performer": "Practitioner/1"}),
        ("Patient", {"birthdate": "19801"}),
        ("Patient", {"birthdate": "1980-13-01"}),
        ("Patient", {"_lastUpdated": "yesterday"}),
        ("Patient", {"patient": "Patient/1"}),
    ]
    create(api, _patient(birthDate="1980-02-03"))  # so matchers run against a real row
    for rtype, params in cases:
        r = api.get(f"/fhir/{rtype}", params=params)
        outcome(r, 400)
        for value in params.values():
            if len(value) > 4:
                assert value not in r.json()["issue"][0]["diagnostics"], (params, r.text)


def test_lenient_handling_ignores_unknown_parameters(api: Any) -> None:
    pid = create(api, _patient())["id"]
    outcome(api.get("/fhir/Patient", params={"nonsense": "1", "_id": pid}), 400)
    lenient = {"Prefer": "handling=lenient"}
    total, found = search_all(api, "/fhir/Patient", {"nonsense": "1", "_id": pid}, headers=lenient)
    assert (total, [r["id"] for r in found]) == (1, [pid])
    page = ok(api.get("/fhir/Patient", params={"nonsense": "1", "_id": pid}, headers=lenient))
    self_link = next(link["url"] for link in page["link"] if link["relation"] == "self")
    assert "nonsense" not in self_link  # the self link shows what was actually used
    assert f"_id={pid}" in self_link
    # Lenient does not turn a bad value of a known parameter into "everything".
    outcome(api.get("/fhir/Patient", params={"birthdate": "bad"}, headers=lenient), 400)


def test_method_not_allowed_and_bundle_misuse(api: Any) -> None:
    outcome(api.patch("/fhir/Patient/1", json={}, headers=JSON_HEADERS), 405)
    outcome(api.post("/fhir", json=_patient(), headers=JSON_HEADERS), (400, 422))
    outcome(
        api.post("/fhir", json={"resourceType": "Bundle", "type": "collection", "entry": []}, headers=JSON_HEADERS),
        (400, 422),
    )
    outcome(
        api.post("/fhir", json={"resourceType": "Bundle", "type": "transaction", "entry": {}}, headers=JSON_HEADERS),
        (400, 422),
    )


def test_post_search_with_a_form(api: Any) -> None:
    pid = create(api, _patient(gender="female"))["id"]
    create(api, _patient(gender="male"))
    r = api.post("/fhir/Patient/_search", data={"gender": "female"})
    body = ok(r)
    assert [e["resource"]["id"] for e in body["entry"]] == [pid]
    r = api.post("/fhir/Patient/_search", content=b"{}", headers=JSON_HEADERS)
    outcome(r, 415)
    outcome(api.post("/fhir/Patient/_search", data={"nonsense": "1"}), 400)


def test_405_names_the_allowed_methods(api: Any) -> None:
    """Regression (schemathesis `unsupported_method`): a 405 carries `Allow` (RFC 9110 15.5.6)."""
    answer = api.patch("/fhir/Patient/1", json={}, headers=JSON_HEADERS)
    outcome(answer, 405)
    # Starlette names the methods of the first route matching the path (the read), not of all.
    assert "GET" in answer.headers["allow"].replace(" ", "").split(",")


@pytest.mark.parametrize("path", ["/fhir/metadata", "/fhir/.well-known/smart-configuration"])
@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
@pytest.mark.parametrize("token", [True, False])
def test_discovery_documents_are_read_only(api: Any, path: str, method: str, token: bool) -> None:
    """Regression (schemathesis `unsupported_method`): POST and DELETE /fhir/metadata reached the
    /fhir/{rtype} handlers with no token resolved for the public path, and answered 500."""
    headers = {**JSON_HEADERS} if token else {**JSON_HEADERS, "Authorization": ""}
    answer = api.request(method, path, content=b"{}", headers=headers)
    outcome(answer, 405)
    assert answer.headers["allow"] == "GET, HEAD"
    assert api.get(path).status_code == 200


@pytest.mark.parametrize(("segment", "allow"), [("_history", "GET, HEAD"), ("_search", "POST")])
def test_put_or_delete_on_an_operation_path_is_405(api: Any, segment: str, allow: str) -> None:
    """Regression (schemathesis `unsupported_method`): PUT /fhir/Patient/_history was read as an
    update of a resource called "_history" and answered 415 (the body was read first)."""
    for method in ("PUT", "DELETE"):
        answer = api.request(method, f"/fhir/Patient/{segment}")
        outcome(answer, 405)
        assert answer.headers["allow"] == allow
