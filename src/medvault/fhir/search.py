"""Search parameters: which values of a resource each parameter indexes, and exact matching.

The store keeps only keyed tokens of these values; the exact predicates here run on decrypted
resources (post-filter) and in tests as the reference the index must agree with.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Literal

from medvault.fhir.errors import UnsupportedSearch

Kind = Literal["token", "date", "reference", "string"]


@dataclass(frozen=True)
class Param:
    name: str
    kind: Kind
    paths: tuple[str, ...]
    description: str = ""


def _p(name: str, kind: Kind, *paths: str) -> Param:
    return Param(name, kind, paths)


_EFFECTIVE = ("effectiveDateTime", "effectivePeriod", "effectiveInstant")
_COMMON_CLINICAL = {
    "patient": _p("patient", "reference", "subject", "patient"),
    "subject": _p("subject", "reference", "subject", "patient"),
    "identifier": _p("identifier", "token", "identifier"),
}

SEARCH_PARAMS: dict[str, dict[str, Param]] = {
    "Observation": {
        "code": _p("code", "token", "code"),
        "category": _p("category", "token", "category"),
        "status": _p("status", "token", "status"),
        "date": _p("date", "date", *_EFFECTIVE),
        "encounter": _p("encounter", "reference", "encounter"),
    },
    "Condition": {
        "code": _p("code", "token", "code"),
        "category": _p("category", "token", "category"),
        "clinical-status": _p("clinical-status", "token", "clinicalStatus"),
        "verification-status": _p("verification-status", "token", "verificationStatus"),
        "date": _p("date", "date", "onsetDateTime", "onsetPeriod", "recordedDate"),
        "onset-date": _p("onset-date", "date", "onsetDateTime", "onsetPeriod"),
        "recorded-date": _p("recorded-date", "date", "recordedDate"),
        "encounter": _p("encounter", "reference", "encounter"),
    },
    "AllergyIntolerance": {
        "code": _p("code", "token", "code"),
        "category": _p("category", "token", "category"),
        "clinical-status": _p("clinical-status", "token", "clinicalStatus"),
        "verification-status": _p("verification-status", "token", "verificationStatus"),
        "criticality": _p("criticality", "token", "criticality"),
        "date": _p("date", "date", "recordedDate"),
    },
    "MedicationRequest": {
        "code": _p("code", "token", "medicationCodeableConcept"),
        "category": _p("category", "token", "category"),
        "status": _p("status", "token", "status"),
        "intent": _p("intent", "token", "intent"),
        "date": _p("date", "date", "authoredOn"),
        "authoredon": _p("authoredon", "date", "authoredOn"),
        "encounter": _p("encounter", "reference", "encounter"),
    },
    "MedicationStatement": {
        "code": _p("code", "token", "medicationCodeableConcept"),
        "category": _p("category", "token", "category"),
        "status": _p("status", "token", "status"),
        "date": _p("date", "date", *_EFFECTIVE),
        "effective": _p("effective", "date", *_EFFECTIVE),
    },
    "Immunization": {
        "code": _p("code", "token", "vaccineCode"),
        "vaccine-code": _p("vaccine-code", "token", "vaccineCode"),
        "status": _p("status", "token", "status"),
        "date": _p("date", "date", "occurrenceDateTime"),
    },
    "Procedure": {
        "code": _p("code", "token", "code"),
        "category": _p("category", "token", "category"),
        "status": _p("status", "token", "status"),
        "date": _p("date", "date", "performedDateTime", "performedPeriod"),
        "encounter": _p("encounter", "reference", "encounter"),
    },
    "Encounter": {
        "class": _p("class", "token", "class"),
        "type": _p("type", "token", "type"),
        "code": _p("code", "token", "type"),
        "status": _p("status", "token", "status"),
        "date": _p("date", "date", "period"),
    },
    "DiagnosticReport": {
        "code": _p("code", "token", "code"),
        "category": _p("category", "token", "category"),
        "status": _p("status", "token", "status"),
        "date": _p("date", "date", "effectiveDateTime", "effectivePeriod"),
        "encounter": _p("encounter", "reference", "encounter"),
    },
    "DocumentReference": {
        "type": _p("type", "token", "type"),
        "code": _p("code", "token", "type"),
        "category": _p("category", "token", "category"),
        "status": _p("status", "token", "status"),
        "date": _p("date", "date", "date"),
    },
    "CarePlan": {
        "category": _p("category", "token", "category"),
        "status": _p("status", "token", "status"),
        "intent": _p("intent", "token", "intent"),
        "date": _p("date", "date", "period"),
        "encounter": _p("encounter", "reference", "encounter"),
    },
    "Flag": {
        "code": _p("code", "token", "code"),
        "category": _p("category", "token", "category"),
        "status": _p("status", "token", "status"),
        "date": _p("date", "date", "period"),
    },
    "Consent": {
        "category": _p("category", "token", "category"),
        "status": _p("status", "token", "status"),
        "date": _p("date", "date", "dateTime"),
        # R4 Consent-actor and Consent-period: a clinician's "my patients" finds the grants naming
        # them through the keyed token index, not by opening every patient's Consents.
        "actor": _p("actor", "reference", "provision.actor.reference"),
        "period": _p("period", "date", "provision.period"),
    },
    "PractitionerRole": {
        # Which organisations a clinician works for: a grant naming one counts as theirs.
        "practitioner": _p("practitioner", "reference", "practitioner"),
        "organization": _p("organization", "reference", "organization"),
        "active": _p("active", "token", "active"),
    },
    "Goal": {
        "category": _p("category", "token", "category"),
        "lifecycle-status": _p("lifecycle-status", "token", "lifecycleStatus"),
    },
    "Claim": {"status": _p("status", "token", "status")},
    "ExplanationOfBenefit": {"status": _p("status", "token", "status")},
    "ImagingStudy": {"status": _p("status", "token", "status")},
    "Practitioner": {
        "identifier": _p("identifier", "token", "identifier"),
        "name": _p("name", "string", "name"),
        "family": _p("family", "string", "name.family"),
        "given": _p("given", "string", "name.given"),
    },
    "Organization": {
        "identifier": _p("identifier", "token", "identifier"),
        "name": _p("name", "string", "name"),
    },
}
for _rtype, _params in SEARCH_PARAMS.items():
    if _rtype not in {"Practitioner", "Organization"}:
        for _name, _param in _COMMON_CLINICAL.items():
            _params.setdefault(_name, _param)

# Patient identity parameters are answered by the identity vault's blind index.
PATIENT_PARAMS: dict[str, Param] = {
    "identifier": _p("identifier", "token", "identifier"),
    "family": _p("family", "string", "name.family"),
    "given": _p("given", "string", "name.given"),
    "name": _p("name", "string", "name"),
    "birthdate": _p("birthdate", "date", "birthDate"),
    "phone": _p("phone", "token", "telecom"),
    "email": _p("email", "token", "telecom"),
    "gender": _p("gender", "token", "gender"),
}
SEARCH_PARAMS["Patient"] = PATIENT_PARAMS
IDENTITY_PARAMS = frozenset({"identifier", "family", "given", "name", "birthdate", "phone", "email"})

# Parameters every type supports (handled by the store directly).
COMMON_PARAMS = ("_id", "_lastUpdated")
RESULT_PARAMS = ("_count", "_sort", "_offset")
IGNORED_PARAMS = ("_format", "_pretty")

# Which element links a resource to its patient (the patient compartment, for the types we know).
PATIENT_LINK_PATHS = ("subject", "patient", "beneficiary")


def params_for(resource_type: str) -> dict[str, Param]:
    return SEARCH_PARAMS.get(resource_type, {})


def patient_reference(resource: dict[str, Any]) -> str | None:
    """The id of the Patient this resource belongs to, if any (Patient resources: their own id)."""
    if resource.get("resourceType") == "Patient":
        rid = resource.get("id")
        return rid if isinstance(rid, str) else None
    for key in PATIENT_LINK_PATHS:
        ref = resource.get(key)
        if isinstance(ref, dict):
            target = ref.get("reference")
            if isinstance(target, str) and target.startswith("Patient/"):
                return target.split("/", 2)[1]
    return None


# ---------------------------------------------------------------------------------------------
# value extraction


def _values(resource: dict[str, Any], path: str) -> Iterator[Any]:
    current: list[Any] = [resource]
    for part in path.split("."):
        nxt: list[Any] = []
        for node in current:
            if isinstance(node, dict) and part in node:
                value = node[part]
                nxt.extend(value if isinstance(value, list) else [value])
        current = nxt
    yield from current


def token_pairs(resource: dict[str, Any], param: Param) -> set[tuple[str | None, str]]:
    """(system, code) pairs for a token parameter."""
    out: set[tuple[str | None, str]] = set()
    for path in param.paths:
        for value in _values(resource, path):
            if isinstance(value, str):
                out.add((None, value))
            elif isinstance(value, bool):
                out.add((None, "true" if value else "false"))
            elif isinstance(value, dict):
                codings = value.get("coding") if "coding" in value else [value]
                for coding in codings if isinstance(codings, list) else []:
                    if not isinstance(coding, dict):
                        continue
                    code = coding.get("code", coding.get("value"))
                    if isinstance(code, str):
                        system = coding.get("system")
                        out.add((system if isinstance(system, str) else None, code))
    return out


def token_index_values(pairs: set[tuple[str | None, str]]) -> set[str]:
    """Index strings for token pairs: by code and by system|code. (`system|` alone is answered by
    opening the candidates: it is rare, and indexing it would triple the index.)"""
    out: set[str] = set()
    for system, code in pairs:
        out.add(f"c:{code}")
        if system:  # `|code` (explicitly no system) is answered by opening the candidates
            out.add(f"sc:{system}|{code}")
    return out


def token_query_value(raw: str) -> str:
    """Index string a token search value must match (FHIR token syntax)."""
    if "|" not in raw:
        return f"c:{raw}"
    system, code = raw.split("|", 1)
    if code == "":
        return f"s:{system}|"
    if system == "":
        return f"n:|{code}"
    return f"sc:{system}|{code}"


def token_matches(pairs: set[tuple[str | None, str]], raw: str) -> bool:
    """Exact FHIR token semantics: `code`, `system|code`, `|code` (no system), `system|` (any code)."""
    if "|" not in raw:
        return any(code == raw for _, code in pairs)
    system, code = raw.split("|", 1)
    if code == "":
        return any(s == system for s, _ in pairs)
    return any((s or "") == system and c == code for s, c in pairs)


def reference_ids(resource: dict[str, Any], param: Param, target_type: str | None = None) -> set[str]:
    out: set[str] = set()
    for path in param.paths:
        for value in _values(resource, path):
            if isinstance(value, dict) and isinstance(value.get("reference"), str):
                ref: str = value["reference"]
                parts = ref.split("/")
                if len(parts) >= 2 and (target_type is None or parts[-2] == target_type):
                    out.add(f"{parts[-2]}/{parts[-1]}")
    return out


def string_values(resource: dict[str, Any], param: Param) -> set[str]:
    out: set[str] = set()
    for path in param.paths:
        for value in _values(resource, path):
            if isinstance(value, str):
                out.add(value)
            elif isinstance(value, dict):  # HumanName / Address: every string part
                for part in (
                    "text",
                    "family",
                    "given",
                    "prefix",
                    "suffix",
                    "line",
                    "city",
                    "state",
                    "postalCode",
                    "country",
                ):
                    v = value.get(part)
                    for s in v if isinstance(v, list) else [v]:
                        if isinstance(s, str):
                            out.add(s)
    return out


# ---------------------------------------------------------------------------------------------
# dates

_DATE_RE = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?P<f>\.\d+)?)?(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)
MIN_DT = datetime(1, 1, 1, tzinfo=UTC)
MAX_DT = datetime(9999, 12, 31, tzinfo=UTC)


def date_range(text: str) -> tuple[datetime, datetime]:
    """FHIR date/dateTime/instant as a half-open UTC range [low, high) at its precision."""
    try:
        return _date_range(text)
    except OverflowError:
        # 9999-12-31 (+1 day) or 0001-01-01T00:00+01:00 (to UTC) leave datetime's range: callers
        # treat ValueError as "not a usable date" (400 for a query), never a 500.
        raise ValueError("date out of range") from None


def _date_range(text: str) -> tuple[datetime, datetime]:
    m = _DATE_RE.match(text.strip())
    if not m:
        raise ValueError("not a FHIR date")
    y = int(m["y"])
    if m["m"] is None:
        return datetime(y, 1, 1, tzinfo=UTC), datetime(y + 1, 1, 1, tzinfo=UTC)
    mo = int(m["m"])
    if m["d"] is None:
        low = datetime(y, mo, 1, tzinfo=UTC)
        high = datetime(y + (mo == 12), mo % 12 + 1, 1, tzinfo=UTC)
        return low, high
    d = int(m["d"])
    if m["H"] is None:
        low = datetime(y, mo, d, tzinfo=UTC)
        return low, low + timedelta(days=1)
    tz = UTC
    if m["tz"] and m["tz"] != "Z":
        sign = 1 if m["tz"][0] == "+" else -1
        hh, mm = m["tz"][1:].split(":")
        tz = timezone(sign * timedelta(hours=int(hh), minutes=int(mm)))
    second = int(m["S"]) if m["S"] else 0
    digits = m["f"][1:7] if m["f"] else ""
    micro = int(digits.ljust(6, "0")) if digits else 0
    low = datetime(y, mo, d, int(m["H"]), int(m["M"]), second, micro, tzinfo=tz).astimezone(UTC)
    if m["S"] is None:
        return low, low + timedelta(minutes=1)
    if digits:
        # The precision is that of the digits given: "…12.345" is [12.345, 12.346), so a search
        # with a meta.lastUpdated value (milliseconds) finds a row stored with microseconds.
        return low, low + timedelta(microseconds=10 ** (6 - len(digits)))
    return low, low + timedelta(seconds=1)


def date_ranges(resource: dict[str, Any], param: Param) -> list[tuple[datetime, datetime]]:
    out: list[tuple[datetime, datetime]] = []
    for path in param.paths:
        for value in _values(resource, path):
            try:
                if isinstance(value, str):
                    out.append(date_range(value))
                elif isinstance(value, dict) and ("start" in value or "end" in value):
                    low = date_range(value["start"])[0] if isinstance(value.get("start"), str) else MIN_DT
                    high = date_range(value["end"])[1] if isinstance(value.get("end"), str) else MAX_DT
                    out.append((low, high))
            except ValueError:
                continue
    return out


PREFIXES = ("eq", "ne", "lt", "le", "gt", "ge")


def split_prefix(raw: str) -> tuple[str, str]:
    if len(raw) > 2 and raw[:2].isalpha():
        prefix = raw[:2]
        if prefix not in PREFIXES:
            raise UnsupportedSearch(f"date prefix {prefix!r} is not supported (use eq, ne, lt, le, gt, ge)")
        return prefix, raw[2:]
    return "eq", raw


def parse_date_query(raw: str) -> tuple[str, tuple[datetime, datetime]]:
    prefix, value = split_prefix(raw)
    try:
        return prefix, date_range(value)
    except ValueError:
        raise UnsupportedSearch(
            "date search value is not a FHIR date (YYYY, YYYY-MM, YYYY-MM-DD or dateTime)"
        ) from None


def date_matches(target: tuple[datetime, datetime], prefix: str, query: tuple[datetime, datetime]) -> bool:
    """FHIR R4 date comparison between a target range and a search range (both half-open)."""
    t_low, t_high = target
    q_low, q_high = query
    if prefix == "eq":
        return q_low <= t_low and t_high <= q_high
    if prefix == "ne":
        return not (q_low <= t_low and t_high <= q_high)
    # R4 search 3.1.1.4.7: ge is "the range above the search value intersects the target, or the
    # search range fully contains the target" (gt or eq), le likewise (lt or eq). A target that only
    # straddles the lower (ge) or upper (le) bound of the search range does not match.
    if prefix == "gt":
        return t_high > q_high
    if prefix == "ge":
        return t_high > q_high or t_low >= q_low
    if prefix == "lt":
        return t_low < q_low
    if prefix == "le":
        return t_low < q_low or t_high <= q_high
    raise UnsupportedSearch(f"date prefix {prefix!r} is not supported")


YEAR_FLOOR = 1800
YEAR_CEILING = 2200


def year_span(target: tuple[datetime, datetime], *, max_years: int = 10) -> list[str] | None:
    """Years a date range touches, for the coarse year index; None when too wide (open periods)
    or outside [YEAR_FLOOR, YEAR_CEILING]: `query_years` only enumerates that window, so a year
    token outside it (a 1750 date) would never be looked up and the resource would be missed."""
    low, high = target
    last = (high - timedelta(microseconds=1)).year
    if last - low.year >= max_years or low.year < YEAR_FLOOR or last > YEAR_CEILING:
        return None
    return [str(y) for y in range(low.year, last + 1)]


def query_years(
    prefix: str, query: tuple[datetime, datetime], *, floor: int = YEAR_FLOOR, ceiling: int = YEAR_CEILING
) -> list[str]:
    """Years a matching target could touch, for a given search prefix ([] when no narrowing is possible)."""
    low, high = query
    last = (high - timedelta(microseconds=1)).year
    if prefix == "eq":
        years = range(low.year, last + 1)
    elif prefix in ("gt", "ge"):
        years = range(max(low.year, floor), ceiling + 1)
    elif prefix in ("lt", "le"):
        years = range(floor, min(last, ceiling) + 1)
    else:
        return []
    return [str(y) for y in years]


def sort_key(resource: dict[str, Any], param: Param) -> datetime:
    ranges = date_ranges(resource, param)
    return min((r[0] for r in ranges), default=MIN_DT)
