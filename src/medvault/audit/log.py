"""The access log in the database: append a sealed AuditEvent, read a patient's entries, export a
signed checkpoint, and verify the stored log against an exported one.

Each entry's Merkle leaf covers its sequence number, time, patient token and the SHA-256 of its
sealed blob, so verifying needs no decryption key: an operator can check a copied database offline,
and a patient erased by destroying their data key leaves a log that still verifies.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import BigInteger, Dialect, bindparam, func, insert, select, type_coerce, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from medvault.audit import merkle
from medvault.audit.checkpoint import Checkpoint, parse_and_verify, sign_checkpoint
from medvault.audit.errors import AuditError
from medvault.store.crypto_context import SHARED_OWNER, CryptoContext
from medvault.store.models import AuditEntry, AuditHead
from medvault.store.types import UtcMicros

LEAF_VERSION = 1
NO_PATIENT = bytes(12)
KEY_NAME = "medvault-audit"
_AAD = b"medvault:audit:v1|"
_BATCH = 5000
# The append runs on every request, so its two statements go to the DBAPI cursor of the session's
# connection (same transaction), as SQL compiled once per dialect from these Core statements:
# SQLAlchemy's per-execute work (cache key, compiled-cache lookup, events, result wrapping) cost
# about as much as SQLite executing them.
_NEXT_SEQ = update(AuditHead).where(AuditHead.id == 1).values(size=AuditHead.size + 1).returning(AuditHead.size)
_INSERT_COLUMNS = ("seq", "recorded", "data_key_id", "blob", "patient_token")
_INSERT = insert(AuditEntry).values({name: bindparam(name) for name in _INSERT_COLUMNS})


@dataclass(frozen=True)
class _Sql:
    next_seq: str
    insert: str
    # Parameter names in the order a positional paramstyle (SQLite's qmark) wants them; None when
    # the dialect takes a dict (psycopg's pyformat).
    insert_order: tuple[str, ...] | None


_compiled: dict[str, _Sql] = {}


def _sql_for(dialect: Dialect) -> _Sql:
    found = _compiled.get(dialect.name)
    if found is None:
        # Its only values are the constants 1 (row id and increment): rendered inline.
        seq = _NEXT_SEQ.compile(dialect=dialect, compile_kwargs={"literal_binds": True})
        # The entry's values stay parameters in the dialect's own paramstyle.
        ins = _INSERT.compile(dialect=dialect)
        order = tuple(ins.positiontup) if ins.positional and ins.positiontup is not None else None
        found = _compiled[dialect.name] = _Sql(next_seq=str(seq), insert=str(ins), insert_order=order)
    return found


_UTC_MICROS = UtcMicros()  # the column type's own conversion, built once (every append uses it)


def _micros(value: datetime) -> int:
    bound = _UTC_MICROS.process_bind_param(value, None)  # type: ignore[arg-type]
    assert bound is not None
    return bound


def leaf_input(*, seq: int, recorded_micros: int, patient_token: bytes, blob: bytes) -> bytes:
    return (
        struct.pack(">BQq", LEAF_VERSION, seq, recorded_micros)
        + bytes(patient_token)
        + hashlib.sha256(bytes(blob)).digest()
    )


def patient_token(crypto: CryptoContext, patient_id: str) -> bytes:
    return _token_of_link(crypto, crypto.indexer.pseudonym(patient_id))


def _token_of_link(crypto: CryptoContext, link: bytes) -> bytes:
    return crypto.indexer.search_token(link, "AuditEvent", "patient", "")


def append(
    *,
    session: Session,
    crypto: CryptoContext,
    event: dict[str, Any],
    patient_id: str | None,
    now: datetime | None = None,
) -> int:
    """Add one entry in the caller's transaction (so a failed audit write fails the action); returns
    its sequence number. The head row lock orders concurrent appends."""
    # Everything that does not need the sequence number is done before taking the head row's
    # lock, so the lock is held for as short a time as possible.
    # One pseudonym per append (every request makes one): it keys the data key and the token.
    link = crypto.indexer.pseudonym(patient_id) if patient_id else None
    owner = link if link is not None else SHARED_OWNER
    dk_id, key = crypto.data_key(session, purpose="clinical", owner=owner)
    plaintext = orjson.dumps(event)
    token = _token_of_link(crypto, link) if link is not None else NO_PATIENT
    recorded = _micros(now or datetime.now(UTC))
    conn = session.connection()  # starts the session's transaction (SQLite: BEGIN IMMEDIATE)
    sql = _sql_for(conn.dialect)
    cursor = conn.connection.cursor()  # the DBAPI cursor of that same connection and transaction
    dbapi_error = conn.dialect.loaded_dbapi.Error
    statement = sql.next_seq
    try:
        # One statement allocates the sequence number and holds the head row's lock until commit
        # (PostgreSQL row lock; SQLite writers are exclusive anyway): numbers are dense and commit
        # in order.
        cursor.execute(statement)
        row = cursor.fetchone()
        if row is None:
            raise AuditError("the access log's head row is missing; run `audit verify`")
        seq = int(row[0]) - 1
        blob = crypto.sealer.seal(key, plaintext, _AAD + str(seq).encode())
        values = {"seq": seq, "recorded": recorded, "data_key_id": dk_id, "blob": blob, "patient_token": token}
        params: Any = values if sql.insert_order is None else tuple(values[k] for k in sql.insert_order)
        statement = sql.insert
        cursor.execute(statement, params)
    except dbapi_error as exc:
        # The same exception classes SQLAlchemy raises for its own statements (callers such as the
        # importer tell a locked or broken database from a bad record by them); no parameters in it.
        raise DBAPIError.instance(
            statement, None, exc, dbapi_error, hide_parameters=True, dialect=conn.dialect
        ) from exc
    finally:
        cursor.close()
    return seq


@dataclass(frozen=True)
class Logged:
    seq: int
    recorded: datetime
    event: dict[str, Any]


def for_patient(
    *, session: Session, crypto: CryptoContext, patient_id: str, limit: int = 100, before: int | None = None
) -> list[Logged]:
    """A patient's entries, newest first (decrypted with the patient's own data key)."""
    query = select(AuditEntry).where(AuditEntry.patient_token == patient_token(crypto, patient_id))
    if before is not None:
        query = query.where(AuditEntry.seq < before)
    rows = session.execute(query.order_by(AuditEntry.seq.desc()).limit(limit)).scalars()
    out = []
    for row in rows:
        key = crypto.data_key_by_id(session, row.data_key_id)
        event = orjson.loads(crypto.sealer.open(key, row.blob, _AAD + str(row.seq).encode()))
        out.append(Logged(row.seq, row.recorded, event))
    return out


def size(*, session: Session) -> int:
    return session.execute(select(AuditHead.size).where(AuditHead.id == 1)).scalar_one()


def _leaves(session: Session, *, upto: int | None = None) -> Iterator[tuple[int, bytes]]:
    """(seq, leaf hash) in stored order, streamed in batches (keyset paging, bounded memory)."""
    last = -1
    while True:
        query = (
            select(
                AuditEntry.seq,
                type_coerce(AuditEntry.recorded, BigInteger),
                AuditEntry.patient_token,
                AuditEntry.blob,
            )
            .where(AuditEntry.seq > last)
            .order_by(AuditEntry.seq)
            .limit(_BATCH)
        )
        if upto is not None:
            query = query.where(AuditEntry.seq < upto)
        rows = session.execute(query).all()
        if not rows:
            return
        for seq, micros, token, blob in rows:
            yield seq, merkle.leaf_hash(leaf_input(seq=seq, recorded_micros=micros, patient_token=token, blob=blob))
        last = rows[-1][0]


def current_root(*, session: Session) -> tuple[int, bytes]:
    """Size and Merkle root of the committed log (entries 0..size-1 per the head row)."""
    n = size(session=session)
    frontier = merkle.Frontier()
    for expected, (seq, leaf) in enumerate(_leaves(session, upto=n)):
        if seq != expected:
            raise AuditError(f"the log has a gap or an inserted entry at position {expected}; run `audit verify`")
        frontier.append(leaf)
    if frontier.size != n:
        raise AuditError(f"the log holds {frontier.size} entries but its head says {n}; run `audit verify`")
    return n, frontier.root()


def make_checkpoint(
    *, session: Session, private_key: Ed25519PrivateKey, origin: str, now: datetime | None = None
) -> str:
    n, root = current_root(session=session)
    checkpoint = Checkpoint(origin=origin, size=n, root=root, timestamp=now or datetime.now(UTC))
    return sign_checkpoint(checkpoint=checkpoint, private_key=private_key, key_name=KEY_NAME)


@dataclass
class VerifyReport:
    checked: int = 0
    size: int = 0
    root: bytes = b""
    checkpoint_size: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(*, session: Session, checkpoint_text: str, public_key: Ed25519PublicKey) -> VerifyReport:
    """Check the stored log against an exported, signed checkpoint.

    Detects: a modified, deleted, reordered or inserted entry among the first `checkpoint.size`
    (the root differs, or the sequence is not dense), a log shorter than the checkpoint
    (truncation), a different log presented as this one (split view: another root at that size),
    and a head row that disagrees with the entries. Entries appended after the checkpoint are
    checked for density only: nothing outside the server pins them yet.
    """
    checkpoint = parse_and_verify(text=checkpoint_text, public_key=public_key)
    report = VerifyReport(checkpoint_size=checkpoint.size)
    head = size(session=session)
    # Bounded by the head read first: on a live PostgreSQL log (READ COMMITTED) appends made
    # while verifying are newer than what we check, not tampering.
    stored = session.execute(select(func.count()).select_from(AuditEntry).where(AuditEntry.seq < head)).scalar_one()
    frontier = merkle.Frontier()
    for expected, (seq, leaf) in enumerate(_leaves(session, upto=head)):
        if seq != expected:
            kind = "missing" if seq > expected else "duplicated"
            report.problems.append(f"entry {expected} is {kind}: the sequence is not dense")
            break
        frontier.append(leaf)
        if frontier.size == checkpoint.size and frontier.root() != checkpoint.root:
            report.problems.append(
                f"the first {checkpoint.size} entries do not match the checkpoint's root "
                "(an entry was modified, deleted, reordered or inserted, or this is another log)"
            )
    report.checked = frontier.size
    report.size = frontier.size
    report.root = frontier.root()
    if checkpoint.size == 0 and checkpoint.root != merkle.EMPTY_ROOT:
        report.problems.append("the checkpoint's root is not the empty tree's")
    if frontier.size < checkpoint.size and not report.problems:
        report.problems.append(
            f"the log holds {frontier.size} entries, fewer than the {checkpoint.size} of the checkpoint (truncated)"
        )
    if stored != head or (frontier.size != head and not report.problems):
        report.problems.append(f"the log head says {head} entries but {stored} are stored")
    return report
