"""Search results over imported Synthea data match a naive reference filter written here.

The reference works on the source JSON only (never on server code): it knows which element each
parameter searches (the definitions the CapabilityStatement documents) and implements FHIR R4 token,
date (search 3.1.1.4.7), reference and whole-value string matching by itself. Queries come from a
seeded generator over values that occur in the data (codes, systems, patients, dates at every
precision) plus a hand-written table; each runs through the HTTP API, every `next` link is followed,
and the ids must equal the reference's, with an exact total and no duplicates.
"""

from __future__ import annotations

import calendar
import random
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from medvault.db import make_engine, make_sessionmaker
from medvault.records.importer import Importer
from medvault.store.crypto_context import build_crypto
from tests.api.support import client_for, fresh_settings, ok, search_all
from tests.api.synthea import expected_resources, subset_files

Doc = dict[str, Any]
Key = tuple[str, str]

# Which elements each parameter searches (kind, element names). Patient identity parameters and
# `patient`/`subject` are handled separately below.
EFFECTIVE = ("effectiveDateTime", "effectivePeriod", "effectiveInstant")
PARAMS: dict[str, dict[str, tuple[str, tuple[str, ...]]]] = {
    "Observation": {
        "code": ("token", ("code",)),
        "category": ("token", ("category",)),
        "status": ("token", ("status",)),
        "date": ("date", EFFECTIVE),
        "encounter": ("reference", ("encounter",)),
    },
    "Condition": {
        "code": ("token", ("code",)),
        "clinical-status": ("token", ("clinicalStatus",)),
        "verification-status": ("token", ("verificationStatus",)),
        "date": ("date", ("onsetDateTime", "onsetPeriod", "recordedDate")),
        "onset-date": ("date", ("onsetDateTime", "onsetPeriod")),
        "recorded-date": ("date", ("recordedDate",)),
        "encounter": ("reference", ("encounter",)),
    },
    "AllergyIntolerance": {
        "code": ("token", ("code",)),
        "category": ("token", ("category",)),
        "clinical-status": ("token", ("clinicalStatus",)),
        "criticality": ("token", ("criticality",)),
        "date": ("date", ("recordedDate",)),
    },
    "MedicationRequest": {
        "code": ("token", ("medicationCodeableConcept",)),
        "status": ("token", ("status",)),
        "intent": ("token", ("intent",)),
        "date": ("date", ("authoredOn",)),
        "authoredon": ("date", ("authoredOn",)),
        "encounter": ("reference", ("encounter",)),
    },
    "Immunization": {
        "code": ("token", ("vaccineCode",)),
        "vaccine-code": ("token", ("vaccineCode",)),
        "status": ("token", ("status",)),
        "date": ("date", ("occurrenceDateTime",)),
    },
    "Procedure": {
        "code": ("token", ("code",)),
        "status": ("token", ("status",)),
        "date": ("date", ("performedDateTime", "performedPeriod")),
        "encounter": ("reference", ("encounter",)),
    },
    "Encounter": {
        "class": ("token", ("class",)),
        "type": ("token", ("type",)),
        "status": ("token", ("status",)),
        "date": ("date", ("period",)),
    },
    "DiagnosticReport": {
        "code": ("token", ("code",)),
        "category": ("token", ("category",)),
        "status": ("token", ("status",)),
        "date": ("date", ("effectiveDateTime", "effectivePeriod")),
        "encounter": ("reference", ("encounter",)),
    },
    "CarePlan": {
        "category": ("token", ("category",)),
        "status": ("token", ("status",)),
        "intent": ("token", ("intent",)),
        "date": ("date", ("period",)),
    },
    "Goal": {"lifecycle-status": ("token", ("lifecycleStatus",))},
    "Claim": {"status": ("token", ("status",))},
    "ExplanationOfBenefit": {"status": ("token", ("status",))},
    "Practitioner": {
        "identifier": ("token", ("identifier",)),
        "family": ("string", ("name.family",)),
        "given": ("string", ("name.given",)),
        "name": ("string", ("name",)),
    },
    "Organization": {"identifier": ("token", ("identifier",)), "name": ("string", ("name",))},
}
PATIENT_PARAMS = ("identifier", "family", "given", "name", "birthdate", "phone", "gender")


