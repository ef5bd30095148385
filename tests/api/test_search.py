"""Search on a small hand-made data set whose every expected answer is written out by hand.

The data set is created once per backend (module scope) through the API and only read afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.api.support import JSON_HEADERS, ok, outcome, search_all

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
OBS_CAT = "http://terminology.hl7.org/CodeSystem/observation-category"
COND_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
MRN = "urn:oid:1.2.36.146.595.217.0.1"


def cc(system: str | None, code: str) -> dict[str, Any]:
    coding: dict[str, Any] = {"code": code}
    if system:
        coding["system"] = system
    return {"coding": [coding]}


@dataclass
class World:
    api: Any
    ids: dict[str, str] = field(default_factory=dict)  # our label -> server id
    updated: dict[str, str] = field(default_factory=dict)  # label -> meta.lastUpdated
    types: dict[str, str] = field(default_factory=dict)  # label -> resource type

    def add(self, label: str, resource: dict[str, Any]) -> str:
        created = ok(self.api.post(f"/fhir/{resource['resourceType']}", json=resource, headers=JSON_HEADERS), 201)
        self.ids[label] = created["id"]
        self.updated[label] = created["meta"]["lastUpdated"]
        self.types[label] = resource["resourceType"]
        return str(created["id"])

    def ref(self, label: str) -> dict[str, str]:
        return {"reference": f"{self.types[label]}/{self.ids[label]}"}

    def labels(self, rtype: str, params: Any, headers: dict[str, str] | None = None) -> list[str]:
        """Labels of the matches, in server order, after walking every page."""
        total, found = search_all(self.api, f"/fhir/{rtype}", params, headers)
        back = {v: k for k, v in self.ids.items()}
        got = [back.get(r["id"], "?" + r["id"]) for r in found]
        assert total == len(got), (params, total, got)
        assert len(set(got)) == len(got), f"duplicates across pages: {got}"
        return got


# Expected answers refer to these labels. Patients:
#   p1 Zéphyr, Amélie Rose, born 1980-02-29; p2 Brown, Bob, born 1975-07; p3 Brown, Carol, born 2001-12-31.
# Observation date ranges (UTC): o1 2024-05-01T10:00:00; o2 2024-05-02T07:30:00 (written +02:00);
# o3 period 2023-12-31T22:00 .. 2024-01-01T02:00; o4 the year 2023; o5 the day 2024-05-01; o6 none;
# o7 2022-06-15T12:00.


def _build(world: World) -> None:
    w = world
    w.add(
        "p1",
        {
            "resourceType": "Patient",
            "identifier": [
                {"system": MRN, "value": "MRN-1"},
                {"system": "http://hl7.org/fhir/sid/us-ssn", "value": "999-11-2222"},
            ],
            "name": [{"family": "Zéphyr", "given": ["Amélie", "Rose"]}],
            "birthDate": "1980-02-29",
            "telecom": [
                {"system": "phone", "value": "(555) 010-1111"},
                {"system": "email", "value": "Amelie@Example.org"},
            ],
            "gender": "female",
        },
    )
    w.add(
        "p2",
        {
            "resourceType": "Patient",
            "identifier": [{"system": MRN, "value": "MRN-2"}],
            "name": [{"family": "Brown", "given": ["Bob"]}],
            "birthDate": "1975-07",
            "telecom": [{"system": "phone", "value": "555-010-2222"}],
            "gender": "male",
        },
    )
    w.add(
        "p3",
        {
            "resourceType": "Patient",
            "identifier": [{"value": "NOSYS-3"}],
            "name": [{"family": "Brown", "given": ["Carol"]}],
            "birthDate": "2001-12-31",
            "telecom": [{"system": "email", "value": "carol@example.org"}],
            "gender": "female",
        },
    )
    w.add(
        "e1", {"resourceType": "Encounter", "status": "in-progress", "class": {"code": "AMB"}, "subject": w.ref("p1")}
    )

    def obs(label: str, patient: str, code: dict[str, Any], status: str, category: str | None, **date: Any) -> None:
        doc: dict[str, Any] = {
            "resourceType": "Observation",
            "status": status,
            "code": code,
            "subject": w.ref(patient),
            **date,
        }
        if category:
            doc["category"] = [cc(OBS_CAT, category)]
        w.add(label, doc)

    obs(
        "o1",
        "p1",
        cc(LOINC, "8867-4"),
        "final",
        "vital-signs",
        effectiveDateTime="2024-05-01T10:00:00Z",
        encounter=w.ref("e1"),
    )
    obs("o2", "p1", cc(LOINC, "8867-4"), "amended", "vital-signs", effectiveDateTime="2024-05-02T09:30:00+02:00")
    obs(
        "o3",
        "p1",
        {"coding": [{"system": LOINC, "code": "2093-3"}, {"system": SNOMED, "code": "1234"}]},
        "final",
        "laboratory",
        effectivePeriod={"start": "2023-12-31T22:00:00Z", "end": "2024-01-01T02:00:00Z"},
    )
    obs("o4", "p1", cc(None, "local-1"), "preliminary", "survey", effectiveDateTime="2023")
    obs("o5", "p2", cc(LOINC, "8867-4"), "final", "vital-signs", effectiveDateTime="2024-05-01")
    obs("o6", "p2", cc(LOINC, "29463-7"), "cancelled", None)
    obs(
        "o7",
        "p3",
        {"coding": [{"system": LOINC, "code": "8867-4"}, {"system": "http://acme.org/codes", "code": "local-1"}]},
        "final",
        "vital-signs",
        effectiveDateTime="2022-06-15T12:00:00Z",
    )
    w.add(
        "c1",
        {
            "resourceType": "Condition",
            "subject": w.ref("p1"),
            "code": cc(SNOMED, "44054006"),
            "clinicalStatus": cc(COND_CLINICAL, "active"),
            "category": [cc(None, "problem-list-item")],
            "onsetDateTime": "2019-03-04",
        },
    )
    w.add(
        "c2",
        {
            "resourceType": "Condition",
            "subject": w.ref("p1"),
            "code": cc(SNOMED, "195662009"),
            "clinicalStatus": cc(COND_CLINICAL, "resolved"),
            "onsetDateTime": "2010",
            "recordedDate": "2011-01-01",
        },
    )
    w.add(
        "c3",
        {
            "resourceType": "Condition",
            "subject": w.ref("p2"),
            "code": cc(SNOMED, "44054006"),
            "clinicalStatus": cc(COND_CLINICAL, "active"),
            "onsetPeriod": {"start": "2020-01-01"},
        },
    )
    for label, (resource, _cases) in TYPE_CASES.items():
        doc = dict(resource)
        for key in ("subject", "patient"):
            if doc.get(key) == "P1":
                doc[key] = w.ref("p1")
        w.add(label, doc)


P1 = "P1"  # replaced by a reference to p1 when the resource is created
TYPE_CASES: dict[str, tuple[dict[str, Any], list[tuple[str, str, str]]]] = {
    # label: (resource, [(param, a matching value, a value that must not match)])
    "allergy": (
        {
            "resourceType": "AllergyIntolerance",
            "patient": P1,
            "code": cc(SNOMED, "91936005"),
            "category": ["medication"],
            "clinicalStatus": cc("http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "active"),
            "verificationStatus": cc(
                "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification", "confirmed"
            ),
            "criticality": "high",
            "recordedDate": "2021-04-05",
        },
        [
            ("code", f"{SNOMED}|91936005", "91936006"),
            ("category", "medication", "food"),
            ("clinical-status", "active", "inactive"),
            ("verification-status", "confirmed", "refuted"),
            ("criticality", "high", "low"),
            ("date", "2021-04", "2021-05"),
        ],
    ),
    "medreq": (
        {
            "resourceType": "MedicationRequest",
            "status": "active",
            "intent": "order",
            "subject": P1,
            "medicationCodeableConcept": cc("http://www.nlm.nih.gov/research/umls/rxnorm", "313782"),
            "category": [cc(None, "outpatient")],
            "authoredOn": "2021-04-05T10:00:00Z",
        },
        [
            ("code", "313782", "313783"),
            ("status", "active", "stopped"),
            ("intent", "order", "plan"),
            ("category", "outpatient", "inpatient"),
            ("date", "ge2021-04-05", "lt2021-04-05"),
            ("authoredon", "2021-04-05", "2021-04-06"),
        ],
    ),
    "medstmt": (
        {
            "resourceType": "MedicationStatement",
            "status": "active",
            "subject": P1,
            "medicationCodeableConcept": cc("http://www.nlm.nih.gov/research/umls/rxnorm", "313782"),
            "category": cc(None, "community"),
            "effectivePeriod": {"start": "2020-01-01", "end": "2020-06-30"},
        },
        [
            ("code", "313782", "1"),
            ("status", "active", "completed"),
            ("category", "community", "inpatient"),
            ("date", "2020", "2020-03"),
            ("effective", "le2020-06-30", "lt2020-01-01"),
        ],
    ),
    "immunization": (
        {
            "resourceType": "Immunization",
            "status": "completed",
            "patient": P1,
            "vaccineCode": cc("http://hl7.org/fhir/sid/cvx", "140"),
            "occurrenceDateTime": "2021-10-01T08:00:00Z",
        },
        [
            ("code", "http://hl7.org/fhir/sid/cvx|140", "http://hl7.org/fhir/sid/cvx|141"),
            ("vaccine-code", "140", "141"),
            ("status", "completed", "not-done"),
            ("date", "gt2021-09-30", "gt2021-10-01"),
        ],
    ),
    "procedure": (
        {
            "resourceType": "Procedure",
            "status": "completed",
            "subject": P1,
            "code": cc(SNOMED, "80146002"),
            "category": cc(SNOMED, "387713003"),
            "performedPeriod": {"start": "2018-02-01T10:00:00Z", "end": "2018-02-01T11:00:00Z"},
        },
        [
            ("code", "80146002", "80146003"),
            ("category", f"{SNOMED}|", "http://other|"),
            ("status", "completed", "in-progress"),
            ("date", "2018-02-01", "2018-02-02"),
        ],
    ),
    "encounter": (
        {
            "resourceType": "Encounter",
            "status": "finished",
            "subject": P1,
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "EMER"},
            "type": [cc(SNOMED, "50849002")],
            "period": {"start": "2017-05-05T20:00:00Z", "end": "2017-05-06T01:00:00Z"},
        },
        [
            ("class", "EMER", "AMB"),
            ("type", "50849002", "1"),
            ("code", f"{SNOMED}|50849002", "|50849002"),
            ("status", "finished", "planned"),
            ("date", "ge2017-05-05", "2017-05-05"),
        ],
    ),
    "report": (
        {
            "resourceType": "DiagnosticReport",
            "status": "final",
            "subject": P1,
            "code": cc(LOINC, "58410-2"),
            "category": [cc("http://terminology.hl7.org/CodeSystem/v2-0074", "LAB")],
            "effectiveDateTime": "2016-01-01T00:00:00Z",
        },
        [
            ("code", "58410-2", "1"),
            ("category", "LAB", "RAD"),
            ("status", "final", "partial"),
            ("date", "2016-01-01", "lt2016"),
        ],
    ),
    "document": (
        {
            "resourceType": "DocumentReference",
            "status": "current",
            "subject": P1,
            "type": cc(LOINC, "34117-2"),
            "category": [cc(None, "clinical-note")],
            "date": "2015-03-03T10:00:00Z",
            "content": [{"attachment": {"contentType": "text/plain", "data": "aGVsbG8="}}],
        },
        [
            ("type", "34117-2", "1"),
            ("code", "34117-2", "2"),
            ("category", "clinical-note", "x"),
            ("status", "current", "superseded"),
            ("date", "2015", "2014"),
        ],
    ),
    "careplan": (
        {
            "resourceType": "CarePlan",
            "status": "active",
            "intent": "plan",
            "subject": P1,
            "category": [cc(SNOMED, "734163000")],
            "period": {"start": "2014-06-01"},
        },
        [
            ("category", "734163000", "1"),
            ("status", "active", "revoked"),
            ("intent", "plan", "order"),
            ("date", "gt2030", "lt2014"),
        ],
    ),
    "flag": (
        {
            "resourceType": "Flag",
            "status": "active",
            "subject": P1,
            "code": cc(SNOMED, "39579001"),
            "category": [cc(None, "safety")],
            "period": {"start": "2013-01-01", "end": "2013-12-31"},
        },
        [
            ("code", "39579001", "1"),
            ("category", "safety", "admin"),
            ("status", "active", "inactive"),
            ("date", "2013", "2013-01"),
        ],
    ),
    "consent": (
        {
            "resourceType": "Consent",
            "status": "active",
            "patient": P1,
            "scope": cc(None, "patient-privacy"),
            "category": [cc(LOINC, "59284-0")],
            "dateTime": "2012-12-12T12:12:12Z",
            "policyRule": cc(None, "OPTIN"),
            "provision": {
                "type": "permit",
                "period": {"start": "2012-12-12T00:00:00Z", "end": "2013-12-12T00:00:00Z"},
                "actor": [{"role": cc(None, "IRCP"), "reference": {"reference": "Practitioner/dr-1"}}],
            },
        },
        [
            ("category", "59284-0", "1"),
            ("status", "active", "draft"),
            ("date", "le2012-12-12", "gt2012-12-12"),
            ("actor", "Practitioner/dr-1", "Practitioner/dr-2"),
            ("period", "ge2013-06-01", "gt2014-01-01"),
        ],
    ),
    "practitioner": (
        {
            "resourceType": "Practitioner",
            "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": "9941339108"}],
            "name": [{"family": "Kassulke", "given": ["June"], "prefix": ["Dr."]}],
        },
        [
            ("identifier", "http://hl7.org/fhir/sid/us-npi|9941339108", "9941339109"),
            ("family", "kassulke", "kass"),
            ("given", "JUNE", "jun"),
            ("name", "Kassulke", "Kassulk"),
        ],
    ),
    "organization": (
        {
            "resourceType": "Organization",
            "identifier": [{"system": "urn:org", "value": "ORG-1"}],
            "name": "Lahey Hospital",
        },
        [("identifier", "ORG-1", "ORG-2"), ("name", "lahey hospital", "lahey")],
    ),
}


@pytest.fixture(scope="module")
def world(module_api: Any) -> World:
    w = World(module_api)
    _build(w)
    return w


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"_id": "o1"}, ["o1"]),
        ({"_id": "o1,o3"}, ["o1", "o3"]),
        ({"_id": "o1", "code": "2093-3"}, []),
        ({"patient": "p1"}, ["o1", "o2", "o3", "o4"]),
        ({"patient": "Patient/p2"}, ["o5", "o6"]),
        ({"subject": "Patient/p3"}, ["o7"]),
        ({"subject": "p1,p2"}, ["o1", "o2", "o3", "o4", "o5", "o6"]),
        ({"patient": "nobody"}, []),
        ({"code": "8867-4"}, ["o1", "o2", "o5", "o7"]),
        ({"code": f"{LOINC}|8867-4"}, ["o1", "o2", "o5", "o7"]),
        ({"code": f"{SNOMED}|1234"}, ["o3"]),
        ({"code": "|local-1"}, ["o4"]),
        ({"code": "local-1"}, ["o4", "o7"]),
        ({"code": "http://acme.org/codes|"}, ["o7"]),
        ({"code": f"{LOINC}|"}, ["o1", "o2", "o3", "o5", "o6", "o7"]),
        ({"code": "8867-4,29463-7"}, ["o1", "o2", "o5", "o6", "o7"]),
        ({"code": "http://other.org|8867-4"}, []),
        ({"code": "|8867-4"}, []),
        ({"patient": "p1", "code": "8867-4"}, ["o1", "o2"]),
        ({"patient": "p1", "code": f"{LOINC}|"}, ["o1", "o2", "o3"]),
        ({"category": "vital-signs"}, ["o1", "o2", "o5", "o7"]),
        ({"category": f"{OBS_CAT}|laboratory"}, ["o3"]),
        ({"status": "final"}, ["o1", "o3", "o5", "o7"]),
        ({"status": "final,amended"}, ["o1", "o2", "o3", "o5", "o7"]),
        ({"status": "final", "category": "vital-signs", "patient": "p1"}, ["o1"]),
        ({"encounter": "e1"}, ["o1"]),
        ({"encounter": "Encounter/e1"}, ["o1"]),
        # dates: eq is "contained in", partial dates are ranges, the prefixes follow R4 search 3.1.1.4.7
        ({"date": "2024"}, ["o1", "o2", "o5"]),
        ({"date": "eq2023"}, ["o4"]),
        ({"date": "2024-05"}, ["o1", "o2", "o5"]),
        ({"date": "2024-05-01"}, ["o1", "o5"]),
        ({"date": "2024-05-01T10:00:00Z"}, ["o1"]),
        ({"date": "2024-05-02T09:30:00+02:00"}, ["o2"]),
        ({"date": "2024-05-02T07:30Z"}, ["o2"]),
        ({"date": "ge2024-05-02"}, ["o2"]),
        ({"date": "gt2024-05-01"}, ["o2"]),
        ({"date": "lt2024"}, ["o3", "o4", "o7"]),
        ({"date": "le2023-12-31"}, ["o4", "o7"]),
        ({"date": "ge2024-01-01"}, ["o1", "o2", "o5"]),
        ({"date": "gt2023-12-31T23:00Z"}, ["o1", "o2", "o3", "o4", "o5"]),  # o4 (the year 2023) ends after 23:01
        ({"date": "ne2024"}, ["o3", "o4", "o7"]),
        ({"date": "lt2023,gt2024-05-01"}, ["o2", "o7"]),
        ({"date": ["ge2024-05-01", "lt2024-05-02"]}, ["o1", "o5"]),
        ({"date": "lt1900"}, []),
        ({"date": "gt2100"}, []),
        # the same within one patient (a different plan: year tokens narrow the candidates first)
        ({"patient": "p1", "date": "ne2024"}, ["o3", "o4"]),
        ({"patient": "p1", "date": "lt2024"}, ["o3", "o4"]),
        ({"patient": "p1", "date": "le2023-12-31"}, ["o4"]),
        ({"patient": "p1", "date": "ge2023-12-31T23:00Z"}, ["o1", "o2", "o3", "o4"]),
        ({"patient": "p1", "date": "2024-01-01"}, []),
        ({"patient": "p1,p2", "date": "2024-05-01"}, ["o1", "o5"]),
    ],
)
def test_observation_search(world: World, params: dict[str, Any], expected: list[str]) -> None:
    resolved = {k: _resolve(world, v) for k, v in params.items()}
    assert sorted(world.labels("Observation", resolved)) == sorted(expected)


def _resolve(world: World, value: Any) -> Any:
    """Labels inside a parameter value become server ids (p1 -> its id, Patient/p1 -> Patient/<id>)."""
    if isinstance(value, list):
        return [_resolve(world, v) for v in value]
    parts = []
    for item in value.split(","):
        head, _, tail = item.rpartition("/")
        if tail in world.ids and not (head and "." in head):
            item = f"{head}/{world.ids[tail]}" if head else world.ids[tail]  # noqa: PLW2901
        parts.append(item)
    return ",".join(parts)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"identifier": f"{MRN}|MRN-1"}, ["p1"]),
        ({"identifier": "MRN-2"}, ["p2"]),
        ({"identifier": "|NOSYS-3"}, ["p3"]),
        ({"identifier": "NOSYS-3"}, ["p3"]),
        ({"identifier": "|MRN-1"}, []),
        ({"identifier": "http://hl7.org/fhir/sid/us-ssn|999-11-2222"}, ["p1"]),
        ({"identifier": "urn:other|MRN-1"}, []),
        ({"identifier": "MRN-1,MRN-2"}, ["p1", "p2"]),
        ({"identifier": f"{MRN}|"}, ["p1", "p2"]),  # any value of that system
        ({"identifier": "urn:other|"}, []),
        ({"family": "brown"}, ["p2", "p3"]),
        ({"family": "BROWN"}, ["p2", "p3"]),
        ({"family": "zephyr"}, ["p1"]),
        ({"family": "Zéphyr"}, ["p1"]),
        ({"family": "bro"}, []),  # whole-value match, as the CapabilityStatement says
        ({"given": "amelie"}, ["p1"]),
        ({"given": "Rose"}, ["p1"]),
        ({"given": "carol,bob"}, ["p2", "p3"]),
        ({"name": "brown"}, ["p2", "p3"]),
        ({"name": "rose"}, ["p1"]),
        ({"birthdate": "1980-02-29"}, ["p1"]),
        ({"birthdate": "1975"}, ["p2"]),
        ({"birthdate": "1975-07-04"}, []),
        ({"birthdate": "1980-02"}, ["p1"]),
        ({"birthdate": "ge2000"}, ["p3"]),
        ({"birthdate": "lt1980"}, ["p2"]),
        ({"birthdate": "le1980-02-29"}, ["p1", "p2"]),
        ({"birthdate": "gt1980-02-29"}, ["p3"]),
        ({"birthdate": "ne1980-02-29"}, ["p2", "p3"]),
        ({"phone": "5550101111"}, ["p1"]),
        ({"phone": "(555) 010-2222"}, ["p2"]),
        ({"phone": "555-010-1111"}, ["p1"]),
        ({"phone": "555-010-3333"}, []),
        ({"email": "amelie@example.org"}, ["p1"]),
        ({"email": "CAROL@example.org"}, ["p3"]),
        ({"gender": "female"}, ["p1", "p3"]),
        ({"family": "brown", "gender": "female"}, ["p3"]),
        ({"family": "brown", "birthdate": "lt2000"}, ["p2"]),
        ({"family": "brown", "given": "bob"}, ["p2"]),
        ({"identifier": "MRN-1", "_id": "p2"}, []),
        ({"_id": "p2,p3"}, ["p2", "p3"]),
    ],
)
def test_patient_search(world: World, params: dict[str, str], expected: list[str]) -> None:
    resolved = {k: (_resolve(world, v) if k == "_id" else v) for k, v in params.items()}
    assert sorted(world.labels("Patient", resolved)) == sorted(expected)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"clinical-status": "active"}, ["c1", "c3"]),
        ({"clinical-status": f"{COND_CLINICAL}|resolved"}, ["c2"]),
        ({"clinical-status": "active", "patient": "p1"}, ["c1"]),
        ({"code": f"{SNOMED}|44054006"}, ["c1", "c3"]),
        ({"category": "problem-list-item"}, ["c1"]),
        ({"date": "2011"}, ["c2"]),  # any of onset[x] or recordedDate
        ({"onset-date": "2011"}, []),
        ({"onset-date": "2010"}, ["c2"]),
        ({"recorded-date": "2011-01-01"}, ["c2"]),
        ({"date": "ge2020"}, ["c3"]),  # an open-ended onset period
        ({"date": "lt2019-03-04"}, ["c2"]),
    ],
)
def test_condition_search(world: World, params: dict[str, str], expected: list[str]) -> None:
    resolved = {k: _resolve(world, v) for k, v in params.items()}
    assert sorted(world.labels("Condition", resolved)) == sorted(expected)


CASE_PARAMS = [(label, case) for label, (_res, cases) in TYPE_CASES.items() for case in cases]


@pytest.mark.parametrize(("label", "case"), CASE_PARAMS, ids=[f"{label}-{case[0]}" for label, case in CASE_PARAMS])
def test_each_listed_type_and_parameter(world: World, label: str, case: tuple[str, str, str]) -> None:
    param, good, bad = case
    rtype = TYPE_CASES[label][0]["resourceType"]
    assert label in world.labels(rtype, {param: good})
    assert label not in world.labels(rtype, {param: bad})
    if rtype not in ("Practitioner", "Organization"):
        assert world.labels(rtype, {param: good, "patient": world.ids["p1"]}) == [label]
        assert world.labels(rtype, {param: good, "patient": world.ids["p2"]}) == []


def test_paging_walks_every_match_exactly_once(world: World) -> None:
    everything = world.labels("Observation", {})
    assert sorted(everything) == ["o1", "o2", "o3", "o4", "o5", "o6", "o7"]
    for count in (1, 2, 3, 7, 50):
        assert world.labels("Observation", {"_count": count}) == everything
    page = ok(world.api.get("/fhir/Observation", params={"_count": 3, "code": "8867-4"}))
    assert page["total"] == 4
    assert len(page["entry"]) == 3
    links = {link["relation"]: link["url"] for link in page["link"]}
    assert "code=8867-4" in links["next"]
    assert "_count=3" in links["next"]
    assert "previous" not in links
    # _count=0: just the total.
    summary = ok(world.api.get("/fhir/Observation", params={"_count": 0, "code": "8867-4"}))
    assert summary["total"] == 4
    assert summary["entry"] == []
    assert "next" not in {link["relation"] for link in summary["link"]}


def test_sort_by_date(world: World) -> None:
    up = ["o7", "o4", "o3", "o5", "o1", "o2"]
    assert world.labels("Observation", {"date": "ge2000", "_sort": "date"}) == up
    assert world.labels("Observation", {"date": "ge2000", "_sort": "-date"}) == up[::-1]
    for count in (1, 4):
        assert world.labels("Observation", {"date": "ge2000", "_sort": "date", "_count": count}) == up
        assert world.labels("Observation", {"date": "ge2000", "_sort": "-date", "_count": count}) == up[::-1]
    assert world.labels("Observation", {"patient": world.ids["p1"], "_sort": "-date"}) == ["o2", "o1", "o3", "o4"]
    assert world.labels("Patient", {"_sort": "birthdate"}) == ["p2", "p1", "p3"]
    created = world.labels("Observation", {"_sort": "_lastUpdated"})
    assert created == ["o1", "o2", "o3", "o4", "o5", "o6", "o7"]
    assert world.labels("Observation", {"_sort": "-_lastUpdated"}) == created[::-1]


def test_last_updated(world: World) -> None:
    stamps = {label: world.updated[label] for label in world.ids if world.types[label] == "Observation"}
    pivot = stamps["o4"]  # a meta.lastUpdated value, milliseconds, as clients see it

    def expect(test: Any) -> list[str]:
        return sorted(label for label, stamp in stamps.items() if test(stamp))

    assert sorted(world.labels("Observation", {"_lastUpdated": pivot})) == expect(lambda s: s == pivot)
    assert "o4" in world.labels("Observation", {"_lastUpdated": pivot})
    assert sorted(world.labels("Observation", {"_lastUpdated": f"ge{pivot}"})) == expect(lambda s: s >= pivot)
    assert sorted(world.labels("Observation", {"_lastUpdated": f"gt{pivot}"})) == expect(lambda s: s > pivot)
    assert sorted(world.labels("Observation", {"_lastUpdated": f"le{pivot}"})) == expect(lambda s: s <= pivot)
    assert sorted(world.labels("Observation", {"_lastUpdated": f"lt{pivot}"})) == expect(lambda s: s < pivot)
    assert world.labels("Observation", {"_lastUpdated": "lt2000"}) == []
    year = pivot[:4]
    assert sorted(world.labels("Observation", {"_lastUpdated": year})) == sorted(stamps)
    assert sorted(world.labels("Observation", {"_lastUpdated": f"ge{pivot}", "patient": world.ids["p1"]})) == expect(
        lambda s: s >= pivot and s <= stamps["o4"]
    )


def test_unknown_parameter_and_lenient_handling(world: World) -> None:
    outcome(world.api.get("/fhir/Observation", params={"colour": "red"}), 400)
    lenient = {"Prefer": "handling=lenient"}
    assert sorted(world.labels("Observation", {"colour": "red", "code": "2093-3"}, headers=lenient)) == ["o3"]
    outcome(world.api.get("/fhir/Patient", params={"code": "x"}), 400)


def test_post_search_matches_get(world: World) -> None:
    body = ok(world.api.post("/fhir/Observation/_search", data={"code": "8867-4", "patient": world.ids["p1"]}))
    assert sorted(e["resource"]["id"] for e in body["entry"]) == sorted([world.ids["o1"], world.ids["o2"]])
    assert body["total"] == 2
