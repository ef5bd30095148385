"""The Synthea subset the round-trip and reference tests use, and its expected stored form.

The data stay in ../shared (never copied here). Expected documents are built independently of the
server code: each `urn:uuid:X` reference becomes `Type/X` (the importer keeps source ids)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SYNTHEA

# Small bundles, plus one with AllergyIntolerance and one with Goals (chosen by content, see SOURCE.txt).
SUBSET = (
    "Clemente_Kreiger_1484a42d-0eaf-4654-9cbf-6b050a5cd73b.json",
    "Buster_Hoeger_ad2e3fc5-2b5d-4cb9-8d03-9ea0f4ac8423.json",
    "Liz_Conn_27c911c6-f045-4ffa-af5d-6eba57ac94b2.json",
    "Stephen_McLaughlin_7735ab79-6ac8-4b81-9936-f7ddabd18751.json",
    "Xavier_Lueilwitz_1af31141-7c85-4dc9-8472-8fd3fa953ee8.json",
    "Dannie_Schmitt_22d6efc6-2dc7-4f36-9d27-84fc6609c469.json",
    "Kermit_Trantow_f1a650a5-737e-4fd7-828e-03c3348b9524.json",
    "Lupe_Little_f8a42e66-8c03-4ee6-85e3-3817c2942de1.json",
)

Key = tuple[str, str]


def subset_files(n: int = len(SUBSET)) -> list[Path]:
    files = [SYNTHEA / name for name in SUBSET[:n]]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        pytest.skip(f"Synthea bundles missing from {SYNTHEA}: {missing}")
    return files


def load(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return doc


def rewrite(node: Any, mapping: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {
            k: (mapping.get(v, v) if k == "reference" and isinstance(v, str) else rewrite(v, mapping))
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [rewrite(x, mapping) for x in node]
    return node


def expected_resources(files: list[Path]) -> dict[Key, dict[str, Any]]:
    """(type, id) -> the resource as the vault should return it (later files win, as on import)."""
    out: dict[Key, dict[str, Any]] = {}
    for path in files:
        bundle = load(path)
        mapping = {
            e["fullUrl"]: f"{e['resource']['resourceType']}/{e['resource']['id']}"
            for e in bundle["entry"]
            if "fullUrl" in e
        }
        for entry in bundle["entry"]:
            res = rewrite(entry["resource"], mapping)
            out[(res["resourceType"], res["id"])] = res
    return out


def without_server_meta(doc: dict[str, Any]) -> dict[str, Any]:
    out = dict(doc)
    meta = {k: v for k, v in (out.get("meta") or {}).items() if k not in ("versionId", "lastUpdated")}
    if meta:
        out["meta"] = meta
    else:
        out.pop("meta", None)
    return out