# ---------------------------------------------------------------------------------------------
# the reference: values of a resource


def elements(doc: Doc, path: str) -> list[Any]:
    nodes: list[Any] = [doc]
    for step in path.split("."):
        found: list[Any] = []
        for node in nodes:
            value = node.get(step) if isinstance(node, dict) else None
            if isinstance(value, list):
                found.extend(value)
            elif value is not None:
                found.append(value)
        nodes = found
    return nodes


def codings(value: Any) -> list[tuple[str | None, str]]:
    """(system, code) of a code, Coding, CodeableConcept or Identifier."""
    if isinstance(value, str):
        return [(None, value)]
    if not isinstance(value, dict):
        return []
    if "coding" in value:
        return [pair for c in value["coding"] for pair in codings(c)]
    code = value.get("code", value.get("value"))
    return [(value.get("system"), code)] if isinstance(code, str) else []


def fold(text: str) -> str:
    plain = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    return " ".join(plain.casefold().split())


def strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):  # HumanName
        out = []
        for part in ("text", "family", "given", "prefix", "suffix"):
            v = value.get(part)
            out += [v] if isinstance(v, str) else [s for s in v or [] if isinstance(s, str)]
        return out
    return []


_PARTIAL = re.compile(r"^(\d{4})(?:-(\d{2}))?(?:-(\d{2}))?$")
Range = tuple[datetime, datetime]


def when(text: str) -> Range:
    """The half-open UTC interval a FHIR date, dateTime or instant stands for."""
    m = _PARTIAL.match(text)
    if m:
        year, month, day = int(m[1]), int(m[2] or 0), int(m[3] or 0)
        if not month:
            return datetime(year, 1, 1, tzinfo=UTC), datetime(year + 1, 1, 1, tzinfo=UTC)
        start = datetime(year, month, day or 1, tzinfo=UTC)
        if not day:
            return start, start + timedelta(days=calendar.monthrange(year, month)[1])
        return start, start + timedelta(days=1)
    time = text.split("T", 1)[1]
    clock = re.split(r"[Z+-]", time, maxsplit=1)[0]
    step = timedelta(minutes=1) if clock.count(":") == 1 else timedelta(seconds=1)
    if "." in clock:
        step = timedelta(microseconds=10 ** (6 - len(clock.split(".")[1])))
    full = text.replace("Z", "+00:00")
    if clock.count(":") == 1:
        full = full.replace(clock, clock + ":00", 1)
    parsed = datetime.fromisoformat(full)
    start = (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)
    return start, start + step


FAR_PAST = datetime(1, 1, 1, tzinfo=UTC)
FAR_FUTURE = datetime(9999, 1, 1, tzinfo=UTC)


def intervals(doc: Doc, paths: tuple[str, ...]) -> list[Range]:
    out = []
    for path in paths:
        for value in elements(doc, path):
            if isinstance(value, str):
                out.append(when(value))
            elif isinstance(value, dict):
                low = when(value["start"])[0] if "start" in value else FAR_PAST
                high = when(value["end"])[1] if "end" in value else FAR_FUTURE
                out.append((low, high))
    return out


# ---------------------------------------------------------------------------------------------
# the reference: matching


def date_ok(target: Range, raw: str) -> bool:
    prefix, text = (raw[:2], raw[2:]) if raw[:2].isalpha() else ("eq", raw)
    lo, hi = when(text)
    t_lo, t_hi = target
    inside = lo <= t_lo and t_hi <= hi
    above = t_hi > hi  # part of the target lies after the search range
    below = t_lo < lo  # part of the target lies before it
    return {
        "eq": inside,
        "ne": not inside,
        "gt": above,
        "lt": below,
        "ge": above or inside,
        "le": below or inside,
    }[prefix]


