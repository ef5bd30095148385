"""The emergency summary: an International Patient Summary (IPS) document Bundle built from a record.

`build_summary(patient=..., resources=..., now=..., options=...)` is pure (no I/O, no database, no
clock: `now` is given) and returns a FHIR R4 `Bundle` of type `document` whose first entry is a
`Composition` coded LOINC 60591-5 "Patient summary Document". The caller (the emergency card, the
patient's preview, break-the-glass) loads the patient's resources through `records.guard` as usual.

## Sections, in this order

| section | code | when |
|---|---|---|
| Alerts | LOINC 104605-1 | only when there is an alert: patient-written alerts first, then active `Flag`s verbatim |
| Active problems | LOINC 11450-4 | always (entries or `emptyReason`) |
| Allergies and intolerances | LOINC 48765-2 | always; ordered by criticality |
| Medication summary | LOINC 10160-0 | always |
| Immunizations | LOINC 11369-6 | when any |
| History of procedures | LOINC 47519-4 | when any |
| Advance directives | LOINC 42348-3 | when any |
| Emergency contacts | `urn:medvault:emergency-section#emergency-contacts` | when any (Patient.contact, RelatedPerson) |
| Care team | `urn:medvault:emergency-section#care-team` | when any (`CareTeam`, `generalPractitioner`) |

IPS has no section for contacts or the care team; rather than borrow a LOINC code that means
something else, they carry our own code. Every section has a generated XHTML narrative (responders
read the text, not the JSON) whose every value is escaped.

## "No information" is not "none known"

A required section with nothing to show gets `emptyReason` `unavailable` (list-empty-reason): we do
not know. A record that actually says "no known allergies" (SNOMED CT 716186003 and friends, or the
IPS `absent-unknown-uv-ips` `no-known-*` codes) keeps that statement as an ordinary entry, so the
section reads "No known allergy". The IPS `no-*-info` codes say "no information" and are treated as
absent. Hidden or left-out sensitive items also give `unavailable`, never `withheld`: the card must
not reveal that something was hidden.

## Which items count (only active, confirmed ones)

* `Condition`: clinicalStatus active, recurrence or relapse (a missing clinicalStatus is not
  active); verificationStatus confirmed or absent (unconfirmed, provisional, differential, refuted
  and entered-in-error are left out).
* `AllergyIntolerance`: clinicalStatus active; verificationStatus confirmed or absent. Order:
  criticality high, unable-to-assess (unknown risk), low, none stated; then by name.
* `MedicationStatement`: status active. `MedicationRequest`: status active, intent an order (not
  proposal, plan or option), not `doNotPerform`.
* `Immunization`: status completed. `Procedure`: status completed or in-progress.
* Advance directives: `Consent` with scope `adr` and status active; `DocumentReference` typed or
  categorised LOINC 42348-3 / 75320-2 with status current.
* `Flag`: status active and `period` (if any) covering `now`.
* `CareTeam`: status active. `RelatedPerson`: not `active: false`, `period` (if any) covering `now`.

Only resources whose subject/patient is this patient are considered. A resource is left out when
`options.hidden` names it ("Type/id"), or when it carries a sensitive category
(`access.labels.sensitive_labels`; a medication also carries its `Medication`'s) that
`options.include_sensitive` does not name.

## Self-contained, and no more than needed

Referenced `Medication`, `Practitioner`, `PractitionerRole` and `Organization` resources are included.
Every included resource is a copy whose references point at the Bundle's `urn:uuid:` entries; a
reference to something not in the summary keeps only its `display` (and `identifier`), and a
reference to a hidden or left-out sensitive resource is removed altogether (its display could name
it). The `Patient` is reduced to what a responder needs (name, gender, birth date, telecom,
contacts, language, general practitioner): no identifiers (SSN, passport...), address or
extensions such as mother's maiden name, since a printed card can be lost.
"""

from __future__ import annotations

import html
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import unquote

from medvault import __version__
from medvault.access.labels import SENSITIVE_TAGS, sensitive_labels
from medvault.fhir.errors import InvalidResource, Issue
from medvault.fhir.parse import validate
from medvault.fhir.search import date_range

LOINC: Final = "http://loinc.org"
SNOMED: Final = "http://snomed.info/sct"
LIST_EMPTY_REASON: Final = "http://terminology.hl7.org/CodeSystem/list-empty-reason"
IPS_ABSENT: Final = "http://hl7.org/fhir/uv/ips/CodeSystem/absent-unknown-uv-ips"
SECTION_SYSTEM: Final = "urn:medvault:emergency-section"
CONSENT_SCOPE: Final = "http://terminology.hl7.org/CodeSystem/consentscope"
FLAG_CATEGORY: Final = "http://terminology.hl7.org/CodeSystem/flag-category"
V2_CONTACT_ROLE: Final = "http://terminology.hl7.org/CodeSystem/v2-0131"
XHTML_NS: Final = "http://www.w3.org/1999/xhtml"
MAX_ALERT_CHARS: Final = 500

