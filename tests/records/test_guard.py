"""The role x path matrix on both backends: every records path asks the one access decision, with
and without a grant, with a sensitive label, after revocation; denials to strangers look exactly
like missing records; each access (allowed or not) leaves an access-log entry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from medvault.access.consent import consent_resource, revoked
from medvault.audit import log as audit_log
from medvault.auth.accounts import Actor
from medvault.db import unit_of_work
from medvault.emergency import break_glass
from medvault.records import bundles, guard, service
from medvault.records.errors import NotFound
from medvault.records.guard import Caller, Forbidden, Hidden, NoCaller
from medvault.records.vault import Vault
from tests.helpers import open_vault

HIV_CODE = {"coding": [{"system": "http://snomed.info/sct", "code": "86406008", "display": "HIV"}]}


@dataclass
class World:
    env: Any
    alice: str  # patient with a grant to Dr One
    bob: str  # patient with no grants
    obs: str  # Alice's ordinary Observation
    hiv: str  # Alice's sensitive Condition
    bob_obs: str
    dr1: str
    dr2: str
    consent: str


def _obs(pid: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": "2024-05-01",
    }


@pytest.fixture
def world(vault_env: Any) -> World:
    with open_vault(vault_env) as v:
        alice = service.create(vault=v, resource={"resourceType": "Patient", "gender": "female"}).rid
        bob = service.create(vault=v, resource={"resourceType": "Patient", "gender": "male"}).rid
        dr1 = service.create(vault=v, resource={"resourceType": "Practitioner", "active": True}).rid
        dr2 = service.create(vault=v, resource={"resourceType": "Practitioner", "active": True}).rid
        obs = service.create(vault=v, resource=_obs(alice)).rid
        bob_obs = service.create(vault=v, resource=_obs(bob)).rid
        hiv = service.create(
            vault=v,
            resource={
                "resourceType": "Condition",
                "code": HIV_CODE,
                "subject": {"reference": f"Patient/{alice}"},
            },
        ).rid
    grant = consent_resource(
        patient_id=alice,
        grantee=f"Practitioner/{dr1}",
        resource_types=None,
        sensitive=frozenset(),
        start=None,
        end=None,
        now=datetime.now(UTC),
    )
    with acting(vault_env, patient(alice)) as v:  # the patient grants it herself
        consent = service.create(vault=v, resource=grant).rid
    return World(vault_env, alice, bob, obs, hiv, bob_obs, dr1, dr2, consent)


def patient(pid: str) -> Actor:
    return Actor(account_id=f"acct-{pid[:8]}", role="patient", patient_id=pid)


def clinician(prid: str) -> Actor:
    return Actor(account_id=f"acct-{prid[:8]}", role="clinician", practitioner_id=prid, mfa_enrolled=True)


def acting(env: Any, actor: Actor | None) -> Any:
    return guard.unit_of_work(env.factory, env.crypto, Caller(actor=actor, via="api", address="192.0.2.5"))


def actors(w: World) -> dict[str, Actor]:
    return {
        "alice": patient(w.alice),
        "bob": patient(w.bob),
        "dr1": clinician(w.dr1),
        "dr2": clinician(w.dr2),
        "researcher": Actor(account_id="r", role="researcher"),
        "officer": Actor(account_id="o", role="privacy-officer", mfa_enrolled=True),
        "admin": Actor(account_id="a", role="admin", mfa_enrolled=True),
    }


# Who may see Alice's ordinary Observation / her sensitive Condition (Dr One's grant names no label).
SEES_OBS = {"alice", "dr1"}
SEES_HIV = {"alice"}
READ_PATHS: dict[str, Callable[[Vault, World, str], Any]] = {
    "read": lambda v, w, rid: service.read(vault=v, rtype="Observation", rid=rid),
    "vread": lambda v, w, rid: service.vread(vault=v, rtype="Observation", rid=rid, version=1),
    "history": lambda v, w, rid: service.history(vault=v, rtype="Observation", rid=rid),
    "bundle-get": lambda v, w, rid: _bundle_get(v, f"Observation/{rid}"),
}


def _bundle_get(v: Vault, url: str) -> Any:
    entry = {"request": {"method": "GET", "url": url}}
    return bundles.process(vault=v, bundle={"resourceType": "Bundle", "type": "transaction", "entry": [entry]})


@pytest.mark.parametrize("path", READ_PATHS)
@pytest.mark.parametrize("who", ["alice", "bob", "dr1", "dr2", "researcher", "officer", "admin"])
def test_read_paths(world: World, who: str, path: str) -> None:
    actor = actors(world)[who]
    call = READ_PATHS[path]
    if who in SEES_OBS:
        with acting(world.env, actor) as v:
            call(v, world, world.obs)
    else:
        with pytest.raises(NotFound) as refused, acting(world.env, actor) as v:
            call(v, world, world.obs)
        with pytest.raises(NotFound) as missing, acting(world.env, actor) as v:
            call(v, world, "no-such-observation")
        # Indistinguishable: same class, same message shape, no hint of a grant or a patient.
        assert type(refused.value) in (Hidden, NotFound)
        assert str(refused.value).replace(world.obs, "X") == str(missing.value).replace("no-such-observation", "X")


@pytest.mark.parametrize("who", ["alice", "dr1", "dr2"])
def test_sensitive_label_needs_naming(world: World, who: str) -> None:
    actor = actors(world)[who]
    if who in SEES_HIV:
        with acting(world.env, actor) as v:
            assert service.read(vault=v, rtype="Condition", rid=world.hiv)["id"] == world.hiv
        return
    with pytest.raises(Hidden), acting(world.env, actor) as v:
        service.read(vault=v, rtype="Condition", rid=world.hiv)


def _search(w: World, actor: Actor, rtype: str, params: list[tuple[str, str]]) -> Any:
    with acting(w.env, actor) as v:
        return service.search(vault=v, rtype=rtype, params=params)


@pytest.mark.parametrize("who", ["alice", "bob", "dr1", "dr2", "researcher", "admin"])
def test_search_counts_only_what_the_caller_may_see(world: World, who: str) -> None:
    actor = actors(world)[who]
    found = _search(world, actor, "Observation", [("code", "http://loinc.org|8867-4")])
    ids = {r["id"] for r in found.resources}
    expected = {"alice": {world.obs}, "bob": {world.bob_obs}, "dr1": {world.obs}}.get(who, set())
    assert ids == expected
    assert found.total == len(expected)
    conditions = _search(world, actor, "Condition", [("patient", world.alice)])
    assert conditions.total == (1 if who == "alice" else 0)  # dr1's grant names no label


def test_everything_withholds_unnamed_sensitive_records(world: World) -> None:
    with acting(world.env, clinician(world.dr1)) as v:
        docs = service.everything(vault=v, patient_id=world.alice)
    ids = {d["id"] for d in docs}
    assert world.obs in ids
    assert world.hiv not in ids
    with acting(world.env, patient(world.alice)) as v:
        assert world.hiv in {d["id"] for d in service.everything(vault=v, patient_id=world.alice)}
    with pytest.raises(Hidden), acting(world.env, clinician(world.dr2)) as v:
        service.everything(vault=v, patient_id=world.alice)


def test_writes(world: World) -> None:
    with acting(world.env, clinician(world.dr1)) as v:
        made = service.create(vault=v, resource=_obs(world.alice))
    with pytest.raises(Hidden), acting(world.env, clinician(world.dr2)) as v:
        service.create(vault=v, resource=_obs(world.alice))
    with pytest.raises(Forbidden), acting(world.env, patient(world.alice)) as v:
        service.create(vault=v, resource=_obs(world.alice))  # patients author only their grants
    with pytest.raises(Forbidden), acting(world.env, clinician(world.dr1)) as v:
        service.delete(vault=v, rtype="Observation", rid=made.rid)  # clinicians never delete
    # Moving Bob's record into Alice's compartment needs rights over Bob's record too.
    moved = _obs(world.alice) | {"id": world.bob_obs}
    with pytest.raises(Hidden), acting(world.env, clinician(world.dr1)) as v:
        service.update(vault=v, rtype="Observation", rid=world.bob_obs, resource=moved)


def test_a_refused_entry_rolls_back_the_whole_transaction_but_is_logged(world: World) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": _obs(world.alice), "request": {"method": "POST", "url": "Observation"}},
            {"resource": _obs(world.bob), "request": {"method": "POST", "url": "Observation"}},
        ],
    }
    with pytest.raises(Hidden), acting(world.env, clinician(world.dr1)) as v:
        bundles.process(vault=v, bundle=bundle)
    alice_obs = _search(world, patient(world.alice), "Observation", [("patient", world.alice)])
    assert alice_obs.total == 1  # the first entry was rolled back with the second
    with open_vault(world.env) as v:
        entries = audit_log.for_patient(session=v.session, crypto=v.crypto, patient_id=world.bob)
    refusals = [e.event for e in entries if e.event["outcome"] != "0"]
    assert refusals
    assert refusals[0]["agent"][0]["who"] == {"reference": f"Practitioner/{world.dr1}"}


def test_revocation_applies_to_the_next_unit_of_work(world: World) -> None:
    with acting(world.env, clinician(world.dr1)) as v:
        service.read(vault=v, rtype="Observation", rid=world.obs)
    with acting(world.env, patient(world.alice)) as v:
        current = service.read(vault=v, rtype="Consent", rid=world.consent)
        service.update(vault=v, rtype="Consent", rid=world.consent, resource=revoked(current))
    with pytest.raises(Hidden), acting(world.env, clinician(world.dr1)) as v:
        service.read(vault=v, rtype="Observation", rid=world.obs)


def test_expired_grant_hides(world: World) -> None:
    past = datetime.now(UTC) - timedelta(days=30)
    grant = consent_resource(
        patient_id=world.bob,
        grantee=f"Practitioner/{world.dr2}",
        resource_types=None,
        sensitive=frozenset(),
        start=past - timedelta(days=10),
        end=past,
        now=past,
    )
    with acting(world.env, patient(world.bob)) as v:
        service.create(vault=v, resource=grant)
    with pytest.raises(Hidden), acting(world.env, clinician(world.dr2)) as v:
        service.read(vault=v, rtype="Observation", rid=world.bob_obs)


def test_the_patient_sees_who_accessed_their_record(world: World) -> None:
    with acting(world.env, clinician(world.dr1)) as v:
        service.read(vault=v, rtype="Observation", rid=world.obs)
    with pytest.raises(Hidden), acting(world.env, clinician(world.dr2)) as v:
        service.read(vault=v, rtype="Observation", rid=world.obs)
    with open_vault(world.env) as v:
        log = audit_log.for_patient(session=v.session, crypto=v.crypto, patient_id=world.alice)
    by_whom = [(e.event["agent"][0]["who"].get("reference"), e.event["outcome"]) for e in log]
    assert (f"Practitioner/{world.dr1}", "0") in by_whom
    assert (f"Practitioner/{world.dr2}", "4") in by_whom
    assert all(e.event["resourceType"] == "AuditEvent" for e in log)


def test_a_unit_of_work_without_a_caller_is_refused(world: World) -> None:
    with world.env.factory() as session:
        vault = Vault(session, world.env.crypto)
        with pytest.raises(NoCaller):
            service.read(vault=vault, rtype="Observation", rid=world.obs)


def test_any_read_of_a_decoy_raises_an_alert_even_when_refused(world: World, caplog: pytest.LogCaptureFixture) -> None:
    from medvault.audit import alerts

    with open_vault(world.env) as v:
        (decoy,) = alerts.create_decoys(vault=v, count=1)
    with pytest.raises(Hidden), acting(world.env, clinician(world.dr2)) as v:
        service.read(vault=v, rtype="Patient", rid=decoy)  # a stranger: refused, rolled back
    with acting(world.env, None) as v:
        service.read(vault=v, rtype="Patient", rid=decoy)  # even the operator
    with world.env.factory() as session:
        raised = alerts.list_alerts(session=session)
    assert [a.kind for a in raised] == ["honeytoken", "honeytoken"]
    assert decoy not in caplog.text
    assert "honeytoken" in caplog.text


@pytest.mark.parametrize("who", ["bob", "dr2", "researcher"])
def test_every_miss_looks_the_same_to_a_stranger(world: World, who: str) -> None:
    """Review findings: DELETE answered 204 for a missing id but 404 for a hidden one, PUT created
    at a missing id, and vread of a missing version said 'has no version'."""
    actor = actors(world)[who]

    def message(call: Callable[[Vault], Any]) -> str:
        with pytest.raises(NotFound) as info, acting(world.env, actor) as v:
            call(v)
        return str(info.value)

    for rid in (world.obs, "no-such-observation"):
        msgs = {
            message(lambda v, r=rid: service.delete(vault=v, rtype="Observation", rid=r)),
            message(lambda v, r=rid: service.vread(vault=v, rtype="Observation", rid=r, version=99)),
            message(
                lambda v, r=rid: service.update(
                    vault=v, rtype="Observation", rid=r, resource=_obs(world.bob) | {"id": r}
                )
            ),
        }
        assert msgs == {f"Observation/{rid} is not known"}


def test_resources_without_a_known_patient_link_are_not_shared(world: World) -> None:
    with open_vault(world.env) as v:
        appt = service.create(
            vault=v,
            resource={
                "resourceType": "Appointment",
                "status": "booked",
                "description": "HIV clinic follow-up",
                "participant": [{"actor": {"reference": f"Patient/{world.alice}"}, "status": "accepted"}],
            },
        ).rid
    for who in ("bob", "researcher", "dr1"):
        with pytest.raises(Hidden), acting(world.env, actors(world)[who]) as v:
            service.read(vault=v, rtype="Appointment", rid=appt)
    with acting(world.env, actors(world)["bob"]) as v:  # directories stay readable
        assert service.read(vault=v, rtype="Practitioner", rid=world.dr1)["id"] == world.dr1


def test_a_miss_is_logged_like_a_refusal(world: World) -> None:
    """Same work, same log for a missing record as for a hidden one: timing tells nothing either."""

    def log_size() -> int:
        with world.env.factory() as session:
            return audit_log.size(session=session)

    before = log_size()
    with pytest.raises(NotFound), acting(world.env, clinician(world.dr2)) as v:
        service.read(vault=v, rtype="Observation", rid="no-such-observation")
    assert log_size() == before + 1
    with pytest.raises(NotFound), acting(world.env, clinician(world.dr2)) as v:
        service.read(vault=v, rtype="Observation", rid=world.obs)
    assert log_size() == before + 2


def test_granted_patients_lists_grants_in_force_only_and_logs_the_look_up(world: World) -> None:
    now = datetime.now(UTC)

    def grant(pid: str, prid: str, **period: datetime) -> str:
        consent = consent_resource(
            patient_id=pid,
            grantee=f"Practitioner/{prid}",
            resource_types=None,
            sensitive=frozenset({"hiv"}),
            start=period.get("start"),
            end=period.get("end"),
            now=now,
        )
        with acting(world.env, patient(pid)) as v:
            return service.create(vault=v, resource=consent).rid

    grant(world.bob, world.dr1, start=now - timedelta(days=20), end=now - timedelta(days=10))  # expired
    grant(world.bob, world.dr1, start=now + timedelta(days=10))  # not started yet
    grant(world.bob, world.dr2, end=now + timedelta(days=5))  # someone else's
    with acting(world.env, clinician(world.dr1)) as v:
        (only,) = service.granted_patients(vault=v, now=now)
    assert only.patient["id"] == world.alice
    assert only.grant.consent_id == world.consent
    assert only.grant.end is None
    with acting(world.env, clinician(world.dr2)) as v:
        (theirs,) = service.granted_patients(vault=v, now=now)
    assert theirs.patient["id"] == world.bob
    assert theirs.grant.sensitive == frozenset({"hiv"})
    for nobody in (patient(world.alice), Actor(account_id="o", role="privacy-officer", mfa_enrolled=True)):
        with acting(world.env, nobody) as v:
            assert service.granted_patients(vault=v, now=now) == []

    with open_vault(world.env) as v:
        alice_log = audit_log.for_patient(session=v.session, crypto=v.crypto, patient_id=world.alice)
        bob_log = audit_log.for_patient(session=v.session, crypto=v.crypto, patient_id=world.bob)
    # The look-up is in the patient's access log; Dr One's grants from Bob that are not in force
    # were never put to the decision, so Bob's log holds no refusal for Dr One.
    assert any(
        e.event["agent"][0]["who"].get("reference") == f"Practitioner/{world.dr1}" and e.event["outcome"] == "0"
        for e in alice_log
    )
    assert not any(e.event["agent"][0]["who"].get("reference") == f"Practitioner/{world.dr1}" for e in bob_log)

    with acting(world.env, patient(world.alice)) as v:  # revoked: gone from the very next look-up
        current = service.read(vault=v, rtype="Consent", rid=world.consent)
        service.update(vault=v, rtype="Consent", rid=world.consent, resource=revoked(current))
    with acting(world.env, clinician(world.dr1)) as v:
        assert service.granted_patients(vault=v, now=now) == []


def test_a_grant_to_an_organization_counts_for_its_clinicians(world: World) -> None:
    """A patient may share with a practice rather than one doctor: the grant names the Organization,
    and counts for a clinician whose PractitionerRole there is active and in its period."""
    now = datetime.now(UTC)
    with open_vault(world.env) as v:
        org = service.create(vault=v, resource={"resourceType": "Organization", "name": "Practice"}).rid
        other_org = service.create(vault=v, resource={"resourceType": "Organization", "name": "Elsewhere"}).rid

        def role(prid: str, org_id: str, **extra: Any) -> None:
            service.create(
                vault=v,
                resource={
                    "resourceType": "PractitionerRole",
                    "practitioner": {"reference": f"Practitioner/{prid}", "display": "Dr"},
                    "organization": {"reference": f"Organization/{org_id}"},
                    **extra,
                },
            )

        role(world.dr2, org, active=True)
        role(world.dr1, org, active=False)  # left the practice
        role(world.dr1, other_org, active=True)
    grant = consent_resource(
        patient_id=world.bob,
        grantee=f"Organization/{org}",
        resource_types=None,
        sensitive=frozenset(),
        start=None,
        end=None,
        now=now,
    )
    with acting(world.env, patient(world.bob)) as v:
        service.create(vault=v, resource=grant)

    with acting(world.env, clinician(world.dr2)) as v:
        assert service.read(vault=v, rtype="Observation", rid=world.bob_obs)["id"] == world.bob_obs
        listed = service.granted_patients(vault=v, now=now)
    assert [p.patient["id"] for p in listed] == [world.bob]
    with pytest.raises(Hidden), acting(world.env, clinician(world.dr1)) as v:  # an inactive role does not count
        service.read(vault=v, rtype="Observation", rid=world.bob_obs)

    # A role outside its period does not count either.
    with open_vault(world.env) as v:
        found = service.search(
            vault=v, rtype="PractitionerRole", params=[("practitioner", f"Practitioner/{world.dr2}")]
        )
        (current,) = found.resources
        current["period"] = {"end": (now - timedelta(days=1)).isoformat()}
        service.update(vault=v, rtype="PractitionerRole", rid=current["id"], resource=current, if_match=None)
    with pytest.raises(Hidden), acting(world.env, clinician(world.dr2)) as v:
        service.read(vault=v, rtype="Observation", rid=world.bob_obs)


@pytest.mark.parametrize("path", READ_PATHS)
def test_break_glass_opens_read_paths_but_not_hidden_labels(world: World, path: str) -> None:
    """Dr Two has no grant; with an emergency access in force every read path shows Alice's
    ordinary record (flagged in the log), her sensitive Condition stays hidden, and Bob's record
    (no access to him) stays as missing as before."""
    dr2 = clinician(world.dr2)
    with unit_of_work(world.env.factory) as session:
        break_glass.request_emergency_access(
            session=session,
            crypto=world.env.crypto,
            actor=dr2,
            patient_id=world.alice,
            reason="Collapsed in clinic, unresponsive, need medication list",
            purpose="ETREAT",
            now=datetime.now(UTC),
        )
    with acting(world.env, dr2) as v:
        READ_PATHS[path](v, world, world.obs)
    with pytest.raises(Hidden), acting(world.env, dr2) as v:
        service.read(vault=v, rtype="Condition", rid=world.hiv)
    with pytest.raises(NotFound), acting(world.env, dr2) as v:
        READ_PATHS[path](v, world, world.bob_obs)
    with open_vault(world.env) as v:
        log = audit_log.for_patient(session=v.session, crypto=v.crypto, patient_id=world.alice)
    mine = [e.event for e in log if e.event["agent"][0]["who"] == {"reference": f"Practitioner/{world.dr2}"}]
    shown = [e for e in mine if e["outcome"] == "0" and e["subtype"][0]["code"] != "break-glass"]
    assert shown
    assert all(e["outcomeDesc"] == "break-glass" for e in shown)
    assert all(e["purposeOfEvent"][0]["coding"][0]["code"] == "ETREAT" for e in shown)
