"""Bulk import of FHIR files: transaction/batch/collection/document Bundles, single resources, NDJSON.

Re-importing the same data creates no duplicates: resources keep their source ids and an unchanged
resource writes no new version. A transaction Bundle is atomic (all of it or none of it); other
inputs are imported resource by resource, each rejection reported with its reason and location.

Worker processes read, parse and validate files (no keys, no database) and hand each result back as
JSON bytes; this process writes them in file order, several files per database transaction (one
savepoint each). A file that fails, for any reason short of a fatal one (database gone, interrupt),
is a rejection and the import goes on. Rejections name files by position, never by name.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from medvault.crypto.errors import CryptoError
from medvault.errors import MedvaultError
from medvault.fhir import parse as fhir_parse
from medvault.fhir import search as fs
from medvault.fhir.errors import InvalidResource
from medvault.records import bundles, guard, service
from medvault.records.vault import Vault
from medvault.store.crypto_context import CryptoContext

SUFFIXES = (".json", ".ndjson")

# Files are written in groups: one database transaction holds the files (each in its own savepoint,
# so a transaction Bundle stays all-or-nothing and one bad file rejects only itself) until it has
# written this many resources or been open this long. Fewer commits write each hot index page once
# per group instead of once per file; the time bound keeps the write lock short for other writers.
GROUP_RESOURCES = 3000
GROUP_SECONDS = 1.0
# Modules the worker processes' fork server imports once, so that workers start warm: the importer
# itself (SQLAlchemy, pydantic, fhir.resources) and the R4B models of a typical patient record,
# which fhir.resources otherwise builds lazily in every worker on first use (~1 s per worker).
_R4B_MODULES = (
    "fhirtypes",
    "address",
    "attachment",
    "backboneelement",
    "codeableconcept",
    "coding",
    "contactpoint",
    "dosage",
    "element",
    "extension",
    "humanname",
    "identifier",
    "meta",
    "money",
    "narrative",
    "period",
    "quantity",
    "range",
    "ratio",
    "reference",
    "timing",
    "allergyintolerance",
    "bundle",
    "careplan",
    "careteam",
    "claim",
    "condition",
    "coverage",
    "device",
    "diagnosticreport",
    "documentreference",
    "encounter",
    "explanationofbenefit",
    "goal",
    "imagingstudy",
    "immunization",
    "location",
    "medication",
    "medicationadministration",
    "medicationrequest",
    "observation",
    "organization",
    "patient",
    "practitioner",
    "practitionerrole",
    "procedure",
    "provenance",
    "servicerequest",
    "supplydelivery",
)
WORKER_PRELOAD = ["__main__", "medvault.records.importer", *(f"fhir.resources.R4B.{m}" for m in _R4B_MODULES)]


@dataclass
class Rejection:
    """What was not imported and why. Output refers to the file by its position in the import's file
    list (`label`: "file 17", "file 17 line 3"), never by name: file names can be patients' names (Synthea
    names its files after them). `source` keeps the name for in-process callers: never print or log it."""

    source: str = field(repr=False)
    location: str
    reason: str
    file: int = 0  # 1-based position in the file list given to `Importer.run`; 0: `import_bytes`
    part: str = ""  # where in the file: "line 3" (NDJSON), "entry[2]" (collection Bundle)

    @property
    def label(self) -> str:
        if not self.file:
            return f"{self.source} {self.part}".strip()  # import_bytes: the caller's own label
        return f"file {self.file} {self.part}".strip()


@dataclass
class ImportReport:
    files: int = 0
    created: Counter[str] = field(default_factory=Counter)
    updated: Counter[str] = field(default_factory=Counter)
    unchanged: Counter[str] = field(default_factory=Counter)
    rejected: list[Rejection] = field(default_factory=list)

    def count(self, w: service.Written) -> None:
        if w.created:
            self.created[w.rtype] += 1
        elif w.changed:
            self.updated[w.rtype] += 1
        else:
            self.unchanged[w.rtype] += 1

    @property
    def stored(self) -> int:
        return sum(self.created.values()) + sum(self.updated.values())


def find_files(paths: list[Path]) -> list[Path]:
    """The files to import, in a stable order (folders sorted): rejections name a file by its
    1-based position in this list."""
    out: list[Path] = []
    for n, path in enumerate(paths, 1):
        if path.is_dir():
            out.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in SUFFIXES))
        elif path.is_file():
            out.append(path)
        else:
            # By position: a file name can be a patient's name (and this message may be logged).
            raise MedvaultError(f"no such file or folder: argument {n} of {len(paths)}")
    return out


def _reason(exc: MedvaultError) -> tuple[str, str]:
    if isinstance(exc, InvalidResource):
        first = exc.issues[0]
        more = f" (+{len(exc.issues) - 1} more)" if len(exc.issues) > 1 else ""
        return first.expression or "", first.diagnostics + more
    return exc.location or "", exc.message


def _unexpected(exc: BaseException) -> str:
    """Reason for a failure we did not foresee: the exception's type and the line that raised it,
    never its message (which may quote the input)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    where = f" at {Path(tb.tb_frame.f_code.co_filename).name}:{tb.tb_lineno}" if tb is not None else ""
    return f"internal error ({type(exc).__name__}{where}); nothing of it was stored"


