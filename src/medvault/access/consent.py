"""Consent grants: a patient lets one clinician or organisation see (part of) their record.

A grant is stored as a FHIR R4 `Consent` in exactly one shape, written by `consent_resource`:

* `status` active (revoked: inactive), `scope` patient-privacy, `category` LOINC 59284-0,
  `policyRule` v3-ActCode OPTIN (default deny, this Consent opts the grantee in), `patient`,
  `dateTime`;
* one `provision` of type permit: its `period`, one `actor` (role v3-ParticipationType IRCP,
  "information recipient", a Practitioner or Organization reference), `class` listing resource types
  (absent: the whole record) and `securityLabel` listing the sensitive categories it names.

`grant_from_consent` reads that shape back and nothing else. Anything it cannot interpret with
certainty (a deny provision, nested provisions, actions or purposes, several actors, an unknown
label, a naive time...) yields None, i.e. grants nothing: a Consent written by another system, or
edited by hand, fails closed instead of being half understood.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from medvault.access.errors import ClockInvalid, ConsentInvalid
from medvault.access.labels import (
    ACT_CODE,
    CONFIDENTIALITY,
    GENETICS,
    HIV,
    MENTAL_HEALTH,
    RESTRICTED,
    SENSITIVE_TAGS,
    SEXUAL_REPRODUCTIVE,
    SUBSTANCE_USE,
)
from medvault.fhir.type_names import RESOURCE_TYPE_NAMES
from medvault.fhir.types import is_fhir_id

CONSENT_SCOPE: Final = "http://terminology.hl7.org/CodeSystem/consentscope"
PARTICIPATION_TYPE: Final = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
RESOURCE_TYPES: Final = "http://hl7.org/fhir/resource-types"
LOINC: Final = "http://loinc.org"
PATIENT_CONSENT: Final = "59284-0"

# The one code written for each tag. Reading accepts exactly these (not every code that maps to the
# tag in `labels`): a Consent naming BH, say, is not ours, and guessing what it permits would widen.
GRANT_LABEL_CODINGS: Final[Mapping[str, tuple[str, str, str]]] = {
    MENTAL_HEALTH: (ACT_CODE, "PSY", "psychiatry disorder information sensitivity"),
    SUBSTANCE_USE: (ACT_CODE, "ETH", "substance abuse information sensitivity"),
    HIV: (ACT_CODE, "HIV", "HIV/AIDS information sensitivity"),
    SEXUAL_REPRODUCTIVE: (ACT_CODE, "SEX", "sexuality and reproductive health information sensitivity"),
    GENETICS: (ACT_CODE, "GDIS", "genetic disease information sensitivity"),
    RESTRICTED: (CONFIDENTIALITY, "R", "restricted"),
}
_TAG_BY_CODING: Final[Mapping[tuple[object, object], str]] = {
    (s, c): tag for tag, (s, c, _) in GRANT_LABEL_CODINGS.items()
}

_GRANTEE = re.compile(r"(Practitioner|Organization)/([A-Za-z0-9\-.]{1,64})")
_RESOURCE_TYPE_NAMES: Final = frozenset(RESOURCE_TYPE_NAMES)
# Keys our shape may hold. Any other key (modifierExtension, implicitRules, provision.action, .data,
# .purpose, nested .provision...) can change what the Consent means, so its presence means "not ours".
_TOP_LEVEL_KEYS: Final = frozenset(
    {
        "resourceType",
        "id",
        "meta",
        "text",
        "status",
        "scope",
        "category",
        "patient",
        "dateTime",
        "policyRule",
        "provision",
    }
)
_PROVISION_KEYS: Final = frozenset({"type", "period", "actor", "class", "securityLabel"})
_STATUS_ACTIVE: Final[Mapping[object, bool]] = {"active": True, "inactive": False}


@dataclass(frozen=True)
class Grant:
    """One patient's permission for one grantee, as read from a Consent.

    `resource_types` None means the whole record; `sensitive` holds the sensitive tags the patient
    named (a resource carrying any other tag stays hidden from the grantee).
    """

    consent_id: str
    patient_id: str
    grantee: str  # "Practitioner/<id>" or "Organization/<id>"
    resource_types: frozenset[str] | None
    sensitive: frozenset[str]
    start: datetime | None
    end: datetime | None
    active: bool

    def in_force(self, now: datetime) -> bool:
        """Active (not revoked) and `now` inside the period; both ends inclusive, as FHIR Period."""
        require_aware(now, what="now")
        if not self.active:
            return False
        if self.start is not None and now < self.start:
            return False
        return self.end is None or now <= self.end

    def covers_type(self, resource_type: str) -> bool:
        return self.resource_types is None or resource_type in self.resource_types

    def covers_labels(self, labels: frozenset[str]) -> bool:
        return labels <= self.sensitive


def require_aware(value: datetime, *, what: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ClockInvalid(f"{what} must be timezone-aware")


def consent_resource(
    *,
    patient_id: str,
    grantee: str,
    resource_types: frozenset[str] | None,
    sensitive: frozenset[str],
    start: datetime | None,
    end: datetime | None,
    now: datetime,
) -> dict[str, Any]:
    """The Consent (without id: the store assigns it) recording one grant. Raises ConsentInvalid."""
    if not is_fhir_id(patient_id):
        raise ConsentInvalid("the patient id is not a FHIR id", location="patient")
    if _GRANTEE.fullmatch(grantee) is None:
        raise ConsentInvalid("the grantee must be Practitioner/<id> or Organization/<id>", location="grantee")
    if resource_types is not None:
        if not resource_types:
            # An empty list would grant nothing yet read back as "whole record" if it were dropped.
            raise ConsentInvalid("a type-limited grant names at least one resource type", location="resource_types")
        if not resource_types <= _RESOURCE_TYPE_NAMES:
            raise ConsentInvalid("unknown resource type in the grant", location="resource_types")
    if not sensitive <= SENSITIVE_TAGS:
        raise ConsentInvalid("unknown sensitive category in the grant", location="sensitive")
    for value, what in ((start, "start"), (end, "end"), (now, "now")):
        if value is not None:
            require_aware(value, what=what)
    if start is not None and end is not None and end < start:
        raise ConsentInvalid("the grant ends before it starts", location="end")

    recipient = {"system": PARTICIPATION_TYPE, "code": "IRCP", "display": "information recipient"}
    provision: dict[str, Any] = {
        "type": "permit",
        "actor": [{"role": {"coding": [recipient]}, "reference": {"reference": grantee}}],
    }
    period = {k: _instant(v) for k, v in (("start", start), ("end", end)) if v is not None}
    if period:
        provision["period"] = period
    if resource_types is not None:
        provision["class"] = [{"system": RESOURCE_TYPES, "code": t} for t in sorted(resource_types)]
    if sensitive:
        provision["securityLabel"] = [
            {"system": system, "code": code, "display": display}
            for system, code, display in (GRANT_LABEL_CODINGS[t] for t in sorted(sensitive))
        ]
    return {
        "resourceType": "Consent",
        "status": "active",
        "scope": {"coding": [{"system": CONSENT_SCOPE, "code": "patient-privacy", "display": "Privacy Consent"}]},
        "category": [{"coding": [{"system": LOINC, "code": PATIENT_CONSENT, "display": "Patient Consent"}]}],
        "patient": {"reference": f"Patient/{patient_id}"},
        "dateTime": _instant(now),
        "policyRule": {"coding": [{"system": ACT_CODE, "code": "OPTIN", "display": "opt-in"}]},
        "provision": provision,
    }


def revoked(consent: dict[str, Any]) -> dict[str, Any]:
    """A copy of the Consent with status inactive: the grant it records is withdrawn.

    The grant's history stays (the Consent is versioned, not deleted), which the patient's
    access history and the audit log need.
    """
    if consent.get("resourceType") != "Consent":
        raise ConsentInvalid("only a Consent can be revoked")
    out = copy.deepcopy(consent)
    out["status"] = "inactive"
    return out


def grant_from_consent(consent: object) -> Grant | None:
    """The grant a Consent of our shape records; None (grants nothing) for anything else."""
    if not isinstance(consent, dict) or consent.get("resourceType") != "Consent":
        return None
    if not set(consent) <= _TOP_LEVEL_KEYS:
        return None
    consent_id = consent.get("id")
    active = _STATUS_ACTIVE.get(consent.get("status"))
    if not is_fhir_id(consent_id) or active is None:
        return None  # draft, proposed, rejected, entered-in-error: none of them grants anything
    if not _is_concept(consent.get("scope"), CONSENT_SCOPE, "patient-privacy"):
        return None
    category = consent.get("category")
    if not (isinstance(category, list) and len(category) == 1 and _is_concept(category[0], LOINC, PATIENT_CONSENT)):
        return None
    if "policyRule" in consent and not _is_concept(consent["policyRule"], ACT_CODE, "OPTIN"):
        return None
    patient_id = _reference(consent.get("patient"), "Patient")
    provision = consent.get("provision")
    if patient_id is None or not isinstance(provision, dict):
        return None
    return _grant_from_provision(provision, consent_id=consent_id, patient_id=patient_id, active=active)


def _grant_from_provision(provision: dict[str, Any], *, consent_id: str, patient_id: str, active: bool) -> Grant | None:
    if not set(provision) <= _PROVISION_KEYS or provision.get("type") != "permit":
        return None
    actors = provision.get("actor")
    if not (isinstance(actors, list) and len(actors) == 1 and isinstance(actors[0], dict)):
        return None
    actor = actors[0]
    if set(actor) != {"role", "reference"} or not _is_concept(actor["role"], PARTICIPATION_TYPE, "IRCP"):
        return None
    grantee = _grantee(actor["reference"])
    if grantee is None:
        return None
    resource_types: frozenset[str] | None = None
    if "class" in provision:
        resource_types = _resource_types(provision["class"])
        if resource_types is None:
            return None
    sensitive = _sensitive(provision.get("securityLabel", []))
    period = _period(provision.get("period", {}))
    if sensitive is None or period is None:
        return None
    start, end = period
    return Grant(
        consent_id=consent_id,
        patient_id=patient_id,
        grantee=grantee,
        resource_types=resource_types,
        sensitive=sensitive,
        start=start,
        end=end,
        active=active,
    )


def _instant(value: datetime) -> str:
    # Always UTC on the wire: one spelling per instant keeps stored Consents comparable.
    return value.astimezone(UTC).isoformat()


def _codings(concept: object) -> set[tuple[object, object]] | None:
    if not isinstance(concept, dict) or not set(concept) <= {"coding", "text"}:
        return None
    coding = concept.get("coding")
    if not isinstance(coding, list) or not coding or not all(isinstance(c, dict) for c in coding):
        return None
    return {(c.get("system"), c.get("code")) for c in coding}


def _is_concept(concept: object, system: str, code: str) -> bool:
    """True when every coding of the CodeableConcept is (system, code): one meaning, no extras."""
    return _codings(concept) == {(system, code)}


def _reference(value: object, resource_type: str) -> str | None:
    if not isinstance(value, dict) or set(value) != {"reference"}:
        return None
    ref = value["reference"]
    prefix = resource_type + "/"
    if not isinstance(ref, str) or not ref.startswith(prefix) or not is_fhir_id(ref[len(prefix) :]):
        return None
    return ref[len(prefix) :]


def _grantee(value: object) -> str | None:
    if not isinstance(value, dict) or set(value) != {"reference"}:
        return None
    ref = value["reference"]
    return ref if isinstance(ref, str) and _GRANTEE.fullmatch(ref) is not None else None


def _resource_types(classes: object) -> frozenset[str] | None:
    if not isinstance(classes, list) or not classes:
        return None
    found: set[str] = set()
    for coding in classes:
        if not isinstance(coding, dict) or not set(coding) <= {"system", "code", "display"}:
            return None
        code = coding.get("code")
        if coding.get("system") != RESOURCE_TYPES or code not in _RESOURCE_TYPE_NAMES:
            return None
        found.add(str(code))
    return frozenset(found)


def _sensitive(labels: object) -> frozenset[str] | None:
    if not isinstance(labels, list):
        return None
    found: set[str] = set()
    for coding in labels:
        if not isinstance(coding, dict) or not set(coding) <= {"system", "code", "display"}:
            return None
        tag = _TAG_BY_CODING.get((coding.get("system"), coding.get("code")))
        if tag is None:
            return None
        found.add(tag)
    return frozenset(found)


def _period(period: object) -> tuple[datetime | None, datetime | None] | None:
    if not isinstance(period, dict) or not set(period) <= {"start", "end"}:
        return None
    bounds: list[datetime | None] = []
    for key in ("start", "end"):
        raw = period.get(key)
        if raw is None:
            bounds.append(None)
            continue
        parsed = _parse_instant(raw)
        if parsed is None:
            return None
        bounds.append(parsed)
    start, end = bounds
    if start is not None and end is not None and end < start:
        return None
    return start, end


def _parse_instant(raw: object) -> datetime | None:
    # Only full date-times with an offset: a bare date ("2025-01-31") has no instant at which it ends,
    # and guessing a zone could stretch a grant by hours.
    if not isinstance(raw, str) or "T" not in raw:
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        return None
    return value if value.tzinfo is not None and value.utcoffset() is not None else None


def organizations_of_roles(*, roles: list[dict[str, Any]], practitioner_id: str, now: datetime) -> frozenset[str]:
    """The organisations a practitioner works for, from their PractitionerRoles: a grant naming one
    of them counts as the practitioner's. Fail closed: a role that is inactive, outside its period,
    for someone else, or with a period that cannot be read as instants does not count."""
    require_aware(now, what="now")
    found: set[str] = set()
    for role in roles:
        if not isinstance(role, dict) or role.get("resourceType") != "PractitionerRole":
            continue
        if role.get("active") is False:
            continue
        if _role_reference(role.get("practitioner"), "Practitioner") != practitioner_id:
            continue
        if "period" in role:
            bounds = _period(role.get("period"))
            if bounds is None:
                continue
            start, end = bounds
            if (start is not None and now < start) or (end is not None and now >= end):
                continue
        org = _role_reference(role.get("organization"), "Organization")
        if org is not None:
            found.add(org)
    return frozenset(found)


def _role_reference(value: object, resource_type: str) -> str | None:
    # A directory resource's references usually carry a display as well: only the reference counts.
    if not isinstance(value, dict):
        return None
    return _reference({"reference": value.get("reference")}, resource_type)
