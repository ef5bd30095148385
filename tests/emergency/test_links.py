"""`emergency.links` on SQLite and PostgreSQL: creating links, what a responder's request opens,
the passcode budget under concurrent guesses, pause/revoke/re-issue on the next request, and the
patient's access log."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from medvault.emergency import jwe, links, shl
from medvault.emergency.errors import ShlPasscodeError, ShlUnavailable
from medvault.emergency.summary import SummaryOptions
from medvault.records import guard, service
from medvault.records.guard import Caller
from medvault.store.models import ShlLink, ShlLocation
from tests.emergency.links_support import (
    ALLERGY,
    BASE,
    EXTRA_ALERT,
    FAMILY,
    FAST_HASHER,
    FLAG,
    NOW,
    PASSCODE,
    Person,
    make_patient,
)


@pytest.fixture
def person(vault_env: Any) -> Person:
    return make_patient(vault_env)


def _create(env: Any, p: Person, **kw: Any) -> links.IssuedLink:
    args: dict[str, Any] = {"purpose": "emergency", "label": "Ada's card", "now": NOW}
    args.update(kw)
    return links.create_link(
        factory=env.factory,
        crypto=env.crypto,
        caller=p.caller,
        patient_id=p.patient_id,
        base_url=BASE,
        hasher=FAST_HASHER,
        **args,
    )


def _mid(issued: links.IssuedLink) -> str:
    return issued.payload.url.rsplit("/", 1)[1]


def _manifest(env: Any, issued: links.IssuedLink, **kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {"recipient": "Paramedic Lee, ambulance 12", "now": NOW + timedelta(minutes=1)}
    args.update(kw)
    return links.open_manifest(
        factory=env.factory, crypto=env.crypto, hasher=FAST_HASHER, link_id=_mid(issued), base_url=BASE, **args
    )


def _token(entry: dict[str, Any]) -> str:
    return str(entry["location"]).rsplit("/", 1)[1]


def _log(env: Any, p: Person) -> list[dict[str, Any]]:
    with guard.unit_of_work(env.factory, env.crypto, p.caller) as v:
        events, _ = service.access_log(vault=v, patient_id=p.patient_id, count=200)
    return events


def _decrypt(issued: links.IssuedLink, token: bytes | str) -> dict[str, Any]:
    out = jwe.decrypt_file(token=token, key=shl.decode_key(issued.payload.key))
    assert out.content_type == "application/fhir+json"
    doc: dict[str, Any] = json.loads(out.plaintext)
    return doc


def test_emergency_link_opens_to_the_summary_and_is_logged(vault_env: Any, person: Person) -> None:
    issued = _create(vault_env, person, options=SummaryOptions(extra_alerts=(EXTRA_ALERT,)))
    assert issued.payload.flag == ""
    assert issued.payload.label == "Ada's card"
    assert issued.viewer_link(base_url=BASE).startswith(f"{BASE}/shl/view#shlink:/")
    manifest = _manifest(vault_env, issued)
    [entry] = manifest["files"]
    assert entry["contentType"] == "application/fhir+json"
    assert entry["location"].startswith(f"{BASE}/shl/f/")
    served = links.open_file(
        factory=vault_env.factory, crypto=vault_env.crypto, location_token=_token(entry), now=NOW + timedelta(minutes=2)
    )
    bundle = _decrypt(issued, served.jwe)
    text = json.dumps(bundle)
    assert bundle["type"] == "document"
    for wanted in (ALLERGY, FLAG, EXTRA_ALERT):
        assert wanted in text
    # The location is single use.
    with pytest.raises(ShlUnavailable):
        links.open_file(factory=vault_env.factory, crypto=vault_env.crypto, location_token=_token(entry), now=NOW)
    events = _log(vault_env, person)
    opened = [e for e in events if e["subtype"][0]["code"] in ("shl-manifest", "shl-file")]
    assert [e["subtype"][0]["code"] for e in opened] == ["shl-file", "shl-manifest"]
    assert all(e["agent"][0]["who"]["display"] == "Paramedic Lee, ambulance 12" for e in opened)
    assert all(e["outcome"] == "0" for e in opened)
    dumped = json.dumps(events)
    assert issued.payload.key not in dumped
    assert _mid(issued) not in dumped
    assert "shl-create" in dumped  # the patient's own action is logged too


def test_embedded_when_small_enough(vault_env: Any, person: Person) -> None:
    issued = _create(vault_env, person)
    [entry] = _manifest(vault_env, issued, embedded_length_max=10**6)["files"]
    assert "location" not in entry
    assert FLAG in json.dumps(_decrypt(issued, entry["embedded"]))
    [entry] = _manifest(vault_env, issued, embedded_length_max=10)["files"]
    assert "embedded" not in entry
    assert "location" in entry


def test_nothing_readable_at_rest(vault_env: Any, person: Person) -> None:
    issued = _create(vault_env, person, label="Ada Quintavalle card")
    _manifest(vault_env, issued)
    with vault_env.factory() as s:
        row = s.execute(select(ShlLink)).scalar_one()
        locations = s.execute(select(ShlLocation)).scalars().all()
        stored = repr([getattr(row, c.key) for c in ShlLink.__table__.columns]).encode()
    key_raw = shl.decode_key(issued.payload.key)
    assert len(locations) == 1
    assert _mid(issued).encode() not in stored
    assert key_raw not in stored
    assert issued.payload.key.encode() not in stored
    assert FAMILY.encode() not in stored
    assert person.patient_id.encode() not in stored
    assert row.file_jwe is not None
    assert ALLERGY.encode() not in row.file_jwe
    assert row.owner != person.patient_id.encode()


def test_recipient_required(vault_env: Any, person: Person) -> None:
    issued = _create(vault_env, person)
    for bad in (None, "", "   ", 5, "x" * 300, "a\nb"):
        with pytest.raises(links.BadShlRequest):
            _manifest(vault_env, issued, recipient=bad)


def test_unknown_and_malformed_ids_are_unavailable(vault_env: Any, person: Person) -> None:
    _create(vault_env, person)
    for bad in ("A" * 43, "short", "../etc", "A" * 44):
        with pytest.raises(ShlUnavailable):
            links.open_manifest(
                factory=vault_env.factory,
                crypto=vault_env.crypto,
                hasher=FAST_HASHER,
                link_id=bad,
                recipient="r",
                base_url=BASE,
            )
        with pytest.raises(ShlUnavailable):
            links.open_file(factory=vault_env.factory, crypto=vault_env.crypto, location_token=bad)


def test_emergency_link_refuses_a_passcode(vault_env: Any, person: Person) -> None:
    with pytest.raises(links.LinkError):
        _create(vault_env, person, passcode=PASSCODE)
    with pytest.raises(links.LinkError):
        _create(vault_env, person, purpose="sharing", passcode=PASSCODE, direct=True)


def test_passcode_budget(vault_env: Any, person: Person) -> None:
    issued = _create(vault_env, person, purpose="sharing", passcode=PASSCODE, budget=3)
    assert issued.payload.flag == "P"
    with pytest.raises(ShlPasscodeError) as first:
        _manifest(vault_env, issued, passcode="000000")
    assert first.value.remaining_attempts == 2
    with pytest.raises(ShlPasscodeError) as missing:
        _manifest(vault_env, issued)
    assert missing.value.remaining_attempts == 1
    assert _manifest(vault_env, issued, passcode=PASSCODE)["files"]  # the right one still works
    with pytest.raises(ShlPasscodeError) as last:
        _manifest(vault_env, issued, passcode="111111")
    assert last.value.remaining_attempts == 0
    with pytest.raises(ShlUnavailable):
        _manifest(vault_env, issued, passcode=PASSCODE)
    failed = [e for e in _log(vault_env, person) if e.get("outcomeDesc") == "wrong-passcode"]
    assert len(failed) == 3
    assert PASSCODE not in json.dumps(_log(vault_env, person))


def test_passcode_budget_under_concurrent_guesses(vault_env: Any, person: Person) -> None:
    budget, k = 4, 10
    issued = _create(vault_env, person, purpose="sharing", passcode=PASSCODE, budget=budget)
    start = threading.Barrier(k)
    outcomes: list[str] = []
    lock = threading.Lock()

    def guess(n: int) -> None:
        start.wait()
        try:
            _manifest(vault_env, issued, passcode=f"guess-{n}")
            result = "opened"
        except ShlPasscodeError:
            result = "401"
        except ShlUnavailable:
            result = "404"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=guess, args=(n,)) for n in range(k)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["401"] * budget + ["404"] * (k - budget)
    with vault_env.factory() as s:
        assert s.execute(select(ShlLink.failures)).scalar_one() == budget
    with pytest.raises(ShlUnavailable):
        _manifest(vault_env, issued, passcode=PASSCODE)


def test_pause_resume_revoke_apply_to_the_next_request(vault_env: Any, person: Person) -> None:
    issued = _create(vault_env, person)
    entry = _manifest(vault_env, issued)["files"][0]

    def status(value: Any) -> None:
        links.set_status(
            factory=vault_env.factory,
            crypto=vault_env.crypto,
            caller=person.caller,
            patient_id=person.patient_id,
            link_id=issued.link_id,
            status=value,
        )

    status("paused")
    with pytest.raises(ShlUnavailable):
        _manifest(vault_env, issued)
    with pytest.raises(ShlUnavailable):  # a location handed out before the pause dies with it
        links.open_file(factory=vault_env.factory, crypto=vault_env.crypto, location_token=_token(entry))
    status("active")
    entry = _manifest(vault_env, issued)["files"][0]
    status("revoked")
    with pytest.raises(ShlUnavailable):
        links.open_file(factory=vault_env.factory, crypto=vault_env.crypto, location_token=_token(entry))
    with pytest.raises(ShlUnavailable):
        _manifest(vault_env, issued)
    with pytest.raises(links.LinkError):
        status("active")
    with vault_env.factory() as s:
        row = s.execute(select(ShlLink)).scalar_one()
        assert row.wrapped_key is None
        assert row.file_jwe is None


def test_reissue_kills_the_old_link_and_keeps_the_passcode(vault_env: Any, person: Person) -> None:
    old = _create(vault_env, person, purpose="sharing", passcode=PASSCODE)
    new = links.reissue(
        factory=vault_env.factory,
        crypto=vault_env.crypto,
        caller=person.caller,
        patient_id=person.patient_id,
        link_id=old.link_id,
        base_url=BASE,
        now=NOW,
    )
    assert _mid(new) != _mid(old)
    assert new.payload.key != old.payload.key
    assert new.payload.flag == "P"
    with pytest.raises(ShlUnavailable):
        _manifest(vault_env, old, passcode=PASSCODE)
    [entry] = _manifest(vault_env, new, passcode=PASSCODE, embedded_length_max=10**6)["files"]
    assert ALLERGY in json.dumps(_decrypt(new, entry["embedded"]))
    infos = links.list_links(
        factory=vault_env.factory, crypto=vault_env.crypto, caller=person.caller, patient_id=person.patient_id
    )
    assert {(i.link_id, i.status) for i in infos} == {(old.link_id, "revoked"), (new.link_id, "active")}


def test_expired_link_is_unavailable(vault_env: Any, person: Person) -> None:
    issued = _create(vault_env, person, expires=NOW + timedelta(hours=1))
    assert issued.payload.exp == int((NOW + timedelta(hours=1)).timestamp())
    [entry] = _manifest(vault_env, issued)["files"]
    with pytest.raises(ShlUnavailable):
        _manifest(vault_env, issued, now=NOW + timedelta(hours=2))
    with pytest.raises(ShlUnavailable):  # the location expired with the link
        links.open_file(
            factory=vault_env.factory,
            crypto=vault_env.crypto,
            location_token=_token(entry),
            now=NOW + timedelta(hours=1, seconds=1),
        )


def test_direct_link(vault_env: Any, person: Person) -> None:
    issued = _create(vault_env, person, direct=True)
    assert issued.payload.flag == "U"
    served = links.open_direct(
        factory=vault_env.factory, crypto=vault_env.crypto, link_id=_mid(issued), recipient="ER nurse", now=NOW
    )
    assert FLAG in json.dumps(_decrypt(issued, served.jwe))
    with pytest.raises(ShlUnavailable):
        _manifest(vault_env, issued)
    with pytest.raises(links.BadShlRequest):
        links.open_direct(factory=vault_env.factory, crypto=vault_env.crypto, link_id=_mid(issued), recipient=None)


def test_hidden_items_and_new_choices(vault_env: Any, person: Person) -> None:
    issued = _create(vault_env, person)
    hidden = SummaryOptions(hidden=frozenset({f"AllergyIntolerance/{person.allergy_id}"}), extra_alerts=("Alert X",))
    preview = links.preview(
        factory=vault_env.factory,
        crypto=vault_env.crypto,
        caller=person.caller,
        patient_id=person.patient_id,
        options=hidden,
        now=NOW,
    )
    assert ALLERGY not in json.dumps(preview)
    assert "Alert X" in json.dumps(preview)
    links.update_choices(
        factory=vault_env.factory,
        crypto=vault_env.crypto,
        caller=person.caller,
        patient_id=person.patient_id,
        link_id=issued.link_id,
        options=hidden,
        now=NOW,
    )
    [entry] = _manifest(vault_env, issued, embedded_length_max=10**6)["files"]
    text = json.dumps(_decrypt(issued, entry["embedded"]))  # same key: the printed card still works
    assert ALLERGY not in text
    assert "Alert X" in text


def test_only_the_patient_manages_links(vault_env: Any, person: Person) -> None:
    other = make_patient(vault_env)
    issued = _create(vault_env, person)
    with pytest.raises(guard.Forbidden):
        _create(vault_env, Person(person.patient_id, other.caller, person.allergy_id))
    with pytest.raises(guard.Forbidden):
        links.set_status(
            factory=vault_env.factory,
            crypto=vault_env.crypto,
            caller=other.caller,
            patient_id=person.patient_id,
            link_id=issued.link_id,
            status="revoked",
        )
    with pytest.raises(links.LinkNotFound):  # another patient's link id through one's own record
        links.set_status(
            factory=vault_env.factory,
            crypto=vault_env.crypto,
            caller=other.caller,
            patient_id=other.patient_id,
            link_id=issued.link_id,
            status="revoked",
        )
    operator = Caller(actor=None, via="cli")
    again = links.issued(
        factory=vault_env.factory,
        crypto=vault_env.crypto,
        caller=operator,
        patient_id=person.patient_id,
        link_id=issued.link_id,
        base_url=BASE,
    )
    assert again.shlink() == issued.shlink()  # the server can show the QR again (id derived, key unwrapped)
