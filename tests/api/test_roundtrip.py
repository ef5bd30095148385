"""Round trip: every resource of imported Synthea bundles reads back as it went in.

Allowed differences: meta.versionId/meta.lastUpdated, and urn:uuid:X references rewritten to Type/X
(the importer keeps source ids) or, through POST /fhir, to the server-assigned Type/id."""

from __future__ import annotations

from typing import Any

from medvault.records.importer import Importer
from tests.api.support import JSON_HEADERS, ok
from tests.api.synthea import expected_resources, load, rewrite, subset_files, without_server_meta


def test_imported_bundles_read_back_equal(api: Any, vault_env: Any) -> None:
    files = subset_files(3)
    report = Importer(vault_env.factory, vault_env.crypto, workers=0).run(files)
    assert report.rejected == []
    expected = expected_resources(files)
    assert sum(report.created.values()) == len(expected)
    mismatched = []
    for (rtype, rid), want in expected.items():
        got = ok(api.get(f"/fhir/{rtype}/{rid}"))
        assert got["meta"]["versionId"] == "1"
        if without_server_meta(got) != want:
            mismatched.append(f"{rtype}/{rid}")
    assert mismatched == []
    # Re-import: nothing new, nothing changed, still equal.
    again = Importer(vault_env.factory, vault_env.crypto, workers=0).run(files)
    assert sum(again.created.values()) == sum(again.updated.values()) == 0
    assert sum(again.unchanged.values()) == len(expected)
    patient = next(k for k in expected if k[0] == "Patient")
    got = ok(api.get(f"/fhir/Patient/{patient[1]}"))
    assert got["meta"]["versionId"] == "1"
    assert without_server_meta(got) == expected[patient]
    # Identity parts came back whole (names, telecom, identifiers, race/ethnicity extensions in place).
    assert got["extension"] == expected[patient]["extension"]


def test_transaction_bundle_posted_over_http_reads_back_equal(api: Any) -> None:
    (path,) = subset_files(1)
    bundle = load(path)
    r = api.post("/fhir", json=bundle, headers=JSON_HEADERS)
    result = ok(r)
    entries = result["entry"]
    assert len(entries) == len(bundle["entry"])
    assert all(e["response"]["status"] == "201 Created" for e in entries)
    mapping = {}
    for sent, answer in zip(bundle["entry"], entries, strict=True):
        rtype, rid = answer["response"]["location"].split("/")[:2]
        assert rtype == sent["resource"]["resourceType"]
        assert rid != sent["resource"]["id"]  # POST: the server assigns ids
        mapping[sent["fullUrl"]] = f"{rtype}/{rid}"
    for sent in bundle["entry"]:
        rtype, rid = mapping[sent["fullUrl"]].split("/")
        want = {**rewrite(sent["resource"], mapping), "id": rid}
        got = ok(api.get(f"/fhir/{rtype}/{rid}"))
        assert without_server_meta(got) == want, f"{rtype} differs"
