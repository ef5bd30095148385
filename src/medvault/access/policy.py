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
  faces).
* **Break-the-glass** (design-emergency.md): when the rules above refuse a clinician (never a
  patient, researcher, privacy officer or admin, whatever the table says) who holds an emergency
  access to this patient *in force* (`emergency`, read from the database per unit of work like
  grants; only an eligible clinician can obtain one, see `may_break_glass`), reads and searches
  are allowed, limited to what the patient has not hidden: a resource with any sensitive label
  stays hidden (a grant naming the label is the patient's only way to show it), and Consents
  (who else may see the record) are not disclosed. No writes and no deletes: emergency access is
  for looking, care is recorded under a grant. An allowed read says `reason="break-glass"`,
  which the guard turns into an ETREAT, flagged audit entry.

`hide_as_missing` tells the face how to refuse: True for an actor with no relationship to the
patient (no grant in force, another patient, a role without clinical access), who must get the same
404 as for an id that does not exist; False for the patient themself or a granted clinician asking
outside their grant (403: they know the record exists).

**App tokens (SMART scopes)** only narrow: when the caller acts through a SMART app, the rules above
decide first, and an allowed access must also be covered by the token's scopes (`smart/scopes.py`).
A type or interaction outside them is refused openly (403: the caller is related); a ``patient/``
scope never reaches outside the launch patient's compartment, even one the account could read:
there it is hidden as missing, as for a stranger.

`Decision.reason` is a fixed code for the audit entry: it names the rule, never an id, a type or a
label (a label in a stored reason would say what the record is about).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Final, Literal

from medvault.access.consent import Grant, require_aware
from medvault.smart import scopes as smart_scopes

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
    "outside-token-scope",
    "outside-launch-patient",
    "break-glass",
    "break-glass-read-only",
    "break-glass-hidden-label",
    "break-glass-no-consents",
    "break-glass-role-not-eligible",
    "break-glass-needs-mfa",
]


@dataclass(frozen=True)
class EmergencyAccess:
    """A break-the-glass access: `account_id` may read `patient_id`'s record from `start` to `end`."""

    patient_id: str
    account_id: str
    start: datetime
    end: datetime

    def in_force(self, now: datetime) -> bool:
        require_aware(now, what="now")
        return self.start <= now < self.end


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
    scopes: smart_scopes.Scopes | None = None,
    launch_patient: str | None = None,
    interaction: str | None = None,
    emergency: Sequence[EmergencyAccess] = (),
) -> Decision:
    """Decide one access.

    `patient_id`: the compartment the resource belongs to (None: no patient compartment).
    `labels`: `sensitive_labels` of the resource (of its new content, for a write).
    `grants`: the grants from that patient to this actor, freshly read (revocation must apply to the
    very next request, so no cache); grants for anyone else are ignored, expired or revoked ones too.
    `organization_ids`: the clinician's organisations, whose grants count as the clinician's (a set,
    not any collection: a bare string would iterate as one-character ids).
    `consent_grant`: for resource_type "Consent", that Consent read with `grant_from_consent`.
    `scopes`, `launch_patient`: a SMART app token's scopes and launch context (None: no app);
    `interaction` tells a create ("c") from an update ("u") for a write.
    `emergency`: break-the-glass accesses of this actor to this patient, freshly read; ones for
    anyone else, not yet started or expired are ignored.
    """
    decision = _decide(actor, action, patient_id, resource_type, labels, grants, now, organization_ids, consent_grant)
    # Defence in depth: roles that can never obtain an emergency access are not let in by one
    # either (a row forged into the table, or a role changed after the access was granted).
    if not decision.allowed and patient_id is not None and actor.role not in _NEVER_BREAK_GLASS:
        decision = _break_glass(decision, actor, action, patient_id, resource_type, labels, emergency, now)
    if scopes is None or not decision.allowed:
        return decision
    verdict = smart_scopes.permits(
        scopes,
        rtype=resource_type,
        letter=smart_scopes.letter_for(action, interaction),
        patient_id=patient_id,
        launch_patient=launch_patient,
    )
    if verdict == "outside-launch-patient":
        return _deny("outside-launch-patient", hide=True)
    if verdict == "outside-scope":
        return _deny("outside-token-scope", hide=False)
    return decision


def _decide(
    actor: Actor,
    action: Action,
    patient_id: str | None,
    resource_type: str,
    labels: frozenset[str],
    grants: Sequence[Grant],
    now: datetime,
    organization_ids: frozenset[str],
    consent_grant: Grant | None,
) -> Decision:
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


def _break_glass(
    refused: Decision,
    actor: Actor,
    action: Action,
    patient_id: str,
    resource_type: str,
    labels: frozenset[str],
    emergency: Sequence[EmergencyAccess],
    now: datetime,
) -> Decision:
    """What an emergency access in force adds to a refusal (nothing without one)."""
    if not any(e.patient_id == patient_id and e.account_id == actor.account_id and e.in_force(now) for e in emergency):
        return refused
    if action not in READ_ACTIONS:
        # The clinician knows the record exists (they were let in): refuse openly.
        return _deny("break-glass-read-only", hide=False)
    if labels:
        # Hidden, as for a grant not naming the label: a 403 would say a sensitive record exists.
        return _deny("break-glass-hidden-label", hide=True)
    if resource_type == "Consent":
        return _deny("break-glass-no-consents", hide=True)
    return _allow("break-glass")


# Whatever the configuration says: these roles never get emergency access.
_NEVER_BREAK_GLASS: Final[frozenset[str]] = frozenset(
    {"patient", "researcher", "privacy-officer", "admin", "moderator"}
)


def may_break_glass(*, actor: Actor, eligible_roles: frozenset[str]) -> Decision:
    """May this actor ask for emergency access at all? Only a configured role (clinician by
    default; never a patient, researcher, privacy officer or admin) with a second factor enrolled
    (AAL2: an emergency access is the widest read there is). The refusal is open (403): the asker
    is signed in and learns nothing about any patient from it."""
    if actor.role in _NEVER_BREAK_GLASS or actor.role not in eligible_roles:
        return _deny("break-glass-role-not-eligible", hide=False)
    if not actor.mfa_enrolled:
        return _deny("break-glass-needs-mfa", hide=False)
    return _allow("break-glass")


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
