"""The one access decision: may this actor do this to this resource, and if not, how to say no.

Every path that reads or writes clinical data asks `decide` (design-access.md, "Decision rules").
Default deny; the rules, in order:

* **Outside any patient compartment** (`patient_id` None: Practitioner, Organization, Location...):
  any signed-in actor reads and searches; only an admin writes or deletes.
* **Patient**: reads and searches their own compartment, whatever its labels (a patient always sees
  their own record). Writes and deletes only the types in `PATIENT_AUTHORED_TYPES`, i.e. Consent:
  their own grants. Later issues widen this (patient-reported Observations, a corrected Patient),
  each on purpose. Another patient's compartment: hidden as missing.
* **Clinician**: needs a grant *in force* (active, inside its period) from that patient naming
  "Practitioner/<practitioner_id>" or one of the clinician's organisations. One grant must cover
  both the resource type and every sensitive label of the resource: grants are separate decisions
  of the patient, so a type from one and a label from another are not combined. With such a grant
  the clinician reads, searches and writes (clinicians record care; a written resource is checked
  with the labels of its new content). Never deletes. Consent resources: reads the one naming them
  while it is in force; only the patient writes grants.
* **Researcher, privacy officer, admin**: no clinical access here (research and audit have their own
  faces; break-glass is a later issue).

`hide_as_missing` tells the face how to refuse: True for an actor with no relationship to the
patient (no grant in force, another patient, a role without clinical access), who must get the same
404 as for an id that does not exist; False for the patient themself or a granted clinician asking
outside their grant (403: they know the record exists).

`Decision.reason` is a fixed code for the audit entry: it names the rule, never an id, a type or a
label (a label in a stored reason would say what the record is about).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Final, Literal

from medvault.access.consent import Grant, require_aware

if TYPE_CHECKING:
    # Type-only: the decision needs the Actor's attributes, not the accounts service (and its
    # database imports), so the access core stays importable without the store.
    from medvault.auth.accounts import Actor

Action = Literal["read", "search", "write", "delete"]
READ_ACTIONS: Final[frozenset[str]] = frozenset({"read", "search"})
# Resources outside any patient compartment that every signed-in actor may read: directories and
# definitions. An allow-list: any other type without a recognised patient link is refused.
SHARED_TYPES: Final[frozenset[str]] = frozenset(
    {
        "Practitioner",
        "PractitionerRole",
        "Organization",
        "OrganizationAffiliation",
        "Location",
        "HealthcareService",
        "Endpoint",
        "Medication",
        "Substance",
        "ValueSet",
        "CodeSystem",
        "ConceptMap",
        "NamingSystem",
        "StructureDefinition",
        "CapabilityStatement",
        "OperationDefinition",
        "SearchParameter",
        "Questionnaire",
        "PlanDefinition",
        "ActivityDefinition",
        "Library",
        "Measure",
    }
)
# What a patient may create, change or delete in their own compartment: their consent grants only.
PATIENT_AUTHORED_TYPES: Final[frozenset[str]] = frozenset({"Consent"})

Reason = Literal[
    "shared-resource-read",
    "shared-resource-admin-write",
    "shared-resource-write-needs-admin",
    "own-record-read",
    "own-record-patient-authored",
    "own-record-type-not-patient-authored",
    "not-own-compartment",
    "patient-account-unlinked",
    "no-grant-in-force",
    "clinician-never-deletes",
    "consent-names-actor",
    "consent-not-naming-actor",
    "consent-written-by-patient-only",
    "type-outside-grant",
    "sensitive-label-not-granted",
    "grant",
    "role-without-clinical-access",
    "unlinked-resource",
]


@dataclass(frozen=True)
class Decision:
    """The outcome of one access check. `reason` goes to the audit log: a rule name, no PHI."""

    allowed: bool
    hide_as_missing: bool
    reason: Reason


def _allow(reason: Reason) -> Decision:
    return Decision(allowed=True, hide_as_missing=False, reason=reason)


def _deny(reason: Reason, *, hide: bool) -> Decision:
    return Decision(allowed=False, hide_as_missing=hide, reason=reason)


def decide(
    *,
    actor: Actor,
    action: Action,
    patient_id: str | None,
    resource_type: str,
    labels: frozenset[str],
    grants: Sequence[Grant],
    now: datetime,
    organization_ids: frozenset[str] = frozenset(),
    consent_grant: Grant | None = None,
) -> Decision:
    """Decide one access.

    `patient_id`: the compartment the resource belongs to (None: no patient compartment).
    `labels`: `sensitive_labels` of the resource (of its new content, for a write).
    `grants`: the grants from that patient to this actor, freshly read (revocation must apply to the
    very next request, so no cache); grants for anyone else are ignored, expired or revoked ones too.
    `organization_ids`: the clinician's organisations, whose grants count as the clinician's (a set,
    not any collection: a bare string would iterate as one-character ids).
    `consent_grant`: for resource_type "Consent", that Consent read with `grant_from_consent`.
    """
    require_aware(now, what="now")
    if patient_id is None:
        if resource_type not in SHARED_TYPES:
            # No recognised patient link, but not a directory or definition type either (an
            # Appointment, a Provenance, a stored document Bundle...): it may well be about a
            # patient, so nobody but the operator sees it until its compartment is known.
            return _deny("unlinked-resource", hide=True)
        return _shared(actor, action)
    if actor.role == "patient":
        return _patient(actor, action, patient_id, resource_type)
    if actor.role == "clinician":
        refs = _grantee_refs(actor, organization_ids)
        return _clinician(action, patient_id, resource_type, labels, grants, now, refs, consent_grant)
    return _deny("role-without-clinical-access", hide=True)


def _shared(actor: Actor, action: Action) -> Decision:
    if action in READ_ACTIONS:
        return _allow("shared-resource-read")
    if actor.role == "admin":
        return _allow("shared-resource-admin-write")
    # The actor can read it, so it exists for them: refuse openly.
    return _deny("shared-resource-write-needs-admin", hide=False)


def _patient(actor: Actor, action: Action, patient_id: str, resource_type: str) -> Decision:
    if actor.patient_id is None:
        return _deny("patient-account-unlinked", hide=True)
    if actor.patient_id != patient_id:
        return _deny("not-own-compartment", hide=True)
    if action in READ_ACTIONS:
        return _allow("own-record-read")
    if resource_type in PATIENT_AUTHORED_TYPES:
        return _allow("own-record-patient-authored")
    return _deny("own-record-type-not-patient-authored", hide=False)


def _clinician(
    action: Action,
    patient_id: str,
    resource_type: str,
    labels: frozenset[str],
    grants: Sequence[Grant],
    now: datetime,
    refs: frozenset[str],
    consent_grant: Grant | None,
) -> Decision:
    in_force = [g for g in grants if g.patient_id == patient_id and g.grantee in refs and g.in_force(now)]
    if not in_force:
        return _deny("no-grant-in-force", hide=True)
    if action == "delete":
        return _deny("clinician-never-deletes", hide=False)
    if resource_type == "Consent":
        if action not in READ_ACTIONS:
            return _deny("consent-written-by-patient-only", hide=False)
        if (
            consent_grant is not None
            and consent_grant.patient_id == patient_id
            and consent_grant.grantee in refs
            and consent_grant.in_force(now)
        ):
            return _allow("consent-names-actor")
        return _deny("consent-not-naming-actor", hide=False)
    typed = [g for g in in_force if g.covers_type(resource_type)]
    if not typed:
        return _deny("type-outside-grant", hide=False)
    if not any(g.covers_labels(labels) for g in typed):
        # Hidden, not forbidden: a 403 would tell the clinician a sensitive record exists (say,
        # behind an Encounter's reasonReference), which is what "stay hidden" rules out.
        return _deny("sensitive-label-not-granted", hide=True)
    return _allow("grant")


def _grantee_refs(actor: Actor, organization_ids: frozenset[str]) -> frozenset[str]:
    refs = {f"Organization/{org}" for org in organization_ids}
    if actor.practitioner_id is not None:
        refs.add(f"Practitioner/{actor.practitioner_id}")
    return frozenset(refs)


def may_read_access_log(*, actor: Actor | None, patient_id: str) -> Decision | None:
    """Who may read a patient's access log ("who accessed my record"): the patient themself, and
    the operator (actor None: administration and audit tooling). Nobody else, not even a clinician
    with a grant: the log says who else looked, which is the patient's to know.

    Returns None when allowed for the operator (no decision to record), else a Decision whose
    refusal is a 403 (the log of a patient is not a clinical record whose existence needs hiding:
    the refusal is the same whatever the id, existing or not)."""
    if actor is None:
        return None
    if actor.role == "patient" and actor.patient_id is not None and actor.patient_id == patient_id:
        return _allow("own-record-read")
    return _deny("not-own-compartment", hide=False)
