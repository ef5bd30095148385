"""Record services: what the API, the CLI and (later) the pages call. Framework-free, keyword-only.

Callers own the transaction (unit of work); these functions add and flush only.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from medvault.access.consent import Grant, grant_from_consent
from medvault.access.policy import may_read_access_log
from medvault.audit import log as audit_log
from medvault.fhir import parse as fhir_parse
from medvault.fhir import search as fs
from medvault.fhir.errors import InvalidResource, Issue
from medvault.fhir.types import MAX_VERSION, is_fhir_id, is_resource_type, is_version_id
from medvault.records import guard
from medvault.records import search as record_search
from medvault.records.errors import BadRequest, Gone, NotFound, VersionConflict
from medvault.records.vault import Vault, get_head, load_current, open_version, read_version, store_version
from medvault.store.models import Resource, ResourceVersion

__all__ = [
    "GrantedPatient",
    "HistoryEntry",
    "Written",
    "create",
    "delete",
    "everything",
    "granted_patients",
    "granting",
    "history",
    "read",
    "search",
    "update",
    "vread",
]


@dataclass(frozen=True)
class Written:
    rtype: str
    rid: str
    version: int
    last_updated: datetime
    created: bool
    resource: dict[str, Any] | None
    changed: bool = True  # False when an import found the same content and wrote nothing


@dataclass(frozen=True)
class HistoryEntry:
    rtype: str
    rid: str
    version: int
    method: str
    last_updated: datetime
    resource: dict[str, Any] | None


# Ids are checked here, before any query, wherever they come from (URL, transaction entry, search):
# the body's id is validated by the model, but a URL's is not, and the database would otherwise see
# it: PostgreSQL refuses NUL in text and an id over 64 characters overflows the column (a 500
# instead of a 4xx). Messages never echo the id (a client may use an MRN as one).
_ID_RULE = "1-64 characters of A-Z, a-z, 0-9, '-' and '.'"


def _check_type(rtype: str) -> None:
    if not is_resource_type(rtype):
        raise NotFound("unknown resource type")  # never echo the input


def _check_existing_id(rtype: str, rid: str) -> None:
    """For reads, history and deletes: a resource with an impossible id cannot exist (404)."""
    if not is_fhir_id(rid):
        raise NotFound(f"no resource has this id: it is not a valid FHIR id ({_ID_RULE})", location=f"{rtype}.id")


def _check_new_id(rtype: str, rid: str) -> None:
    """For writes with a client-chosen id: the id is invalid input (400)."""
    if not is_fhir_id(rid):
        raise BadRequest(f"the id in the URL is not a valid FHIR id ({_ID_RULE})", location=f"{rtype}.id")


def new_id() -> str:
    return str(uuid.uuid4())


def create(
    *,
    vault: Vault,
    resource: dict[str, Any],
    rtype: str | None = None,
    rid: str | None = None,
    validated: bool = False,
) -> Written:
    """Create a resource; the server assigns the id unless `rid` is given (import, transactions)."""
    if not validated:
        fhir_parse.validate(resource)
    actual = resource["resourceType"]
    if rtype is not None and actual != rtype:
        raise InvalidResource([Issue("invalid", "resourceType does not match the URL", "resourceType")])
    if rid is not None:
        _check_new_id(actual, rid)
    rid = rid or new_id()
    guard.allow(vault, action="write", resource={**resource, "id": rid}, interaction="create")
    head = get_head(vault, actual, rid, for_update=True)
    doc = dict(resource)
    version, ts = store_version(vault, rtype=actual, rid=rid, doc=doc, method="POST", head=head)
    return Written(actual, rid, version, ts, True, doc)


def update(
    *,
    vault: Vault,
    rtype: str,
    rid: str,
    resource: dict[str, Any],
    if_match: int | None = None,
    validated: bool = False,
    skip_unchanged: bool = False,
    index_hint: Sequence[tuple[str, str]] | None = None,
) -> Written:
    """Update (or create with a client id). `if_match` enforces optimistic locking.
    `index_hint` passes search index entries computed elsewhere (import workers)."""
    _check_type(rtype)
    _check_new_id(rtype, rid)
    if not validated:
        fhir_parse.validate(resource)
    if resource.get("resourceType") != rtype:
        raise InvalidResource([Issue("invalid", "resourceType does not match the URL", "resourceType")])
    if resource.get("id") != rid:
        # R4 http.html#update: a missing or different id SHALL be answered with 400 (not 422).
        raise BadRequest("resource id must match the id in the URL", location=f"{rtype}.id")
    head = get_head(vault, rtype, rid, for_update=True)
    before = None
    if (head is None or head.deleted) and guard.caller_of(vault).actor is not None:
        # Update-as-create with a client-chosen id is the operator's (imports); for an actor a
        # 201 here against a 404 for a hidden record would reveal which ids exist.
        raise guard.missing(vault, rtype=rtype, rid=rid, action="write", interaction="update")
    if head is not None and not head.deleted and guard.caller_of(vault).actor is not None:
        # A change must be allowed on what is there (it may belong to another patient) and on
        # what it becomes. The operator is allowed both, so its imports skip this extra read.
        before = read_version(vault, rtype, rid)
    guard.allow(vault, action="write", resource=resource, interaction="update", before=before)
    if if_match is not None and (head is None or head.deleted or head.version != if_match):
        raise VersionConflict(f"{rtype}/{rid} is not at version {if_match}")
    if skip_unchanged and head is not None and not head.deleted:
        current = read_version(vault, rtype, rid)
        if _same_content(current, resource):
            return Written(rtype, rid, head.version, head.last_updated, False, current, changed=False)
    doc = dict(resource)
    created = head is None or head.deleted
    version, ts = store_version(vault, rtype=rtype, rid=rid, doc=doc, method="PUT", head=head, index_hint=index_hint)
    return Written(rtype, rid, version, ts, created, doc)


def _same_content(a: dict[str, Any], b: dict[str, Any]) -> bool:
    def strip(d: dict[str, Any]) -> dict[str, Any]:
        out = dict(d)
        meta = dict(out.get("meta") or {})
        meta.pop("versionId", None)
        meta.pop("lastUpdated", None)
        if meta:
            out["meta"] = meta
        else:
            out.pop("meta", None)
        return out

    return strip(a) == strip(b)


def _disclose(vault: Vault, rtype: str, rid: str, version: int | None, interaction: str) -> dict[str, Any]:
    try:
        doc = read_version(vault, rtype, rid, version)
    except (Gone, NotFound):
        if guard.caller_of(vault).actor is not None:
            # One answer for every miss: a deleted record, or a version that does not exist of a
            # record the caller may not know about, is as missing as an id that never existed.
            raise guard.missing(vault, rtype=rtype, rid=rid, action="read", interaction=interaction) from None
        raise
    guard.allow(vault, action="read", resource=doc, interaction=interaction)
    return doc


def read(*, vault: Vault, rtype: str, rid: str) -> dict[str, Any]:
    _check_type(rtype)
    _check_existing_id(rtype, rid)
    return _disclose(vault, rtype, rid, None, "read")


def vread(*, vault: Vault, rtype: str, rid: str, version: int) -> dict[str, Any]:
    _check_type(rtype)
    _check_existing_id(rtype, rid)
    if not is_version_id(version):
        # Versions are 1, 2, ... stored as 32-bit integers: a larger one would overflow the query.
        raise NotFound(f"version ids are whole numbers from 1 to {MAX_VERSION}", location=f"{rtype}.meta.versionId")
    return _disclose(vault, rtype, rid, version, "vread")


def delete(*, vault: Vault, rtype: str, rid: str) -> int | None:
    """Delete (a new version marking the deletion). Returns the deletion's version, None if absent."""
    _check_type(rtype)
    _check_existing_id(rtype, rid)
    head = get_head(vault, rtype, rid, for_update=True)
    if head is None or head.deleted:
        if guard.caller_of(vault).actor is not None:
            # 204 for nothing there, 404 for a hidden record would tell a stranger which ids
            # exist: to an actor, deleting what is not there is the same not-found.
            raise guard.missing(vault, rtype=rtype, rid=rid, action="delete", interaction="delete")
        return None
    guard.allow(vault, action="delete", resource=read_version(vault, rtype, rid), interaction="delete")
    version, _ = store_version(vault, rtype=rtype, rid=rid, doc=None, method="DELETE", head=head)
    return version


