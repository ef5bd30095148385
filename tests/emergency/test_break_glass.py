"""Break-the-glass on both backends: who may ask, what is required, what the access then allows
(reads flagged, hidden labels stay hidden, no writes), expiry on an injected clock, the patient's
notification and access log, the privacy officer's review."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from medvault.audit import log as audit_log
from medvault.auth.accounts import Actor
from medvault.config import load_settings
from medvault.db import unit_of_work
from medvault.emergency import break_glass as bg
from medvault.errors import ConfigError
from medvault.records import guard, service
from medvault.records.guard import BREAK_GLASS_EXTENSION, Caller, Forbidden, Hidden
from medvault.store.models import BreakGlassAccess, BreakGlassReview, Notification
from tests.helpers import open_vault

HIV_CODE = {"coding": [{"system": "http://snomed.info/sct", "code": "86406008", "display": "HIV"}]}
REASON = "Unconscious in the emergency department, no relatives reachable, allergy status needed"
T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


@dataclass
class World:
    env: Any
    alice: str
    obs: str
    hiv: str
    consent: str
    dr: str


@pytest.fixture
def world(vault_env: Any) -> World:
    with open_vault(vault_env) as v:
        alice = service.create(vault=v, resource={"resourceType": "Patient", "gender": "female"}).rid
        dr = service.create(vault=v, resource={"resourceType": "Practitioner", "active": True}).rid
        obs = service.create(
            vault=v,
            resource={
                "resourceType": "Observation",
                "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                "subject": {"reference": f"Patient/{alice}"},
            },
        ).rid
        hiv = service.create(
            vault=v,
            resource={"resourceType": "Condition", "code": HIV_CODE, "subject": {"reference": f"Patient/{alice}"}},
        ).rid
        consent = service.create(
            vault=v,
            resource={
                "resourceType": "Consent",
                "status": "active",
                "scope": {
                    "coding": [
                        {"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}
                    ]
                },
                "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
                "patient": {"reference": f"Patient/{alice}"},
                "policyRule": {
                    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]
                },
            },
        ).rid
    return World(vault_env, alice, obs, hiv, consent, dr)


def clinician(w: World, *, mfa: bool = True) -> Actor:
    return Actor(account_id="acct-er-doctor", role="clinician", practitioner_id=w.dr, mfa_enrolled=mfa)


def ask(w: World, actor: Actor, *, reason: str | None = REASON, purpose: str = "ETREAT", **kw: Any) -> Any:
    """One request in its own transaction, committed whatever the outcome (as the page does)."""
    with unit_of_work(w.env.factory) as session:
        try:
            return bg.request_emergency_access(
                session=session,
                crypto=w.env.crypto,
                actor=actor,
                patient_id=kw.pop("patient_id", w.alice),
                reason=reason,
                purpose=purpose,
                now=kw.pop("now", T0),
                **kw,
            )
        except bg.BreakGlassRefused as exc:
            return exc


def acting(w: World, actor: Actor, at: datetime) -> Any:
    return guard.unit_of_work(w.env.factory, w.env.crypto, Caller(actor=actor, via="page", clock=lambda: at))


def log_of(w: World) -> list[dict[str, Any]]:
    with open_vault(w.env) as v:
        return [e.event for e in audit_log.for_patient(session=v.session, crypto=v.crypto, patient_id=w.alice)]


def _flagged(event: dict[str, Any]) -> bool:
    purposes = [c["code"] for p in event["purposeOfEvent"] for c in p["coding"]]
    return purposes == ["ETREAT"] and {"url": BREAK_GLASS_EXTENSION, "valueBoolean": True} in event.get("extension", [])


@pytest.mark.parametrize("reason", [None, "", "   ", "help", "x" * (bg.REASON_MAX + 1)])
def test_without_a_proper_reason_it_is_refused_and_logged(world: World, reason: str | None) -> None:
    refused = ask(world, clinician(world), reason=reason)
    assert isinstance(refused, bg.BreakGlassRefused)
    assert refused.reason in ("break-glass-reason-missing", "break-glass-reason-length")
    with acting(world, clinician(world), T0) as v, pytest.raises(Hidden):
        service.read(vault=v, rtype="Observation", rid=world.obs)
    attempts = [e for e in log_of(world) if e["subtype"][0]["code"] == "break-glass"]
    assert [e["outcome"] for e in attempts] == ["4"]
    assert _flagged(attempts[0])


def test_purpose_must_be_emergency_treatment(world: World) -> None:
    refused = ask(world, clinician(world), purpose="TREAT")
    assert isinstance(refused, bg.BreakGlassRefused)
    assert refused.reason == "break-glass-purpose"


@pytest.mark.parametrize(
    "who", ["patient", "researcher", "admin", "privacy-officer", "clinician-no-mfa", "switched-off"]
)
def test_ineligible_roles_are_refused(world: World, who: str) -> None:
    roles = bg.DEFAULT_ROLES
    if who == "patient":
        actor = Actor(account_id="p", role="patient", patient_id=world.alice)
    elif who == "clinician-no-mfa":
        actor = clinician(world, mfa=False)
    elif who == "switched-off":
        actor, roles = clinician(world), frozenset()
    else:
        actor = Actor(account_id="x", role=who, mfa_enrolled=True)  # type: ignore[arg-type]
    # Even a configuration naming every role cannot make patients, researchers, officers or admins eligible.
    if who in ("patient", "researcher", "admin", "privacy-officer"):
        roles = frozenset({"patient", "researcher", "admin", "privacy-officer", "clinician"})
    refused = ask(world, actor, eligible_roles=roles)
    assert isinstance(refused, bg.BreakGlassRefused)
    expected = "break-glass-needs-mfa" if who == "clinician-no-mfa" else "break-glass-role-not-eligible"
    assert refused.reason == expected
    with open_vault(world.env) as v:
        assert v.session.execute(select(BreakGlassAccess)).first() is None


def test_settings_never_make_other_roles_eligible(tmp_path: Any) -> None:
    assert load_settings(data_dir=tmp_path).break_glass_roles == ("clinician",)
    assert load_settings(data_dir=tmp_path).break_glass_hours == 4
    for role in ("admin", "researcher", "patient", "privacy-officer"):
        with pytest.raises(ConfigError):
            load_settings(data_dir=tmp_path, break_glass_roles=("clinician", role))


def test_unknown_patient_is_refused(world: World) -> None:
    refused = ask(world, clinician(world), patient_id="no-such-patient")
    assert isinstance(refused, bg.BreakGlassRefused)
    assert refused.reason == "break-glass-unknown-patient"


def test_granted_access_reads_flagged_hides_labels_and_expires(world: World) -> None:
    actor = clinician(world)
    granted = ask(world, actor)
    assert isinstance(granted, bg.EmergencyGrant)
    assert granted.end - granted.start == timedelta(hours=4)
    during = T0 + timedelta(hours=3, minutes=59)
    with acting(world, actor, during) as v:
        assert service.read(vault=v, rtype="Observation", rid=world.obs)["id"] == world.obs
        everything = {d["id"] for d in service.everything(vault=v, patient_id=world.alice)}
        found = service.search(vault=v, rtype="Observation", params=[("patient", world.alice)])
    assert world.obs in everything
    assert world.alice in everything
    assert world.hiv not in everything  # a sensitive label the patient never granted stays hidden
    assert world.consent not in everything  # who else may see the record is not disclosed
    assert {r["id"] for r in found.resources} == {world.obs}
    with acting(world, actor, during) as v, pytest.raises(Hidden):
        service.read(vault=v, rtype="Condition", rid=world.hiv)
    with acting(world, actor, during) as v, pytest.raises(Forbidden):  # looking only, no writes
        service.create(
            vault=v,
            resource={
                "resourceType": "Observation",
                "status": "final",
                "code": {"text": "x"},
                "subject": {"reference": f"Patient/{world.alice}"},
            },
        )
    # Every read during it is flagged: purpose ETREAT, reason code, extension.
    by_dr = [e for e in log_of(world) if e["agent"][0]["who"] == {"reference": f"Practitioner/{world.dr}"}]
    reads = [e for e in by_dr if e["outcome"] == "0" and e["subtype"][0]["code"] != "break-glass"]
    assert len(reads) >= 3
    assert all(_flagged(e) and e["outcomeDesc"] == "break-glass" for e in reads)
    # Expiry on the injected clock: the next read is refused, as for a stranger.
    with acting(world, actor, T0 + timedelta(hours=4)) as v, pytest.raises(Hidden):
        service.read(vault=v, rtype="Observation", rid=world.obs)
    # Before it started (a clock behind) nothing either; another clinician never had it.
    with acting(world, actor, T0 - timedelta(seconds=1)) as v, pytest.raises(Hidden):
        service.read(vault=v, rtype="Observation", rid=world.obs)
    other = Actor(account_id="acct-other", role="clinician", practitioner_id=world.dr, mfa_enrolled=True)
    with acting(world, other, during) as v, pytest.raises(Hidden):
        service.read(vault=v, rtype="Observation", rid=world.obs)


def test_hours_are_configurable(world: World) -> None:
    granted = ask(world, clinician(world), hours=1)
    assert granted.end == T0 + timedelta(hours=1)
    with acting(world, clinician(world), T0 + timedelta(minutes=61)) as v, pytest.raises(Hidden):
        service.read(vault=v, rtype="Observation", rid=world.obs)


def test_notification_review_item_and_sealed_reason(world: World, caplog: pytest.LogCaptureFixture) -> None:
    sent: list[tuple[str, str]] = []

    class Recorder:
        def notify(self, *, kind: str, notification_id: str) -> None:
            sent.append((kind, notification_id))

    granted = ask(world, clinician(world), notifier=Recorder())
    assert sent == [("break-glass", granted.notification_id)]  # after commit, once
    with open_vault(world.env) as v:
        row = v.session.execute(select(BreakGlassAccess)).scalar_one()
        assert REASON.encode() not in row.sealed
        assert world.alice.encode() not in row.sealed
        assert row.patient_link != world.alice.encode()
        review = v.session.execute(select(BreakGlassReview)).scalar_one()
        assert review.verdict is None
        assert review.access_id == granted.id
        note = v.session.execute(select(Notification)).scalar_one()
        assert note.ref == granted.id
        assert not note.seen
        notices = bg.notifications(session=v.session, crypto=v.crypto, patient_id=world.alice)
    assert [n.id for n in notices] == [granted.notification_id]
    assert notices[0].access.reason == REASON
    assert notices[0].access.practitioner_id == world.dr
    # The default hook logs the kind and the random id, nothing about the patient.
    with caplog.at_level(logging.INFO, logger="medvault.emergency.break_glass"):
        ask(world, clinician(world), notifier=bg.LoggingNotifier())
    text = caplog.text
    assert "kind=break-glass" in text
    assert REASON not in text
    assert world.alice not in text
    assert world.dr not in text


def test_a_rolled_back_request_notifies_nobody(world: World) -> None:
    sent: list[str] = []

    class Recorder:
        def notify(self, *, kind: str, notification_id: str) -> None:
            sent.append(notification_id)

    def request_then_fail() -> None:
        with unit_of_work(world.env.factory) as session:
            bg.request_emergency_access(
                session=session,
                crypto=world.env.crypto,
                actor=clinician(world),
                patient_id=world.alice,
                reason=REASON,
                purpose="ETREAT",
                now=T0,
                notifier=Recorder(),
            )
            raise RuntimeError("the face failed after the request")

    with pytest.raises(RuntimeError):
        request_then_fail()
    assert sent == []
    with open_vault(world.env) as v:
        assert v.session.execute(select(BreakGlassAccess)).first() is None


def test_review_verdict_is_recorded_and_audited(world: World) -> None:
    granted = ask(world, clinician(world))
    officer = Actor(account_id="acct-officer", role="privacy-officer", mfa_enrolled=True)
    later = T0 + timedelta(days=1)
    with unit_of_work(world.env.factory) as session:
        queue = bg.review_queue(session=session, crypto=world.env.crypto, actor=officer, pending_only=True)
        assert [q.id for q in queue] == [granted.id]
        assert queue[0].reason == REASON
        for not_officer in (clinician(world), Actor(account_id="a", role="admin", mfa_enrolled=True)):
            with pytest.raises(bg.BreakGlassRefused):
                bg.review_queue(session=session, crypto=world.env.crypto, actor=not_officer)
        with pytest.raises(bg.BreakGlassRefused):
            bg.record_verdict(
                session=session, crypto=world.env.crypto, actor=officer, access_id=granted.id, verdict="fine", now=later
            )
        done = bg.record_verdict(
            session=session,
            crypto=world.env.crypto,
            actor=officer,
            access_id=granted.id,
            verdict="not-justified",
            now=later,
        )
    assert (done.verdict, done.reviewer, done.reviewed) == ("not-justified", "acct-officer", later)
    with unit_of_work(world.env.factory) as session:
        assert bg.review_queue(session=session, crypto=world.env.crypto, actor=officer, pending_only=True) == []
    reads = [e for e in log_of(world) if e["subtype"][0]["code"] == "break-glass-review-read"]
    # The first look showed the reason (logged for the patient); the second found nothing pending.
    assert len(reads) == 1
    assert all(e["agent"][0]["altId"] == "acct-officer" for e in reads)
    reviews = [e for e in log_of(world) if e["subtype"][0]["code"] == "break-glass-review"]
    assert [e["outcomeDesc"] for e in reviews] == ["break-glass-verdict-not-justified"]
    assert reviews[0]["agent"][0]["altId"] == "acct-officer"


def test_the_patients_access_log_shows_it(world: World) -> None:
    ask(world, clinician(world))
    with acting(world, clinician(world), T0 + timedelta(minutes=5)) as v:
        service.read(vault=v, rtype="Observation", rid=world.obs)
    patient = Actor(account_id="acct-alice", role="patient", patient_id=world.alice)
    with guard.unit_of_work(world.env.factory, world.env.crypto, Caller(actor=patient, via="page")) as v:
        events, _cursor = service.access_log(vault=v, patient_id=world.alice)
    requests = [e for e in events if e["subtype"][0]["code"] == "break-glass"]
    assert [e["outcome"] for e in requests] == ["0"]
    assert _flagged(requests[0])
    assert requests[0]["agent"][0]["who"] == {"reference": f"Practitioner/{world.dr}"}
    reads = [e for e in events if e["subtype"][0]["code"] == "read"]
    assert reads
    assert all(_flagged(e) and e["outcomeDesc"] == "break-glass" for e in reads)
    assert all(REASON not in str(e) for e in events)  # the reason is on the notification, not in the log
