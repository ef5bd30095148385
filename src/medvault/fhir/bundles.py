"""Builders for the Bundles and OperationOutcomes we return. No I/O."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlencode

from medvault.fhir.errors import Issue


def operation_outcome(issues: Iterable[Issue]) -> dict[str, Any]:
    out = []
    for issue in issues:
        item: dict[str, Any] = {
            "severity": issue.severity,
            "code": issue.code,
            "diagnostics": issue.diagnostics,
        }
        if issue.expression:
            item["expression"] = [issue.expression]
        out.append(item)
    return {
        "resourceType": "OperationOutcome",
        "issue": out or [{"severity": "information", "code": "informational", "diagnostics": "ok"}],
    }


def searchset(
    *,
    base: str,
    rtype: str,
    resources: Sequence[dict[str, Any]],
    total: int,
    used: Sequence[tuple[str, str]],
    offset: int,
    count: int,
) -> dict[str, Any]:
    def link(off: int) -> str:
        query = [(k, v) for k, v in used if k not in ("_offset", "_count")]
        query += [("_count", str(count)), ("_offset", str(off))]
        return f"{base}/{rtype}?{urlencode(query)}"

    links = [{"relation": "self", "url": link(offset)}]
    if count and offset + count < total:
        links.append({"relation": "next", "url": link(offset + count)})
    if offset > 0:
        links.append({"relation": "previous", "url": link(max(0, offset - count))})
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": total,
        "link": links,
        "entry": [
            {"fullUrl": f"{base}/{r['resourceType']}/{r['id']}", "resource": r, "search": {"mode": "match"}}
            for r in resources
        ],
    }