# Stable namespace for the summary's urn:uuid identifiers (uuid5 of "Type/id"): the same record gives
# the same fullUrls, and the identifiers say nothing beyond what the Bundle already holds.
_NAMESPACE: Final = uuid.UUID("6f1e2a0c-5d1b-4c8e-9a57-2f4b1e0d9c31")

DOCUMENT_TYPE: Final = {"system": LOINC, "code": "60591-5", "display": "Patient summary Document"}


@dataclass(frozen=True, slots=True, eq=False)
class SectionKind:
    key: str
    title: str
    coding: Mapping[str, str]
    required: bool


ALERTS: Final = SectionKind("alerts", "Alerts", {"system": LOINC, "code": "104605-1", "display": "Alert"}, False)
PROBLEMS: Final = SectionKind(
    "problems", "Active problems", {"system": LOINC, "code": "11450-4", "display": "Problem list - Reported"}, True
)
ALLERGIES: Final = SectionKind(
    "allergies",
    "Allergies and intolerances",
    {"system": LOINC, "code": "48765-2", "display": "Allergies and adverse reactions Document"},
    True,
)
MEDICATIONS: Final = SectionKind(
    "medications",
    "Medication summary",
    {"system": LOINC, "code": "10160-0", "display": "History of Medication use Narrative"},
    True,
)
IMMUNIZATIONS: Final = SectionKind(
    "immunizations",
    "Immunizations",
    {"system": LOINC, "code": "11369-6", "display": "History of Immunization note"},
    False,
)
PROCEDURES: Final = SectionKind(
    "procedures",
    "History of procedures",
    {"system": LOINC, "code": "47519-4", "display": "History of Procedures Document"},
    False,
)
ADVANCE_DIRECTIVES: Final = SectionKind(
    "advance-directives",
    "Advance directives",
    {"system": LOINC, "code": "42348-3", "display": "Advance directives"},
    False,
)
CONTACTS: Final = SectionKind(
    "emergency-contacts",
    "Emergency contacts",
    {"system": SECTION_SYSTEM, "code": "emergency-contacts", "display": "Emergency contacts"},
    False,
)
CARE_TEAM: Final = SectionKind(
    "care-team", "Care team", {"system": SECTION_SYSTEM, "code": "care-team", "display": "Care team"}, False
)
SECTION_ORDER: Final = (
    ALERTS,
    PROBLEMS,
    ALLERGIES,
    MEDICATIONS,
    IMMUNIZATIONS,
    PROCEDURES,
    ADVANCE_DIRECTIVES,
    CONTACTS,
    CARE_TEAM,
)

# Statements that there is no information (treated as absent) and that there is none (kept).
_NO_INFO_CODES: Final = frozenset(
    {
        (IPS_ABSENT, "no-allergy-info"),
        (IPS_ABSENT, "no-problem-info"),
        (IPS_ABSENT, "no-medication-info"),
        (IPS_ABSENT, "no-immunization-info"),
        (IPS_ABSENT, "no-procedure-info"),
        (IPS_ABSENT, "no-device-info"),
        (IPS_ABSENT, "no-known-info"),
    }
)

_CONDITION_ACTIVE: Final = frozenset({"active", "recurrence", "relapse"})
_ACCEPTED_VERIFICATION: Final = frozenset({"confirmed"})
_CRITICALITY_RANK: Final = {"high": 0, "unable-to-assess": 1, "low": 2}
_ORDER_INTENTS: Final = frozenset({"order", "original-order", "reflex-order", "filler-order", "instance-order"})
_ADVANCE_DIRECTIVE_CODES: Final = frozenset({(LOINC, "42348-3"), (LOINC, "75320-2")})
_SUPPORTING_TYPES: Final = frozenset({"Medication", "Practitioner", "PractitionerRole", "Organization"})
_PATIENT_LINKS: Final = ("subject", "patient")
_PHONE_SYSTEMS: Final = frozenset({"phone", "sms"})
_KEPT_PATIENT_FIELDS: Final = (
    "id",
    "active",
    "name",
    "telecom",
    "gender",
    "birthDate",
    "deceasedBoolean",
    "deceasedDateTime",
    "communication",
    "generalPractitioner",
)
_KEPT_CONTACT_FIELDS: Final = ("relationship", "name", "telecom", "gender", "organization", "period")


@dataclass(frozen=True, slots=True)
class SummaryOptions:
    """The patient's choices for the summary.

    include_sensitive: sensitive categories (`access.labels.SENSITIVE_TAGS`) the patient chose to show.
    hidden: resources ("Type/id") the patient hid from the summary.
    extra_alerts: alerts the patient wrote ("Irradiated blood only - fludarabine-treated patient"),
    shown first among the alerts as `Flag`s authored by the patient.
    """

    include_sensitive: frozenset[str] = frozenset()
    hidden: frozenset[str] = frozenset()
    extra_alerts: tuple[str, ...] = field(default=())


