"""Storage primitives: seal and store a version, open a version, maintain the keyed indexes.

Every body is sealed under its owner's data key with (type, id, version) as associated data. A
Patient is split: its identifying part goes to the identity vault under a separate identity data key
and a separate key-encryption key; the clinical rows carry only the patient's keyed pseudonym.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import Dialect, delete, event, select, update
from sqlalchemy.orm import Session

from medvault.crypto.errors import DecryptionFailed
from medvault.crypto.indexes import normalise
from medvault.fhir import identity as fhir_identity
from medvault.fhir import search as fs
from medvault.records.errors import Gone, NotFound
from medvault.store.crypto_context import SHARED_OWNER, CryptoContext
from medvault.store.models import IdentityIndex, IdentityVersion, Resource, ResourceVersion, SearchToken

if TYPE_CHECKING:
    from medvault.records.guard import Caller

GLOBAL_SCOPE = b"global"


@dataclass
class Head:
    """The current-version pointer of one resource (a row of `resource`)."""

    rtype: str
    rid: str
    version: int
    deleted: bool
    patient_link: bytes | None
    last_updated: datetime


_TABLES = (Resource, ResourceVersion, IdentityVersion, SearchToken, IdentityIndex)
_RAW: dict[type, tuple[str, tuple[str, ...]]] = {
    SearchToken: ("INSERT INTO search_token (token, rid) VALUES ({m}, {m})", ("token", "rid")),
    IdentityIndex: ("INSERT INTO identity_index (bucket, handle) VALUES ({m}, {m})", ("bucket", "handle")),
}


_PLANS: dict[tuple[type, str, str, tuple[str, ...]], tuple[str, tuple[Callable[[Any], Any] | None, ...]]] = {}


def _insert_plan(
    table: type, dialect: Dialect, cols: tuple[str, ...], mark: str
) -> tuple[str, tuple[Callable[[Any], Any] | None, ...]]:
    """An INSERT for `cols` of `table` in the driver's own syntax, and each column's bind converter."""
    key = (table, dialect.name, mark, cols)
    plan = _PLANS.get(key)
    if plan is None:
        t = table.__table__  # type: ignore[attr-defined]
        quote = dialect.identifier_preparer.quote
        names, marks = ", ".join(quote(c) for c in cols), ", ".join([mark] * len(cols))
        sql = f"INSERT INTO {quote(t.name)} ({names}) VALUES ({marks})"  # noqa: S608 - names from the model only
        procs = tuple(t.c[c].type.dialect_impl(dialect).bind_processor(dialect) for c in cols)
        plan = _PLANS[key] = (sql, procs)
    return plan


@dataclass
class Vault:
    """One unit of work on the vault: a session plus the process's crypto context.

    New rows are buffered and written with one executemany per table (import speed); every read
    path calls `flush()` first, so reads always see the unit of work's own writes.
    """

    session: Session
    crypto: CryptoContext
    # Who acts in this unit of work (records/guard.py). None: refused by every guarded service.
    caller: Caller | None = None
    # Rows waiting for `flush`: dicts, or for the index tables (_RAW) tuples in column order.
    _pending: dict[type, list[Any]] = field(default_factory=dict)
    # Heads read or written in this unit of work (None: known not to exist). Authoritative because
    # a unit of work is one transaction and heads are read FOR UPDATE on PostgreSQL.
    _heads: dict[tuple[str, str], Head | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Whoever commits (API dependency, CLI unit of work) also writes what is still buffered.
        event.listen(self.session, "before_commit", lambda _s: self.flush())

    def add(self, table: type, row: dict[str, Any]) -> None:
        raw = _RAW.get(table)
        self._pending.setdefault(table, []).append(tuple(row[c] for c in raw[1]) if raw else row)

    def add_index_rows(self, table: type, rows: Iterable[tuple[Any, ...]]) -> None:
        """Rows of an index table (SearchToken, IdentityIndex) as tuples in _RAW column order."""
        assert table in _RAW
        self._pending.setdefault(table, []).extend(rows)

    def discard(self) -> None:
        """Forget buffered rows (their savepoint or transaction was rolled back)."""
        self._pending.clear()
        self._heads.clear()

    def flush(self) -> None:
        if not self._pending:
            return
        conn = self.session.connection()
        for table in _TABLES:
            rows = self._pending.get(table)
            if not rows:
                continue
            mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
            if table in _RAW:
                # Index rows are (bytes, str|int) only: hand them to the driver's executemany
                # directly, skipping per-row parameter processing (the import hot path).
                sql, _ = _RAW[table]
                conn.exec_driver_sql(sql.format(m=mark), rows)
                continue
            cols = tuple(rows[0])
            if any(len(r) != len(cols) for r in rows) or any(tuple(r) != cols for r in rows):
                conn.execute(table.__table__.insert(), rows)  # type: ignore[attr-defined]
                continue
            # Same columns in every row (store_version's rows): one prepared INSERT, bound values
            # converted by the columns' own types (type codes, microseconds), one executemany.
            sql, procs = _insert_plan(table, conn.dialect, cols, mark)
            conn.exec_driver_sql(
                sql, [tuple(v if f is None else f(v) for f, v in zip(procs, r.values(), strict=True)) for r in rows]
            )
        self._pending.clear()

    def prefetch_heads(self, keys: Iterable[tuple[str, str]]) -> None:
        """Read many heads in few queries (transactions, import) instead of one query per entry."""
        wanted = sorted({k for k in keys if k not in self._heads})
        pg = self.session.get_bind().dialect.name == "postgresql"
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            stmt = select(
                Resource.rtype,
                Resource.rid,
                Resource.version,
                Resource.deleted,
                Resource.patient_link,
                Resource.last_updated,
            ).where(Resource.rid.in_(sorted({rid for _, rid in chunk})))  # the (rid, rtype) unique index
            if pg:
                stmt = stmt.with_for_update()
            found = {(row[0], row[1]): Head(*row) for row in self.session.execute(stmt)}
            for key in chunk:
                self._heads[key] = found.get(key)


def _by_type(keys: Sequence[tuple[str, str]], chunk: int = 400) -> Iterable[tuple[str, list[str]]]:
    groups: dict[str, list[str]] = {}
    for rtype, rid in keys:
        groups.setdefault(rtype, []).append(rid)
    for rtype, rids in groups.items():
        for start in range(0, len(rids), chunk):
            yield rtype, rids[start : start + chunk]


def now() -> datetime:
    return datetime.now(UTC)


def iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def resource_aad(rtype: str, rid: str, version: int) -> bytes:
    return f"medvault:resource:v1|{rtype}|{rid}|{version}".encode()


def identity_aad(handle: bytes, version: int) -> bytes:
    # Bound to the handle (a keyed function of the Patient id), so a lookup by blind index can open
    # a row before it knows whose it is; the id inside is then checked against the handle.
    return f"medvault:identity:v1|{handle.hex()}|{version}".encode()


def patient_link(vault: Vault, doc: dict[str, Any]) -> bytes | None:
    pid = fs.patient_reference(doc)
    return vault.crypto.indexer.pseudonym(pid) if pid else None


# ---------------------------------------------------------------------------------------------
# writing


def store_version(
    vault: Vault,
    *,
    rtype: str,
    rid: str,
    doc: dict[str, Any] | None,
    method: str,
    head: Head | None,
    index_hint: Sequence[tuple[str, str]] | None = None,
) -> tuple[int, datetime]:
    """Write the next version of (rtype, rid); `doc=None` writes a deletion. Returns (version, time).
    `index_hint`: the doc's `index_entries`, already computed (import does it in worker processes)."""
    session, crypto = vault.session, vault.crypto
    version = (head.version + 1) if head else 1
    ts = now()
    link: bytes | None = None
    blob: bytes | None = None
    old_doc: dict[str, Any] | None = None
    if head is not None:
        vault.flush()  # the old index rows must be in the table before we delete them
        if not head.deleted:
            old_doc = read_version(vault, rtype, rid)
    if doc is not None:
        doc["id"] = rid
        meta = dict(doc.get("meta") or {})
        meta["versionId"] = str(version)
        meta["lastUpdated"] = iso(ts)
        doc["meta"] = meta
        link = patient_link(vault, doc)
        body = doc
        if rtype == "Patient":
            body, ident = fhir_identity.split_patient(doc)
            handle = crypto.indexer.identity_handle(rid)
            id_dk, id_key = crypto.data_key(session, purpose="identity", owner=handle)
            ident_blob = crypto.sealer.seal(
                id_key, orjson.dumps({"id": rid, "identity": ident}), identity_aad(handle, version)
            )
            vault.add(
                IdentityVersion,
                {"handle": handle, "version": version, "data_key_id": id_dk, "blob": ident_blob},
            )
        dk_id, key = crypto.data_key(session, purpose="clinical", owner=link or SHARED_OWNER)
        blob = crypto.sealer.seal(key, orjson.dumps(body), resource_aad(rtype, rid, version))
    else:
        assert head is not None
        dk_id = session.execute(
            select(ResourceVersion.data_key_id).where(
                ResourceVersion.rtype == rtype,
                ResourceVersion.rid == rid,
                ResourceVersion.version == head.version,
            )
        ).scalar_one()
        link = head.patient_link
    vault.add(
        ResourceVersion,
        {
            "rtype": rtype,
            "rid": rid,
            "version": version,
            "data_key_id": dk_id,
            "blob": blob,
            "deleted": doc is None,
            "method": method,
            "last_updated": ts,
        },
    )
    vault._heads[(rtype, rid)] = Head(rtype, rid, version, doc is None, link, ts)
    if head is None:
        vault.add(
            Resource,
            {
                "rtype": rtype,
                "rid": rid,
                "version": version,
                "deleted": doc is None,
                "patient_link": link,
                "last_updated": ts,
            },
        )
    else:
        session.execute(
            update(Resource)
            .where(Resource.rtype == rtype, Resource.rid == rid)
            .values(version=version, deleted=doc is None, patient_link=link, last_updated=ts)
        )
    reindex(
        vault,
        index_hint=index_hint,
        rtype=rtype,
        rid=rid,
        doc=doc,
        link=link,
        old_doc=old_doc,
        old_link=head.patient_link if head else None,
    )
    return version, ts