def history(
    *, vault: Vault, rtype: str, rid: str | None = None, count: int = 50, offset: int = 0
) -> tuple[int, list[HistoryEntry]]:
    """Instance or type history, newest first. Returns (total, page)."""
    _check_type(rtype)
    vault.flush()
    conds = [ResourceVersion.rtype == rtype]
    if rid is not None:
        _check_existing_id(rtype, rid)
        conds.append(ResourceVersion.rid == rid)
        if get_head(vault, rtype, rid) is None:
            raise guard.missing(vault, rtype=rtype, rid=rid, action="read", interaction="history")
    if guard.caller_of(vault).actor is not None:
        if rid is None:
            # A type's history through an app token that does not cover the type: refused openly,
            # as a search of it is, not answered with an empty page that reads as "no changes".
            guard.check_scope_for_type(vault, rtype=rtype, action="read", interaction="history")
        else:
            latest = vault.session.execute(
                select(ResourceVersion)
                .where(*conds, ResourceVersion.blob.is_not(None))
                .order_by(ResourceVersion.version.desc())
                .limit(1)
            ).scalar_one_or_none()
            if latest is None:
                raise guard.missing(vault, rtype=rtype, rid=rid, action="read", interaction="history")
            # Asking for one record's history is asking for the record: refused as a read is.
            guard.allow(vault, action="read", resource=open_version(vault, latest), interaction="history")
        return _history_for_actor(vault, conds, count=count, offset=offset)
    total = vault.session.execute(select(func.count()).select_from(ResourceVersion).where(*conds)).scalar_one()
    rows = (
        vault.session.execute(
            select(ResourceVersion)
            .where(*conds)
            .order_by(ResourceVersion.last_updated.desc(), ResourceVersion.rid, ResourceVersion.version.desc())
            .offset(offset)
            .limit(count)
        )
        .scalars()
        .all()
    )
    entries = [
        HistoryEntry(
            r.rtype,
            r.rid,
            r.version,
            r.method,
            r.last_updated,
            None if r.blob is None else open_version(vault, r),
        )
        for r in rows
    ]
    return total, entries


