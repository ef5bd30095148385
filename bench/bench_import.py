"""Import throughput, cost of encryption, and stored size: the 100 Synthea bundles into a fresh vault.

What it measures
    The import path of `medvault import` (cli/main.py run_import): `store.setup.initialise` on a fresh
    temporary data directory, then `records.importer.Importer(factory, crypto).run(files)` over the
    100 Synthea transaction bundles (~15,200 resources, ~57 MB of JSON). Only `Importer.run` is timed:
    it includes validation (in the importer's worker processes, whose start-up is part of `run`),
    encryption, keyed indexes and the database writes; it excludes interpreter start, `initialise`
    and opening the store. The input files are read once beforehand, so every round reads them from
    the page cache. Before the rounds, an untimed warm-up imports 4 files: the first import of a
    process also starts multiprocessing's fork server for the workers (~1 s: it imports the importer
    and the R4B models once, and every later worker is forked from it warm), which would otherwise
    fall on round 1's first run only (skewing its ratio). A one-off `medvault import` pays it once;
    --no-warmup times it in round 1.

    Each round imports the same files twice, into two fresh data directories:
      * encrypted  - the production code path (environment="benchmark", encryption on);
      * plaintext  - environment="benchmark", unsafe_disable_encryption=True: the same code path with
                     the AES-GCM step skipped (bodies are still compressed; production refuses this).
    The order of the two alternates from round to round and the figures are medians over the
    rounds, because the machine is noisy. The encrypted/plaintext ratio is given both as the ratio
    of the medians and as the median of the per-round (back-to-back) ratios. Each run starts when
    the CPUs are at most --quiet-busy busy (waiting at most --quiet-wait s). For information, the
    summary also gives resources per CPU-second of the importing process (the single writer), which
    other load on the machine disturbs less than wall time. The import is CPU-bound on 2 cores (the
    writer plus two validating workers, ~1/3 and ~2/3 of the CPU time), so wall time follows load.

    Stored bytes: SQLite database file + -wal + -shm after `PRAGMA wal_checkpoint(TRUNCATE)`;
    PostgreSQL (--pg): pg_total_relation_size summed over the throwaway schema's tables, after VACUUM.
    The ratio is stored bytes / bytes of the input JSON files.

Targets (issue acceptance figures)
    >= 2,000 resources/s with validation, encryption and indexes (SQLite)
    encrypted / plaintext throughput >= 0.85
    stored bytes / input JSON bytes <= 1.5

How to run (from the repository root, after `pip install -e .`)
    python bench/bench_import.py                 # 3 rounds on SQLite
    python bench/bench_import.py --rounds 5 --pg # also PostgreSQL at 127.0.0.1:5432 (database `test`)
    python bench/bench_import.py --workers 2     # override the importer's worker-process count

PostgreSQL runs use a throwaway schema (mvbench_<hex>) in database `test`, dropped at the end of
each run. Temporary data directories are deleted unless --keep is given.
"""

from __future__ import annotations

import argparse
import gc
import os
import time
from dataclasses import dataclass
from pathlib import Path

from _common import (
    DEFAULT_SOURCE,
    banner,
    describe_rejection,
    median,
    mib,
    open_vault_store,
    pg_available,
    pg_bytes,
    pg_schema,
    source_files,
    sqlite_bytes,
    table,
    temp_dir,
    verdict,
    wait_for_quiet,
    warm_page_cache,
)

TARGET_RATE = 2000.0
TARGET_ENC_RATIO = 0.85
TARGET_SIZE_RATIO = 1.5
MODES = ("encrypted", "plaintext")


@dataclass
class Run:
    round: int
    backend: str
    mode: str
    seconds: float
    created: int
    updated: int
    unchanged: int
    rejected: int
    stored_bytes: int
    main_cpu: float
    load_before: float
    note: str = ""

    @property
    def stored(self) -> int:
        return self.created + self.updated

    @property
    def processed(self) -> int:
        return self.created + self.updated + self.unchanged

    @property
    def rate(self) -> float:
        """Resources stored per second (duplicates found unchanged are not counted)."""
        return self.stored / self.seconds

    @property
    def cpu_rate(self) -> float:
        """Resources stored per CPU-second of the importing (writer) process: much less noisy than
        wall time on a shared machine, and the writer is the bottleneck (validation runs alongside
        in the worker processes, whose CPU is not counted here)."""
        return self.stored / self.main_cpu