def tokens_for(
    vault: Vault,
    rtype: str,
    doc: dict[str, Any],
    link: bytes | None,
    entries: Iterable[tuple[str, str]] | None = None,
) -> set[bytes]:
    scope = link or GLOBAL_SCOPE
    token = vault.crypto.indexer.search_token
    pairs = index_entries(rtype, doc) if entries is None else entries
    return {token(scope, rtype, param, value) for param, value in pairs}


def reindex(
    vault: Vault,
    *,
    rtype: str,
    rid: str,
    doc: dict[str, Any] | None,
    link: bytes | None,
    old_doc: dict[str, Any] | None,
    old_link: bytes | None,
    index_hint: Sequence[tuple[str, str]] | None = None,
) -> None:
    session, indexer = vault.session, vault.crypto.indexer
    if old_doc is not None:
        old = tokens_for(vault, rtype, old_doc, old_link)
        if old:
            session.execute(delete(SearchToken).where(SearchToken.rid == rid, SearchToken.token.in_(sorted(old))))
    if rtype == "Patient" and old_doc is not None:
        session.execute(delete(IdentityIndex).where(IdentityIndex.handle == indexer.identity_handle(rid)))
    if doc is None:
        return
    vault.add_index_rows(SearchToken, [(t, rid) for t in tokens_for(vault, rtype, doc, link, index_hint)])
    if rtype == "Patient":
        _, ident = fhir_identity.split_patient(doc)
        handle = indexer.identity_handle(rid)
        buckets = {indexer.blind_bucket(p, v) for p, v in fhir_identity.index_values(ident)}
        vault.add_index_rows(IdentityIndex, [(b, handle) for b in buckets])


