"""Transaction (all or nothing) and batch (entry by entry) Bundles at POST /fhir."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select

from medvault.db import make_engine
from medvault.store.models import DataKey, IdentityIndex, IdentityVersion, Resource, ResourceVersion, SearchToken
from tests.api.support import JSON_HEADERS, create, ids, ok, outcome, search_all


def urn() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def _patient(family: str = "Okafor", **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": family}], **extra}


def _obs(subject: str, code: str = "8867-4", **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": subject},
        **extra,
    }


def post(fullurl: str | None, resource: dict[str, Any], **request: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "resource": resource,
        "request": {"method": "POST", "url": resource["resourceType"], **request},
    }
    if fullurl:
        entry["fullUrl"] = fullurl
    return entry


def bundle(kind: str, *entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def submit(api: Any, doc: dict[str, Any]) -> Any:
    return api.post("/fhir", json=doc, headers=JSON_HEADERS)


def counts(api: Any) -> dict[str, int]:
    return {t: search_all(api, f"/fhir/{t}")[0] for t in ("Patient", "Observation", "Condition", "Practitioner")}


def table_rows(settings: Any) -> dict[str, int]:
    engine = make_engine(settings)
    try:
        with engine.connect() as conn:
            return {
                t.__tablename__: conn.execute(select(func.count()).select_from(t)).scalar_one()
                for t in (Resource, ResourceVersion, IdentityVersion, IdentityIndex, SearchToken, DataKey)
            }
    finally:
        engine.dispose()


def test_transaction_rewrites_urn_references_and_reports_each_entry(api: Any) -> None:
    p_url, enc_url = urn(), urn()
    doc = bundle(
        "transaction",
        post(p_url, _patient(identifier=[{"system": "urn:mrn", "value": "42"}])),
        post(urn(), _obs(p_url, encounter={"reference": enc_url})),
        post(
            enc_url,
            {
                "resourceType": "Encounter",
                "status": "finished",
                "class": {"code": "AMB"},
                "subject": {"reference": p_url},
            },
        ),
        {
            "fullUrl": "http://example.org/fhir/Practitioner/pract-1",
            "resource": {"resourceType": "Practitioner", "id": "pract-1", "name": [{"family": "House"}]},
            "request": {"method": "PUT", "url": "Practitioner/pract-1"},
        },
        post(
            urn(),
            {
                "resourceType": "Condition",
                "subject": {"reference": p_url},
                "code": {"text": "x"},
                "asserter": {"reference": "http://example.org/fhir/Practitioner/pract-1"},
                "recorder": {"reference": "http://elsewhere.org/fhir/Practitioner/zz"},
            },
        ),
    )
    r = submit(api, doc)
    result = ok(r)
    assert result["type"] == "transaction-response"
    entries = result["entry"]
    assert len(entries) == 5
    statuses = [e["response"]["status"] for e in entries]
    assert statuses == ["201 Created"] * 5
    locations = [e["response"]["location"] for e in entries]
    assert [loc.split("/")[0] for loc in locations] == [
        "Patient",
        "Observation",
        "Encounter",
        "Practitioner",
        "Condition",
    ]
    assert all(loc.endswith("/_history/1") for loc in locations)
    assert locations[3] == "Practitioner/pract-1/_history/1"
    pid = locations[0].split("/")[1]
    enc_id = locations[2].split("/")[1]
    assert pid != p_url.removeprefix("urn:uuid:")

    obs = ok(api.get(f"/fhir/{locations[1].rsplit('/_history', 1)[0]}"))
    assert obs["subject"] == {"reference": f"Patient/{pid}"}
    assert obs["encounter"] == {"reference": f"Encounter/{enc_id}"}
    cond = ok(api.get(f"/fhir/{locations[4].rsplit('/_history', 1)[0]}"))
    assert cond["subject"] == {"reference": f"Patient/{pid}"}
    # A reference to another entry's (absolute) fullUrl points at where that entry now lives;
    # a reference to anything else is left as it was.
    assert cond["asserter"] == {"reference": "Practitioner/pract-1"}
    assert cond["recorder"] == {"reference": "http://elsewhere.org/fhir/Practitioner/zz"}
    # The rewritten references are indexed: patient search and encounter search find them.
    assert ids(search_all(api, "/fhir/Observation", {"patient": pid})[1]) == [obs["id"]]
    assert ids(search_all(api, "/fhir/Observation", {"encounter": f"Encounter/{enc_id}"})[1]) == [obs["id"]]
    assert search_all(api, "/fhir/Condition", {"subject": f"Patient/{pid}"})[0] == 1


def test_transaction_conditional_create(api: Any) -> None:
    existing = create(api, _patient(identifier=[{"system": "urn:mrn", "value": "7"}]))
    p_url = urn()
    doc = bundle(
        "transaction",
        post(
            p_url,
            _patient("Duplicate", identifier=[{"system": "urn:mrn", "value": "7"}]),
            ifNoneExist="identifier=urn:mrn|7",
        ),
        post(urn(), _obs(p_url)),
        post(urn(), _patient("Fresh"), ifNoneExist="identifier=urn:mrn|8"),
    )
    entries = ok(submit(api, doc))["entry"]
    assert entries[0]["response"]["status"] == "200 OK"
    assert entries[0]["response"]["location"].startswith(f"Patient/{existing['id']}")
    assert entries[1]["response"]["status"] == "201 Created"
    assert entries[2]["response"]["status"] == "201 Created"
    # No duplicate, the existing patient is untouched, the observation points at it.
    assert ids(search_all(api, "/fhir/Patient", {"identifier": "urn:mrn|7"})[1]) == [existing["id"]]
    assert ok(api.get(f"/fhir/Patient/{existing['id']}"))["name"][0]["family"] == "Okafor"
    obs_id = entries[1]["response"]["location"].split("/")[1]
    assert ok(api.get(f"/fhir/Observation/{obs_id}"))["subject"]["reference"] == f"Patient/{existing['id']}"
    assert search_all(api, "/fhir/Patient")[0] == 2

    # The REST form (If-None-Exist header) behaves the same.
    r = api.post(
        "/fhir/Patient", json=_patient("Again"), headers={**JSON_HEADERS, "If-None-Exist": "identifier=urn:mrn|7"}
    )
    assert ok(r)["id"] == existing["id"]
    assert search_all(api, "/fhir/Patient")[0] == 2

    # More than one match: 412, and nothing of the transaction is stored.
    create(api, _patient("Twin", identifier=[{"system": "urn:mrn", "value": "7"}]))
    before = counts(api)
    doc = bundle(
        "transaction",
        post(urn(), _obs("Patient/" + existing["id"])),
        post(urn(), _patient(), ifNoneExist="identifier=urn:mrn|7"),
    )
    outcome(submit(api, doc), 412)
    assert counts(api) == before


def test_transaction_is_atomic_when_an_entry_is_invalid(api: Any) -> None:
    p_url = urn()
    doc = bundle(
        "transaction",
        post(p_url, _patient("Atomic")),
        post(urn(), _obs(p_url)),
        post(urn(), {"resourceType": "Observation", "code": {"text": "no status"}, "subject": {"reference": p_url}}),
        post(urn(), {"resourceType": "Condition", "subject": {"reference": p_url}, "code": {"text": "x"}}),
    )
    body = outcome(submit(api, doc), (400, 422))
    expressions = [e for i in body["issue"] for e in i.get("expression", [])]
    assert expressions, body
    assert all(e.startswith("Bundle.entry[2]") for e in expressions), expressions
    assert counts(api) == {"Patient": 0, "Observation": 0, "Condition": 0, "Practitioner": 0}
    assert search_all(api, "/fhir/Patient", {"family": "atomic"})[0] == 0


def test_transaction_is_atomic_when_an_entry_fails_while_running(api: Any) -> None:
    target = create(api, _obs("Patient/x", code="1-1"))
    p_url = urn()
    doc = bundle(
        "transaction",
        post(p_url, _patient("Runtime", identifier=[{"system": "urn:mrn", "value": "rt"}])),
        post(urn(), _obs(p_url)),
        {  # runs after the POSTs (PUT after POST) and fails: a stale version
            "resource": {**_obs("Patient/x", code="2-2"), "id": target["id"]},
            "request": {"method": "PUT", "url": f"Observation/{target['id']}", "ifMatch": 'W/"9"'},
        },
    )
    outcome(submit(api, doc), 412)
    assert counts(api) == {"Patient": 0, "Observation": 1, "Condition": 0, "Practitioner": 0}
    assert search_all(api, "/fhir/Patient", {"identifier": "urn:mrn|rt"})[0] == 0
    assert ok(api.get(f"/fhir/Observation/{target['id']}"))["meta"]["versionId"] == "1"

    # A GET of something missing fails the whole transaction too (GETs run last).
    doc = bundle("transaction", post(urn(), _patient("Late")), {"request": {"method": "GET", "url": "Patient/nobody"}})
    outcome(submit(api, doc), 404)
    assert search_all(api, "/fhir/Patient")[0] == 0


def test_failed_transaction_leaves_no_rows_and_can_be_retried(api: Any, settings: Any) -> None:
    # Once failed on both backends: SQLite committed the data keys and identity row at the RELEASE
    # of a savepoint (pysqlite issued no BEGIN), PostgreSQL reused a cached data key whose row had
    # been rolled back (a foreign-key error, i.e. a 500, on the retry).
    before = table_rows(settings)
    patient = {**_patient("Retry"), "id": "retry-1"}
    doc = bundle(
        "transaction",
        {"resource": patient, "request": {"method": "PUT", "url": "Patient/retry-1"}},
        {"request": {"method": "GET", "url": "Patient/nobody"}},
    )
    outcome(submit(api, doc), 404)
    after = table_rows(settings)
    # Nothing of the rejected request is stored: no identity row, no data key.
    assert after == before
    # And the same write succeeds afterwards.
    r = api.put("/fhir/Patient/retry-1", json=patient, headers=JSON_HEADERS)
    assert ok(r, 201)["meta"]["versionId"] == "1"
    assert ok(api.get("/fhir/Patient/retry-1"))["name"][0]["family"] == "Retry"


def test_transaction_rejects_duplicate_full_urls_and_dangling_references(api: Any) -> None:
    same = urn()
    doc = bundle("transaction", post(same, _patient("A")), post(same, _patient("B")))
    body = outcome(submit(api, doc), (400, 422))
    assert ["Bundle.entry[1].fullUrl"] in [i.get("expression") for i in body["issue"]]

    doc = bundle("transaction", post(urn(), _patient("C")), post(urn(), _obs("urn:uuid:" + str(uuid.uuid4()))))
    body = outcome(submit(api, doc), (400, 422))
    assert ["Bundle.entry[1].resource.subject.reference"] in [i.get("expression") for i in body["issue"]], body

    # Dangling reference deeper inside, and a transaction PUT with an id that is not a FHIR id.
    p_url = urn()
    doc = bundle("transaction", post(p_url, _patient("D")), post(urn(), _obs(p_url, performer=[{"reference": urn()}])))
    body = outcome(submit(api, doc), (400, 422))
    assert ["Bundle.entry[1].resource.performer[0].reference"] in [i.get("expression") for i in body["issue"]], body
    doc = bundle(
        "transaction",
        post(urn(), _patient("E")),
        {"resource": _patient("F"), "request": {"method": "PUT", "url": "Patient/not an id"}},
    )
    outcome(submit(api, doc), 400)
    assert counts(api) == {"Patient": 0, "Observation": 0, "Condition": 0, "Practitioner": 0}


def test_transaction_delete_put_and_get_entries(api: Any) -> None:
    gone = create(api, _patient("Gone"))
    kept = create(api, _patient("Kept"))
    doc = bundle(
        "transaction",
        {"request": {"method": "GET", "url": f"Patient/{kept['id']}"}},
        {"request": {"method": "DELETE", "url": f"Patient/{gone['id']}"}},
        {
            "resource": {**_patient("Kept2"), "id": kept["id"]},
            "request": {"method": "PUT", "url": f"Patient/{kept['id']}", "ifMatch": 'W/"1"'},
        },
        {"request": {"method": "GET", "url": "Patient?family=kept2"}},
    )
    entries = ok(submit(api, doc))["entry"]
    assert [e["response"]["status"] for e in entries] == ["200 OK", "204 No Content", "200 OK", "200 OK"]
    # GETs run after the writes (FHIR transaction order), so they see them.
    assert entries[0]["resource"]["name"][0]["family"] == "Kept2"
    assert entries[3]["resource"]["total"] == 1
    outcome(api.get(f"/fhir/Patient/{gone['id']}"), 410)
    assert ok(api.get(f"/fhir/Patient/{kept['id']}"))["meta"]["versionId"] == "2"


def test_transaction_conditional_delete(api: Any) -> None:
    plus = create(api, _patient("Plus", identifier=[{"system": "urn:mrn", "value": "a+b&c"}]))
    space = create(api, _patient("Space", identifier=[{"system": "urn:mrn", "value": "a b&c"}]))
    doc = bundle("transaction", {"request": {"method": "DELETE", "url": "Patient?identifier=urn:mrn|a%2Bb%26c"}})
    entries = ok(submit(api, doc))["entry"]
    assert entries[0]["response"]["status"] == "204 No Content"
    outcome(api.get(f"/fhir/Patient/{plus['id']}"), 410)
    assert ok(api.get(f"/fhir/Patient/{space['id']}"))["meta"]["versionId"] == "1"
    doc = bundle("transaction", {"request": {"method": "DELETE", "url": "Patient?family=nobody"}})
    assert ok(submit(api, doc))["entry"][0]["response"]["status"] == "204 No Content"


def test_batch_reports_each_entry_and_keeps_the_good_ones(api: Any) -> None:
    target = create(api, _obs("Patient/x", code="1-1"))
    doc = bundle(
        "batch",
        post(None, _patient("Good")),
        post(None, {"resourceType": "Observation", "code": {"text": "no status"}}),
        {
            "resource": {**_obs("Patient/x"), "id": target["id"]},
            "request": {"method": "PUT", "url": f"Observation/{target['id']}", "ifMatch": 'W/"5"'},
        },
        {"request": {"method": "GET", "url": "Patient/nobody"}},
        post(None, _obs("Patient/x", code="3-3")),
        {"request": {"method": "GET", "url": "Observation?nonsense=1"}},
        {"request": {"method": "PATCH", "url": "Patient/x"}},
        {"resource": _patient("Bad id"), "request": {"method": "PUT", "url": "Patient/bad id"}},
    )
    result = ok(submit(api, doc))
    assert result["type"] == "batch-response"
    entries = result["entry"]
    statuses = [e["response"]["status"].split()[0] for e in entries]
    assert statuses == ["201", "400", "412", "404", "201", "400", "400", "400"]
    for e in entries:
        if not e["response"]["status"].startswith("2"):
            oo = e["response"]["outcome"]
            assert oo["resourceType"] == "OperationOutcome"
            assert oo["issue"][0]["severity"] == "error"
    assert entries[1]["response"]["outcome"]["issue"][0]["expression"][0].startswith("Bundle.entry[1]")
    assert search_all(api, "/fhir/Patient", {"family": "good"})[0] == 1
    assert search_all(api, "/fhir/Observation", {"code": "3-3"})[0] == 1
    assert search_all(api, "/fhir/Observation")[0] == 2
    assert ok(api.get(f"/fhir/Observation/{target['id']}"))["meta"]["versionId"] == "1"
    assert search_all(api, "/fhir/Patient")[0] == 1


def test_batch_entry_written_before_a_failing_entry_persists(api: Any) -> None:
    for value in ("a", "b"):
        create(api, _patient("Twin", identifier=[{"system": "urn:mrn", "value": value}], gender="other"))
    doc = bundle(
        "batch",
        post(None, _patient("First", identifier=[{"system": "urn:mrn", "value": "first"}])),
        # Fails after reading (and so flushing) what entry 0 wrote: two patients match.
        post(None, _patient("Second"), ifNoneExist="gender=other"),
        post(None, _patient("Third")),
        {"resource": {**_patient("Fourth"), "id": "batch-p"}, "request": {"method": "PUT", "url": "Patient/batch-p"}},
        post(None, {"resourceType": "Observation", "code": {"text": "no status"}}),  # invalid: 400
        # Uses the data keys entry 3 made, after the savepoint of entry 4 was rolled back.
        post(None, _obs("Patient/batch-p")),
    )
    entries = ok(submit(api, doc))["entry"]
    assert [e["response"]["status"].split()[0] for e in entries] == ["201", "412", "201", "201", "400", "201"]
    obs_id = entries[5]["response"]["location"].split("/")[1]
    assert ok(api.get(f"/fhir/Observation/{obs_id}"))["subject"] == {"reference": "Patient/batch-p"}
    assert ok(api.get("/fhir/Patient/batch-p"))["name"][0]["family"] == "Fourth"
    create(api, _obs("Patient/batch-p", code="9-9"))  # the keys are still right in the next request
    assert search_all(api, "/fhir/Observation", {"patient": "batch-p"})[0] == 2
    first = entries[0]["response"]["location"].split("/")[1]
    assert ok(api.get(f"/fhir/Patient/{first}"))["name"][0]["family"] == "First"
    assert ids(search_all(api, "/fhir/Patient", {"identifier": "urn:mrn|first"})[1]) == [first]
    assert search_all(api, "/fhir/Patient", {"family": "second"})[0] == 0
    assert search_all(api, "/fhir/Patient", {"family": "third"})[0] == 1