def import_once(files: list[Path], *, round_no: int, backend: str, mode: str, args: argparse.Namespace) -> Run:
    from medvault.config import load_settings
    from medvault.records.importer import Importer
    from medvault.store.setup import initialise

    with temp_dir(f"mvbench-import-{backend}-{mode}-", keep=args.keep) as tmp:
        schema_ctx = pg_schema() if backend == "postgresql" else None
        schema = schema_ctx.__enter__() if schema_ctx else None
        try:
            settings = load_settings(
                data_dir=tmp / "data",
                database_url=schema.url if schema else None,
                environment="benchmark",
                unsafe_disable_encryption=(mode == "plaintext"),
            )
            initialise(settings)
            engine, factory, crypto = open_vault_store(settings)
            try:
                importer = Importer(factory, crypto, workers=args.workers)
                gc.collect()
                note = wait_for_quiet(args.quiet_busy, args.quiet_wait)
                load_before = os.getloadavg()[0]
                cpu0 = os.times()
                t0 = time.perf_counter()
                report = importer.run(files)
                seconds = time.perf_counter() - t0
                cpu1 = os.times()
            finally:
                engine.dispose()
            if report.rejected:
                print(f"   !! {len(report.rejected)} rejected, first: {describe_rejection(report.rejected[0])}")
            stored_bytes = pg_bytes(schema.name) if schema else sqlite_bytes(settings.data_dir / "medvault.db")
        finally:
            if schema_ctx:
                schema_ctx.__exit__(None, None, None)
    return Run(
        round=round_no,
        backend=backend,
        mode=mode,
        seconds=seconds,
        created=sum(report.created.values()),
        updated=sum(report.updated.values()),
        unchanged=sum(report.unchanged.values()),
        rejected=len(report.rejected),
        stored_bytes=stored_bytes,
        main_cpu=(cpu1.user + cpu1.system) - (cpu0.user + cpu0.system),
        load_before=load_before,
        note=note,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="folder of FHIR transaction bundles")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; each imports encrypted and plaintext")
    parser.add_argument("--workers", type=int, default=None, help="importer worker processes (default: its own)")
    parser.add_argument("--pg", action="store_true", help="also run on PostgreSQL at 127.0.0.1:5432/test")
    parser.add_argument("--no-sqlite", action="store_true", help="skip SQLite (with --pg: PostgreSQL only)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data directories")
    parser.add_argument(
        "--quiet-busy", type=float, default=0.3, help="start a run when the CPUs are at most this busy (0-1)"
    )
    parser.add_argument("--quiet-wait", type=float, default=60, help="...but wait at most this long (s); 0: never")
    parser.add_argument(
        "--no-warmup",
        action="store_true",
        help="no untimed warm-up import: round 1 then also pays the once-per-process start of the worker fork server",
    )
    args = parser.parse_args()

    files = source_files(args.source)
    input_bytes = warm_page_cache(files)
    banner("bench_import: import of the Synthea bundles")
    print(f"   input     {len(files)} files, {input_bytes:,} bytes ({mib(input_bytes)}) from {args.source}")
    backends = [] if args.no_sqlite else ["sqlite"]
    if args.pg:
        reason = pg_available()
        if reason:
            print(f"   !! --pg ignored: {reason}")
        else:
            backends.append("postgresql")
    if not backends:
        raise SystemExit("nothing to run")
    print(f"   backends  {', '.join(backends)}; rounds {args.rounds}; workers {args.workers or 'importer default'}")
    print(flush=True)

    if not args.no_warmup:
        # multiprocessing starts the importer's fork server (which imports the importer and the R4B
        # models once) on the first import of a process only. Untimed here, so that every round
        # measures the same thing; a one-off `medvault import` pays it once (see README).
        warm = import_once(files[:4], round_no=0, backend=backends[0], mode="encrypted", args=args)
        print(
            f"warm-up (untimed): the process's first import, {len(files[:4])} files in {warm.seconds:.2f} s "
            "(includes starting the importer's worker fork server)",
            flush=True,
        )

    runs: list[Run] = []
    for r in range(1, args.rounds + 1):
        order = MODES if r % 2 == 1 else tuple(reversed(MODES))
        for backend in backends:
            for mode in order:
                run = import_once(files, round_no=r, backend=backend, mode=mode, args=args)
                runs.append(run)
                print(
                    f"round {r} {backend:<10} {mode:<9}: {run.stored:,} stored (+{run.unchanged} unchanged) "
                    f"in {run.seconds:6.2f} s = {run.rate:7,.0f} res/s | writer CPU {run.main_cpu:5.1f} s "
                    f"= {run.cpu_rate:,.0f} res/CPU-s | stored {mib(run.stored_bytes)} | "
                    f"load {run.load_before:.2f}, {run.note}",
                    flush=True,
                )

    print()
    summary: list[list[str]] = []
    for backend in backends:
        mine = [x for x in runs if x.backend == backend]
        enc = [x for x in mine if x.mode == "encrypted"]
        plain = [x for x in mine if x.mode == "plaintext"]
        enc_rate, plain_rate = median([x.rate for x in enc]), median([x.rate for x in plain])
        enc_cpu, plain_cpu = median([x.cpu_rate for x in enc]), median([x.cpu_rate for x in plain])
        paired = [
            e.rate / p.rate for e in enc for p in plain if e.round == p.round
        ]  # each round's two runs ran back-to-back
        enc_size = median([x.stored_bytes for x in enc])
        plain_size = median([x.stored_bytes for x in plain])
        print(
            f"{backend}: encrypted runs {', '.join(f'{x.rate:,.0f}' for x in enc)} res/s; "
            f"plaintext runs {', '.join(f'{x.rate:,.0f}' for x in plain)} res/s; "
            f"per-round ratios {', '.join(f'{x:.3f}' for x in paired)}"
        )
        summary += [
            [
                f"{backend} import, encrypted (median res/s)",
                f"{enc_rate:,.0f}",
                f">= {TARGET_RATE:,.0f}",
                verdict(enc_rate >= TARGET_RATE) if backend == "sqlite" else "(info)",
            ],
            [f"{backend} import, encrypted (best round res/s)", f"{max(x.rate for x in enc):,.0f}", "", ""],
            [f"{backend} import, plaintext (median res/s)", f"{plain_rate:,.0f}", "", ""],
            [f"{backend} encrypted, writer CPU (median res/CPU-s)", f"{enc_cpu:,.0f}", "", ""],
            [
                f"{backend} encrypted/plaintext (ratio of medians)",
                f"{enc_rate / plain_rate:.3f}",
                f">= {TARGET_ENC_RATIO}",
                verdict(enc_rate / plain_rate >= TARGET_ENC_RATIO),
            ],
            [
                f"{backend} encrypted/plaintext (median paired ratio)",
                f"{median(paired):.3f}",
                f">= {TARGET_ENC_RATIO}",
                verdict(median(paired) >= TARGET_ENC_RATIO),
            ],
            [
                f"{backend} encrypted/plaintext (writer CPU, medians)",
                f"{enc_cpu / plain_cpu:.3f}",
                "",
                "(info)",
            ],
            [
                f"{backend} stored bytes, encrypted",
                f"{enc_size:,.0f} ({mib(enc_size)})",
                "",
                "",
            ],
            [
                f"{backend} stored / input JSON bytes, encrypted",
                f"{enc_size / input_bytes:.3f}",
                f"<= {TARGET_SIZE_RATIO}",
                verdict(enc_size / input_bytes <= TARGET_SIZE_RATIO),
            ],
            [f"{backend} stored / input JSON bytes, plaintext", f"{plain_size / input_bytes:.3f}", "", ""],
        ]
    first = runs[0]
    print(
        f"resources per run: {first.processed:,} in the input, {first.stored:,} stored, "
        f"{first.unchanged} duplicates (shared Organization/Practitioner) found unchanged; "
        f"rejected {max(x.rejected for x in runs)}"
    )
    print()
    print(table(["summary", "measured", "target", ""], summary))


if __name__ == "__main__":
    main()
