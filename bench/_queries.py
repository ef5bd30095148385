"""What the bench/ scripts ask the vault, and the answers they expect, read from the source bundles.

Expected totals are computed here from the bundles with plain Python (FHIR semantics for the few
date prefixes used), never by asking the database, so a fast but wrong answer is counted as wrong.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

MRN_SYSTEM = "http://hospital.smarthealthit.org"
LOINC = "http://loinc.org"
IDENTITY_KINDS = ("Patient family", "Patient identifier")
SEARCH_KINDS = (
    "Observation code",
    "Observation date sort",
    "Condition active",
    "MedicationRequest active",
    "Encounter 2019",
)


@dataclass(frozen=True)
class Query:
    kind: str
    rtype: str
    params: tuple[tuple[str, str], ...]
    expected_total: int | None = None  # None: not checked
    must_contain: str | None = None  # a resource id the result must include

    @property
    def path(self) -> str:
        return f"/fhir/{self.rtype}"

    def for_patient(self, pid: str) -> Query:
        """The same within-patient query about another patient (a clone with the same clinical record)."""
        params = tuple((k, pid if k == "patient" else v) for k, v in self.params)
        return replace(self, params=params)


@dataclass
class PatientFacts:
    pid: str
    family: str  # the first name's family (what we search by)
    families: set[str]  # every name's family, normalised (what family= matches)
    mrn: str
    searches: list[Query] = field(default_factory=list)  # within-patient searches
    compartment: int = 0  # the Patient and every resource linked to it


def _dt(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _codes(concept: Any) -> set[tuple[str | None, str]]:
    if not isinstance(concept, dict):
        return set()
    return {(c.get("system"), c["code"]) for c in concept.get("coding", []) if isinstance(c.get("code"), str)}


def within_patient_queries(pid: str, resources: list[dict[str, Any]], rng: random.Random) -> list[Query]:
    """The five searches inside one record, with the totals the bundle implies."""
    by_type: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in resources:
        by_type[r["resourceType"]].append(r)
    obs = by_type["Observation"]
    loinc = Counter(code for o in obs for system, code in _codes(o.get("code")) if system == LOINC)
    out: list[Query] = []
    if loinc:
        code = rng.choice(sorted(loinc))
        out.append(
            Query("Observation code", "Observation", (("patient", pid), ("code", f"{LOINC}|{code}")), loinc[code])
        )
    # `ge2015`: the target's range ends after 2015-01-01 (a dateTime to the second is a 1-second range).
    ge2015 = datetime(2015, 1, 1, tzinfo=UTC)
    recent = sum(
        1
        for o in obs
        if isinstance(o.get("effectiveDateTime"), str) and _dt(o["effectiveDateTime"]) + timedelta(seconds=1) > ge2015
    )
    out.append(
        Query(
            "Observation date sort", "Observation", (("patient", pid), ("date", "ge2015"), ("_sort", "-date")), recent
        )
    )
    active = sum(1 for c in by_type["Condition"] if "active" in {code for _, code in _codes(c.get("clinicalStatus"))})
    out.append(Query("Condition active", "Condition", (("patient", pid), ("clinical-status", "active")), active))
    meds = sum(1 for m in by_type["MedicationRequest"] if m.get("status") == "active")
    out.append(Query("MedicationRequest active", "MedicationRequest", (("patient", pid), ("status", "active")), meds))
    # `date=2019` on a Period: the whole period lies within 2019.
    y0, y1 = datetime(2019, 1, 1, tzinfo=UTC), datetime(2020, 1, 1, tzinfo=UTC)
    n_2019 = 0
    for e in by_type["Encounter"]:
        period = e.get("period") or {}
        if isinstance(period.get("start"), str) and isinstance(period.get("end"), str):
            start, end = _dt(period["start"]), _dt(period["end"]) + timedelta(seconds=1)
            n_2019 += y0 <= start and end <= y1
    out.append(Query("Encounter 2019", "Encounter", (("patient", pid), ("date", "2019")), n_2019))
    return out


def bundle_facts(bundle: dict[str, Any], rng: random.Random) -> tuple[PatientFacts, list[tuple[str, str]]]:
    """Facts about the bundle's patient, and every (type, id) in it.

    Import keeps source ids and rewrites urn:uuid references to Type/<the same uuid>."""
    from medvault.crypto.indexes import normalise

    resources = [e["resource"] for e in bundle.get("entry", [])]
    patient = next(r for r in resources if r["resourceType"] == "Patient")
    pid = patient["id"]
    names = patient.get("name", [])
    facts = PatientFacts(
        pid=pid,
        family=names[0]["family"],
        families={normalise(n["family"]) for n in names if isinstance(n.get("family"), str)},
        mrn=next(i["value"] for i in patient.get("identifier", []) if i.get("system") == MRN_SYSTEM),
        searches=within_patient_queries(pid, resources, rng),
        compartment=sum(1 for r in resources if r["resourceType"] not in ("Organization", "Practitioner")),
    )
    return facts, [(r["resourceType"], r["id"]) for r in resources]


def identity_queries(p: PatientFacts, family_counts: Counter[str]) -> list[Query]:
    """Patient?family= (matches any of a patient's names, whole value, case- and accent-insensitive)
    and Patient?identifier=<MRN system>|<value>. `family_counts`: normalised family -> patients."""
    from medvault.crypto.indexes import normalise

    return [
        Query("Patient family", "Patient", (("family", p.family),), family_counts[normalise(p.family)], p.pid),
        Query("Patient identifier", "Patient", (("identifier", f"{MRN_SYSTEM}|{p.mrn}"),), 1, p.pid),
    ]


def check_bundle_result(bundle: dict[str, Any], q: Query) -> bool:
    """True when a searchset Bundle (or a search result converted to one) has what the source implies."""
    ok = q.expected_total is None or bundle.get("total") == q.expected_total
    if q.must_contain is not None:
        ok = ok and any(e["resource"]["id"] == q.must_contain for e in bundle.get("entry", []))
    return ok