@dataclass
class Prepared:
    """A parsed and validated document (or why it was rejected), made in a worker process.

    Crosses the process boundary as bytes (JSON), not as Python objects: unpickling thousands of
    small dicts cost the writer more than parsing the same JSON with orjson."""

    source: str
    kind: str  # "doc": `payload` is the JSON document; "resolved": a resolved transaction; "rejected"
    payload: bytes = b""
    rejection: Rejection | None = None
    part: str = ""

    def doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = orjson.loads(self.payload)
        return doc

    def resolved(self) -> list[bundles.Resolved]:
        return [
            bundles.Resolved(method, rtype, rid, resource, [(p, v) for p, v in index])
            for method, rtype, rid, resource, index in orjson.loads(self.payload)
        ]


def _rejected(source: str, location: str, reason: str, *, file: int, part: str = "") -> Prepared:
    return Prepared(source, "rejected", rejection=Rejection(source, location, reason, file, part), part=part)


def _worker_started() -> None:
    """In each worker process: the modules it starts with (preloaded by the fork server) live as long
    as it does, so the garbage collector need not scan them again and again (validation allocates
    many short-lived objects: ~5 % less CPU)."""
    gc.freeze()


def prepare_file(path: Path, position: int = 0) -> list[Prepared]:
    """Read, parse and validate one file. Runs in worker processes: pure CPU, no keys, no database.
    `position`: the file's 1-based position in the import (how rejections name it). Never raises for
    a bad file: every failure, even an unforeseen one, is a rejection."""
    name = path.name
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return [_rejected(name, "", f"cannot read file ({exc.strerror})", file=position)]
    try:
        if path.suffix == ".ndjson":
            return [
                prepare_bytes(f"{name}:{n}", line, position=position, part=f"line {n}")
                for n, line in enumerate(raw.splitlines(), 1)
                if line.strip()
            ]
        return [prepare_bytes(name, raw, position=position)]
    except Exception as exc:  # noqa: BLE001 - a bug or a resource limit: reject this file only
        return [_rejected(name, "", _unexpected(exc), file=position)]


def prepare_bytes(source: str, raw: bytes, *, position: int = 0, part: str = "") -> Prepared:
    try:
        doc = fhir_parse.parse_json(raw)
        if doc.get("resourceType") == "Bundle" and doc.get("type") in ("transaction", "batch"):
            doc = as_import_transaction(doc)
            bundles.check_bundle(doc)
            # Ids and internal references can usually be resolved here, off the writer's CPU.
            resolved = bundles.resolve_for_import(doc)
            if resolved is not None:
                rows = [(r.method, r.rtype, r.rid, r.resource, r.index) for r in resolved]
                return Prepared(source, "resolved", orjson.dumps(rows), part=part)
        elif doc.get("resourceType") == "Bundle" and doc.get("type") in ("collection", "searchset"):
            pass  # entries are validated one by one on import, so one bad entry rejects only itself
        else:
            fhir_parse.validate(doc)
    except MedvaultError as exc:
        return _rejected(source, *_reason(exc), file=position, part=part)
    except Exception as exc:  # noqa: BLE001 - unforeseen (a bug, a recursion limit): this document only
        return _rejected(source, "", _unexpected(exc), file=position, part=part)
    return Prepared(source, "doc", orjson.dumps(doc), part=part)