# ---------------------------------------------------------------------------------------------
# Reference resolution over the given resources


def _key(resource: Mapping[str, Any]) -> str | None:
    rtype, rid = resource.get("resourceType"), resource.get("id")
    return f"{rtype}/{rid}" if isinstance(rtype, str) and isinstance(rid, str) else None


class _Index:
    """Resolves the reference forms a record may hold to "Type/id": relative and absolute RESTful
    references, `urn:uuid:`/`urn:oid:` ids (as in imported transaction Bundles) and conditional
    `Type?identifier=system|value` references (as Synthea writes for practitioners)."""

    def __init__(self, resources: Iterable[Mapping[str, Any]]) -> None:
        self.by_key: dict[str, Mapping[str, Any]] = {}
        self._by_id: dict[str, str | None] = {}
        self._by_identifier: dict[tuple[str, str, str], str] = {}
        for res in resources:
            key = _key(res)
            if key is None or key in self.by_key:
                continue
            self.by_key[key] = res
            rid = key.split("/", 1)[1]
            self._by_id[rid] = None if rid in self._by_id else key  # ambiguous across types: unresolved
            if res.get("resourceType") in _SUPPORTING_TYPES or res.get("resourceType") == "Patient":
                for ident in _items(res.get("identifier")):
                    system, value = ident.get("system"), ident.get("value")
                    if isinstance(system, str) and isinstance(value, str):
                        self._by_identifier.setdefault((key.split("/", 1)[0], system, value), key)
        self._cache: dict[str, str | None] = {}

    def resolve(self, ref: str) -> str | None:
        if ref in self._cache:
            return self._cache[ref]
        found = self._resolve(ref)
        self._cache[ref] = found
        return found

    def _resolve(self, ref: str) -> str | None:
        if ref.startswith(("urn:uuid:", "urn:oid:")):
            return self._by_id.get(ref[9:] if ref.startswith("urn:uuid:") else ref[8:])
        if "?" in ref:
            rtype, _, query = ref.partition("?")
            name, _, value = unquote(query).partition("=")
            system, bar, code = value.partition("|")
            if name == "identifier" and bar:
                return self._by_identifier.get((rtype.rsplit("/", 1)[-1], system, code))
            return None
        parts = ref.split("/")
        if len(parts) >= 4 and parts[-2] == "_history":
            parts = parts[:-2]
        if len(parts) >= 2:
            key = f"{parts[-2]}/{parts[-1]}"
            return key if key in self.by_key else None
        return None


def _items(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, list):
        return [v for v in value if isinstance(v, dict)]
    return [value] if isinstance(value, dict) else []


def _code(concept: Any) -> str | None:
    """The first code of a CodeableConcept (status elements such as clinicalStatus)."""
    for coding in _items(concept.get("coding") if isinstance(concept, dict) else None):
        code = coding.get("code")
        if isinstance(code, str):
            return code
    return None


