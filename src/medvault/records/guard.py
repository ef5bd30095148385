"""Where the record services ask the one access decision and write the access log.

Every service function that reads or writes clinical data calls `allow` (or `visible` for each
search hit) with the resource it is about to disclose or write; `allow` asks `access.policy.decide`
and appends an AuditEvent in the same transaction. The unit of work carries the caller
(`Vault.caller`); a unit of work without one is refused outright, so a path that forgot to say who
is acting fails closed instead of running with full access.

The operator (`Caller.actor is None`: a `system/*.cruds` operator token, `medvault import`) is
allowed everything and still audited: the admin-only bulk path the issue keeps. A SMART app acts
as its account, with `Caller.scopes` narrowing what the policy allows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import select

from medvault.access.consent import Grant, grant_from_consent, organizations_of_roles
from medvault.access.labels import sensitive_labels
from medvault.access.policy import Action, Decision, EmergencyAccess, decide
from medvault.audit import alerts
from medvault.audit import log as audit_log
from medvault.errors import MedvaultError
from medvault.fhir import search as fs
from medvault.records import search as record_search
from medvault.records.errors import NotFound
from medvault.records.vault import Vault
from medvault.smart.scopes import Scopes, letter_for, type_permitted
from medvault.store.models import BreakGlassAccess

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from medvault.auth.accounts import Actor
    from medvault.records.vault import Vault
    from medvault.store.crypto_context import CryptoContext

Via = Literal["api", "page", "cli", "smart", "import"]
# FHIR AuditEvent.action: C create, R read/vread/history, U update, D delete, E execute (search).
_AUDIT_ACTION = {"read": "R", "search": "E", "write": "U", "delete": "D"}
# Break-the-glass entries (design-emergency.md): purpose of use "emergency treatment", the reason
# code starting "break-glass", and this extension, so a reviewer filters them without parsing text.
BREAK_GLASS_PURPOSE = "ETREAT"
BREAK_GLASS_EXTENSION = "https://medvault.example/fhir/StructureDefinition/audit-break-glass"


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Caller:
    """Who is acting, through what, from where. `actor` None is the operator (system) path."""

    actor: Actor | None
    via: Via
    address: str | None = None
    client_id: str | None = None  # a SMART app acting on the actor's behalf
    purpose: str = "TREAT"  # v3-ActReason
    # False only in benchmarks (Settings.unsafe_disable_audit, refused outside environment=benchmark).
    audited: bool = True
    # A clinician reading more distinct patients an hour than this raises an alert (Settings).
    alert_patients_per_hour: int = alerts.DEFAULT_PATIENTS_PER_HOUR
    # A SMART app token's scopes and launch patient: the policy narrows the actor's access to them.
    scopes: Scopes | None = None
    launch_patient: str | None = None
    # The clock access decisions use (grant periods, emergency access expiry): injected in tests.
    clock: Callable[[], datetime] = _utc_now


OPERATOR_CLI = Caller(actor=None, via="cli")


@dataclass(frozen=True)
class _Refusal:
    action: Action
    interaction: str
    patient_id: str | None
    entities: tuple[str, ...]
    reason: str


class Refused(MedvaultError):
    """A refusal. It carries its audit entry: the refused unit of work is rolled back (it may hold
    other writes of a transaction Bundle), and `unit_of_work` then logs the refusal on its own."""

    refusal: _Refusal | None = None


class Forbidden(Refused):
    """The caller is related to the patient (own record, or a grant) but this is outside it: 403."""

    code = "forbidden"


class NoCaller(MedvaultError):
    code = "exception"


class Hidden(NotFound):
    """Refused to a stranger: the same answer, word for word, as a resource that does not exist."""

    refusal: _Refusal | None = None


def refusal_of(exc: BaseException) -> _Refusal | None:
    found = getattr(exc, "refusal", None)
    return found if isinstance(found, _Refusal) else None


@dataclass
class _Grants:
    """A patient's consent grants, read once per unit of work (revocation applies from the next one)."""

    by_patient: dict[str, list[Grant]] = field(default_factory=dict)
    emergency: dict[str, list[EmergencyAccess]] = field(default_factory=dict)


def caller_of(vault: Vault) -> Caller:
    caller = vault.caller
    if caller is None:
        raise NoCaller("internal error: a records call without a caller was refused")
    return caller


def _grants(vault: Vault, patient_id: str) -> list[Grant]:
    cache: _Grants = vault.session.info.setdefault("medvault_grants", _Grants())
    if patient_id not in cache.by_patient:
        found = record_search.search(vault, "Consent", [("patient", patient_id), ("_count", "1000")])
        cache.by_patient[patient_id] = [g for g in map(grant_from_consent, found.resources) if g is not None]
    return cache.by_patient[patient_id]