def index_entries(rtype: str, doc: dict[str, Any]) -> Iterable[tuple[str, str]]:
    """(param, index string) pairs for the clinical search token index."""
    for name, param in fs.params_for(rtype).items():
        if rtype == "Patient" and name in fs.IDENTITY_PARAMS:
            continue  # identity values go to the blind index, never to clinical tokens
        if param.kind == "token":
            for value in fs.token_index_values(fs.token_pairs(doc, param)):
                yield name, value
        elif param.kind == "reference" and name not in ("patient", "subject"):
            for ref in fs.reference_ids(doc, param):
                yield name, f"ref:{ref}"
        elif param.kind == "date":
            for rng in fs.date_ranges(doc, param):
                years = fs.year_span(rng)
                for year in years if years is not None else ["open"]:
                    yield name, f"y:{year}"
        elif param.kind == "string":
            for value in fs.string_values(doc, param):
                yield name, f"str:{normalise(value)}"


# ---------------------------------------------------------------------------------------------
# reading


def get_head(vault: Vault, rtype: str, rid: str, *, for_update: bool = False) -> Head | None:
    if (rtype, rid) in vault._heads:
        return vault._heads[(rtype, rid)]
    stmt = select(
        Resource.rtype,
        Resource.rid,
        Resource.version,
        Resource.deleted,
        Resource.patient_link,
        Resource.last_updated,
    ).where(Resource.rtype == rtype, Resource.rid == rid)
    if for_update:
        stmt = stmt.with_for_update()
    row = vault.session.execute(stmt).first()
    head = Head(*row) if row else None
    vault._heads[(rtype, rid)] = head
    return head