def _codings(concept: Any) -> set[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    for c in _items(concept):
        for coding in _items(c.get("coding")):
            system, code = coding.get("system"), coding.get("code")
            if isinstance(system, str) and isinstance(code, str):
                out.add((system, code))
    return out


def _text(concept: Any) -> str:
    """Readable text of a CodeableConcept: its text, else the first display, else the first code."""
    if not isinstance(concept, dict):
        return ""
    text = concept.get("text")
    if isinstance(text, str) and text.strip():
        return text
    codings = _items(concept.get("coding"))
    for coding in codings:
        display = coding.get("display")
        if isinstance(display, str) and display.strip():
            return display
    for coding in codings:
        code = coding.get("code")
        if isinstance(code, str):
            return code
    return ""


def _date(resource: Mapping[str, Any], *names: str) -> str:
    """The first of the named dateTime/Period/instant elements that is present (Period: its start)."""
    for name in names:
        value = resource.get(name)
        if isinstance(value, str):
            return value
        if isinstance(value, dict) and isinstance(value.get("start"), str):
            return str(value["start"])
    return ""


def _day(resource: Mapping[str, Any], *names: str) -> str:
    """`_date` for reading: the day only (a responder needs "since 2019-03-31", not the second)."""
    return _date(resource, *names)[:10]


def _sort_instant(value: str) -> float:
    """Sort key for a FHIR date: newest first when negated; unparsable or absent ones last."""
    if not value:
        return float("-inf")
    try:
        return date_range(value)[0].timestamp()
    except ValueError:
        return float("-inf")


# ---------------------------------------------------------------------------------------------
# Inclusion rules


def _no_information(resource: Mapping[str, Any]) -> bool:
    codings = _codings(resource.get("code")) | _codings(resource.get("medicationCodeableConcept"))
    return bool(codings & _NO_INFO_CODES)


def _verified(resource: Mapping[str, Any]) -> bool:
    status = resource.get("verificationStatus")
    return status is None or _code(status) in _ACCEPTED_VERIFICATION


def _problem(res: Mapping[str, Any], now: datetime) -> bool:
    return _code(res.get("clinicalStatus")) in _CONDITION_ACTIVE and _verified(res)


def _allergy(res: Mapping[str, Any], now: datetime) -> bool:
    return _code(res.get("clinicalStatus")) == "active" and _verified(res)


def _medication(res: Mapping[str, Any], now: datetime) -> bool:
    if res.get("status") != "active":
        return False
    if res.get("resourceType") == "MedicationRequest":
        return res.get("intent") in _ORDER_INTENTS and res.get("doNotPerform") is not True
    return True


def _immunization(res: Mapping[str, Any], now: datetime) -> bool:
    return res.get("status") == "completed"


def _procedure(res: Mapping[str, Any], now: datetime) -> bool:
    return res.get("status") in ("completed", "in-progress")


def _advance_directive(res: Mapping[str, Any], now: datetime) -> bool:
    if res.get("resourceType") == "Consent":
        return res.get("status") == "active" and (CONSENT_SCOPE, "adr") in _codings(res.get("scope"))
    codes = _codings(res.get("type")) | _codings(res.get("category"))
    return res.get("status") == "current" and bool(codes & _ADVANCE_DIRECTIVE_CODES)


def _covers(period: Any, now: datetime) -> bool:
    if not isinstance(period, dict):
        return True
    try:
        start = period.get("start")
        if isinstance(start, str) and date_range(start)[0] > now:
            return False
        end = period.get("end")
        if isinstance(end, str) and date_range(end)[1] <= now:
            return False
    except ValueError:
        return False  # an unreadable period: do not claim the alert is current
    return True


def _flag(res: Mapping[str, Any], now: datetime) -> bool:
    return res.get("status") == "active" and _covers(res.get("period"), now)


def _care_team(res: Mapping[str, Any], now: datetime) -> bool:
    return res.get("status") == "active"


def _related_person(res: Mapping[str, Any], now: datetime) -> bool:
    return res.get("active") is not False and _covers(res.get("period"), now)


_Rule = Callable[[Mapping[str, Any], datetime], bool]
_RULES: Final[Mapping[str, tuple[SectionKind, _Rule]]] = {
    "Flag": (ALERTS, _flag),
    "Condition": (PROBLEMS, _problem),
    "AllergyIntolerance": (ALLERGIES, _allergy),
    "MedicationStatement": (MEDICATIONS, _medication),
    "MedicationRequest": (MEDICATIONS, _medication),
    "Immunization": (IMMUNIZATIONS, _immunization),
    "Procedure": (PROCEDURES, _procedure),
    "Consent": (ADVANCE_DIRECTIVES, _advance_directive),
    "DocumentReference": (ADVANCE_DIRECTIVES, _advance_directive),
    "CareTeam": (CARE_TEAM, _care_team),
    "RelatedPerson": (CONTACTS, _related_person),
}


# ---------------------------------------------------------------------------------------------
# Narrative


def _esc(value: str) -> str:
    return html.escape(value, quote=False)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_esc(c) if c else '-'}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _div(inner: str) -> dict[str, str]:
    return {"status": "generated", "div": f'<div xmlns="{XHTML_NS}">{inner}</div>'}


def _phones(telecom: Any) -> str:
    values = [t.get("value") for t in _items(telecom) if t.get("system") in _PHONE_SYSTEMS]
    return ", ".join(v for v in values if isinstance(v, str))


def _human_name(names: Any) -> str:
    for name in _items(names):
        text = name.get("text")
        if isinstance(text, str) and text.strip():
            return text
        given = [g for g in name.get("given", []) if isinstance(g, str)]
        prefix = [p for p in name.get("prefix", []) if isinstance(p, str)]
        family = str(name["family"]) if isinstance(name.get("family"), str) else ""
        full = " ".join([*prefix, *given, family]).strip()
        if full:
            return full
    return ""


def _name_of(resource: Mapping[str, Any] | None) -> str:
    if resource is None:
        return ""
    if isinstance(resource.get("name"), str):
        return str(resource["name"])
    return _human_name(resource.get("name"))


def _dosage(res: Mapping[str, Any]) -> str:
    key = "dosageInstruction" if res.get("resourceType") == "MedicationRequest" else "dosage"
    texts = [d.get("text") for d in _items(res.get(key))]
    return "; ".join(t for t in texts if isinstance(t, str))


def _reaction(res: Mapping[str, Any]) -> str:
    found: list[str] = []
    for reaction in _items(res.get("reaction")):
        for manifestation in _items(reaction.get("manifestation")):
            text = _text(manifestation)
            if text and text not in found:
                found.append(text)
    return ", ".join(found)