# History for a signed-in actor is filtered version by version before counting (totals must not
# count what the caller may not see), so it reads every matching version: bounded to keep one
# request's cost bounded.
MAX_ACTOR_HISTORY = 5000


def _history_for_actor(vault: Vault, conds: list[Any], *, count: int, offset: int) -> tuple[int, list[HistoryEntry]]:
    rows = (
        vault.session.execute(
            select(ResourceVersion)
            .where(*conds)
            .order_by(ResourceVersion.last_updated.desc(), ResourceVersion.rid, ResourceVersion.version.desc())
            .limit(MAX_ACTOR_HISTORY)
        )
        .scalars()
        .all()
    )
    visibility = guard.Visibility(vault, action="read", interaction="history")
    kept = []
    for r in rows:
        if r.blob is None:
            continue  # a deletion names no patient: not shown to actors (see _disclose)
        doc = open_version(vault, r)
        if visibility(doc):
            kept.append(HistoryEntry(r.rtype, r.rid, r.version, r.method, r.last_updated, doc))
    visibility.audit()
    return len(kept), kept[offset : offset + count]


def search(
    *, vault: Vault, rtype: str, params: Sequence[tuple[str, str]], strict: bool = True
) -> record_search.SearchResult:
    _check_type(rtype)
    guard.check_scope_for_type(vault, rtype=rtype, action="search", interaction="search-type")
    visibility = guard.Visibility(vault, action="search", interaction="search-type")
    only = guard.sole_compartment(vault)
    result = record_search.search(vault, rtype, params, strict=strict, visible=visibility, compartment=only)
    visibility.audit()
    return result


