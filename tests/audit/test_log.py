"""The stored access log on both backends: append in the caller's transaction, a patient's entries,
and the tamper matrix of `audit verify` (modify, delete, reorder, insert, truncate, split view)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import delete, select, text, update
from sqlalchemy.exc import DBAPIError, OperationalError, ProgrammingError

from medvault.audit import log as audit_log
from medvault.audit.errors import CheckpointInvalid
from medvault.crypto.errors import DecryptionFailed
from medvault.crypto.signing import load_private, load_public
from medvault.db import unit_of_work
from medvault.store.models import AuditEntry, AuditHead

T0 = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)


def _event(n: int, patient: str | None) -> dict[str, Any]:
    return {"resourceType": "AuditEvent", "action": "R", "outcome": "0", "n": n, "patient": patient}


def _fill(env: Any, count: int, *, start: int = 0) -> None:
    with unit_of_work(env.factory) as session:
        for n in range(start, start + count):
            patient = ("pat-a", "pat-b", None)[n % 3]
            audit_log.append(
                session=session,
                crypto=env.crypto,
                event=_event(n, patient),
                patient_id=patient,
                now=T0 + timedelta(seconds=n),
            )


def _checkpoint(env: Any) -> str:
    with env.factory() as session:
        return audit_log.make_checkpoint(
            session=session, private_key=load_private(env.settings.keys_path), origin="medvault"
        )


def _verify(env: Any, text: str) -> audit_log.VerifyReport:
    with env.factory() as session:
        return audit_log.verify(session=session, checkpoint_text=text, public_key=load_public(env.settings.keys_path))


def test_append_is_dense_and_a_patient_sees_only_their_entries(vault_env: Any) -> None:
    _fill(vault_env, 9)
    with vault_env.factory() as session:
        assert audit_log.size(session=session) == 9
        mine = audit_log.for_patient(session=session, crypto=vault_env.crypto, patient_id="pat-a")
    assert [e.event["n"] for e in mine] == [6, 3, 0]  # newest first
    assert {e.event["patient"] for e in mine} == {"pat-a"}
    assert mine[0].recorded == T0 + timedelta(seconds=6)


def test_a_failed_action_leaves_no_entry(vault_env: Any) -> None:
    def action_that_fails_after_auditing() -> None:
        with unit_of_work(vault_env.factory) as session:
            audit_log.append(session=session, crypto=vault_env.crypto, event=_event(0, "pat-a"), patient_id="pat-a")
            raise RuntimeError("the action failed after its audit entry was written")

    with pytest.raises(RuntimeError):
        action_that_fails_after_auditing()
    with vault_env.factory() as session:
        assert audit_log.size(session=session) == 0
        assert session.execute(select(AuditEntry)).first() is None


def test_entry_blobs_are_sealed_and_bound_to_their_position(vault_env: Any) -> None:
    _fill(vault_env, 4)
    with unit_of_work(vault_env.factory) as session:
        blobs = dict(session.execute(select(AuditEntry.seq, AuditEntry.blob)).all())
        assert b"pat-a" not in blobs[0]
        assert b"AuditEvent" not in blobs[0]
        # Entry 3 is pat-a's too (same data key): moving entry 0's blob there must still fail.
        session.execute(update(AuditEntry).where(AuditEntry.seq == 3).values(blob=blobs[0]))
    with vault_env.factory() as session, pytest.raises(DecryptionFailed):
        audit_log.for_patient(session=session, crypto=vault_env.crypto, patient_id="pat-a")


def test_clean_log_verifies_including_entries_after_the_checkpoint(vault_env: Any) -> None:
    assert _verify(vault_env, _checkpoint(vault_env)).ok  # the empty log
    _fill(vault_env, 20)
    checkpoint = _checkpoint(vault_env)
    _fill(vault_env, 5, start=20)
    report = _verify(vault_env, checkpoint)
    assert report.ok, report.problems
    assert (report.checked, report.checkpoint_size) == (25, 20)


def _modify(session: Any) -> None:
    session.execute(update(AuditEntry).where(AuditEntry.seq == 7).values(blob=b"\xa0" * 40))


def _retime(session: Any) -> None:
    session.execute(update(AuditEntry).where(AuditEntry.seq == 7).values(recorded=T0))


def _delete_with_gap(session: Any) -> None:
    session.execute(delete(AuditEntry).where(AuditEntry.seq == 7))


def _delete_and_renumber(session: Any) -> None:
    """The careful attacker: remove entry 7, close the gap and fix the head."""
    session.execute(delete(AuditEntry).where(AuditEntry.seq == 7))
    for seq in range(8, 20):
        session.execute(update(AuditEntry).where(AuditEntry.seq == seq).values(seq=seq - 1))
    session.execute(update(AuditHead).values(size=19))


def _delete_renumber_and_pad(session: Any) -> None:
    """...and then append a copy of an old entry, so the log is as long as the checkpoint again."""
    _delete_and_renumber(session)
    row = session.execute(select(AuditEntry).where(AuditEntry.seq == 0)).scalar_one()
    session.add(
        AuditEntry(
            seq=19, recorded=row.recorded, data_key_id=row.data_key_id, blob=row.blob, patient_token=row.patient_token
        )
    )
    session.execute(update(AuditHead).values(size=20))


def _reorder(session: Any) -> None:
    session.execute(update(AuditEntry).where(AuditEntry.seq == 5).values(seq=-1))
    session.execute(update(AuditEntry).where(AuditEntry.seq == 6).values(seq=5))
    session.execute(update(AuditEntry).where(AuditEntry.seq == -1).values(seq=6))


def _insert(session: Any) -> None:
    """Shift entries 10.. up by one and slip a copy of entry 2 in at 10."""
    for seq in range(19, 9, -1):
        session.execute(update(AuditEntry).where(AuditEntry.seq == seq).values(seq=seq + 1))
    row = session.execute(select(AuditEntry).where(AuditEntry.seq == 2)).scalar_one()
    session.add(
        AuditEntry(
            seq=10, recorded=row.recorded, data_key_id=row.data_key_id, blob=row.blob, patient_token=row.patient_token
        )
    )
    session.execute(update(AuditHead).values(size=21))


def _truncate(session: Any) -> None:
    session.execute(delete(AuditEntry).where(AuditEntry.seq >= 17))
    session.execute(update(AuditHead).values(size=17))


def _head_only(session: Any) -> None:
    session.execute(update(AuditHead).values(size=25))


@pytest.mark.parametrize(
    ("tamper", "expect"),
    [
        (_modify, "do not match the checkpoint"),
        (_retime, "do not match the checkpoint"),
        (_delete_with_gap, "entry 7 is missing"),
        (_delete_and_renumber, "fewer than the 20"),
        (_delete_renumber_and_pad, "do not match the checkpoint"),
        (_reorder, "do not match the checkpoint"),
        (_insert, "do not match the checkpoint"),
        (_truncate, "truncated"),
        (_head_only, "head says 25"),
    ],
    ids=lambda x: getattr(x, "__name__", "")[1:] if callable(x) else "",
)
def test_tampering_is_detected(vault_env: Any, tamper: Callable[[Any], None], expect: str) -> None:
    _fill(vault_env, 20)
    checkpoint = _checkpoint(vault_env)
    assert _verify(vault_env, checkpoint).ok
    with unit_of_work(vault_env.factory) as session:
        tamper(session)
    report = _verify(vault_env, checkpoint)
    assert not report.ok
    assert any(expect in p for p in report.problems), report.problems


def test_split_view_a_divergent_log_of_the_same_size_is_detected(vault_env: Any) -> None:
    _fill(vault_env, 12)
    checkpoint = _checkpoint(vault_env)
    with unit_of_work(vault_env.factory) as session:  # rebuild: same size, other history
        session.execute(delete(AuditEntry))
        session.execute(update(AuditHead).values(size=0))
    _fill(vault_env, 12, start=100)
    report = _verify(vault_env, checkpoint)
    assert any("do not match the checkpoint" in p for p in report.problems), report.problems
    # The divergent log's own checkpoint verifies against itself, so only the export tells.
    assert _verify(vault_env, _checkpoint(vault_env)).ok


def test_a_checkpoint_signed_by_another_key_is_refused(vault_env: Any) -> None:
    _fill(vault_env, 3)
    with vault_env.factory() as session:
        forged = audit_log.make_checkpoint(session=session, private_key=Ed25519PrivateKey.generate(), origin="medvault")
    with pytest.raises(CheckpointInvalid):
        _verify(vault_env, forged)
    edited = _checkpoint(vault_env).replace("\n3\n", "\n2\n", 1)
    with pytest.raises(CheckpointInvalid):
        _verify(vault_env, edited)


def test_concurrent_appends_leave_no_gap_and_no_fork(vault_env: Any) -> None:
    """Writers in several threads, each in its own transactions (some rolled back after appending):
    the committed entries are numbered 0..n-1 with no gap or duplicate, each transaction's entries
    are consecutive (the head row's lock is held until commit), and the log verifies."""
    threads, per_thread = 4, 12
    start = threading.Barrier(threads)
    committed: list[list[int]] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    class Discard(Exception):
        pass

    def writer(t: int) -> None:
        try:
            start.wait(timeout=30)
            for i in range(per_thread):
                try:
                    with unit_of_work(vault_env.factory) as session:
                        seqs = [
                            audit_log.append(
                                session=session,
                                crypto=vault_env.crypto,
                                event=_event(t * 100 + i, f"pat-{t}"),
                                patient_id=f"pat-{t}",
                            )
                            for _ in range(2)
                        ]
                        if i % 3 == 2:
                            raise Discard  # rolled back: its numbers must be reused, not skipped
                    with lock:
                        committed.append(seqs)
                except Discard:
                    pass
        except BaseException as exc:  # noqa: BLE001 - re-raised as a failure by the main thread
            errors.append(exc)

    workers = [threading.Thread(target=writer, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    assert not errors, errors
    assert not any(w.is_alive() for w in workers)
    expected = threads * (per_thread - per_thread // 3) * 2
    numbers = sorted(s for seqs in committed for s in seqs)
    assert numbers == list(range(expected))  # dense, no duplicate
    assert all(b == a + 1 for a, b in committed)  # a transaction's entries are not interleaved
    with vault_env.factory() as session:
        assert audit_log.size(session=session) == expected
        stored = session.execute(select(AuditEntry.seq).order_by(AuditEntry.seq)).scalars().all()
        assert stored == list(range(expected))
        for t in range(threads):
            mine = audit_log.for_patient(session=session, crypto=vault_env.crypto, patient_id=f"pat-{t}")
            assert len(mine) == (per_thread - per_thread // 3) * 2
            assert all(e.event["n"] // 100 == t and e.event["n"] % 100 % 3 != 2 for e in mine)
    report = _verify(vault_env, _checkpoint(vault_env))
    assert report.ok, report.problems
    assert report.checked == expected


def test_a_database_error_in_the_append_is_sqlalchemys_own(vault_env: Any) -> None:
    """The append talks to the DBAPI cursor directly; its errors still arrive as SQLAlchemy's
    exception classes (the importer tells a broken database from a bad file by them), with no
    parameter values in the message."""
    with unit_of_work(vault_env.factory) as session:
        session.execute(text("DROP TABLE audit_head"))
    with unit_of_work(vault_env.factory) as session, pytest.raises(DBAPIError) as caught:
        audit_log.append(session=session, crypto=vault_env.crypto, event=_event(0, "pat-a"), patient_id="pat-a")
    expected = OperationalError if vault_env.settings.is_sqlite else ProgrammingError
    assert isinstance(caught.value, expected)
    assert "audit_head" in str(caught.value)
