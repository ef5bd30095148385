"""FHIR REST interactions (create, read, vread, update, delete, history) on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from tests.api.support import JSON_HEADERS, create, ids, ok, outcome, relative, search_all
from tests.helpers import FHIR, strip_server_fields


def _obs(code: str = "8867-4", **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "effectiveDateTime": "2024-05-01T10:00:00Z",
        **extra,
    }


def _patient(family: str = "Quartermaine", **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": family, "given": ["Ottilie"]}], **extra}


def test_create_assigns_id_and_returns_location_etag_and_body(api: Any) -> None:
    sent = _obs(id="client-chosen", valueQuantity={"value": 72, "unit": "/min"})
    r = api.post("/fhir/Observation", json=sent, headers=JSON_HEADERS)
    assert r.status_code == 201, r.text
    assert r.headers["content-type"].startswith(FHIR)
    body = r.json()
    rid = body["id"]
    assert rid
    assert rid != "client-chosen", "the server assigns the id on create"
    assert r.headers["location"] == f"http://testserver/fhir/Observation/{rid}/_history/1"
    assert r.headers["etag"] == 'W/"1"'
    assert body["meta"]["versionId"] == "1"
    modified = parsedate_to_datetime(r.headers["last-modified"])  # an HTTP date, not the FHIR instant
    stamped = datetime.fromisoformat(body["meta"]["lastUpdated"].replace("Z", "+00:00"))
    assert abs((modified - stamped).total_seconds()) < 1
    assert abs((datetime.now(UTC) - stamped).total_seconds()) < 60
    assert strip_server_fields(body) == {**sent, "id": rid}

    read = api.get(f"/fhir/Observation/{rid}")
    assert ok(read) == body
    assert read.headers["etag"] == 'W/"1"'
    assert ok(api.get(f"/fhir/Observation/{rid}/_history/1")) == body
    # The client's id names nothing.
    outcome(api.get("/fhir/Observation/client-chosen"), 404)


def test_update_with_if_match(api: Any) -> None:
    created = create(api, _patient())
    pid = created["id"]
    v2 = {**_patient("Second"), "id": pid}
    r = api.put(f"/fhir/Patient/{pid}", json=v2, headers={**JSON_HEADERS, "If-Match": 'W/"1"'})
    assert ok(r)["meta"]["versionId"] == "2"
    assert r.headers["etag"] == 'W/"2"'
    assert "location" not in r.headers  # only a create answers with a Location

    # A stale version: 412 and nothing written.
    stale = {**_patient("Stale"), "id": pid}
    r = api.put(f"/fhir/Patient/{pid}", json=stale, headers={**JSON_HEADERS, "If-Match": 'W/"1"'})
    outcome(r, 412)
    current = ok(api.get(f"/fhir/Patient/{pid}"))
    assert current["meta"]["versionId"] == "2"
    assert current["name"][0]["family"] == "Second"

    # A strong ETag form is accepted too, and no If-Match means last writer wins.
    r = api.put(
        f"/fhir/Patient/{pid}", json={**_patient("Third"), "id": pid}, headers={**JSON_HEADERS, "If-Match": '"2"'}
    )
    assert ok(r)["meta"]["versionId"] == "3"
    r = api.put(f"/fhir/Patient/{pid}", json={**_patient("Fourth"), "id": pid}, headers=JSON_HEADERS)
    assert ok(r)["meta"]["versionId"] == "4"

    # Every version stays readable with its own content.
    families = [ok(api.get(f"/fhir/Patient/{pid}/_history/{v}"))["name"][0]["family"] for v in (1, 2, 3, 4)]
    assert families == ["Quartermaine", "Second", "Third", "Fourth"]
    # Identity search follows the current version only.
    assert ids(search_all(api, "/fhir/Patient", {"family": "fourth"})[1]) == [pid]
    assert search_all(api, "/fhir/Patient", {"family": "second"})[0] == 0


def test_update_as_create_uses_the_client_id(api: Any) -> None:
    r = api.put("/fhir/Patient/my-id-1.a", json={**_patient(), "id": "my-id-1.a"}, headers=JSON_HEADERS)
    body = ok(r, 201)
    assert body["id"] == "my-id-1.a"
    assert body["meta"]["versionId"] == "1"
    assert r.headers["location"] == "http://testserver/fhir/Patient/my-id-1.a/_history/1"
    assert r.headers["etag"] == 'W/"1"'
    assert ok(api.get("/fhir/Patient/my-id-1.a"))["name"][0]["family"] == "Quartermaine"
    # If-Match on something that does not exist cannot match.
    r = api.put(
        "/fhir/Patient/absent", json={**_patient(), "id": "absent"}, headers={**JSON_HEADERS, "If-Match": 'W/"1"'}
    )
    outcome(r, 412)
    outcome(api.get("/fhir/Patient/absent"), 404)


def test_delete_then_read_is_gone_and_old_versions_stay_readable(api: Any) -> None:
    pid = create(api, _patient())["id"]
    ok(api.put(f"/fhir/Patient/{pid}", json={**_patient("Later"), "id": pid}, headers=JSON_HEADERS))
    obs = create(api, _obs(subject={"reference": f"Patient/{pid}"}))

    r = api.delete(f"/fhir/Patient/{pid}")
    assert r.status_code == 204, r.text
    assert r.content == b""
    assert r.headers["etag"] == 'W/"3"'
    outcome(api.get(f"/fhir/Patient/{pid}"), 410)
    assert ok(api.get(f"/fhir/Patient/{pid}/_history/1"))["name"][0]["family"] == "Quartermaine"
    assert ok(api.get(f"/fhir/Patient/{pid}/_history/2"))["name"][0]["family"] == "Later"
    outcome(api.get(f"/fhir/Patient/{pid}/_history/3"), 410)  # the deletion itself
    outcome(api.get(f"/fhir/Patient/{pid}/_history/4"), 404)
    assert search_all(api, "/fhir/Patient", {"_id": pid})[0] == 0
    assert search_all(api, "/fhir/Patient", {"family": "later"})[0] == 0
    outcome(api.get(f"/fhir/Patient/{pid}/$everything"), 410)
    # The Observation itself is untouched.
    assert ok(api.get(f"/fhir/Observation/{obs['id']}"))["subject"]["reference"] == f"Patient/{pid}"

    # Deleting again is harmless and writes nothing; deleting the unknown too.
    assert api.delete(f"/fhir/Patient/{pid}").status_code == 204
    assert api.delete("/fhir/Patient/never-was").status_code == 204
    assert ok(api.get(f"/fhir/Patient/{pid}/_history"))["total"] == 3

    # Resurrection by update: a new version, 201.
    r = api.put(f"/fhir/Patient/{pid}", json={**_patient("Back"), "id": pid}, headers=JSON_HEADERS)
    assert ok(r, 201)["meta"]["versionId"] == "4"
    assert ok(api.get(f"/fhir/Patient/{pid}"))["name"][0]["family"] == "Back"
    assert ids(search_all(api, "/fhir/Patient", {"family": "back"})[1]) == [pid]


def test_conditional_delete(api: Any) -> None:
    a = create(api, _patient("Alpha", identifier=[{"system": "urn:sys", "value": "A"}]))
    create(api, _patient("Twin", identifier=[{"system": "urn:sys", "value": "T"}]))
    create(api, _patient("Twin", identifier=[{"system": "urn:sys", "value": "T2"}]))
    outcome(api.delete("/fhir/Patient", params={"family": "twin"}), 412)  # more than one match
    assert search_all(api, "/fhir/Patient", {"family": "twin"})[0] == 2
    assert api.delete("/fhir/Patient", params={"identifier": "urn:sys|nobody"}).status_code == 204
    r = api.delete("/fhir/Patient", params={"identifier": "urn:sys|A"})
    assert r.status_code == 204, r.text
    outcome(api.get(f"/fhir/Patient/{a['id']}"), 410)
    outcome(api.delete("/fhir/Patient"), 400)  # no criteria: never "delete everything"
    assert search_all(api, "/fhir/Patient")[0] == 2


def test_instance_history(api: Any) -> None:
    pid = create(api, _patient("One"))["id"]
    for family in ("Two", "Three"):
        ok(api.put(f"/fhir/Patient/{pid}", json={**_patient(family), "id": pid}, headers=JSON_HEADERS))
    assert api.delete(f"/fhir/Patient/{pid}").status_code == 204

    bundle = ok(api.get(f"/fhir/Patient/{pid}/_history"))
    assert bundle["resourceType"] == "Bundle"
    assert bundle["type"] == "history"
    assert bundle["total"] == 4
    entries = bundle["entry"]
    assert [e["response"]["etag"] for e in entries] == ['W/"4"', 'W/"3"', 'W/"2"', 'W/"1"']  # newest first
    assert [e["request"]["method"] for e in entries] == ["DELETE", "PUT", "PUT", "POST"]
    assert entries[0]["response"]["status"].startswith("410")
    assert "resource" not in entries[0]
    assert [e["resource"]["name"][0]["family"] for e in entries[1:]] == ["Three", "Two", "One"]
    assert [e["resource"]["meta"]["versionId"] for e in entries[1:]] == ["3", "2", "1"]
    assert all(e["fullUrl"] == f"http://testserver/fhir/Patient/{pid}" for e in entries)
    stamps = [e["response"]["lastModified"] for e in entries]
    assert stamps == sorted(stamps, reverse=True)

    # Paging: 3 + 1, the next link carries the position.
    first = ok(api.get(f"/fhir/Patient/{pid}/_history", params={"_count": 3}))
    assert [e["response"]["etag"] for e in first["entry"]] == ['W/"4"', 'W/"3"', 'W/"2"']
    nxt = [link["url"] for link in first["link"] if link["relation"] == "next"]
    assert len(nxt) == 1
    second = ok(api.get(relative(nxt[0])))
    assert [e["response"]["etag"] for e in second["entry"]] == ['W/"1"']
    assert second["total"] == 4
    assert not [link for link in second["link"] if link["relation"] == "next"]

    outcome(api.get("/fhir/Patient/unknown-id/_history"), 404)


def test_type_history_with_paging(api: Any) -> None:
    made = [create(api, _obs(code)) for code in ("1-1", "2-2", "3-3")]
    first = made[0]["id"]
    ok(api.put(f"/fhir/Observation/{first}", json={**_obs("1-9"), "id": first}, headers=JSON_HEADERS))
    assert api.delete(f"/fhir/Observation/{made[1]['id']}").status_code == 204
    create(api, _patient())  # another type's history is separate

    full = ok(api.get("/fhir/Observation/_history"))
    assert full["total"] == 5
    expected = {(m["id"], "1") for m in made} | {(first, "2"), (made[1]["id"], "2")}
    seen = [(e["fullUrl"].rsplit("/", 1)[1], e["response"]["etag"][3:-1]) for e in full["entry"]]
    assert set(seen) == expected
    stamps = [e["response"]["lastModified"] for e in full["entry"]]
    assert stamps == sorted(stamps, reverse=True)
    deletions = [e for e in full["entry"] if e["request"]["method"] == "DELETE"]
    assert len(deletions) == 1
    assert deletions[0]["request"]["url"] == f"Observation/{made[1]['id']}"
    assert "resource" not in deletions[0]

    # Walk pages of 2: the same entries in the same order, no duplicates, no gaps.
    walked: list[tuple[str, str]] = []
    page = ok(api.get("/fhir/Observation/_history", params={"_count": 2}))
    while True:
        assert page["total"] == 5
        assert len(page["entry"]) <= 2
        walked += [(e["fullUrl"].rsplit("/", 1)[1], e["response"]["etag"][3:-1]) for e in page["entry"]]
        nxt = [link["url"] for link in page["link"] if link["relation"] == "next"]
        if not nxt:
            break
        page = ok(api.get(relative(nxt[0])))
    assert walked == seen

    assert ok(api.get("/fhir/Condition/_history"))["total"] == 0
    assert ok(api.get("/fhir/Patient/_history"))["total"] == 1


def test_history_parameters_are_checked(api: Any) -> None:
    pid = create(api, _patient())["id"]
    outcome(api.get(f"/fhir/Patient/{pid}/_history", params={"_count": -1}), 400)
    outcome(api.get(f"/fhir/Patient/{pid}/_history", params={"_count": "many"}), 400)
    outcome(api.get("/fhir/Patient/_history", params={"_offset": 10**20}), 400)
    zero = ok(api.get("/fhir/Patient/_history", params={"_count": 0}))
    assert zero["total"] == 1
    assert zero["entry"] == []
    assert not [link for link in zero["link"] if link["relation"] == "next"]
    outcome(api.get("/fhir/Nonsense/_history"), 404)
    # Not implemented, so refused rather than silently ignored (unless the client asks for lenience).
    outcome(api.get("/fhir/Patient/_history", params={"_since": "2020-01-01"}), 400)
    lenient = api.get(
        f"/fhir/Patient/{pid}/_history", params={"_since": "2020"}, headers={"Prefer": "handling=lenient"}
    )
    assert ok(lenient)["total"] == 1


def test_vread_of_odd_version_ids_is_not_found(api: Any) -> None:
    pid = create(api, _patient())["id"]
    for vid in ("abc", "0", "²", "99999999999999999999", "-1"):
        outcome(api.get(f"/fhir/Patient/{pid}/_history/{vid}"), 404)
    outcome(api.get("/fhir/Patient/nobody/_history/1"), 404)


def test_everything_returns_the_compartment_and_referenced_actors(api: Any) -> None:
    org = create(api, {"resourceType": "Organization", "name": "General"})
    pract = create(api, {"resourceType": "Practitioner", "name": [{"family": "Who"}]})
    pid = create(api, _patient(managingOrganization={"reference": f"Organization/{org['id']}"}))["id"]
    other = create(api, _patient("Other"))["id"]
    mine = [
        create(
            api, _obs(subject={"reference": f"Patient/{pid}"}, performer=[{"reference": f"Practitioner/{pract['id']}"}])
        ),
        create(
            api,
            {
                "resourceType": "Condition",
                "subject": {"reference": f"Patient/{pid}"},
                "code": {"text": "headache"},
            },
        ),
        create(
            api,
            {
                "resourceType": "Claim",
                "status": "active",
                "use": "claim",
                "patient": {"reference": f"Patient/{pid}"},
                "type": {"text": "x"},
                "created": "2024-01-01",
                "provider": {"reference": f"Organization/{org['id']}"},
                "priority": {"text": "normal"},
                "insurance": [{"sequence": 1, "focal": True, "coverage": {"display": "c"}}],
            },
        ),
    ]
    create(api, _obs(subject={"reference": f"Patient/{other}"}))
    deleted = create(api, _obs(subject={"reference": f"Patient/{pid}"}))
    assert api.delete(f"/fhir/Observation/{deleted['id']}").status_code == 204

    bundle = ok(api.get(f"/fhir/Patient/{pid}/$everything"))
    assert bundle["type"] == "searchset"
    got = [(e["resource"]["resourceType"], e["resource"]["id"]) for e in bundle["entry"]]
    assert got[0] == ("Patient", pid)
    assert bundle["total"] == len(got)
    expected = {("Patient", pid), ("Organization", org["id"]), ("Practitioner", pract["id"])}
    expected |= {(m["resourceType"], m["id"]) for m in mine}
    assert set(got) == expected
    assert len(got) == len(set(got))
    outcome(api.get("/fhir/Patient/nobody/$everything"), 404)