@dataclass(frozen=True)
class GrantedPatient:
    patient: dict[str, Any]  # the Patient as the caller may see it
    grant: Grant


def granted_patients(*, vault: Vault, now: datetime, limit: int = 500) -> list[GrantedPatient]:
    """The patients with a grant in force naming the calling clinician's Practitioner, each with
    that grant (the one ending last when there are several).

    Both lookups are ordinary searches as the caller, so the one decision point judges every hit
    and each patient's access log shows the look-up. The Consent search goes through the keyed
    `actor` and `status` tokens (not a scan of every patient's Consents). Grants not in force
    (expired, not yet started) are dropped before the decision: the clinician asked only for
    current grants, so an old one must not log a refusal in that patient's access log. (No
    `period` search here: a grant without an end has no period, and FHIR date search never
    matches a missing element.)"""
    best = granting(vault=vault, now=now, limit=limit)
    if not best:
        return []
    patients = search(
        vault=vault, rtype="Patient", params=[("_id", ",".join(sorted(best))), ("_count", str(len(best)))]
    ).resources
    return [GrantedPatient(patient=p, grant=best[str(p["id"])]) for p in patients if str(p.get("id")) in best]


def granting(*, vault: Vault, now: datetime, limit: int = 500) -> dict[str, Grant]:
    """The grants in force naming the calling clinician's Practitioner or one of their
    organisations, by patient id (the one ending last when there are several); see
    `granted_patients`, which adds the Patients."""
    actor = guard.caller_of(vault).actor
    if actor is None or actor.role != "clinician" or actor.practitioner_id is None:
        return {}
    grantees = [f"Practitioner/{actor.practitioner_id}"]
    grantees += [f"Organization/{org}" for org in sorted(guard.organizations_of(vault, now))]

    def current(consent: dict[str, Any]) -> bool:
        grant = grant_from_consent(consent)
        return grant is not None and grant.grantee in grantees and grant.in_force(now)

    visibility = guard.Visibility(vault, action="search", interaction="search-type")
    consents: list[dict[str, Any]] = []
    for grantee in grantees:
        consents += record_search.search(
            vault,
            "Consent",
            [("actor", grantee), ("status", "active"), ("_count", str(min(limit, record_search.MAX_COUNT)))],
            visible=lambda doc: current(doc) and visibility(doc),
        ).resources
    visibility.audit()
    best: dict[str, Grant] = {}
    for consent in consents:
        grant = grant_from_consent(consent)
        if grant is None:
            continue
        held = best.get(grant.patient_id)
        if held is None or (held.end is not None and (grant.end is None or grant.end > held.end)):
            best[grant.patient_id] = grant
    return best


def everything(*, vault: Vault, patient_id: str) -> list[dict[str, Any]]:
    """The patient's compartment plus the practitioners/organizations/locations it references."""
    _check_existing_id("Patient", patient_id)
    head = get_head(vault, "Patient", patient_id)
    if head is None or (head.deleted and guard.caller_of(vault).actor is not None):
        raise guard.missing(vault, rtype="Patient", rid=patient_id, action="read", interaction="everything")
    if head.deleted:
        raise Gone(f"Patient/{patient_id} was deleted")
    link = vault.crypto.indexer.pseudonym(patient_id)
    vault.flush()
    keys = list(
        vault.session.execute(
            select(Resource.rtype, Resource.rid)
            .where(Resource.patient_link == link, Resource.deleted.is_(False))
            .order_by(Resource.rtype, Resource.rid)
        )
    )
    docs = load_current(vault, keys)
    patient = docs.get(("Patient", patient_id))
    if patient is None:
        raise guard.missing(vault, rtype="Patient", rid=patient_id, action="read", interaction="everything")
    # The Patient decides whether the caller may ask at all (a stranger gets the missing answer);
    # then each record of the compartment is shown or withheld on its own (sensitive labels).
    guard.allow(vault, action="read", resource=patient, interaction="everything")
    visibility = guard.Visibility(vault, action="read", interaction="everything")
    out = [patient] + [d for k, d in docs.items() if k != ("Patient", patient_id) and visibility(d)]
    visibility.withheld.pop(None, None)
    visibility.shown.clear()  # the allow() above logged the disclosure; log only withholdings
    wanted: set[tuple[str, str]] = set()
    for doc in out:
        for ref in _references(doc):
            parts = ref.split("/")
            if (
                len(parts) == 2
                and is_fhir_id(parts[1])
                and parts[0]
                in (
                    "Practitioner",
                    "Organization",
                    "Location",
                    "Medication",
                    "PractitionerRole",
                )
            ):
                wanted.add((parts[0], parts[1]))
    extra = load_current(vault, sorted(wanted))
    out += [extra[k] for k in sorted(extra) if visibility(extra[k])]
    visibility.shown.clear()
    visibility.audit()
    return out


