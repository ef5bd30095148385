"""Responder writes committed in groups (SQLite) or alone (PostgreSQL): every opening is on record
before it is answered, a location is used once even when requests race for it, an item that fails
before writing is answered alone, and any other failure fails its whole group with nothing kept."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from medvault.audit import log as audit_log
from medvault.emergency import links
from medvault.emergency.errors import ShlUnavailable
from medvault.store.models import AuditEntry
from tests.emergency.links_support import NOW, Person, make_patient
from tests.emergency.test_links import _create, _log, _manifest, _token


@pytest.fixture
def person(vault_env: Any) -> Person:
    return make_patient(vault_env)


def _run_all(fns: list[Any]) -> list[Any]:
    """Run the callables at once (a barrier releases them together); their results or errors."""
    start = threading.Barrier(len(fns))
    out: list[Any] = [None] * len(fns)

    def go(i: int) -> None:
        start.wait()
        try:
            out[i] = fns[i]()
        except Exception as exc:  # noqa: BLE001 - the outcome is what the test inspects
            out[i] = exc

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(fns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_concurrent_openings_are_each_served_once_and_each_on_record(vault_env: Any, person: Person) -> None:
    issued = _create(vault_env, person)
    before = len(_log(vault_env, person))
    entries = _run_all([lambda: _manifest(vault_env, issued)["files"][0] for _ in range(24)])
    assert all(isinstance(e, dict) and "location" in e for e in entries)
    tokens = [_token(e) for e in entries]
    assert len(set(tokens)) == 24
    when = NOW + timedelta(minutes=2)
    served = _run_all(
        [
            lambda t=t: links.open_file(factory=vault_env.factory, crypto=vault_env.crypto, location_token=t, now=when)
            for t in tokens
        ]
    )
    assert all(isinstance(s, links.ServedFile) for s in served)
    # 24 manifest openings and 24 downloads, each one access-log entry.
    assert len(_log(vault_env, person)) == before + 48
    # Used once: every location is gone now.
    again = _run_all(
        [
            lambda t=t: links.open_file(factory=vault_env.factory, crypto=vault_env.crypto, location_token=t, now=when)
            for t in tokens[:6]
        ]
    )
    assert all(isinstance(a, ShlUnavailable) for a in again)


def test_racing_for_one_location_serves_it_once(vault_env: Any, person: Person) -> None:
    issued = _create(vault_env, person)
    token = _token(_manifest(vault_env, issued)["files"][0])
    when = NOW + timedelta(minutes=2)
    outcomes = _run_all(
        [
            lambda: links.open_file(factory=vault_env.factory, crypto=vault_env.crypto, location_token=token, now=when)
            for _ in range(8)
        ]
    )
    assert sum(isinstance(o, links.ServedFile) for o in outcomes) == 1
    assert sum(isinstance(o, ShlUnavailable) for o in outcomes) == 7


def _audit_size(env: Any) -> int:
    with env.factory() as s:
        return int(s.execute(select(func.count()).select_from(AuditEntry)).scalar_one())


def _append(env: Any) -> Any:
    def write(session: Session) -> str:
        audit_log.append(session=session, crypto=env.crypto, event={"probe": 1}, patient_id=None, now=NOW)
        return "written"

    return write


def _unavailable(_session: Session) -> str:
    raise ShlUnavailable("this link is not available")


def _broken(env: Any) -> Any:
    def write(session: Session) -> str:
        audit_log.append(session=session, crypto=env.crypto, event={"probe": 2}, patient_id=None, now=NOW)
        raise RuntimeError("the disk is full")

    return write


def test_a_group_answers_refusals_alone_and_fails_whole_on_any_other_error(vault_env: Any) -> None:
    # Groups are what SQLite uses; the writer itself works on either backend.
    writer = links._GroupWriter(vault_env.factory)
    size = _audit_size(vault_env)
    group = [links._Work(_append(vault_env)), links._Work(_unavailable), links._Work(_append(vault_env))]
    writer._run_group(group)
    assert [w.result for w in group] == ["written", None, "written"]
    assert isinstance(group[1].error, ShlUnavailable)
    assert _audit_size(vault_env) == size + 2
    group = [links._Work(_append(vault_env)), links._Work(_broken(vault_env)), links._Work(_append(vault_env))]
    writer._run_group(group)
    assert all(isinstance(w.error, RuntimeError) for w in group)
    assert all(w.done.is_set() for w in group)
    assert _audit_size(vault_env) == size + 2  # nothing of the failed group was kept


def test_a_failure_after_commit_is_raised_after_its_writes_are_kept(vault_env: Any, person: Person) -> None:
    # An expired location is deleted and the request refused: the deletion is kept.
    issued = _create(vault_env, person)
    token = _token(_manifest(vault_env, issued)["files"][0])
    late = NOW + timedelta(hours=2)
    with pytest.raises(ShlUnavailable):
        links.open_file(factory=vault_env.factory, crypto=vault_env.crypto, location_token=token, now=late)
    from medvault.store.models import ShlLocation

    with vault_env.factory() as s:
        assert s.execute(select(func.count()).select_from(ShlLocation)).scalar_one() == 0


def test_a_work_item_cannot_start_another_write(vault_env: Any) -> None:
    # On the writer thread, a nested write would wait on itself forever: it fails at once instead.
    outcome: list[BaseException | str] = []

    def on_the_writer_thread() -> None:
        try:
            outcome.append(links._write(vault_env.factory, lambda _s: "inner"))
        except RuntimeError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=on_the_writer_thread, name=links._WRITER_THREAD)
    thread.start()
    thread.join()
    assert len(outcome) == 1
    assert isinstance(outcome[0], RuntimeError)
    assert links._write(vault_env.factory, lambda _s: "outer") == "outer"  # elsewhere it works


def test_refused_openings_of_real_links_are_in_the_patients_log(vault_env: Any, person: Person) -> None:
    """Every opening appears, whatever its outcome: paused, revoked, expired and spent links answer
    the same 404 as an unknown id, and the attempt is logged with its reason."""
    from tests.emergency.links_support import FAST_HASHER, PASSCODE

    def status(issued: links.IssuedLink, value: str) -> None:
        links.set_status(
            factory=vault_env.factory,
            crypto=vault_env.crypto,
            caller=person.caller,
            patient_id=person.patient_id,
            link_id=issued.link_id,
            status=value,  # type: ignore[arg-type]
        )

    paused, revoked = _create(vault_env, person), _create(vault_env, person, purpose="sharing")
    expiring = _create(vault_env, person, purpose="sharing", expires=NOW + timedelta(days=1))
    spent = _create(vault_env, person, purpose="sharing", passcode=PASSCODE, budget=1)
    status(paused, "paused")
    status(revoked, "revoked")
    from medvault.emergency.errors import ShlPasscodeError

    with pytest.raises(ShlPasscodeError):
        _manifest(vault_env, spent, passcode="wrong")
    before = len(_log(vault_env, person))
    for issued, kw in (
        (paused, {}),
        (revoked, {}),
        (expiring, {"now": NOW + timedelta(days=2)}),
        (spent, {"passcode": PASSCODE}),
    ):
        with pytest.raises(ShlUnavailable):
            _manifest(vault_env, issued, **kw)
    with pytest.raises(ShlUnavailable):
        links.open_manifest(
            factory=vault_env.factory,
            crypto=vault_env.crypto,
            hasher=FAST_HASHER,
            link_id="A" * 43,
            recipient="Nobody",
            base_url="http://127.0.0.1",
        )
    events = _log(vault_env, person)
    assert len(events) == before + 4  # the unknown id has no patient to tell
    assert sorted(e["outcomeDesc"] for e in events[:4]) == ["attempts-spent", "expired", "paused", "revoked"]
    assert all(e["outcome"] == "4" for e in events[:4])


def test_a_waiter_that_cannot_be_woken_strands_no_one(vault_env: Any) -> None:
    # A request whose event loop closed meanwhile (cancelled, server stopping): waking it fails,
    # and neither the rest of its group nor the writer thread may suffer for it.
    writer = links._GroupWriter(vault_env.factory)

    def closed_loop() -> None:
        raise RuntimeError("Event loop is closed")

    group = [links._Work(_append(vault_env)), links._Work(_append(vault_env), notify=closed_loop)]
    group.append(links._Work(_append(vault_env)))
    writer._run_group(group)
    assert all(w.done.is_set() for w in group)
    assert [w.result for w in group] == ["written"] * 3


def test_a_dead_writer_is_replaced_not_queued_to(vault_env: Any) -> None:
    if vault_env.settings.database_url:
        assert links._write(vault_env.factory, lambda _s: "alone") == "alone"  # no writer on PostgreSQL
        return
    links._write(vault_env.factory, lambda _s: None)
    dead = threading.Thread(target=lambda: None)
    dead.start()
    dead.join()
    with links._writers_lock:
        links._writers[vault_env.factory]._thread = dead  # as if the thread had died
    assert links._write(vault_env.factory, lambda _s: "served") == "served"


def test_a_stop_iteration_out_of_a_step_is_raised_not_taken_for_the_flow_s_end(vault_env: Any) -> None:
    def step(_session: Session) -> None:
        next(iter(()))  # a bug in a step: StopIteration

    def flow() -> links._Flow[str]:
        yield links._Db(step)
        return "finished"

    with pytest.raises(StopIteration):
        links._run(vault_env.factory, None, flow())
