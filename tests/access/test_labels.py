"""Sensitivity labels: meta.security (authoritative), clinical codes (a floor), real Synthea records."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from medvault.access.labels import (
    ACT_CODE,
    CODE_TABLE,
    CONFIDENTIALITY,
    ICD10_CM,
    ICD10_RANGES,
    LOINC,
    RXNORM,
    SECURITY_LABEL_TAGS,
    SENSITIVE_TAGS,
    SNOMED,
    code_tags,
    sensitive_labels,
)
from tests.conftest import SYNTHEA

MH, SRH, HIV, SUD, GEN, R = "mental-health", "sexual-reproductive", "hiv", "substance-use", "genetics", "restricted"


def labelled(*security: tuple[str, str], resource_type: str = "Observation") -> dict[str, Any]:
    return {
        "resourceType": resource_type,
        "meta": {"security": [{"system": s, "code": c} for s, c in security]},
        "code": {"text": "anything"},
    }


def coded(resource_type: str, field: str, system: str, code: str) -> dict[str, Any]:
    return {"resourceType": resource_type, field: {"coding": [{"system": system, "code": code, "display": "x"}]}}


# -- meta.security ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "tags"),
    [
        ("PSY", {MH}),
        ("PSYTHPN", {MH}),
        ("MH", {MH}),
        ("BH", {MH, SUD}),
        ("ETH", {SUD}),
        ("SUD", {SUD}),
        ("ETHUD", {SUD}),
        ("OPIOIDUD", {SUD}),
        ("42CFRPart2", {SUD}),
        ("HIV", {HIV}),
        ("SEX", {SRH}),
        ("SDV", {SRH}),
        ("STD", {SRH}),
        ("PREGNANT", {SRH}),
        ("GDIS", {GEN}),
        ("SCA", {GEN}),
        ("Title38Section7332", {SUD, HIV, GEN}),
        ("TBOO", {R}),  # a sensitivity code without a category of ours: restricted
        ("SOMETHING-NEW", {R}),  # unknown ActCode: fails closed
    ],
)
def test_act_code_security_labels(code: str, tags: set[str]) -> None:
    assert sensitive_labels(labelled((ACT_CODE, code))) == tags


@pytest.mark.parametrize(
    ("code", "tags"), [("U", set()), ("L", set()), ("M", set()), ("N", set()), ("R", {R}), ("V", {R}), ("?", {R})]
)
def test_confidentiality(code: str, tags: set[str]) -> None:
    assert sensitive_labels(labelled((CONFIDENTIALITY, code))) == tags


def test_old_system_urls_and_oids_count_the_same() -> None:
    assert sensitive_labels(labelled(("http://hl7.org/fhir/v3/ActCode", "HIV"))) == {HIV}
    assert sensitive_labels(labelled(("urn:oid:2.16.840.1.113883.5.4", "PSY"))) == {MH}
    assert sensitive_labels(labelled(("http://hl7.org/fhir/v3/Confidentiality", "V"))) == {R}


def test_labels_from_other_systems_say_nothing_about_sensitivity() -> None:
    integrity = ("http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "SUBSETTED")
    purpose = ("http://terminology.hl7.org/CodeSystem/v3-ActReason", "HTEST")
    assert sensitive_labels(labelled(integrity, purpose)) == frozenset()


def test_malformed_security_fails_closed() -> None:
    assert sensitive_labels({"resourceType": "Observation", "meta": {"security": "R"}}) == {R}
    assert sensitive_labels({"resourceType": "Observation", "meta": {"security": [{"code": "R"}]}}) == {R}


def test_security_labels_apply_to_administrative_resources_too() -> None:
    # A VIP patient's own Patient resource: explicit labels are authoritative whatever the type.
    assert sensitive_labels(labelled((CONFIDENTIALITY, "V"), resource_type="Patient")) == {R}


def test_every_mapped_tag_is_canonical() -> None:
    for tags in SECURITY_LABEL_TAGS.values():
        assert tags <= SENSITIVE_TAGS
    for table in CODE_TABLE.values():
        for tags in table.values():
            assert tags
            assert tags <= SENSITIVE_TAGS
    for first, last, tags in ICD10_RANGES:
        assert len(first) == len(last)
        assert first <= last
        assert tags <= SENSITIVE_TAGS


# -- clinical codes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "tags"),
    [
        ("F32.9", {MH}),
        ("F329", {MH}),
        ("f41.1", {MH}),
        ("F03.90", {MH}),
        ("F90.0", {MH}),
        ("F10.20", {SUD}),
        ("F11.20", {SUD}),
        ("F19.10", {SUD}),
        ("F17.210", set()),  # nicotine dependence: deliberately not sensitive
        ("R45.851", {MH}),
        ("R45.8", set()),
        ("T40.1X1A", {SUD}),
        ("B20", {HIV}),
        ("Z21", {HIV}),
        ("Z11.4", {HIV}),
        ("O98.711", {SRH, HIV}),
        ("O03.9", {SRH}),
        ("O80", {SRH}),
        ("O9A.111", {SRH}),
        ("Z30.011", {SRH}),
        ("Z3A.20", {SRH}),
        ("N73.9", {SRH}),
        ("A56.01", {SRH}),
        ("A64", {SRH}),
        ("A65", set()),
        ("Q90.9", {GEN}),
        ("D57.1", {GEN}),
        ("Z15.01", {GEN}),
        ("I10", set()),
        ("E11.9", set()),
        ("G30.9", set()),  # Alzheimer's disease: neurological, not in the F chapter
        ("", set()),
        ("F", set()),
    ],
)
def test_icd10_ranges(code: str, tags: set[str]) -> None:
    assert code_tags(system=ICD10_CM, code=code) == tags
    assert sensitive_labels(coded("Condition", "code", "http://hl7.org/fhir/sid/icd-10", code)) == tags


@pytest.mark.parametrize(
    ("resource", "tags"),
    [
        (coded("Condition", "code", SNOMED, "370143000"), {MH}),
        (coded("Condition", "code", SNOMED, "38341003"), set()),  # hypertension
        (coded("Observation", "code", LOINC, "56888-1"), {HIV}),
        (coded("Observation", "code", LOINC, "8302-2"), set()),  # body height
        (coded("Procedure", "code", SNOMED, "714812005"), {SRH}),
        (coded("Procedure", "code", SNOMED, "5880005"), set()),  # "Physical examination", see the table
        (coded("MedicationRequest", "medicationCodeableConcept", RXNORM, "807283"), {SRH}),
        (coded("DiagnosticReport", "code", LOINC, "51969-4"), {GEN}),
        (coded("Observation", "code", "urn:oid:2.16.840.1.113883.6.1", "55277-8"), {HIV}),
        (coded("Observation", "code", "http://example.org/local", "55277-8"), set()),
    ],
)
def test_clinical_codes(resource: dict[str, Any], tags: set[str]) -> None:
    assert sensitive_labels(resource) == tags


def test_codes_anywhere_in_the_resource_count() -> None:
    encounter = {
        "resourceType": "Encounter",
        "type": [{"coding": [{"system": SNOMED, "code": "185349003"}]}],
        "reasonCode": [{"coding": [{"system": SNOMED, "code": "72892002"}]}],
    }
    assert sensitive_labels(encounter) == {SRH}
    observation = {
        "resourceType": "Observation",
        "code": {"coding": [{"system": LOINC, "code": "69453-9"}]},  # cause of death
        "valueCodeableConcept": {"coding": [{"system": SNOMED, "code": "55680006"}]},
    }
    assert sensitive_labels(observation) == {SUD}
    claim = {
        "resourceType": "Claim",
        "item": [{"productOrService": {"coding": [{"system": SNOMED, "code": "386394001"}]}}],
    }
    assert sensitive_labels(claim) == {SRH}
    with_contained = {
        "resourceType": "MedicationRequest",
        "contained": [{"resourceType": "Medication", "code": {"coding": [{"system": RXNORM, "code": "389221"}]}}],
        "medicationReference": {"reference": "#m"},
    }
    assert sensitive_labels(with_contained) == {SRH}
    several = {
        "resourceType": "Condition",
        "code": {"coding": [{"system": SNOMED, "code": "86406008"}, {"system": ICD10_CM, "code": "F11.20"}]},
        "meta": {"security": [{"system": CONFIDENTIALITY, "code": "R"}]},
    }
    assert sensitive_labels(several) == {HIV, SUD, R}


def test_narrative_and_quantities_are_not_codes() -> None:
    observation = {
        "resourceType": "Observation",
        "text": {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">HIV</div>'},
        "code": {"coding": [{"system": LOINC, "code": "29463-7"}]},
        "valueQuantity": {"value": 70, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"},
    }
    assert sensitive_labels(observation) == frozenset()


@pytest.mark.parametrize("resource_type", ["Patient", "Practitioner", "Organization", "PractitionerRole", "Location"])
def test_administrative_resources_carry_no_clinical_sensitivity(resource_type: str) -> None:
    resource = coded(resource_type, "extension", SNOMED, "86406008")
    assert sensitive_labels(resource) == frozenset()


def test_deep_nesting_does_not_recurse() -> None:
    node: dict[str, Any] = {"system": SNOMED, "code": "86406008"}
    for _ in range(5000):
        node = {"extension": [node]}
    assert sensitive_labels({"resourceType": "Observation", "code": node}) == {HIV}


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=8),
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(st.sampled_from(["system", "code", "coding", "meta", "security", "x"]), inner, max_size=4)
        ),
        max_leaves=30,
    )
)
def test_any_json_gives_canonical_tags(value: object) -> None:
    resource = {"resourceType": "Observation", "meta": value, "code": value}
    assert sensitive_labels(resource) <= SENSITIVE_TAGS


# -- real Synthea records ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synthea() -> list[dict[str, Any]]:
    files = sorted(Path(SYNTHEA).glob("*.json"))
    if not files:
        pytest.skip(f"no Synthea bundles under {SYNTHEA}")
    # All 100 bundles parse in well under a second with orjson; read in place, never copied.
    return [entry["resource"] for f in files for entry in orjson.loads(f.read_bytes())["entry"]]


def _display(resource: dict[str, Any]) -> str:
    concept = resource.get("code") or resource.get("medicationCodeableConcept") or {}
    return str(concept.get("coding", [{}])[0].get("display", ""))


def _by_display(resources: list[dict[str, Any]], resource_type: str, display: str) -> list[dict[str, Any]]:
    found = [r for r in resources if r["resourceType"] == resource_type and _display(r) == display]
    assert found, f"the Synthea set has no {resource_type} {display!r}"
    return found


@pytest.mark.parametrize(
    ("resource_type", "display", "tags"),
    [
        ("Condition", "Drug overdose", {SUD}),
        ("Condition", "Normal pregnancy", {SRH}),
        ("Condition", "Miscarriage in first trimester", {SRH}),
        ("Condition", "Tubal pregnancy", {SRH}),
        ("Observation", "HIV status", {HIV}),
        ("Observation", "Sexual orientation", {SRH}),
        ("Procedure", "Depression screening", {MH}),
        ("Procedure", "Induced termination of pregnancy", {SRH}),
        ("MedicationRequest", "Mirena 52 MG Intrauterine System", {SRH}),
        ("Condition", "Hypertension", set()),
        ("Condition", "Viral sinusitis (disorder)", set()),
        ("Condition", "Familial Alzheimer's disease of early onset (disorder)", set()),
        ("Observation", "Body Height", set()),
        ("Observation", "Tobacco smoking status NHIS", set()),
        ("MedicationRequest", "Hydrochlorothiazide 25 MG", set()),
    ],
)
def test_synthea_resources(synthea: list[dict[str, Any]], resource_type: str, display: str, tags: set[str]) -> None:
    for resource in _by_display(synthea, resource_type, display):
        assert sensitive_labels(resource) == tags


def test_synthea_encounters_and_claims_inherit_from_their_codes(synthea: list[dict[str, Any]]) -> None:
    prenatal = [r for r in synthea if r["resourceType"] == "Encounter" and "Prenatal" in str(r.get("type"))]
    assert prenatal
    assert all(SRH in sensitive_labels(r) for r in prenatal)
    rehab = [r for r in synthea if r["resourceType"] == "ExplanationOfBenefit" and "56876005" in str(r.get("item"))]
    assert rehab
    assert all(SUD in sensitive_labels(r) for r in rehab)


def test_synthea_administrative_resources_and_most_records_are_ordinary(synthea: list[dict[str, Any]]) -> None:
    for resource in synthea:
        if resource["resourceType"] in {"Patient", "Practitioner", "Organization"}:
            assert sensitive_labels(resource) == frozenset()
    counts = Counter(bool(sensitive_labels(r)) for r in synthea)
    # A floor that labels nearly everything would make grants meaningless: most records are ordinary.
    assert counts[True] < counts[False] / 10
