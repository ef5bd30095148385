"""The byte pre-scan (`_looks_clean`) must be sound -- whenever it says clean, the walk finds nothing --
and must keep the common resource off the slow walk (import speed)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medvault.fhir import checks
from medvault.fhir.errors import Issue
from tests.conftest import FHIR_EXAMPLES, IPS_EXAMPLES, SYNTHEA

TRICKY = [
    "",
    " ",
    "\t",
    "\n",
    " \r\n\t ",
    "\u00a0",
    "\u2003",
    "\x07",
    "\x0b",
    "\x0c",
    "\x08",
    "\x1f",
    "\x00",
    "a\\b",
    "\\",
    '"',
    "x\\u0007",
    "<script>",
    "< SCRIPT",
    "<\tscript",
    "<\u017fcript",
    "<lin\u212a",
    "onload=",
    "onLoad\n=",
    "x onclick =",
    "xonload=",
    "ionisation=1",
    "javascript:",
    "JavaScript\t:",
    "vbscript :",
    "data:text/html",
    "DATA :\ttext/html",
    "data\n:text/html",
    "2020",
    "2020-01",
    "2020-01-01",
    "2019-12-31",
    "2020-01-01T10:00:00Z",
    "2020-01-01T09:00:00+02:00",
    "2020-01-01T11:00:00.5-01:00",
    "not a date",
    "Patient",
    "n1",
    "n2",
    "image/png",
    "aGVsbG8=",
    "aGVsbG8",
    "#k1",
    "#",
    "x" * 70,
]
KEYS = [
    "id", "resourceType", "div", "start", "end", "low", "high", "value", "unit", "code", "system", "data", "size",
    "contentType", "numerator", "denominator", "text", "name", "reference", "url", "extension", "hash", "valueString",
]  # fmt: skip

leaf = st.one_of(
    st.sampled_from(TRICKY),
    st.text(alphabet=" <>=:/\\\"'onlcikdatsrpvjbhemSCRIPTON\t\n\x07\x0b{}[]#-0123456789\u00e9\u212a", max_size=14),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
)
json_values = st.recursive(
    leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(KEYS), inner, max_size=5),
    ),
    max_leaves=25,
)


def walk_issues(doc: Any) -> list[Issue]:
    issues: list[Issue] = []
    checks._walk(doc, "X", "", issues, {})
    return issues


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(KEYS), json_values, max_size=6))
def test_prescan_is_sound(doc: dict[str, Any]) -> None:
    raw = orjson.dumps(doc)
    if checks._looks_clean(raw):
        assert walk_issues(doc) == [], raw
    checks.extra_checks(doc, "X")  # never raises on any JSON shape


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(TRICKY), st.sampled_from(["text", "family", "div", "data", "url"]))
def test_prescan_is_sound_for_each_tricky_value(value: str, key: str) -> None:
    doc = {"resourceType": "Patient", "id": "p", "name": [{key: value, "given": ["A"]}]}
    if checks._looks_clean(orjson.dumps(doc)):
        assert walk_issues(doc) == []


dates = st.sampled_from([v for v in TRICKY if v[:1] == "2"])
quantity = st.fixed_dictionaries(
    {"value": st.integers(0, 10)},
    optional={"unit": st.sampled_from(["g", "kg"]), "code": st.sampled_from(["g", "kg"]), "system": st.just("u")},
)
# The shapes each walk rule looks for, with values that sometimes break the rule.
shapes = st.one_of(
    st.fixed_dictionaries({"id": st.sampled_from(["n1", "n2"])}, optional={"text": leaf}),
    st.fixed_dictionaries({}, optional={"low": quantity, "high": quantity, "text": leaf}),
    st.fixed_dictionaries({}, optional={"numerator": quantity, "denominator": quantity}),
    st.fixed_dictionaries(
        {"data": st.sampled_from(["aGVsbG8=", "aGVsbG8", "", " "])},
        optional={"contentType": st.just("text/plain"), "size": st.integers(0, 6), "title": leaf},
    ),
    st.fixed_dictionaries({}, optional={"start": dates, "end": dates}),
    st.fixed_dictionaries({"div": st.sampled_from(["", "<div>", '<div xmlns="http://www.w3.org/1999/xhtml">x</div>'])}),
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(shapes, st.lists(shapes, max_size=2)), min_size=1, max_size=4), st.booleans())
def test_prescan_is_sound_for_rule_shapes(parts: list[Any], nested: bool) -> None:
    doc: dict[str, Any] = {"resourceType": "Observation", "id": "o", "component": parts}
    if nested:
        doc = {"resourceType": "Bundle", "entry": [{"resource": doc}, {"resource": {**doc, "id": "o2"}}]}
    raw = orjson.dumps(doc)
    if checks._looks_clean(raw):
        assert walk_issues(doc) == [], raw


@settings(max_examples=300, deadline=None)
@given(dates, dates, st.sampled_from(["start end", "end start", "start x end", "end x start", "end", "x end"]))
def test_prescan_is_sound_for_periods(start: str, end: str, order: str) -> None:
    values = {"start": start, "end": end, "x": "y"}
    period = {k: values[k] for k in order.split()}
    doc = {"resourceType": "Encounter", "id": "e", "status": "finished", "period": period}
    if checks._looks_clean(orjson.dumps(doc)):
        assert walk_issues(doc) == []


def _resources(node: Any) -> Iterator[dict[str, Any]]:
    """Every resource in a document, nested ones too (contained, Bundle entries)."""
    if isinstance(node, dict):
        if isinstance(node.get("resourceType"), str):
            yield node
        for value in node.values():
            yield from _resources(value)
    elif isinstance(node, list):
        for item in node:
            yield from _resources(item)


def test_prescan_agrees_with_the_walk_on_every_example() -> None:
    files = [*sorted(FHIR_EXAMPLES.glob("r4-*/*.json")), *sorted(IPS_EXAMPLES.rglob("*.json"))]
    files += sorted(SYNTHEA.glob("*.json"))[:10]
    count = 0
    for path in files:
        for res in _resources(json.loads(path.read_bytes())):
            count += 1
            if checks._looks_clean(orjson.dumps(res)):
                assert walk_issues(res) == [], f"{path.name}: {res['resourceType']}"
    assert count > 3000


def test_common_synthea_resources_skip_the_walk() -> None:
    """Import speed: only resources with a narrative (Synthea gives Patient and CarePlan one) may take
    the slow walk; every other resource of the Synthea bundles is proved clean by the byte scan."""
    walked: dict[str, int] = {}
    total = 0
    for path in sorted(SYNTHEA.glob("*.json"))[:20]:
        for entry in json.loads(path.read_bytes())["entry"]:
            res = entry["resource"]
            total += 1
            if not checks._looks_clean(orjson.dumps(res)):
                assert "text" in res, f"{path.name}: a {res['resourceType']} without narrative took the slow walk"
                walked[res["resourceType"]] = walked.get(res["resourceType"], 0) + 1
    assert sum(walked.values()) <= 0.05 * total, walked