def organizations_of(vault: Vault, now: datetime | None = None) -> frozenset[str]:
    """The calling clinician's organisations (from their PractitionerRoles), read once per unit of
    work: a patient's grant naming one of them counts as a grant to the clinician."""
    actor = caller_of(vault).actor
    if actor is None or actor.role != "clinician" or actor.practitioner_id is None:
        return frozenset()
    info = vault.session.info
    if "medvault_organizations" not in info:
        found = record_search.search(
            vault,
            "PractitionerRole",
            [("practitioner", f"Practitioner/{actor.practitioner_id}"), ("_count", "1000")],
        )
        info["medvault_organizations"] = organizations_of_roles(
            roles=found.resources, practitioner_id=actor.practitioner_id, now=now or datetime.now(UTC)
        )
    orgs: frozenset[str] = info["medvault_organizations"]
    return orgs


def _emergency(vault: Vault, patient_id: str, account_id: str) -> list[EmergencyAccess]:
    """This account's break-the-glass accesses to this patient, read once per unit of work like
    grants (so expiry and any early end apply from the next request). Expired rows are returned
    too: the policy judges them against the caller's clock."""
    cache: _Grants = vault.session.info.setdefault("medvault_grants", _Grants())
    if patient_id not in cache.emergency:
        link = vault.crypto.indexer.pseudonym(patient_id)
        rows = vault.session.execute(
            select(BreakGlassAccess.started, BreakGlassAccess.expires).where(
                BreakGlassAccess.patient_link == link, BreakGlassAccess.account_id == account_id
            )
        ).all()
        cache.emergency[patient_id] = [EmergencyAccess(patient_id, account_id, start, end) for start, end in rows]
    return cache.emergency[patient_id]


def decision_for(
    vault: Vault,
    *,
    action: Action,
    resource: dict[str, Any],
    now: datetime | None = None,
    interaction: str | None = None,
) -> Decision:
    """The policy's answer for this caller and resource (no audit entry: see `allow`)."""
    caller = caller_of(vault)
    if caller.actor is None:
        return Decision(allowed=True, hide_as_missing=False, reason="operator")  # type: ignore[arg-type]
    rtype = str(resource.get("resourceType", ""))
    patient_id = fs.patient_reference(resource)
    grants: list[Grant] = []
    if patient_id is not None and caller.actor.role == "clinician":
        grants = _grants(vault, patient_id)
    consent_grant = grant_from_consent(resource) if rtype == "Consent" else None
    labels = sensitive_labels(resource)
    at = now or caller.clock()

    actor = caller.actor
    organizations = organizations_of(vault, at) if actor.role == "clinician" else frozenset()

    def ask(emergency: list[EmergencyAccess]) -> Decision:
        return decide(
            actor=actor,
            action=action,
            patient_id=patient_id,
            resource_type=rtype,
            labels=labels,
            grants=grants,
            now=at,
            consent_grant=consent_grant,
            organization_ids=organizations,
            scopes=caller.scopes,
            launch_patient=caller.launch_patient,
            interaction=interaction,
            emergency=emergency,
        )

    decision = ask([])
    if decision.allowed or patient_id is None or caller.actor.role != "clinician":
        return decision
    # Refused under the grants: only then look for an emergency access (granted reads, the hot
    # path, pay no extra query). Only a clinician can ever hold one (policy.may_break_glass).
    return ask(_emergency(vault, patient_id, caller.actor.account_id))


