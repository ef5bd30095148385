"""Bulk import of FHIR files: transaction/batch/collection/document Bundles, single resources, NDJSON.

Re-importing the same data creates no duplicates: resources keep their source ids and an unchanged
resource writes no new version. A transaction Bundle is atomic (all of it or none of it); other
inputs are imported resource by resource, each rejection reported with its reason and location.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy.orm import Session, sessionmaker

from medvault.db import unit_of_work
from medvault.errors import MedvaultError
from medvault.fhir import parse as fhir_parse
from medvault.fhir.errors import InvalidResource
from medvault.records import bundles, service
from medvault.records.vault import Vault
from medvault.store.crypto_context import CryptoContext

SUFFIXES = (".json", ".ndjson")


@dataclass
class Rejection:
    source: str
    location: str
    reason: str


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
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in SUFFIXES))
        elif path.is_file():
            out.append(path)
        else:
            raise MedvaultError(f"no such file or folder: {path}")
    return out


def _reason(exc: MedvaultError) -> tuple[str, str]:
    if isinstance(exc, InvalidResource):
        first = exc.issues[0]
        more = f" (+{len(exc.issues) - 1} more)" if len(exc.issues) > 1 else ""
        return first.expression or "", first.diagnostics + more
    return exc.location or "", exc.message


@dataclass
class Prepared:
    """A parsed and validated document (or why it was rejected), made in a worker process."""

    source: str
    doc: dict[str, Any] | None = None
    rejection: Rejection | None = None
    resolved: list[bundles.Resolved] | None = None  # a transaction already resolved by the worker


def prepare_file(path: Path) -> list[Prepared]:
    """Read, parse and validate one file. Runs in worker processes: pure CPU, no keys, no database."""
    name = path.name
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return [Prepared(name, rejection=Rejection(name, "", f"cannot read file ({exc.strerror})"))]
    if path.suffix == ".ndjson":
        return [prepare_bytes(f"{name}:{n}", line) for n, line in enumerate(raw.splitlines(), 1) if line.strip()]
    return [prepare_bytes(name, raw)]


def prepare_bytes(source: str, raw: bytes) -> Prepared:
    try:
        doc = fhir_parse.parse_json(raw)
        if doc.get("resourceType") == "Bundle" and doc.get("type") in ("transaction", "batch"):
            doc = as_import_transaction(doc)
            bundles.check_bundle(doc)
            # Ids and internal references can usually be resolved here, off the writer's CPU.
            resolved = bundles.resolve_for_import(doc)
            if resolved is not None:
                return Prepared(source, resolved=resolved)
        elif doc.get("resourceType") == "Bundle" and doc.get("type") in ("collection", "searchset"):
            pass  # entries are validated one by one on import, so one bad entry rejects only itself
        else:
            fhir_parse.validate(doc)
    except MedvaultError as exc:
        return Prepared(source, rejection=Rejection(source, *_reason(exc)))
    return Prepared(source, doc=doc)


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


class Importer:
    def __init__(self, factory: sessionmaker[Session], crypto: CryptoContext, *, workers: int | None = None) -> None:
        self.factory = factory
        self.crypto = crypto
        # Validation (pydantic) is the CPU-heavy part of import (~0.35 ms a resource, ~2x what the
        # writer spends encrypting, indexing and writing): it runs in one worker process per core
        # beside this one (measured on 2 cores: 2 workers ~2,200 res/s, 1 worker ~1,800).
        self.workers = workers if workers is not None else (os.cpu_count() or 1)

    def run(self, files: list[Path], *, on_file: Callable[[Path, int], None] | None = None) -> ImportReport:
        report = ImportReport()
        if self.workers < 1 or len(files) < 2:
            results: Iterable[list[Prepared]] = map(prepare_file, files)
            self._consume(files, results, report, on_file)
            return report
        ctx = multiprocessing.get_context("spawn" if sys.platform == "darwin" else "forkserver")
        with ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx) as pool:
            self._consume(files, pool.map(prepare_file, files, chunksize=1), report, on_file)
        return report

    def _consume(
        self,
        files: list[Path],
        results: Iterable[list[Prepared]],
        report: ImportReport,
        on_file: Callable[[Path, int], None] | None,
    ) -> None:
        for path, prepared in zip(files, results, strict=True):
            before = report.stored
            for item in prepared:
                self._prepared(item, report)
            report.files += 1
            if on_file:
                on_file(path, report.stored - before)

    def _prepared(self, item: Prepared, report: ImportReport) -> None:
        if item.rejection is not None:
            report.rejected.append(item.rejection)
            return
        if item.resolved is not None:
            self._apply(item.source, item.resolved, report)
            return
        assert item.doc is not None
        self._dispatch(item.source, item.doc, report, validated=True)

    def _apply(self, source: str, resolved: list[bundles.Resolved], report: ImportReport) -> None:
        written: list[service.Written] = []
        try:
            with unit_of_work(self.factory) as session:
                bundles.apply_resolved(vault=Vault(session, self.crypto), resolved=resolved, observer=written.append)
        except MedvaultError as exc:
            report.rejected.append(Rejection(source, *_reason(exc)))
            return
        for w in written:
            report.count(w)

    def import_bytes(self, source: str, raw: bytes, report: ImportReport) -> None:
        """Import one JSON document held in memory (demo data, tests)."""
        self._one(source, raw, report)

    def _one(self, source: str, raw: bytes, report: ImportReport) -> None:
        try:
            doc = fhir_parse.parse_json(raw)
        except MedvaultError as exc:
            report.rejected.append(Rejection(source, *_reason(exc)))
            return
        self._dispatch(source, doc, report, validated=False)

    def _dispatch(self, source: str, doc: dict[str, Any], report: ImportReport, *, validated: bool) -> None:
        if doc.get("resourceType") == "Bundle" and doc.get("type") in ("transaction", "batch"):
            self._transaction(source, doc, report, validated=validated)
        elif doc.get("resourceType") == "Bundle" and doc.get("type") in ("collection", "searchset"):
            for i, entry in enumerate(doc.get("entry") or []):
                res = entry.get("resource") if isinstance(entry, dict) else None
                if isinstance(res, dict):
                    self._resource(f"{source} entry[{i}]", res, report, validated=False)
        else:
            self._resource(source, doc, report, validated=validated)

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

    def _transaction(self, source: str, doc: dict[str, Any], report: ImportReport, *, validated: bool) -> None:
        doc = as_import_transaction(doc)
        if not doc.get("entry"):
            return
        self._stable_ids(doc)
        written: list[service.Written] = []
        try:
            with unit_of_work(self.factory) as session:
                bundles.process(
                    vault=Vault(session, self.crypto),
                    bundle=doc,
                    stable_ids=True,
                    observer=written.append,
                    validated=validated,
                )
        except MedvaultError as exc:
            report.rejected.append(Rejection(source, *_reason(exc)))
            return
        for w in written:
            report.count(w)

    def _resource(self, source: str, res: dict[str, Any], report: ImportReport, *, validated: bool) -> None:
        try:
            rtype = res["resourceType"] if validated else fhir_parse.validate(res)
            with unit_of_work(self.factory) as session:
                vault = Vault(session, self.crypto)
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
        except MedvaultError as exc:
            report.rejected.append(Rejection(source, *_reason(exc)))
            return
        report.count(written)