def token_ok(pairs: list[tuple[str | None, str]], raw: str) -> bool:
    if "|" not in raw:
        return any(code == raw for _, code in pairs)
    system, code = raw.split("|", 1)
    if not code:
        return any(s == system for s, _ in pairs)
    if not system:
        return any(s is None and c == code for s, c in pairs)
    return (system, code) in pairs


def digits(text: str) -> str:
    return "".join(c for c in text if c.isdigit())


def patient_of(doc: Doc) -> str | None:
    for key in ("subject", "patient"):
        ref = doc.get(key, {}).get("reference", "") if isinstance(doc.get(key), dict) else ""
        if ref.startswith("Patient/"):
            return str(ref.split("/", 1)[1])
    return None


def value_ok(doc: Doc, rtype: str, name: str, raw: str) -> bool:
    """Does `doc` match one value (no commas) of parameter `name`?"""
    if name == "_id":
        return doc["id"] == raw
    if name in ("patient", "subject"):
        return patient_of(doc) == raw.rsplit("/", 1)[-1]
    if rtype == "Patient":
        return patient_ok(doc, name, raw)
    kind, paths = PARAMS[rtype][name]
    if kind == "token":
        return token_ok([p for path in paths for v in elements(doc, path) for p in codings(v)], raw)
    if kind == "date":
        return any(date_ok(t, raw) for t in intervals(doc, paths))
    if kind == "reference":
        wanted = raw if "/" in raw else f"Encounter/{raw}"
        return any(isinstance(v, dict) and v.get("reference") == wanted for p in paths for v in elements(doc, p))
    return any(fold(s) == fold(raw) for p in paths for v in elements(doc, p) for s in strings(v))


def patient_ok(doc: Doc, name: str, raw: str) -> bool:
    if name == "identifier":
        pairs = [(i.get("system"), i["value"]) for i in doc.get("identifier", []) if "value" in i]
        return token_ok(pairs, raw)
    if name in ("family", "given", "name"):
        parts = []
        for n in doc.get("name", []):
            if name in ("family", "name") and "family" in n:
                parts.append(n["family"])
            if name in ("given", "name"):
                parts += n.get("given", [])
        return any(fold(p) == fold(raw) for p in parts)
    if name == "birthdate":
        return "birthDate" in doc and date_ok(when(doc["birthDate"]), raw)
    if name == "phone":
        return any(
            t.get("system") in ("phone", "sms", None) and digits(t["value"]) == digits(raw) and digits(raw)
            for t in doc.get("telecom", [])
        )
    if name == "gender":
        return doc.get("gender") == raw
    raise AssertionError(name)


def reference_search(data: dict[Key, Doc], rtype: str, params: list[tuple[str, str]]) -> set[str]:
    """Ids of `rtype` matching every parameter (AND), each by any of its comma values (OR)."""
    criteria = [(n, v.split(",")) for n, v in params if not n.startswith("_") or n == "_id"]
    return {
        rid
        for (t, rid), doc in data.items()
        if t == rtype and all(any(value_ok(doc, rtype, n, v) for v in values) for n, values in criteria)
    }


def sort_key(doc: Doc, rtype: str, name: str) -> datetime:
    return min(lo for lo, _ in intervals(doc, PARAMS[rtype][name][1]))


# ---------------------------------------------------------------------------------------------
# queries


@dataclass(frozen=True)
class Query:
    rtype: str
    params: tuple[tuple[str, str], ...]

    def __str__(self) -> str:
        return f"{self.rtype}?" + "&".join(f"{k}={v}" for k, v in self.params)


def date_forms(text: str) -> list[str]:
    """A target value at every precision it can be cut to (year, month, day, minute, second)."""
    out = [text[:4], text[:7], text[:10]]
    if "T" in text:
        zone = "Z" if text.endswith("Z") else text[-6:]
        out += [text[:16] + zone, text[:19] + zone]
    return out