def open_version(vault: Vault, row: ResourceVersion) -> dict[str, Any]:
    crypto = vault.crypto
    if row.blob is None:
        raise Gone(f"{row.rtype}/{row.rid} version {row.version} is a deletion")
    key = crypto.data_key_by_id(vault.session, row.data_key_id)
    doc: dict[str, Any] = orjson.loads(crypto.sealer.open(key, row.blob, resource_aad(row.rtype, row.rid, row.version)))
    if row.rtype == "Patient":
        ident = open_identity(vault, row.rid, row.version)
        doc = fhir_identity.merge_patient(doc, ident)
    return doc


def open_identity(vault: Vault, rid: str, version: int) -> dict[str, Any]:
    vault.flush()
    handle = vault.crypto.indexer.identity_handle(rid)
    row = vault.session.get(IdentityVersion, (handle, version))
    if row is None:
        # Never serve a Patient without its identity as if that were the record: either rows were
        # deleted or index.key is not the one this database was made with.
        raise DecryptionFailed(
            "the identity part of a Patient record is missing (tampered database or wrong index key)"
        )
    rid_inside, ident = open_identity_row(vault, row)
    if rid_inside != rid:
        raise DecryptionFailed("identity row does not belong to this patient")
    return ident


def check_link(vault: Vault, doc: dict[str, Any], link: bytes | None) -> None:
    """The stored pseudonym must be the one the content implies: a row moved into another
    patient's record (to show up in their searches or $everything) is refused."""
    if patient_link(vault, doc) != link:
        raise DecryptionFailed("a record's patient link does not match its content (tampered database)")


def open_identity_row(vault: Vault, row: IdentityVersion) -> tuple[str, dict[str, Any]]:
    """Opens an identity row; returns (Patient id, identity part) after checking the id fits the handle."""
    crypto = vault.crypto
    key = crypto.data_key_by_id(vault.session, row.data_key_id)
    payload = orjson.loads(crypto.sealer.open(key, row.blob, identity_aad(row.handle, row.version)))
    rid = payload.get("id")
    if not isinstance(rid, str) or crypto.indexer.identity_handle(rid) != row.handle:
        raise DecryptionFailed("identity row does not match its handle")
    ident: dict[str, Any] = payload["identity"]
    return rid, ident


def read_version(vault: Vault, rtype: str, rid: str, version: int | None = None) -> dict[str, Any]:
    head = get_head(vault, rtype, rid)
    if head is None:
        raise NotFound(f"{rtype}/{rid} is not known")
    if version is None:
        if head.deleted:
            raise Gone(f"{rtype}/{rid} was deleted")
        version = head.version
    vault.flush()
    row = vault.session.get(ResourceVersion, (rtype, rid, version))
    if row is None:
        raise NotFound(f"{rtype}/{rid} has no version {version}")
    doc = open_version(vault, row)
    if version == head.version:
        check_link(vault, doc, head.patient_link)
    return doc


def load_current(vault: Vault, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
    """Open the current versions of many resources with few queries (search, $everything)."""
    vault.flush()
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for rtype, rids in _by_type(list(keys)):
        rows = vault.session.execute(
            select(ResourceVersion, Resource.patient_link)
            .join(
                Resource,
                (Resource.rtype == ResourceVersion.rtype)
                & (Resource.rid == ResourceVersion.rid)
                & (Resource.version == ResourceVersion.version),
            )
            .where(Resource.rtype == rtype, Resource.rid.in_(rids))
        ).all()
        for row, link in rows:
            if row.blob is not None:
                doc = open_version(vault, row)
                check_link(vault, doc, link)
                out[(row.rtype, row.rid)] = doc
    return out