# ---------------------------------------------------------------------------------------------
# The builder


class _Builder:
    def __init__(
        self,
        patient: Mapping[str, Any],
        resources: Iterable[Mapping[str, Any]],
        now: datetime,
        options: SummaryOptions,
    ) -> None:
        self.now = now
        self.options = options
        self.patient = patient
        self.patient_key = f"Patient/{patient['id']}"
        pool = [r for r in resources if isinstance(r, Mapping) and _key(r) != self.patient_key]
        self.index = _Index([patient, *pool])
        self.pool = pool
        self._excluded: dict[str, bool] = {}  # key -> hidden or sensitive: references to it are removed
        self.included: dict[str, Mapping[str, Any]] = {}  # key -> original, in Bundle order
        self.full_urls: dict[str, str] = {}
        self.keys_by_url: dict[str, str] = {}

    # -- selection ---------------------------------------------------------------------------------

    def _mine(self, res: Mapping[str, Any]) -> bool:
        for link in _PATIENT_LINKS:
            ref = res.get(link)
            if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
                return self.index.resolve(ref["reference"]) == self.patient_key
        return False

    def _labels(self, res: Mapping[str, Any]) -> frozenset[str]:
        labels = sensitive_labels(dict(res))
        med = res.get("medicationReference")
        if isinstance(med, dict) and isinstance(med.get("reference"), str):
            target_key = self.index.resolve(med["reference"])
            target = self.index.by_key.get(target_key) if target_key else None
            if target is not None:
                labels |= sensitive_labels(dict(target))
        return labels

    def _allowed(self, key: str, res: Mapping[str, Any]) -> bool:
        if key in self.options.hidden:
            return False
        med = res.get("medicationReference")
        if (
            isinstance(med, dict)
            and isinstance(med.get("reference"), str)
            and self.index.resolve(med["reference"]) in self.options.hidden
        ):
            return False  # a statement about a hidden Medication would name it, or lose its required medication
        return self._labels(res) <= self.options.include_sensitive

    def excluded(self, key: str) -> bool:
        """Hidden, or sensitive and not included: then no reference to it may stay, not even its
        display (a resolved HIV Condition named by an active medication's reasonReference)."""
        if key == self.patient_key:
            return False  # the summary is about the patient: a label on the Patient does not remove them
        found = self._excluded.get(key)
        if found is None:
            res = self.index.by_key.get(key)
            found = key in self.options.hidden or (res is not None and not self._allowed(key, res))
            self._excluded[key] = found
        return found

    def select(self) -> dict[SectionKind, list[Mapping[str, Any]]]:
        chosen: dict[SectionKind, list[Mapping[str, Any]]] = {kind: [] for kind in SECTION_ORDER}
        for res in self.pool:
            rtype = res.get("resourceType")
            if not isinstance(rtype, str) or rtype not in _RULES:
                continue
            kind, rule = _RULES[rtype]
            key = _key(res)
            if key is None or not self._mine(res) or not rule(res, self.now) or _no_information(res):
                continue
            if not self.excluded(key):
                chosen[kind].append(res)
        return chosen

    # -- ordering ------------------------------------------------------------------------------------

    @staticmethod
    def order(kind: SectionKind, items: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        def newest(*names: str) -> Callable[[Mapping[str, Any]], tuple[float, str]]:
            return lambda r: (-_sort_instant(_date(r, *names)), _key(r) or "")

        if kind is ALLERGIES:
            return sorted(
                items,
                key=lambda r: (
                    _CRITICALITY_RANK.get(str(r.get("criticality")), 3),
                    _text(r.get("code")).casefold(),
                    _key(r) or "",
                ),
            )
        if kind is PROBLEMS:
            return sorted(items, key=newest("onsetDateTime", "onsetPeriod", "recordedDate"))
        if kind is MEDICATIONS:
            return sorted(items, key=newest("authoredOn", "effectiveDateTime", "effectivePeriod", "dateAsserted"))
        if kind is IMMUNIZATIONS:
            return sorted(items, key=newest("occurrenceDateTime", "recorded"))
        if kind is PROCEDURES:
            return sorted(items, key=newest("performedDateTime", "performedPeriod"))
        return items  # alerts verbatim in record order; directives and care teams as recorded

    # -- inclusion and references --------------------------------------------------------------------

    def full_url(self, key: str) -> str:
        url = self.full_urls.get(key)
        if url is None:
            url = f"urn:uuid:{uuid.uuid5(_NAMESPACE, key)}"
            self.full_urls[key] = url
        return url

    def include(self, key: str, res: Mapping[str, Any]) -> str:
        if key not in self.included:
            self.included[key] = res
            self.full_url(key)
        return self.full_urls[key]

    def include_supporting(self) -> None:
        """Referenced Medications, Practitioners, PractitionerRoles and Organizations, transitively."""
        queue = list(self.included.values())
        while queue:
            res = queue.pop()
            for ref in _references(res):
                key = self.index.resolve(ref)
                if key is None or key in self.included or self.excluded(key):
                    continue
                target = self.index.by_key[key]
                if target.get("resourceType") in _SUPPORTING_TYPES:
                    self.include(key, target)
                    queue.append(target)

    def rewrite(self, node: Any) -> Any:
        """A copy of `node` with every reference pointing into the Bundle (see the module docstring)."""
        if isinstance(node, dict):
            if isinstance(node.get("reference"), str) and not node["reference"].startswith("#"):
                key = self.index.resolve(node["reference"])
                if key is not None and self.excluded(key):
                    return _DROP
                out: dict[str, Any] = {}
                for k, v in node.items():
                    if k == "reference":
                        if key is not None and key in self.included:
                            out[k] = self.full_urls[key]
                        continue
                    value = self.rewrite(v)
                    if value is not _DROP:
                        out[k] = value
                if not ({"reference", "display", "identifier"} & out.keys()):
                    return _DROP
                return out
            result: dict[str, Any] = {}
            for k, v in node.items():
                value = self.rewrite(v)
                if value is not _DROP:
                    result[k] = value
            return result if result else _DROP
        if isinstance(node, list):
            items = [x for x in (self.rewrite(v) for v in node) if x is not _DROP]
            return items if items else _DROP
        return node

    # -- output --------------------------------------------------------------------------------------

    def minimal_patient(self) -> dict[str, Any]:
        out: dict[str, Any] = {"resourceType": "Patient"}
        for name in _KEPT_PATIENT_FIELDS:
            if name in self.patient:
                out[name] = self.patient[name]
        contacts = [{k: c[k] for k in _KEPT_CONTACT_FIELDS if k in c} for c in _items(self.patient.get("contact"))]
        contacts = [c for c in contacts if "name" in c or "telecom" in c or "organization" in c]
        if contacts:
            out["contact"] = contacts
        return out


_DROP: Final = object()


def _references(node: Any) -> Iterable[str]:
    stack = [node]
    while stack:
        cur = stack.pop()
        if isinstance(cur, dict):
            ref = cur.get("reference")
            if isinstance(ref, str):
                yield ref
            stack.extend(v for v in cur.values() if isinstance(v, dict | list))
        elif isinstance(cur, list):
            stack.extend(v for v in cur if isinstance(v, dict | list))


def _alert_flag(text: str, index: int, patient_url: str, patient_id: str, now: datetime) -> dict[str, Any]:
    clean = text.strip()
    if not clean or len(clean) > MAX_ALERT_CHARS:
        raise InvalidResource(
            [Issue("invalid", f"an alert needs 1 to {MAX_ALERT_CHARS} characters", f"extra_alerts[{index}]")]
        )
    flag: dict[str, Any] = {
        "resourceType": "Flag",
        "id": str(uuid.uuid5(_NAMESPACE, f"alert|{patient_id}|{index}|{clean}")),
        "status": "active",
        "category": [{"coding": [{"system": FLAG_CATEGORY, "code": "clinical", "display": "Clinical"}]}],
        "code": {"text": clean},
        "subject": {"reference": patient_url},
        "period": {"start": _instant(now)},
        "author": {"reference": patient_url},  # written by the patient, and says so
    }
    try:
        validate(flag, where=f"extra_alerts[{index}]")
    except InvalidResource as exc:  # control characters, markup: say where, never echo the text
        raise InvalidResource(exc.issues) from None
    return flag


def _instant(now: datetime) -> str:
    return now.astimezone(UTC).isoformat(timespec="seconds")


def _author_device() -> dict[str, Any]:
    return {
        "resourceType": "Device",
        "id": "medvault",
        "deviceName": [{"name": "medvault", "type": "manufacturer-name"}],
        "version": [{"value": __version__}],
    }


def build_summary(
    *,
    patient: Mapping[str, Any],
    resources: Iterable[Mapping[str, Any]],
    now: datetime,
    options: SummaryOptions | None = None,
) -> dict[str, Any]:
    """The patient's emergency summary as an IPS document Bundle (see the module docstring).

    `patient`: the Patient resource (identity merged in); `resources`: the patient's other resources,
    in any reference form the record holds; `now`: timezone-aware, the document's time and the time
    alerts are judged against. Raises `InvalidResource` for an unusable patient or alert text and
    `ValueError` for a naive `now` or an unknown sensitive category."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    opts = options or SummaryOptions()
    unknown = opts.include_sensitive - SENSITIVE_TAGS
    if unknown:
        raise ValueError("unknown sensitive category in include_sensitive")
    if patient.get("resourceType") != "Patient" or not isinstance(patient.get("id"), str):
        raise InvalidResource([Issue("required", "the summary needs a Patient with an id", "patient")])

    b = _Builder(patient, resources, now, opts)
    chosen = b.select()
    patient_url = b.include(b.patient_key, patient)
    device = _author_device()
    device_url = b.full_url("Device/medvault")
    extra = [_alert_flag(text, i, patient_url, patient["id"], now) for i, text in enumerate(opts.extra_alerts)]

    section_keys: dict[SectionKind, list[str]] = {}
    for kind in SECTION_ORDER:
        keys = []
        for res in b.order(kind, chosen[kind]):
            key = _key(res)
            assert key is not None  # selected resources have one
            b.include(key, res)
            keys.append(key)
        section_keys[kind] = keys
    # The general practitioner belongs to the care team.
    for ref in _items(patient.get("generalPractitioner")):
        target = b.index.resolve(ref["reference"]) if isinstance(ref.get("reference"), str) else None
        if target is not None and not b.excluded(target) and target not in section_keys[CARE_TEAM]:
            b.include(target, b.index.by_key[target])
            section_keys[CARE_TEAM].append(target)
    b.include_supporting()
    b.keys_by_url = {url: key for key, url in b.full_urls.items()}

    resources_out: dict[str, dict[str, Any]] = {}
    for key, res in b.included.items():
        source = b.minimal_patient() if key == b.patient_key else res
        resources_out[key] = b.rewrite(source)

    sections: list[dict[str, Any]] = []
    for kind in SECTION_ORDER:
        keys = section_keys[kind]
        entries = [{"reference": b.full_urls[k]} for k in keys]
        items = [resources_out[k] for k in keys]
        if kind is ALERTS:
            entries = [{"reference": f"urn:uuid:{f['id']}"} for f in extra] + entries
            items = extra + items
        if kind is CONTACTS and "contact" in resources_out[b.patient_key]:
            entries = [{"reference": patient_url}, *entries]
            items = [resources_out[b.patient_key], *items]
        if not entries and not kind.required:
            continue
        section: dict[str, Any] = {"title": kind.title, "code": {"coding": [dict(kind.coding)]}}
        section["text"] = _div(_narrative(kind, items, resources_out, b, n_extra=len(extra)))
        if entries:
            section["entry"] = entries
        else:
            section["emptyReason"] = {
                "coding": [{"system": LIST_EMPTY_REASON, "code": "unavailable", "display": "Unavailable"}]
            }
        sections.append(section)

    doc_id = str(uuid.uuid5(_NAMESPACE, f"summary|{b.patient_key}|{_instant(now)}"))
    composition: dict[str, Any] = {
        "resourceType": "Composition",
        "id": doc_id,
        "status": "final",
        "type": {"coding": [dict(DOCUMENT_TYPE)]},
        "subject": {"reference": patient_url},
        "date": _instant(now),
        "author": [{"reference": device_url}],
        "title": "Emergency patient summary",
        "section": sections,
    }
    entry = [{"fullUrl": f"urn:uuid:{doc_id}", "resource": composition}]
    entry.append({"fullUrl": patient_url, "resource": resources_out[b.patient_key]})
    entry.append({"fullUrl": device_url, "resource": device})
    entry.extend({"fullUrl": f"urn:uuid:{f['id']}", "resource": f} for f in extra)
    entry.extend(
        {"fullUrl": b.full_urls[key], "resource": res} for key, res in resources_out.items() if key != b.patient_key
    )
    return {
        "resourceType": "Bundle",
        "identifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{doc_id}"},
        "type": "document",
        "timestamp": _instant(now),
        "entry": entry,
    }


def _narrative(
    kind: SectionKind,
    items: list[dict[str, Any]],
    out: Mapping[str, dict[str, Any]],
    b: _Builder,
    *,
    n_extra: int,
) -> str:
    if not items:
        return "<p>No information available.</p>"
    if kind is ALERTS:
        rows = [
            (_text(f.get("code")), "written by the patient" if i < n_extra else "health record")
            for i, f in enumerate(items)
        ]
        return _table(("Alert", "Source"), rows)
    if kind is PROBLEMS:
        return _table(
            ("Problem", "Since"),
            [
                (_text(r.get("code")), _day(r, "onsetDateTime", "onsetPeriod", "onsetString", "recordedDate"))
                for r in items
            ],
        )
    if kind is ALLERGIES:
        return _table(
            ("Substance", "Criticality", "Reaction"),
            [(_text(r.get("code")), str(r.get("criticality") or ""), _reaction(r)) for r in items],
        )
    if kind is MEDICATIONS:
        return _table(
            ("Medication", "Dosage", "Since"), [(_medication_name(r, b), _dosage(r), _since(r)) for r in items]
        )
    if kind is IMMUNIZATIONS:
        return _table(
            ("Vaccine", "Date"),
            [(_text(r.get("vaccineCode")), _day(r, "occurrenceDateTime", "recorded")) for r in items],
        )
    if kind is PROCEDURES:
        return _table(
            ("Procedure", "Date"),
            [(_text(r.get("code")), _day(r, "performedDateTime", "performedPeriod")) for r in items],
        )
    if kind is ADVANCE_DIRECTIVES:
        return _table(
            ("Directive", "Date"),
            [
                (
                    _text(r.get("type")) or _text(_first(r.get("category"))) or r.get("description", ""),
                    _day(r, "dateTime", "date"),
                )
                for r in items
            ],
        )
    if kind is CONTACTS:
        # Patient.contact entries, then RelatedPerson resources; emergency contacts (v2-0131 "C") first
        people = [c for r in items if r.get("resourceType") == "Patient" for c in _items(r.get("contact"))]
        people += [r for r in items if r.get("resourceType") == "RelatedPerson"]
        people.sort(key=lambda c: (V2_CONTACT_ROLE, "C") not in _codings(c.get("relationship")))
        contact_rows = [
            (
                _human_name(c.get("name")),
                ", ".join(_text(x) for x in _items(c.get("relationship"))),
                _phones(c.get("telecom")),
            )
            for c in people
        ]
        return _table(("Name", "Relationship", "Phone"), contact_rows)
    return _table(("Name", "Role", "Phone"), _care_rows(items, b))


def _first(value: Any) -> Any:
    found = _items(value)
    return found[0] if found else None


def _since(res: Mapping[str, Any]) -> str:
    return _day(res, "authoredOn", "effectiveDateTime", "effectivePeriod", "dateAsserted")


def _medication_name(res: Mapping[str, Any], b: _Builder) -> str:
    if "medicationCodeableConcept" in res:
        return _text(res.get("medicationCodeableConcept"))
    ref = res.get("medicationReference")
    if isinstance(ref, dict):
        # `res` is the Bundle's copy: its reference is already a fullUrl of the Bundle
        key = b.keys_by_url.get(ref["reference"]) if isinstance(ref.get("reference"), str) else None
        target = b.included.get(key) if key else None
        if target is not None:
            return _text(target.get("code"))
        display = ref.get("display")
        if isinstance(display, str):
            return display
    return ""


def _care_rows(items: list[dict[str, Any]], b: _Builder) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []

    def member(ref: Any, role: str) -> None:
        if not isinstance(ref, dict):
            return
        key = b.keys_by_url.get(ref["reference"]) if isinstance(ref.get("reference"), str) else None
        target = b.included.get(key) if key else None
        if target is None:
            if isinstance(ref.get("display"), str):
                rows.append((ref["display"], role, ""))
            return
        name, phones = _name_of(target), _phones(target.get("telecom"))
        if target.get("resourceType") == "PractitionerRole":
            role = role or ", ".join(_text(c) for c in _items(target.get("code")))
            for sub in ("practitioner", "organization"):
                sub_ref = target.get(sub)
                sub_key = (
                    b.index.resolve(sub_ref["reference"])
                    if isinstance(sub_ref, dict) and isinstance(sub_ref.get("reference"), str)
                    else None
                )
                sub_res = b.included.get(sub_key) if sub_key else None
                if sub_res is not None:
                    name = ", ".join(x for x in (name, _name_of(sub_res)) if x)
                    phones = phones or _phones(sub_res.get("telecom"))
        rows.append((name, role, phones))

    for res in items:
        if res.get("resourceType") == "CareTeam":
            for p in _items(res.get("participant")):
                member(p.get("member"), ", ".join(_text(r) for r in _items(p.get("role"))))
            member(_first(res.get("managingOrganization")), "Managing organization")
        else:
            member({"reference": b.full_urls[_key(res) or ""]}, "General practitioner")
    return rows


def bundle_resources(bundle: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The resources of a document or transaction Bundle, with references to other entries (by their
    `fullUrl`) rewritten to "Type/id", ready for `build_summary`. Entries without an id get one from
    their fullUrl (uuid5 of it, so the same Bundle gives the same ids)."""
    entries = [e for e in _items(bundle.get("entry")) if isinstance(e.get("resource"), dict)]
    keys: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    for e in entries:
        res = dict(e["resource"])
        full = e.get("fullUrl")
        if not isinstance(res.get("id"), str):
            res["id"] = str(uuid.uuid5(_NAMESPACE, f"entry|{full}"))
        key = _key(res)
        if isinstance(full, str) and key is not None:
            keys[full] = key
        out.append(res)

    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            copy = {k: rewrite(v) for k, v in node.items()}
            ref = node.get("reference")
            if isinstance(ref, str) and ref in keys:
                copy["reference"] = keys[ref]
            return copy
        if isinstance(node, list):
            return [rewrite(v) for v in node]
        return node

    return [rewrite(r) for r in out]