def generate(data: dict[Key, Doc], seed: int, n: int) -> list[Query]:
    rng = random.Random(seed)
    by_type: dict[str, list[Doc]] = {}
    for (rtype, _), doc in sorted(data.items()):
        by_type.setdefault(rtype, []).append(doc)
    patients = sorted(rid for t, rid in data if t == "Patient")
    encounters = sorted(rid for t, rid in data if t == "Encounter")
    prefixes = ["", "eq", "ne", "lt", "le", "gt", "ge"]

    def token_value(rtype: str, name: str) -> str:
        docs = by_type[rtype]
        paths = PARAMS[rtype][name][1]
        pairs = sorted({p for d in docs for path in paths for v in elements(d, path) for p in codings(v)}, key=str)
        if not pairs or rng.random() < 0.07:
            return rng.choice(["no-such-code", "http://loinc.org|no-such-code", "urn:none|"])
        system, code = rng.choice(pairs)
        forms = [code, f"|{code}"] + ([f"{system}|{code}", f"{system}|{code}", f"{system}|"] if system else [])
        return rng.choice(forms)

    def date_value(rtype: str, name: str) -> str:
        docs = by_type[rtype]
        raw = []
        for d in docs:
            for path in PARAMS[rtype][name][1]:
                for v in elements(d, path):
                    raw += [v] if isinstance(v, str) else [x for x in (v.get("start"), v.get("end")) if x]
        base = rng.choice(raw) if raw and rng.random() < 0.9 else rng.choice(["1990", "2015-06", "2021-02-28"])
        return rng.choice(prefixes) + rng.choice(date_forms(base))

    def value(rtype: str, name: str) -> str:
        kind = PARAMS[rtype][name][0]
        if kind == "token":
            return token_value(rtype, name)
        if kind == "date":
            return date_value(rtype, name)
        if kind == "reference":
            return rng.choice([f"Encounter/{e}" for e in encounters] + encounters[:3])
        doc = rng.choice(by_type[rtype])
        path = PARAMS[rtype][name][1][0]
        candidates = [s for v in elements(doc, path) for s in strings(v)] or ["nobody"]
        word = rng.choice(candidates)
        return rng.choice([word, word.upper(), word[:-1] or word])

    def patient_value(name: str) -> str:
        doc = data[("Patient", rng.choice(patients))]
        if name == "identifier":
            ident = rng.choice(doc["identifier"])
            forms = [f"{ident['system']}|{ident['value']}", ident["value"], f"|{ident['value']}", f"{ident['system']}|"]
            return rng.choice(forms)
        if name in ("family", "name"):
            human = rng.choice(doc["name"])
            return rng.choice([human["family"], human["family"].lower(), rng.choice(human["given"])])
        if name == "given":
            return rng.choice(rng.choice(doc["name"])["given"]).upper()
        if name == "birthdate":
            return rng.choice(prefixes) + rng.choice(date_forms(doc["birthDate"]))
        if name == "phone":
            return rng.choice(doc["telecom"])["value"]
        return rng.choice(["female", "male", "other"])

    types = [t for t in PARAMS if t in by_type]
    queries: list[Query] = []
    while len(queries) < n:
        rtype = rng.choice([*types, "Observation", "Condition", "Encounter", "Patient"])
        params: list[tuple[str, str]] = []
        if rtype == "Patient":
            for name in rng.sample(PATIENT_PARAMS, rng.choice([1, 1, 2])):
                params.append((name, patient_value(name)))
        else:
            clinical = rtype not in ("Practitioner", "Organization")
            if clinical and rng.random() < 0.5:  # within one patient (or a few)
                ids = rng.sample(patients, rng.choice([1, 1, 1, 2]))
                params.append(
                    (rng.choice(["patient", "subject"]), ",".join(rng.choice(["", "Patient/"]) + i for i in ids))
                )
            names = list(PARAMS[rtype])
            for name in rng.sample(names, min(len(names), rng.choice([1, 1, 2, 3]))):
                values = [value(rtype, name) for _ in range(rng.choice([1, 1, 1, 2]))]
                params.append((name, ",".join(values)))
            dates = [k for k, (kind, _) in PARAMS[rtype].items() if kind == "date"]
            if dates and rng.random() < 0.15:  # an AND range on one date parameter
                params += [(dates[0], "ge" + value(rtype, dates[0]).lstrip("engtlq")), (dates[0], "lt2100")]
            if dates and rng.random() < 0.25:
                params += [(dates[0], "ge1900"), ("_sort", rng.choice(["", "-"]) + dates[0])]
        if rng.random() < 0.1:
            pool = sorted(rid for t, rid in data if t == rtype)
            some = rng.sample(pool, min(3, len(pool)))
            params.append(("_id", ",".join(some)))
        # Small pages, but never more than about six of them (the suite must stay fast).
        matches = len(reference_search(data, rtype, params))
        params.append(("_count", str(max(rng.choice([2, 5, 13, 50]), -(-matches // 6)))))
        queries.append(Query(rtype, tuple(params)))
    return queries


HAND_WRITTEN = [
    Query("Observation", (("code", "http://loinc.org|8302-2"),)),  # body height, across patients
    Query("Observation", (("category", "vital-signs"), ("date", "ge2015"), ("_count", "40"))),
    Query("Observation", (("category", "laboratory"), ("date", "lt2012-09-10T15:29:24+00:00"))),
    Query("Observation", (("status", "final"), ("_count", "100"))),
    Query("Observation", (("code", "72514-3,8302-2"), ("date", "2015"))),
    Query("Observation", (("date", "ne2012"),)),
    Query("Condition", (("clinical-status", "active"),)),
    Query("Condition", (("clinical-status", "http://terminology.hl7.org/CodeSystem/condition-clinical|resolved"),)),
    Query("Condition", (("date", "le2000"),)),
    Query("Encounter", (("date", "ge2019-06-17"), ("class", "AMB"))),
    Query("Encounter", (("date", "2019-06"), ("_sort", "-date"))),
    Query("Immunization", (("code", "http://hl7.org/fhir/sid/cvx|140"), ("date", "gt2016"))),
    Query("MedicationRequest", (("status", "stopped"),)),
    Query("CarePlan", (("date", "ge2019"),)),  # open-ended periods
    Query("CarePlan", (("date", "le1996-06-27"),)),
    Query("AllergyIntolerance", (("category", "food"), ("criticality", "low"))),
    Query("Patient", (("gender", "female"),)),
    Query("Patient", (("birthdate", "ge1980"),)),
    Query("Practitioner", (("name", "dr."),)),
    Query("Claim", (("status", "active"), ("_count", "7"))),
]


# ---------------------------------------------------------------------------------------------
# the test


@dataclass
class Loaded:
    api: Any
    data: dict[Key, Doc]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def loaded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loaded]:
    files = subset_files()
    with fresh_settings(str(request.param), tmp_path_factory.mktemp("ref") / "data") as settings:
        engine = make_engine(settings)
        try:
            factory = make_sessionmaker(engine)
            with factory() as session:
                crypto = build_crypto(settings, session)
            report = Importer(factory, crypto, workers=0).run(files)
        finally:
            engine.dispose()
        assert report.rejected == []
        with client_for(settings) as client:
            yield Loaded(client, expected_resources(files))


def check(loaded: Loaded, query: Query) -> int:
    total, found = search_all(loaded.api, f"/fhir/{query.rtype}", list(query.params))
    got = [r["id"] for r in found]
    want = reference_search(loaded.data, query.rtype, list(query.params))
    assert len(got) == len(set(got)), f"{query}: duplicates across pages"
    assert total == len(got), f"{query}: total {total} but {len(got)} returned"
    assert set(got) == want, f"{query}: extra {sorted(set(got) - want)[:5]}, missing {sorted(want - set(got))[:5]}"
    sort = dict(query.params).get("_sort")
    if sort:
        keys = [sort_key(loaded.data[(query.rtype, rid)], query.rtype, sort.lstrip("-")) for rid in got]
        assert keys == sorted(keys, reverse=sort.startswith("-")), f"{query}: not sorted"
    return total


def test_generated_queries_match_the_reference(loaded: Loaded) -> None:
    queries = HAND_WRITTEN + generate(loaded.data, seed=20241123, n=160)
    totals = [check(loaded, q) for q in queries]
    # The generator must exercise both empty and non-empty answers, and multi-page walks.
    assert sum(1 for t in totals if t == 0) > 10
    assert sum(1 for t in totals if t > 0) > len(totals) // 2
    assert sum(1 for q, t in zip(queries, totals, strict=True) if t > int(dict(q.params).get("_count", 50))) > 20


def test_reference_filter_is_not_trivial(loaded: Loaded) -> None:
    """Guards the reference itself: known answers on the source data."""
    data = loaded.data
    heights = reference_search(data, "Observation", [("code", "8302-2")])
    assert len(heights) > 8
    assert reference_search(data, "Observation", [("code", "http://snomed.info/sct|8302-2")]) == set()
    assert reference_search(data, "Observation", [("date", "ge2015")]) | reference_search(
        data, "Observation", [("date", "lt2015")]
    ) == reference_search(data, "Observation", [])
    one_day = "2012-09-10T15:29:24+00:00"
    assert date_ok(when(one_day), "2012-09-10")
    assert not date_ok(when(one_day), "ne2012-09")
    assert date_ok((when("2014-12")[0], when("2015-02")[1]), "lt2015")
    assert not date_ok((when("2014-12")[0], when("2015-02")[1]), "ge2015")  # straddles the start only
    assert date_ok((when("2014-12")[0], when("2015-02")[1]), "gt2014-12-31")


def test_everything_matches_the_compartment(loaded: Loaded) -> None:
    actors = ("Practitioner", "Organization", "Location", "Medication", "PractitionerRole")
    for (rtype, pid), _doc in sorted(loaded.data.items()):
        if rtype != "Patient":
            continue
        members = {k for k, d in loaded.data.items() if patient_of(d) == pid} | {("Patient", pid)}
        refs = {
            (parts[0], parts[1])
            for k in members
            for parts in (v.split("/") for v in references(loaded.data[k]))
            if parts[0] in actors and len(parts) == 2
        }
        want = members | {r for r in refs if r in loaded.data}
        body = ok(loaded.api.get(f"/fhir/Patient/{pid}/$everything"))
        got = [(e["resource"]["resourceType"], e["resource"]["id"]) for e in body["entry"]]
        assert got[0] == ("Patient", pid)
        assert len(got) == len(set(got)) == body["total"]
        assert set(got) == want, pid


def references(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                yield value
            else:
                yield from references(value)
    elif isinstance(node, list):
        for item in node:
            yield from references(item)


def test_every_imported_resource_comes_back_equal(loaded: Loaded) -> None:
    """Round trip of all eight bundles, fetched 100 at a time by _id (tests/api/test_roundtrip.py
    reads resources one by one)."""
    by_type: dict[str, list[str]] = {}
    for rtype, rid in sorted(loaded.data):
        by_type.setdefault(rtype, []).append(rid)
    seen = 0
    for rtype, rids in by_type.items():
        for start in range(0, len(rids), 100):
            chunk = rids[start : start + 100]
            total, found = search_all(loaded.api, f"/fhir/{rtype}", {"_id": ",".join(chunk), "_count": "100"})
            assert total == len(chunk)
            for got in found:
                meta = {k: v for k, v in got.pop("meta").items() if k not in ("versionId", "lastUpdated")}
                if meta:
                    got["meta"] = meta
                assert got == loaded.data[(rtype, got["id"])], f"{rtype}/{got['id']}"
                seen += 1
    assert seen == len(loaded.data)
