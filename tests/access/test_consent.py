"""Consent grants: our Consent shape validates as R4B, reads back exactly, and odd Consents grant nothing."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from fhir.resources.R4B.consent import Consent
from hypothesis import given, settings
from hypothesis import strategies as st

from medvault.access.consent import Grant, consent_resource, grant_from_consent, revoked
from medvault.access.errors import ClockInvalid, ConsentInvalid
from medvault.access.labels import SENSITIVE_TAGS

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
START = datetime(2025, 3, 1, tzinfo=UTC)
END = datetime(2026, 3, 1, tzinfo=UTC)
TYPES = ["Observation", "Condition", "MedicationRequest", "Procedure", "Encounter", "DiagnosticReport", "Patient"]


def build(**overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "patient_id": "p1",
        "grantee": "Practitioner/dr1",
        "resource_types": None,
        "sensitive": frozenset(),
        "start": START,
        "end": END,
        "now": NOW,
    }
    args.update(overrides)
    return consent_resource(**args)


def stored(doc: dict[str, Any], consent_id: str = "c1") -> dict[str, Any]:
    """What the store returns: the same Consent with its id and meta."""
    return {**doc, "id": consent_id, "meta": {"versionId": "1", "lastUpdated": "2025-03-01T12:00:00+00:00"}}


def expected(**overrides: Any) -> Grant:
    fields: dict[str, Any] = {
        "consent_id": "c1",
        "patient_id": "p1",
        "grantee": "Practitioner/dr1",
        "resource_types": None,
        "sensitive": frozenset(),
        "start": START,
        "end": END,
        "active": True,
    }
    fields.update(overrides)
    return Grant(**fields)


# -- round trip -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        {},
        {"resource_types": frozenset({"Observation", "Condition"})},
        {"sensitive": frozenset({"hiv", "mental-health"})},
        {"sensitive": SENSITIVE_TAGS},
        {"grantee": "Organization/org-9"},
        {"start": None, "end": None},
        {"start": None},
        {"end": None},
        {"start": START, "end": START},
    ],
)
def test_round_trip(args: dict[str, Any]) -> None:
    doc = build(**args)
    Consent.model_validate(doc)
    Consent.model_validate(stored(doc))
    assert grant_from_consent(stored(doc)) == expected(**args)


def test_shape() -> None:
    doc = build(resource_types=frozenset({"Observation"}), sensitive=frozenset({"restricted", "genetics"}))
    assert doc["status"] == "active"
    assert doc["scope"]["coding"][0]["code"] == "patient-privacy"
    assert doc["category"][0]["coding"][0] == {
        "system": "http://loinc.org",
        "code": "59284-0",
        "display": "Patient Consent",
    }
    assert doc["patient"] == {"reference": "Patient/p1"}
    assert doc["dateTime"] == "2025-03-01T12:00:00+00:00"
    provision = doc["provision"]
    assert provision["type"] == "permit"
    assert provision["period"] == {"start": "2025-03-01T00:00:00+00:00", "end": "2026-03-01T00:00:00+00:00"}
    assert provision["actor"][0]["role"]["coding"][0]["code"] == "IRCP"
    assert provision["actor"][0]["reference"] == {"reference": "Practitioner/dr1"}
    assert provision["class"] == [{"system": "http://hl7.org/fhir/resource-types", "code": "Observation"}]
    assert [(c["system"].rsplit("/", 1)[-1], c["code"]) for c in provision["securityLabel"]] == [
        ("v3-ActCode", "GDIS"),
        ("v3-Confidentiality", "R"),
    ]
    assert "class" not in build()["provision"]
    assert "securityLabel" not in build()["provision"]


def test_times_are_written_in_utc() -> None:
    plus_two = timezone(timedelta(hours=2))
    doc = build(start=datetime(2025, 3, 1, 2, 0, tzinfo=plus_two))
    assert doc["provision"]["period"]["start"] == "2025-03-01T00:00:00+00:00"
    grant = grant_from_consent(stored(doc))
    assert grant is not None
    assert grant.start == START


@settings(max_examples=60, deadline=None)
@given(
    types=st.none() | st.frozensets(st.sampled_from(TYPES), min_size=1),
    sensitive=st.frozensets(st.sampled_from(sorted(SENSITIVE_TAGS))),
    start=st.none()
    | st.datetimes(timezones=st.just(UTC), min_value=datetime(2000, 1, 1), max_value=datetime(2040, 1, 1)),
    length=st.none() | st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=4000)),
    grantee=st.sampled_from(["Practitioner/a", "Organization/b-1.2", "Practitioner/" + "x" * 64]),
)
def test_round_trip_property(
    types: frozenset[str] | None,
    sensitive: frozenset[str],
    start: datetime | None,
    length: timedelta | None,
    grantee: str,
) -> None:
    end = None if length is None else (start or NOW) + length
    doc = build(resource_types=types, sensitive=sensitive, start=start, end=end, grantee=grantee)
    Consent.model_validate(doc)
    assert grant_from_consent(stored(doc)) == expected(
        resource_types=types, sensitive=sensitive, start=start, end=end, grantee=grantee
    )


def test_revoked_is_inactive_and_leaves_the_original_alone() -> None:
    doc = stored(build())
    before = copy.deepcopy(doc)
    off = revoked(doc)
    assert doc == before
    assert off["status"] == "inactive"
    Consent.model_validate(off)
    assert grant_from_consent(off) == expected(active=False)
    with pytest.raises(ConsentInvalid):
        revoked({"resourceType": "Observation"})


# -- consent_resource refuses what it cannot encode ---------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        {"grantee": "Patient/p2"},
        {"grantee": "Practitioner/"},
        {"grantee": "Practitioner/a/b"},
        {"grantee": "https://example.org/Practitioner/1"},
        {"grantee": "Practitioner/" + "x" * 65},
        {"patient_id": "p 1"},
        {"patient_id": ""},
        {"resource_types": frozenset()},
        {"resource_types": frozenset({"Observation", "NotAType"})},
        {"sensitive": frozenset({"hiv", "astrology"})},
        {"start": END, "end": START},
    ],
)
def test_consent_resource_refuses(args: dict[str, Any]) -> None:
    with pytest.raises(ConsentInvalid):
        build(**args)


@pytest.mark.parametrize("field", ["start", "end", "now"])
def test_naive_times_are_refused(field: str) -> None:
    with pytest.raises(ClockInvalid):
        build(**{field: datetime(2025, 3, 1)})  # naive on purpose


# -- reading fails closed ------------------------------------------------------------------------------


Edit = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Edit:
    def edit(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = doc
        for key in parents:
            node = node[int(key)] if key.isdigit() else node[key]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return edit


def _drop(path: str) -> Edit:
    def edit(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = doc
        for key in parents:
            node = node[int(key)] if key.isdigit() else node[key]
        del node[last]

    return edit


def _append(path: str, value: Any) -> Edit:
    def edit(doc: dict[str, Any]) -> None:
        node: Any = doc
        for key in path.split("."):
            node = node[int(key)] if key.isdigit() else node[key]
        node.append(value)

    return edit


ODD: dict[str, Edit] = {
    "deny provision": _set("provision.type", "deny"),
    "no provision type": _drop("provision.type"),
    "nested provision": _set("provision.provision", [{"type": "deny", "class": [{"code": "Observation"}]}]),
    "provision action": _set("provision.action", [{"coding": [{"code": "access"}]}]),
    "provision purpose": _set("provision.purpose", [{"code": "TREAT"}]),
    "provision data": _set("provision.data", [{"meaning": "instance", "reference": {"reference": "Observation/1"}}]),
    "provision dataPeriod": _set("provision.dataPeriod", {"start": "2020-01-01T00:00:00+00:00"}),
    "provision code": _set("provision.code", [{"text": "x"}]),
    "no provision": _drop("provision"),
    "no actor": _drop("provision.actor"),
    "empty actor list": _set("provision.actor", []),
    "two actors": _append(
        "provision.actor", {"role": {"coding": [{"code": "IRCP"}]}, "reference": {"reference": "Practitioner/x"}}
    ),
    "unknown actor role": _set("provision.actor.0.role.coding.0.code", "PRCP"),
    "actor role from another system": _set("provision.actor.0.role.coding.0.system", "http://example.org"),
    "actor role with extra coding": _append(
        "provision.actor.0.role.coding", {"system": "http://example.org", "code": "x"}
    ),
    "actor is a patient": _set("provision.actor.0.reference", {"reference": "Patient/p2"}),
    "actor is a group": _set("provision.actor.0.reference", {"reference": "Group/g1"}),
    "actor by absolute url": _set("provision.actor.0.reference", {"reference": "https://x.org/Practitioner/dr1"}),
    "actor by identifier": _set("provision.actor.0.reference", {"identifier": {"value": "dr1"}}),
    "actor with extension": _set("provision.actor.0.extension", [{"url": "x", "valueString": "y"}]),
    "unknown security label": _set(
        "provision.securityLabel", [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "BH"}]
    ),
    "security label without system": _set("provision.securityLabel", [{"code": "HIV"}]),
    "class from another system": _set("provision.class", [{"system": "http://example.org", "code": "Observation"}]),
    "class naming no type": _set("provision.class", [{"system": "http://hl7.org/fhir/resource-types", "code": "Nope"}]),
    "empty class": _set("provision.class", []),
    "date-only period": _set("provision.period.end", "2026-03-01"),
    "naive period": _set("provision.period.start", "2025-03-01T00:00:00"),
    "garbage period": _set("provision.period.start", "soon"),
    "inverted period": _set("provision.period.start", "2030-01-01T00:00:00+00:00"),
    "draft": _set("status", "draft"),
    "proposed": _set("status", "proposed"),
    "rejected": _set("status", "rejected"),
    "entered in error": _set("status", "entered-in-error"),
    "research scope": _set("scope.coding.0.code", "research"),
    "other category": _set("category.0.coding.0.code", "64292-6"),
    "two categories": _append("category", {"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}),
    "opt-out policy": _set("policyRule.coding.0.code", "OPTOUT"),
    "patient by absolute url": _set("patient", {"reference": "https://x.org/Patient/p1"}),
    "patient of another type": _set("patient", {"reference": "Group/p1"}),
    "no patient": _drop("patient"),
    "modifier extension": _set("modifierExtension", [{"url": "x", "valueBoolean": True}]),
    "implicit rules": _set("implicitRules", "http://example.org/rules"),
    "no id": _drop("id"),
    "bad id": _set("id", "c 1"),
    "not a consent": _set("resourceType", "Observation"),
}


@pytest.mark.parametrize("edit", ODD.values(), ids=ODD.keys())
def test_odd_consents_grant_nothing(edit: Edit) -> None:
    doc = stored(build(resource_types=frozenset({"Observation"}), sensitive=frozenset({"hiv"})))
    assert grant_from_consent(doc) is not None
    edit(doc)
    assert grant_from_consent(doc) is None


@pytest.mark.parametrize("value", [None, "Consent", [], 3, {"resourceType": "Consent"}])
def test_non_documents_grant_nothing(value: object) -> None:
    assert grant_from_consent(value) is None


def test_fhir_example_consents_grant_nothing() -> None:
    # The spec's own shapes (here: consent-example-basic's essentials) are not ours: read as None.
    example = {
        "resourceType": "Consent",
        "id": "consent-example-basic",
        "status": "active",
        "scope": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]
        },
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": "Patient/f001"},
        "dateTime": "2018-12-28",
        "organization": [{"reference": "Organization/f001"}],
        "sourceAttachment": {"title": "The terms of the consent in lawyer speak."},
        "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]},
        "provision": {"period": {"start": "1964-01-01", "end": "2019-01-01"}},
    }
    Consent.model_validate(example)
    assert grant_from_consent(example) is None


def test_grant_in_force() -> None:
    grant = expected()
    assert grant.in_force(START)
    assert grant.in_force(END)  # FHIR Period ends are inclusive
    assert not grant.in_force(START - timedelta(seconds=1))
    assert not grant.in_force(END + timedelta(seconds=1))
    assert not expected(active=False).in_force(NOW)
    assert expected(start=None, end=None).in_force(datetime(1900, 1, 1, tzinfo=UTC))
    with pytest.raises(ClockInvalid):
        grant.in_force(datetime(2025, 3, 1))  # naive on purpose