def allow(
    vault: Vault,
    *,
    action: Action,
    resource: dict[str, Any],
    interaction: str,
    before: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> None:
    """Decide, audit, and raise Hidden/Forbidden when refused. For a change, `before` is the
    current content: both it and the new content must be allowed (one audit entry)."""
    caller = caller_of(vault)
    if caller.actor is None and caller.via == "import":
        return  # bulk import by the operator: the importer logs one entry per file, not per resource
    # For a change, what is there is judged first: judging the new content first would answer
    # a stranger differently for an existing record than for a missing one (403 against 404).
    # A refusal for what is there belongs to that record's patient (they must see the attempt,
    # and a decoy's alert must fire), not to the new content's.
    decision = None
    if before is not None:
        decision = decision_for(vault, action=action, resource=before, now=now, interaction=interaction)
        patient_id = fs.patient_reference(before)
    if decision is None or decision.allowed:
        decision = decision_for(vault, action=action, resource=resource, now=now, interaction=interaction)
        patient_id = fs.patient_reference(resource)
    rtype, rid = str(resource.get("resourceType", "")), str(resource.get("id", ""))
    if decision.allowed:
        record(
            vault,
            action=action,
            interaction=interaction,
            patient_id=patient_id,
            entities=[f"{rtype}/{rid}"],
            allowed=True,
            reason=decision.reason,
        )
        return
    refusal = _Refusal(action, interaction, patient_id, (f"{rtype}/{rid}",), decision.reason)
    exc: Hidden | Forbidden
    if decision.hide_as_missing:
        exc = Hidden(f"{rtype}/{rid} is not known")
    else:
        exc = Forbidden("this record is outside what you have been granted")
    exc.refusal = refusal
    raise exc


class Visibility:
    """Per-hit decisions for a search, history or $everything, and their audit entries: one per
    patient whose records were shown, one per patient whose records were withheld."""

    def __init__(self, vault: Vault, *, action: Action, interaction: str) -> None:
        self.vault, self.action, self.interaction = vault, action, interaction
        self.shown: dict[str | None, list[str]] = {}
        self.withheld: dict[str | None, str] = {}
        # Patients some of whose records were shown under break-the-glass: their entry is flagged.
        self.emergency: set[str | None] = set()

    def __call__(self, resource: dict[str, Any]) -> bool:
        decision = decision_for(self.vault, action=self.action, resource=resource, interaction=self.interaction)
        patient = fs.patient_reference(resource)
        if decision.allowed:
            self.shown.setdefault(patient, []).append(f"{resource.get('resourceType')}/{resource.get('id')}")
            if decision.reason == "break-glass":
                self.emergency.add(patient)
        else:
            self.withheld.setdefault(patient, decision.reason)
        return decision.allowed

    def audit(self) -> None:
        caller = caller_of(self.vault)
        if caller.actor is None and caller.via == "import":
            return
        for patient, refs in self.shown.items():
            record(
                self.vault,
                action=self.action,
                interaction=self.interaction,
                patient_id=patient,
                entities=refs[:50],  # the entry names the patient; a long list adds nothing
                allowed=True,
                reason="operator" if caller.actor is None else "break-glass" if patient in self.emergency else "grant",
            )
        for patient, reason in self.withheld.items():
            record(
                self.vault,
                action=self.action,
                interaction=self.interaction,
                patient_id=patient,
                entities=[],
                allowed=False,
                reason=reason,
            )


def sole_compartment(vault: Vault) -> str | None:
    """The one patient compartment this caller can reach, when there is exactly one: a patient's
    own, or the launch patient of an app token whose scopes are all patient/ ones. The policy
    refuses every other compartment to such a caller, so a search is narrowed to it before any
    decision: judging everyone's records would log a refused search in every other patient's
    access log (and fire a decoy's alert) for a patient who only asked for their own."""
    caller = caller_of(vault)
    actor = caller.actor
    if actor is None:
        return None
    if actor.role == "patient" and actor.patient_id is not None:
        return actor.patient_id
    scopes = caller.scopes
    if scopes is not None and scopes.resources and all(s.level == "patient" for s in scopes.resources):
        return caller.launch_patient
    return None


def check_scope_for_type(vault: Vault, *, rtype: str, action: Action, interaction: str) -> None:
    """A search (or history) of a whole type through an app token whose scopes do not cover that
    type at all is refused up front (403, logged) rather than answered with an empty page that
    would read as "no such records"."""
    caller = caller_of(vault)
    if caller.scopes is None or type_permitted(caller.scopes, rtype=rtype, letter=letter_for(action, interaction)):
        return
    exc = Forbidden("this app was not granted access to these records")
    exc.refusal = _Refusal(action, interaction, None, (rtype,), "outside-token-scope")
    raise exc


def missing(vault: Vault, *, rtype: str, rid: str, action: Action, interaction: str) -> NotFound:
    """The not-found for a record that is not there. For an actor it is logged like a refusal:
    an access attempt the patient-less log keeps, and the same work (roll back, log, commit) as
    refusing a hidden record, so the two cannot be told apart by their timing either."""
    if caller_of(vault).actor is None:
        return NotFound(f"{rtype}/{rid} is not known")
    exc = Hidden(f"{rtype}/{rid} is not known")
    exc.refusal = _Refusal(action, interaction, None, (f"{rtype}/{rid}",), "not-found")
    return exc


def forbid(
    *, action: Action, interaction: str, patient_id: str | None, entities: tuple[str, ...], reason: str, message: str
) -> Forbidden:
    """A 403 refusal decided outside `decide` (the access log's own rule), logged like the others."""
    exc = Forbidden(message)
    exc.refusal = _Refusal(action, interaction, patient_id, entities, reason)
    return exc


def record_refusal(vault: Vault, exc: BaseException) -> bool:
    """Log a refusal carried by `exc` (after its unit of work or savepoint was rolled back)."""
    refusal = refusal_of(exc)
    if refusal is None:
        return False
    record(
        vault,
        action=refusal.action,
        interaction=refusal.interaction,
        patient_id=refusal.patient_id,
        entities=refusal.entities,
        allowed=False,
        reason=refusal.reason,
    )
    return True


@contextmanager
def unit_of_work(
    factory: sessionmaker[Session], crypto: CryptoContext, caller: Caller | Callable[[Session], Caller]
) -> Iterator[Vault]:
    """One transaction on behalf of `caller`: commit on success; on a refusal, roll back whatever
    the unit did and commit the refusal's audit entry alone; on any other error, roll back.

    `caller` may be a function that finds the caller in the unit's own session (the API resolves
    its bearer token there: one session and one thread hop per request); what it raises ends the
    unit before anything else ran."""
    session = factory()
    if not isinstance(caller, Caller):
        try:
            caller = caller(session)
        except BaseException:
            session.rollback()
            session.close()
            raise
    vault = Vault(session, crypto, caller=caller)
    try:
        yield vault
        session.commit()
    except BaseException as exc:
        session.rollback()
        vault.discard()
        if refusal_of(exc) is not None:
            session.info.pop("medvault_grants", None)
            record_refusal(vault, exc)
            session.commit()
        raise
    finally:
        session.close()


def record(
    vault: Vault,
    *,
    action: Action,
    interaction: str,
    patient_id: str | None,
    entities: Iterable[str],
    allowed: bool,
    reason: str,
    event_action: str | None = None,
) -> None:
    """Append one FHIR AuditEvent for this caller (same transaction as the action). The reason code
    "break-glass" or the interaction "break-glass" make it a flagged emergency entry (purpose
    ETREAT plus an extension).
    `event_action`: the AuditEvent action code when it is not the one `action` maps to."""
    caller = caller_of(vault)
    if not caller.audited:
        return
    actor = caller.actor
    who: dict[str, Any]
    if actor is None:
        who = {"display": "operator"}
    elif actor.practitioner_id:
        who = {"reference": f"Practitioner/{actor.practitioner_id}"}
    elif actor.patient_id:
        who = {"reference": f"Patient/{actor.patient_id}"}
    else:
        who = {"identifier": {"system": "urn:medvault:account", "value": actor.account_id}}
    agent: dict[str, Any] = {
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-RoleClass", "code": "PROV"}]}
        if actor is not None and actor.role == "clinician"
        else {"text": actor.role if actor is not None else "operator"},
        "who": who,
        "requestor": True,
    }
    if actor is not None:
        agent["altId"] = actor.account_id
    if caller.address:
        agent["network"] = {"address": caller.address, "type": "2"}
    agents = [agent]
    if caller.client_id:
        agents.append({"who": {"identifier": {"value": caller.client_id}}, "requestor": False, "altId": "app"})
    now = datetime.now(UTC)
    # Flagged: a read under an emergency access, and every emergency access request (either outcome).
    emergency = reason == "break-glass" or interaction == "break-glass"
    purpose = BREAK_GLASS_PURPOSE if emergency else caller.purpose
    entity = [{"what": {"reference": ref}} for ref in entities]
    if patient_id:
        entity.append({"what": {"reference": f"Patient/{patient_id}"}, "type": {"code": "1"}})
    event = {
        "resourceType": "AuditEvent",
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest"},
        "subtype": [{"system": "http://hl7.org/fhir/restful-interaction", "code": interaction}],
        "action": event_action or _AUDIT_ACTION[action],
        "recorded": now.isoformat().replace("+00:00", "Z"),
        "outcome": "0" if allowed else "4",
        "outcomeDesc": reason,
        "purposeOfEvent": [
            {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": purpose}]}
        ],
        "agent": agents,
        "source": {"observer": {"display": "medvault"}, "type": [{"code": "4" if caller.via == "api" else "1"}]},
        "entity": entity,
    }
    if emergency:
        event["extension"] = [{"url": BREAK_GLASS_EXTENSION, "valueBoolean": True}]
    # No vault.flush() first: the entry is independent of the rows the vault buffers, and
    # flushing here would break the importer's batching of inserts across files.
    audit_log.append(session=vault.session, crypto=vault.crypto, event=event, patient_id=patient_id, now=now)
    # Breach detection on the same transaction: a decoy touched by any path, or a clinician
    # reading unusually many patients. Alerts carry no patient data.
    alerts.observe(
        session=vault.session,
        crypto=vault.crypto,
        account_id=actor.account_id if actor is not None else None,
        role=actor.role if actor is not None else None,
        patient_id=patient_id,
        allowed=allowed,
        now=now,
        threshold=caller.alert_patients_per_hour,
    )