ACCESS_LOG_MAX = 200


def access_log(
    *, vault: Vault, patient_id: str, count: int = 50, before: int | None = None
) -> tuple[list[dict[str, Any]], int | None]:
    """ "Who accessed my record" as FHIR AuditEvents, newest first, for the patient themself (or the
    operator); anyone else is refused (403, logged). Returns the page and the cursor for the next
    one (None at the end). The events are shown as the patient may see them: no account ids, no
    client addresses, and another patient's identity reduced to "another patient's account"."""
    _check_existing_id("Patient", patient_id)
    if not 1 <= count <= ACCESS_LOG_MAX:
        raise BadRequest(f"_count must be 1..{ACCESS_LOG_MAX}")
    decision = may_read_access_log(actor=guard.caller_of(vault).actor, patient_id=patient_id)
    if decision is not None and not decision.allowed:
        raise guard.forbid(
            action="search",
            interaction="search-type",
            patient_id=patient_id,
            entities=("AuditEvent",),
            reason=decision.reason,
            message="an access log is shown to its patient only",
        )
    # Through an app, the token must cover AuditEvent too: the log says who looked and when, which
    # an app granted (say) only the patient's Observations has no business reading.
    guard.check_scope_for_type(vault, rtype="AuditEvent", action="search", interaction="search-type")
    entries = audit_log.for_patient(
        session=vault.session, crypto=vault.crypto, patient_id=patient_id, limit=count + 1, before=before
    )
    more = len(entries) > count
    entries = entries[:count]
    events = [_shown_event(e, patient_id) for e in entries]
    return events, (entries[-1].seq if more and entries else None)


def _shown_event(entry: audit_log.Logged, patient_id: str) -> dict[str, Any]:
    event = dict(entry.event)
    agents = []
    for agent in event.get("agent") or []:
        shown = {k: v for k, v in agent.items() if k not in ("altId", "network")}
        ref = str((shown.get("who") or {}).get("reference", ""))
        if ref.startswith("Patient/") and ref != f"Patient/{patient_id}":
            shown["who"] = {"display": "another patient's account"}
        if "identifier" in (shown.get("who") or {}) and agent.get("altId") != "app":
            shown["who"] = {"display": "a medvault account"}  # an account id says nothing to a patient
        agents.append(shown)
    event["agent"] = agents
    event["entity"] = [
        e
        for e in event.get("entity") or []
        if not str((e.get("what") or {}).get("reference", "")).startswith("Patient/")
        or e["what"]["reference"] == f"Patient/{patient_id}"
    ]
    event["id"] = str(entry.seq)
    event["meta"] = {"lastUpdated": entry.recorded.isoformat().replace("+00:00", "Z")}
    return event


def _references(node: Any) -> list[str]:
    out: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                out.append(value)
            else:
                out.extend(_references(value))
    elif isinstance(node, list):
        for item in node:
            out.extend(_references(item))
    return out


def parse_if_match(header: str | None) -> int | None:
    """W/"3" or "3" -> 3."""
    if header is None:
        return None
    value = header.strip()
    if value.startswith("W/"):
        value = value[2:]
    value = value.strip('"')
    try:
        return int(value)
    except ValueError:
        raise BadRequest('If-Match must be a version ETag such as W/"3"') from None


SUPPORTED_SEARCH = fs.SEARCH_PARAMS