def as_import_transaction(doc: dict[str, Any]) -> dict[str, Any]:
    """Import runs a batch all-or-nothing like a transaction; its reads have nothing to import."""
    if doc.get("type") != "batch":
        return doc
    entries = [
        e
        for e in doc.get("entry") or []
        if not (isinstance(e, dict) and str((e.get("request") or {}).get("method", "")).upper() in ("GET", "HEAD"))
    ]
    return dict(doc, type="transaction", entry=entries)


class GroupLost(Exception):
    """The open transaction of a group of files failed as a whole: fatal for the import."""


def _fatal(exc: BaseException) -> bool:
    """Errors that end the whole import rather than one file: the database is unusable (gone,
    locked, full) or the process is being stopped."""
    if not isinstance(exc, Exception) or isinstance(exc, MemoryError | BrokenProcessPool | GroupLost):
        return True
    if isinstance(exc, CryptoError):
        return True  # a missing or wrong key fails every file alike: one clear error, not N rejections
    if isinstance(exc, OperationalError | InterfaceError):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


# The operator's bulk path: allowed everything; audited once per file (or NDJSON line), not per resource.
IMPORT_CALLER = guard.Caller(actor=None, via="import")


def _audit_import(vault: Vault, written: list[service.Written]) -> None:
    changed = [w for w in written if w.changed]
    if not changed:
        return  # a re-import that changed nothing disclosed and altered nothing
    patients = {w.rid for w in changed if w.rtype == "Patient"} or {
        p for w in changed if w.resource is not None and (p := fs.patient_reference(w.resource))
    }
    guard.record(
        vault,
        action="write",
        interaction="import",
        patient_id=next(iter(sorted(patients))) if len(patients) == 1 else None,
        entities=[f"{w.rtype}/{w.rid}" for w in changed[:50]],
        allowed=True,
        reason="operator",
    )


def _as_rejection(exc: Exception, source: str, position: int, part: str) -> Rejection:
    """The rejection for one unit's failure; re-raises what must end the whole import (a missing
    key, the database gone: see `_fatal`)."""
    if _fatal(exc):
        raise exc
    if isinstance(exc, MedvaultError):
        return Rejection(source, *_reason(exc), position, part)
    return Rejection(source, "", _unexpected(exc), position, part)


class _Group:
    """The writer's open database transaction, shared by several files (see GROUP_RESOURCES), and
    its Vault: heads read and rows buffered stay valid from one unit to the next, and are dropped
    whenever a unit's savepoint is rolled back."""

    def __init__(self, factory: sessionmaker[Session], crypto: CryptoContext) -> None:
        self.factory = factory
        self.crypto = crypto
        self.session: Session | None = None
        self.vault: Vault | None = None
        self.started = 0.0
        self.written = 0

    @contextmanager
    def unit(self) -> Iterator[Vault]:
        """One all-or-nothing unit (a file, or one resource of an NDJSON file) in a savepoint."""
        if self.session is None or self.vault is None:
            self.session = self.factory()
            self.vault = Vault(self.session, self.crypto, caller=IMPORT_CALLER)
            self.started = time.monotonic()
            self.written = 0
        session, vault = self.session, self.vault
        try:
            with session.begin_nested():
                yield vault
                vault.flush()
        except BaseException as exc:
            # The savepoint is rolled back: what the vault buffered or remembered since may be gone.
            vault.discard()
            if isinstance(exc, Exception) and not session.is_active:
                # The files written before this one cannot be kept either: end the import.
                raise GroupLost("the import's database transaction was lost") from exc
            raise

    def due(self) -> bool:
        return self.session is not None and (
            self.written >= GROUP_RESOURCES or time.monotonic() - self.started >= GROUP_SECONDS
        )

    def commit(self) -> None:
        if self.session is None:
            return
        session, self.session, self.vault = self.session, None, None
        try:
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def rollback(self) -> None:
        if self.session is None:
            return
        session, self.session, self.vault = self.session, None, None
        try:
            session.rollback()
        finally:
            session.close()


