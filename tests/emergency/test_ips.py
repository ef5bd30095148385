"""Reading IPS documents other systems wrote (emergency/ips.py): every file in
../shared/data/ips-examples/ loads, rule-breaking vendor documents included, with their findings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from medvault.cli.main import app
from medvault.emergency import ips
from medvault.fhir.errors import InvalidResource
from tests.conftest import IPS_EXAMPLES
from tests.emergency.test_summary import EXPECTED_FAILURES

# The validator harness's index (case names, file names, expected error counts): JSON, but no FHIR
# resource and no IPS example. The one file in the folder that is refused, with the reason.
NOT_FHIR = {"validator-cases/cases.json"}


def _files() -> list[str]:
    return sorted(str(p.relative_to(IPS_EXAMPLES)) for p in IPS_EXAMPLES.rglob("*.json"))


@pytest.mark.skipif(not IPS_EXAMPLES.is_dir(), reason="../shared/data/ips-examples not present")
@pytest.mark.parametrize("rel", _files())
def test_every_ips_example_loads(rel: str) -> None:
    raw = (IPS_EXAMPLES / rel).read_bytes()
    if rel in NOT_FHIR:
        with pytest.raises(InvalidResource, match="resourceType is missing"):
            ips.load(raw)
        return
    loaded = ips.load(raw)
    # Conformance is reported exactly where strict validation fails (test_summary pins those reasons).
    assert loaded.conformant == (EXPECTED_FAILURES.get(rel, (0, None))[1] is None)
    assert loaded.sections
    if loaded.kind == "document":
        for section in loaded.sections:
            assert section.title
            assert section.items or section.empty_reason or section.code
        readable = [i for s in loaded.sections for i in s.items if i != "(unreadable entry)"]
        assert readable or all(not s.items for s in loaded.sections)
    else:
        assert all(item for s in loaded.sections for item in s.items)


def test_a_vendor_document_breaking_rules_still_shows_its_allergies() -> None:
    loaded = ips.load((IPS_EXAMPLES / "connectathon/connectathon_Jan2025/US_Epic_Jan_idrefs.json").read_bytes())
    assert not loaded.conformant
    assert any("txt-1" in f for f in loaded.conformance)
    assert any("longer than 64" in f for f in loaded.conformance)
    allergies = next(s for s in loaded.sections if s.code == "48765-2")
    assert "PENICILLINS" in allergies.items


def test_no_information_is_kept_apart_from_none_known() -> None:
    loaded = ips.load((IPS_EXAMPLES / "ig-2.0.0-ballot/Bundle-bundle-no-info-required-sections.json").read_bytes())
    assert loaded.conformant
    by_title = {s.title: s for s in loaded.sections}
    assert by_title["Allergies and Intolerances"].items == ()
    assert by_title["Allergies and Intolerances"].empty_reason == "No information available"
    assert len(by_title["Immunizations"].items) == 2
    assert "(unreadable entry)" not in by_title["Immunizations"].items


def test_references_resolve_by_full_url_type_and_id_or_display() -> None:
    doc = {
        "resourceType": "Bundle",
        "type": "document",
        "entry": [
            {
                "fullUrl": "urn:uuid:c",
                "resource": {
                    "resourceType": "Composition",
                    "section": [
                        {
                            "title": "Allergies",
                            "entry": [
                                {"reference": "urn:uuid:a"},
                                {"reference": "https://example.org/fhir/AllergyIntolerance/b"},
                                {"reference": "gone", "display": "Latex"},
                                {"reference": "nowhere"},
                                "not an object",
                            ],
                        }
                    ],
                },
            },
            {"fullUrl": "urn:uuid:a", "resource": {"resourceType": "AllergyIntolerance", "code": {"text": "Peanut"}}},
            {"resource": {"resourceType": "AllergyIntolerance", "id": "b", "code": {"coding": [{"code": "91936005"}]}}},
        ],
    }
    loaded = ips.read(doc)
    assert loaded.sections[0].items == ("Peanut", "91936005", "Latex", "(unreadable entry)", "(unreadable entry)")
    assert not loaded.conformant  # no Composition status, type, subject, date... all reported


@pytest.mark.parametrize(
    ("raw", "message"),
    [(b"not json", "not valid JSON"), (b"[1, 2]", "JSON object"), (b'{"resourceType": "Nope"}', "unknown")],
)
def test_what_is_no_fhir_resource_is_refused_clearly(raw: bytes, message: str) -> None:
    with pytest.raises(InvalidResource, match=message):
        ips.load(raw)


def test_cli_reads_a_document_and_lists_the_broken_rules(tmp_path: Path) -> None:
    runner = CliRunner()
    path = IPS_EXAMPLES / "connectathon/connectathon_Jan2025/US_Epic_Jan_idrefs.json"
    result = runner.invoke(app, ["emergency", "read", str(path)])
    assert result.exit_code == 0, result.output
    assert "PENICILLINS" in result.output
    assert "FHIR rule(s) broken (shown anyway)" in result.output
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    result = runner.invoke(app, ["emergency", "read", str(bad)])
    assert result.exit_code == 1
    assert "not valid JSON" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(app, ["emergency", "read", str(tmp_path / "missing.json")])
    assert result.exit_code == 1
    assert "cannot read missing.json" in result.output


@pytest.mark.parametrize(
    "spoil",
    [
        lambda c, r: c.update(section=5),
        lambda c, r: c["section"][0].update(entry=7),
        lambda c, r: c["section"][0].update(code={"coding": 1}),
        lambda c, r: c["section"][0].update(emptyReason={"coding": True}),
        lambda c, r: r.update(code={"coding": 1}),
        lambda c, r: r.update(code=None, name=[{"given": 4, "family": 3}]),
        lambda c, r: r.update(resourceType="Patient", code=None, contact=9),
        lambda c, r: c["section"].append("not a section"),
    ],
)
def test_misplaced_numbers_and_booleans_are_read_around_not_refused(spoil: Any) -> None:
    allergy = {"resourceType": "AllergyIntolerance", "code": {"text": "Penicillin"}}
    other = {"resourceType": "Condition", "code": {"text": "Asthma"}}
    composition = {
        "resourceType": "Composition",
        "section": [
            {"title": "Problems", "entry": [{"reference": "urn:uuid:o"}]},
            {"title": "Allergies", "entry": [{"reference": "urn:uuid:a"}]},
        ],
    }
    spoil(composition, other)
    doc = {
        "resourceType": "Bundle",
        "type": "document",
        "entry": [
            {"fullUrl": "urn:uuid:c", "resource": composition},
            {"fullUrl": "urn:uuid:a", "resource": allergy},
            {"fullUrl": "urn:uuid:o", "resource": other},
        ],
    }
    loaded = ips.read(doc)  # never a TypeError: the rest of the document still shows
    assert not loaded.conformant
    shown = [i for s in loaded.sections for i in s.items]
    if isinstance(composition["section"], list):
        assert "Penicillin" in shown
