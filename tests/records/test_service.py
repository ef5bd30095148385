"""Record services without the web framework: what the API, the CLI and later the pages call."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from medvault.fhir import search as fs
from medvault.fhir.errors import InvalidResource, UnsupportedSearch
from medvault.records import bundles as record_bundles
from medvault.records import service
from medvault.records.errors import BadRequest, Gone, NotFound, PreconditionFailed, VersionConflict
from tests.helpers import open_vault


def _patient(family: str = "Adeyemi", **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": family}], **extra}


def _obs(pid: str, code: str = "8867-4", when: str = "2024-05-01T10:00:00Z") -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": when,
    }


def test_create_read_update_delete_lifecycle(vault_env: Any) -> None:
    with open_vault(vault_env) as v:
        w = service.create(vault=v, resource=_patient(id="ignored"))
        assert (w.rtype, w.version, w.created) == ("Patient", 1, True)
        assert w.rid != "ignored"
        assert w.resource is not None
        assert w.resource["meta"]["versionId"] == "1"
        pid = w.rid
    with open_vault(vault_env) as v:
        assert service.read(vault=v, rtype="Patient", rid=pid)["name"] == [{"family": "Adeyemi"}]
        up = service.update(vault=v, rtype="Patient", rid=pid, resource=_patient("Bello", id=pid), if_match=1)
        assert (up.version, up.created) == (2, False)
    with open_vault(vault_env) as v, pytest.raises(VersionConflict):
        service.update(vault=v, rtype="Patient", rid=pid, resource=_patient("Stale", id=pid), if_match=1)
    with open_vault(vault_env) as v:
        assert service.delete(vault=v, rtype="Patient", rid=pid) == 3
        assert service.delete(vault=v, rtype="Patient", rid=pid) is None  # already deleted
        assert service.delete(vault=v, rtype="Patient", rid="never") is None
    with open_vault(vault_env) as v:
        with pytest.raises(Gone):
            service.read(vault=v, rtype="Patient", rid=pid)
        with pytest.raises(Gone):
            service.vread(vault=v, rtype="Patient", rid=pid, version=3)
        assert service.vread(vault=v, rtype="Patient", rid=pid, version=1)["name"][0]["family"] == "Adeyemi"
        assert service.vread(vault=v, rtype="Patient", rid=pid, version=2)["name"][0]["family"] == "Bello"
        with pytest.raises(NotFound):
            service.vread(vault=v, rtype="Patient", rid=pid, version=4)
        with pytest.raises(NotFound):
            service.read(vault=v, rtype="Patient", rid="never")
        with pytest.raises(VersionConflict):  # If-Match against a deleted resource
            service.update(vault=v, rtype="Patient", rid=pid, resource=_patient(id=pid), if_match=3)
        again = service.update(vault=v, rtype="Patient", rid=pid, resource=_patient("Back", id=pid))
        assert (again.version, again.created) == (4, True)


def test_update_checks_type_and_id(vault_env: Any) -> None:
    with open_vault(vault_env) as v:
        with pytest.raises(NotFound):
            service.update(vault=v, rtype="Nope", rid="a", resource=_patient(id="a"))
        with pytest.raises(BadRequest):
            service.update(vault=v, rtype="Patient", rid="a", resource=_patient(id="b"))
        with pytest.raises(BadRequest):
            service.update(vault=v, rtype="Patient", rid="a", resource=_patient())
        for bad in ("x" * 65, "has space", "", "a/b"):
            with pytest.raises(BadRequest):
                service.update(vault=v, rtype="Patient", rid=bad, resource=_patient(id=bad), validated=True)
        with pytest.raises(InvalidResource):
            service.update(vault=v, rtype="Observation", rid="a", resource=_patient(id="a"))
        with pytest.raises(InvalidResource):
            service.create(vault=v, resource=_patient(), rtype="Observation")
        assert service.update(vault=v, rtype="Patient", rid="A-z.0", resource=_patient(id="A-z.0")).created
        assert service.update(vault=v, rtype="Patient", rid="x" * 64, resource=_patient(id="x" * 64)).created


def test_history_is_newest_first_and_pages(vault_env: Any) -> None:
    with open_vault(vault_env) as v:
        pid = service.create(vault=v, resource=_patient()).rid
        oid = service.create(vault=v, resource=_obs(pid)).rid
    for family in ("B", "C"):
        with open_vault(vault_env) as v:
            service.update(vault=v, rtype="Patient", rid=pid, resource=_patient(family, id=pid))
    with open_vault(vault_env) as v:
        service.delete(vault=v, rtype="Patient", rid=pid)
    with open_vault(vault_env) as v:
        total, entries = service.history(vault=v, rtype="Patient", rid=pid)
        assert total == 4
        assert [(e.version, e.method) for e in entries] == [(4, "DELETE"), (3, "PUT"), (2, "PUT"), (1, "POST")]
        assert entries[0].resource is None
        assert [e.resource["name"][0]["family"] for e in entries[1:] if e.resource] == ["C", "B", "Adeyemi"]
        total, page = service.history(vault=v, rtype="Patient", rid=pid, count=2, offset=1)
        assert (total, [e.version for e in page]) == (4, [3, 2])
        total, entries = service.history(vault=v, rtype="Observation")
        assert (total, [(e.rid, e.version) for e in entries]) == (1, [(oid, 1)])
        with pytest.raises(NotFound):
            service.history(vault=v, rtype="Patient", rid="never")
        with pytest.raises(NotFound):
            service.history(vault=v, rtype="Nope")


def test_everything_and_search_through_the_service(vault_env: Any) -> None:
    with open_vault(vault_env) as v:
        pid = service.create(vault=v, resource=_patient()).rid
        other = service.create(vault=v, resource=_patient("Other")).rid
        mine = {service.create(vault=v, resource=_obs(pid, c)).rid for c in ("1-1", "2-2")}
        service.create(vault=v, resource=_obs(other))
    with open_vault(vault_env) as v:
        docs = service.everything(vault=v, patient_id=pid)
        assert docs[0]["id"] == pid
        assert {d["id"] for d in docs[1:]} == mine
        found = service.search(vault=v, rtype="Observation", params=[("patient", pid), ("code", "2-2")])
        assert found.total == 1
        assert found.resources[0]["code"]["coding"][0]["code"] == "2-2"
        with pytest.raises(UnsupportedSearch):
            service.search(vault=v, rtype="Observation", params=[("colour", "red")])
        lenient = service.search(
            vault=v, rtype="Observation", params=[("colour", "red"), ("patient", pid)], strict=False
        )
        assert lenient.total == 2
        assert lenient.used == [("patient", pid)]
        with pytest.raises(NotFound):
            service.search(vault=v, rtype="Nope", params=[])
        with pytest.raises(NotFound):
            service.everything(vault=v, patient_id="never")
        service.delete(vault=v, rtype="Patient", rid=pid)
        with pytest.raises(Gone):
            service.everything(vault=v, patient_id=pid)


@pytest.mark.parametrize(
    ("header", "expected"),
    [(None, None), ('W/"3"', 3), ('"3"', 3), ("3", 3), (' W/"12" ', 12)],
)
def test_parse_if_match(header: str | None, expected: int | None) -> None:
    assert service.parse_if_match(header) == expected


@pytest.mark.parametrize("header", ['W/"x"', "*", "", 'W/"1.5"', "W/"])
def test_parse_if_match_rejects(header: str) -> None:
    with pytest.raises(BadRequest):
        service.parse_if_match(header)


def test_import_mode_keeps_source_ids_and_writes_nothing_twice(vault_env: Any) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:p-1",
                "resource": {**_patient(), "id": "p-1"},
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "fullUrl": "urn:uuid:o-1",
                "resource": {**_obs("x"), "id": "o-1", "subject": {"reference": "urn:uuid:p-1"}},
                "request": {"method": "POST", "url": "Observation"},
            },
        ],
    }
    written: list[service.Written] = []
    with open_vault(vault_env) as v:
        record_bundles.process(vault=v, bundle=bundle, stable_ids=True, observer=written.append)
    assert [(w.rtype, w.rid, w.created, w.changed) for w in written] == [
        ("Patient", "p-1", True, True),
        ("Observation", "o-1", True, True),
    ]
    written.clear()
    with open_vault(vault_env) as v:
        record_bundles.process(vault=v, bundle=bundle, stable_ids=True, observer=written.append)
    assert [(w.version, w.created, w.changed) for w in written] == [(1, False, False), (1, False, False)]
    with open_vault(vault_env) as v:
        assert service.read(vault=v, rtype="Observation", rid="o-1")["subject"] == {"reference": "Patient/p-1"}


def test_conditional_reference_in_a_transaction(vault_env: Any) -> None:
    with open_vault(vault_env) as v:
        pid = service.create(vault=v, resource=_patient(identifier=[{"system": "urn:mrn", "value": "9"}])).rid
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": {**_obs("x"), "subject": {"reference": "Patient?identifier=urn:mrn|9"}},
                "request": {"method": "POST", "url": "Observation"},
            }
        ],
    }
    with open_vault(vault_env) as v:
        result = record_bundles.process(vault=v, bundle=bundle)
    oid = result["entry"][0]["response"]["location"].split("/")[1]
    with open_vault(vault_env) as v:
        assert service.read(vault=v, rtype="Observation", rid=oid)["subject"] == {"reference": f"Patient/{pid}"}
        bundle["entry"][0]["resource"]["subject"] = {"reference": "Patient?identifier=urn:mrn|nobody"}
        with pytest.raises(BadRequest):
            record_bundles.process(vault=v, bundle=bundle)
        service.create(vault=v, resource=_patient(identifier=[{"system": "urn:mrn", "value": "9"}]))
        bundle["entry"][0]["resource"]["subject"] = {"reference": "Patient?identifier=urn:mrn|9"}
        with pytest.raises(PreconditionFailed):
            record_bundles.process(vault=v, bundle=bundle)


# --- search primitives the service relies on (fhir.search) ---------------------------------------


def _utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "low", "high"),
    [
        ("2024", _utc(2024, 1, 1), _utc(2025, 1, 1)),
        ("2024-02", _utc(2024, 2, 1), _utc(2024, 3, 1)),
        ("2024-12", _utc(2024, 12, 1), _utc(2025, 1, 1)),
        ("2024-02-29", _utc(2024, 2, 29), _utc(2024, 3, 1)),
        ("2024-05-01T10:00Z", _utc(2024, 5, 1, 10, 0), _utc(2024, 5, 1, 10, 1)),
        ("2024-05-01T10:00:00+02:00", _utc(2024, 5, 1, 8, 0), _utc(2024, 5, 1, 8, 0, 1)),
        ("2024-05-01T10:00:00.5Z", _utc(2024, 5, 1, 10, 0, 0, 500000), _utc(2024, 5, 1, 10, 0, 0, 600000)),
        ("2024-05-01T10:00:00.123Z", _utc(2024, 5, 1, 10, 0, 0, 123000), _utc(2024, 5, 1, 10, 0, 0, 124000)),
        ("2024-05-01T10:00:00.1234567Z", _utc(2024, 5, 1, 10, 0, 0, 123456), _utc(2024, 5, 1, 10, 0, 0, 123457)),
    ],
)
def test_date_range_has_the_precision_written(text: str, low: datetime, high: datetime) -> None:
    assert fs.date_range(text) == (low, high)


@pytest.mark.parametrize(
    "text", ["9999-12-31", "9999", "0001-01-01T00:00:00+01:00", "2024-13", "2024-02-30", "20x4", ""]
)
def test_date_range_rejects_with_value_error(text: str) -> None:
    with pytest.raises(ValueError, match=r"\S"):
        fs.date_range(text)
    with pytest.raises(UnsupportedSearch):
        fs.parse_date_query(f"ge{text}")


@pytest.mark.parametrize(
    ("prefix", "expected"),
    # Target: a period from 2014-12-15 to 2015-01-15 (it straddles the start of 2015). Search: 2015.
    [("eq", False), ("ne", True), ("gt", False), ("ge", False), ("lt", True), ("le", True)],
)
def test_date_prefixes_follow_r4(prefix: str, expected: bool) -> None:
    target = (_utc(2014, 12, 15), _utc(2015, 1, 16))
    assert fs.date_matches(target, prefix, fs.date_range("2015")) is expected


def test_year_index_window() -> None:
    assert fs.year_span(fs.date_range("2015-06")) == ["2015"]
    assert fs.year_span((_utc(2014, 12, 31), _utc(2015, 1, 2))) == ["2014", "2015"]
    assert fs.year_span(fs.date_range("1750")) is None  # outside the years a query enumerates: "open"
    assert fs.year_span((_utc(2000, 1, 1), _utc(2020, 1, 1))) is None  # too wide
    assert fs.query_years("ne", fs.date_range("2015")) == []