class Importer:
    """Imports files with validation in worker processes and one writer (this process). Not for
    concurrent use: one `run` (or `import_bytes`) at a time per Importer."""

    def __init__(self, factory: sessionmaker[Session], crypto: CryptoContext, *, workers: int | None = None) -> None:
        self.factory = factory
        self.crypto = crypto
        # Validation (pydantic) is the CPU-heavy part of import (~0.5 ms a resource, ~2.5x what the
        # writer spends encrypting, indexing and writing): it runs in one worker process per core
        # beside this one (measured on 2 cores: 2 workers ~2,400 res/s, 1 worker ~1,850).
        self.workers = workers if workers is not None else (os.cpu_count() or 1)
        self._group: _Group | None = None

    def run(self, files: list[Path], *, on_file: Callable[[Path, int], None] | None = None) -> ImportReport:
        """Import `files` in order. A file that cannot be imported (invalid, or an unforeseen error while
        processing it) becomes a rejection and the import goes on; only a fatal error (database gone,
        interrupted) stops it, after stopping the worker processes."""
        report = ImportReport()
        self._group = _Group(self.factory, self.crypto)
        try:
            if self.workers < 1 or len(files) < 2:
                for position, path in enumerate(files, 1):
                    self._file(position, path, prepare_file(path, position), report, on_file)
            else:
                self._run_pool(files, report, on_file)
            self._group.commit()
        except BaseException:
            self._group.rollback()
            raise
        finally:
            self._group = None
        return report

    def _run_pool(self, files: list[Path], report: ImportReport, on_file: Callable[[Path, int], None] | None) -> None:
        if sys.platform == "darwin":
            ctx = multiprocessing.get_context("spawn")
        else:
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(WORKER_PRELOAD)  # no effect once this process's fork server runs
        pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx, initializer=_worker_started)
        try:
            # A bounded window of files in flight: workers stay busy while the writer writes, and a
            # huge import does not pile up validated files in memory when the writer is slower.
            todo = iter(enumerate(files, 1))
            flight: deque[tuple[int, Path, Future[list[Prepared]]]] = deque()

            def submit() -> None:
                nxt = next(todo, None)
                if nxt is not None:
                    flight.append((*nxt, pool.submit(prepare_file, nxt[1], nxt[0])))

            for _ in range(4 * self.workers):
                submit()
            while flight:
                position, path, future = flight.popleft()
                try:
                    prepared = future.result()
                except Exception as exc:
                    if _fatal(exc):
                        raise
                    # e.g. a result that could not be sent back: reject this file only
                    prepared = [_rejected(path.name, "", _unexpected(exc), file=position)]
                submit()
                self._file(position, path, prepared, report, on_file)
        except BaseException:
            # Fatal (database gone, Ctrl-C): drop the queued files and stop the workers now, rather than
            # let them validate the rest of the import for nothing.
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)

    def _file(
        self,
        position: int,
        path: Path,
        prepared: Iterable[Prepared],
        report: ImportReport,
        on_file: Callable[[Path, int], None] | None,
    ) -> None:
        before = report.stored
        for item in prepared:
            try:
                self._prepared(item, report, position)
            except Exception as exc:
                if _fatal(exc):
                    raise
                report.rejected.append(Rejection(item.source, "", _unexpected(exc), position, item.part))
        report.files += 1
        group = self._group
        if group is not None and group.due():
            group.commit()
        if on_file:
            on_file(path, report.stored - before)

    def _prepared(self, item: Prepared, report: ImportReport, position: int) -> None:
        if item.rejection is not None:
            report.rejected.append(item.rejection)
            return
        if item.kind == "resolved":
            self._apply(item, item.resolved(), report, position)
            return
        self._dispatch(item.source, item.doc(), report, validated=True, position=position, part=item.part)

    @contextmanager
    def _unit(self) -> Iterator[Vault]:
        """A savepoint in the open group (`run`), or a transaction of its own (`import_bytes`)."""
        if self._group is not None:
            with self._group.unit() as vault:
                yield vault
            return
        group = _Group(self.factory, self.crypto)
        try:
            with group.unit() as vault:
                yield vault
            group.commit()
        finally:
            group.rollback()

    def _written(self, written: list[service.Written], report: ImportReport) -> None:
        for w in written:
            report.count(w)
        if self._group is not None:
            self._group.written += len(written)

    def _apply(self, item: Prepared, resolved: list[bundles.Resolved], report: ImportReport, position: int) -> None:
        written: list[service.Written] = []
        try:
            with self._unit() as vault:
                bundles.apply_resolved(vault=vault, resolved=resolved, observer=written.append)
                _audit_import(vault, written)
        except Exception as exc:  # noqa: BLE001 - _as_rejection re-raises what is fatal
            report.rejected.append(_as_rejection(exc, item.source, position, item.part))
            return
        self._written(written, report)

    def import_bytes(self, source: str, raw: bytes, report: ImportReport) -> None:
        """Import one JSON document held in memory (demo data, tests). `source` labels its rejections."""
        self._one(source, raw, report)

    def _one(self, source: str, raw: bytes, report: ImportReport) -> None:
        try:
            doc = fhir_parse.parse_json(raw)
            self._dispatch(source, doc, report, validated=False)
        except MedvaultError as exc:
            report.rejected.append(Rejection(source, *_reason(exc)))
        except Exception as exc:
            if _fatal(exc):
                raise
            report.rejected.append(Rejection(source, "", _unexpected(exc)))

    def _dispatch(
        self,
        source: str,
        doc: dict[str, Any],
        report: ImportReport,
        *,
        validated: bool,
        position: int = 0,
        part: str = "",
    ) -> None:
        if doc.get("resourceType") == "Bundle" and doc.get("type") in ("transaction", "batch"):
            self._transaction(source, doc, report, validated=validated, position=position, part=part)
        elif doc.get("resourceType") == "Bundle" and doc.get("type") in ("collection", "searchset"):
            for i, entry in enumerate(doc.get("entry") or []):
                res = entry.get("resource") if isinstance(entry, dict) else None
                if isinstance(res, dict):
                    where = f"{part} entry[{i}]".strip()
                    self._resource(f"{source} entry[{i}]", res, report, validated=False, position=position, part=where)
        else:
            self._resource(source, doc, report, validated=validated, position=position, part=part)

    def _stable_ids(self, doc: dict[str, Any]) -> None:
        """Give id-less source resources a keyed content id, so re-importing them updates nothing
        instead of creating duplicates (entries with a urn:uuid fullUrl already have one)."""
        for entry in doc.get("entry") or []:
            res = entry.get("resource") if isinstance(entry, dict) else None
            full = entry.get("fullUrl") if isinstance(entry, dict) else None
            if (
                isinstance(res, dict)
                and not res.get("id")
                and not (isinstance(full, str) and full.startswith("urn:uuid:"))
            ):
                res["id"] = self.crypto.indexer.content_id(orjson.dumps(res, option=orjson.OPT_SORT_KEYS))

    def _transaction(
        self, source: str, doc: dict[str, Any], report: ImportReport, *, validated: bool, position: int, part: str
    ) -> None:
        doc = as_import_transaction(doc)
        if not doc.get("entry"):
            return
        self._stable_ids(doc)
        written: list[service.Written] = []
        try:
            with self._unit() as vault:
                bundles.process(
                    vault=vault,
                    bundle=doc,
                    stable_ids=True,
                    observer=written.append,
                    validated=validated,
                )
                _audit_import(vault, written)
        except Exception as exc:  # noqa: BLE001 - _as_rejection re-raises what is fatal
            report.rejected.append(_as_rejection(exc, source, position, part))
            return
        self._written(written, report)

    def _resource(
        self,
        source: str,
        res: dict[str, Any],
        report: ImportReport,
        *,
        validated: bool,
        position: int,
        part: str,
    ) -> None:
        try:
            rtype = res["resourceType"] if validated else fhir_parse.validate(res)
            with self._unit() as vault:
                rid = res.get("id") or self.crypto.indexer.content_id(orjson.dumps(res, option=orjson.OPT_SORT_KEYS))
                if isinstance(rid, str) and rid:
                    written = service.update(
                        vault=vault,
                        rtype=rtype,
                        rid=rid,
                        resource=dict(res, id=rid),
                        validated=True,
                        skip_unchanged=True,
                    )
                else:
                    written = service.create(vault=vault, resource=dict(res), validated=True)
                _audit_import(vault, [written])
        except Exception as exc:  # noqa: BLE001 - _as_rejection re-raises what is fatal
            report.rejected.append(_as_rejection(exc, source, position, part))
            return
        self._written([written], report)
