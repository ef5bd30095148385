"""Cost of the access log: `audit verify` throughput, and read-by-id throughput with audit on / off.

What it measures
    1. verify: a fresh vault gets `--entries` access-log entries through `audit.log.append` (the
       production path: one sealed AuditEvent each, in transactions of 1,000), a checkpoint is
       signed, and `audit.log.verify` (what `medvault audit verify` runs) is timed over the whole
       log: it streams every row, recomputes each Merkle leaf from the stored ciphertext's hash and
       the indexed columns, rebuilds the root and checks it against the checkpoint.
    2. reads: the 100 Synthea bundles imported into a fresh vault, then read-by-id of random
       resources, sequential, with audit on (production) and audit off (the same code with the
       benchmark-only switch MEDVAULT_UNSAFE_DISABLE_AUDIT, which Settings refuses outside
       environment=benchmark). Over HTTP: a real `medvault serve` per mode and a keep-alive
       client (the acceptance figure). In-process, for information: one unit of work per read
       (`guard.unit_of_work`, `records.service.read`, commit), where the audit's share is larger
       because nothing else (HTTP, framework) dilutes it. Rounds alternate which mode goes first;
       the figure is the median of the per-round on/off ratios.

Targets (issue 3)
    audit verify >= 100,000 entries/s
    read-by-id throughput audit on / audit off >= 0.85 in one run

How to run (from the repository root, after `pip install -e .`)
    python bench/bench_audit.py                    # 100,000 entries; 3 rounds of 2,000 reads
    python bench/bench_audit.py --entries 300000 --rounds 5 --pg
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    DEFAULT_SOURCE,
    banner,
    free_port,
    median,
    open_vault_store,
    pg_available,
    pg_schema,
    source_files,
    table,
    temp_dir,
    verdict,
    wait_for_quiet,
)


def _settings(data_dir: Path, url: str | None) -> Any:
    from medvault.config import load_settings
    from medvault.store.setup import initialise

    settings = load_settings(data_dir=data_dir, database_url=url, environment="benchmark")
    initialise(settings)
    return settings


def bench_verify(settings: Any, entries: int) -> dict[str, float]:
    from medvault.audit import log as audit_log
    from medvault.crypto.signing import load_private, load_public
    from medvault.db import unit_of_work

    engine, factory, crypto = open_vault_store(settings)
    try:
        t0 = time.perf_counter()
        done = 0
        while done < entries:
            with unit_of_work(factory) as session:
                for _ in range(min(1000, entries - done)):
                    patient = f"patient-{done % 1000}"
                    event = {
                        "resourceType": "AuditEvent",
                        "action": "R",
                        "outcome": "0",
                        "entity": [{"what": {"reference": f"Observation/obs-{done}"}}],
                    }
                    audit_log.append(session=session, crypto=crypto, event=event, patient_id=patient)
                    done += 1
        append_s = time.perf_counter() - t0
        with factory() as session:
            text = audit_log.make_checkpoint(
                session=session, private_key=load_private(settings.keys_path), origin="medvault"
            )
        public = load_public(settings.keys_path)
        print(f"   appended  {entries:,} entries in {append_s:.1f} s ({entries / append_s:,.0f}/s)", flush=True)
        runs = []
        for _ in range(3):
            with factory() as session:
                t0 = time.perf_counter()
                report = audit_log.verify(session=session, checkpoint_text=text, public_key=public)
                runs.append(time.perf_counter() - t0)
            if not report.ok or report.checked != entries:
                raise SystemExit(f"verify failed on an untouched log: {report.problems}")
        best, mid = min(runs), median(runs)
        print(f"   verified  {entries:,} entries: {', '.join(f'{r:.2f}' for r in runs)} s", flush=True)
        return {"append_per_s": entries / append_s, "verify_per_s": entries / mid, "verify_best_per_s": entries / best}
    finally:
        engine.dispose()


def bench_reads(settings: Any, reads: int, rounds: int, source: Path) -> dict[str, list[tuple[float, float]]]:
    """Reads/s with audit on and off, over HTTP (a real `medvault serve`, keep-alive client) and
    in-process (one unit of work per read); rounds alternate which mode goes first."""
    import http.client
    import os

    from bench_api import server, wait_ready
    from medvault.records import guard, service
    from medvault.records.importer import Importer
    from medvault.store.models import Resource

    engine, factory, crypto = open_vault_store(settings)
    try:
        report = Importer(factory, crypto).run(source_files(source))
        print(f"   imported  {report.stored:,} resources", flush=True)
        with factory() as session:
            keys = [(str(t), str(r)) for t, r in session.query(Resource.rtype, Resource.rid).all()]
        rng = random.Random(7)
        token = settings.token_path.read_text().strip()

        def in_process(n: int, audited: bool) -> float:
            caller = guard.Caller(actor=None, via="api", address="127.0.0.1", audited=audited)
            sample = [rng.choice(keys) for _ in range(n)]
            t0 = time.perf_counter()
            for rtype, rid in sample:
                with guard.unit_of_work(factory, crypto, caller) as vault:
                    service.read(vault=vault, rtype=rtype, rid=rid)
            return n / (time.perf_counter() - t0)

        def over_http(n: int, audited: bool) -> float:
            env = {"MEDVAULT_ENVIRONMENT": "benchmark", "MEDVAULT_UNSAFE_DISABLE_AUDIT": "0" if audited else "1"}
            if settings.database_url:
                env["MEDVAULT_DATABASE_URL"] = settings.database_url
            saved = {k: os.environ.get(k) for k in env}
            os.environ.update(env)
            port = free_port()
            try:
                with server(settings.data_dir, port, settings.data_dir / "server.log") as proc:
                    wait_ready(proc, port, settings.data_dir / "server.log")
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                    headers = {"Authorization": f"Bearer {token}"}

                    def get(rtype: str, rid: str) -> None:
                        conn.request("GET", f"/fhir/{rtype}/{rid}", headers=headers)
                        response = conn.getresponse()
                        response.read()
                        if response.status != 200:
                            raise SystemExit(f"read failed: {response.status}")

                    for rtype, rid in [rng.choice(keys) for _ in range(100)]:
                        get(rtype, rid)  # warm-up: data-key cache, page cache, connection
                    sample = [rng.choice(keys) for _ in range(n)]
                    wait_for_quiet(0.2, 30)
                    t0 = time.perf_counter()
                    for rtype, rid in sample:
                        get(rtype, rid)
                    rate = n / (time.perf_counter() - t0)
                    conn.close()
                    return rate
            finally:
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v

        in_process(200, True)
        out: dict[str, list[tuple[float, float]]] = {"http": [], "in-process": []}
        for i in range(rounds):
            for kind, run in (("http", over_http), ("in-process", in_process)):
                results: dict[bool, float] = {}
                for audited in (True, False) if i % 2 == 0 else (False, True):
                    if kind == "in-process":
                        wait_for_quiet(0.2, 30)
                    results[audited] = run(reads, audited)
                out[kind].append((results[True], results[False]))
                print(
                    f"   round {i + 1} {kind:10} audit on {results[True]:,.0f} reads/s, off {results[False]:,.0f}, "
                    f"ratio {results[True] / results[False]:.3f}",
                    flush=True,
                )
        return out
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--reads", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--pg", action="store_true", help="also PostgreSQL 127.0.0.1:5432/test (throwaway schema)")
    args = parser.parse_args()
    banner("bench_audit: access-log verify throughput and read cost of auditing")
    backends: list[str] = ["sqlite"]
    if args.pg:
        reason = pg_available()
        if reason:
            print(f"   postgresql skipped: {reason}")
        else:
            backends.append("postgresql")
    rows = []
    for backend in backends:
        with temp_dir(f"mvbench-audit-{backend}") as tmp:
            if backend == "postgresql":
                with pg_schema() as schema:
                    verify = bench_verify(_settings(tmp / "v", schema.url), args.entries)
                with pg_schema() as schema:
                    reads = bench_reads(_settings(tmp / "r", schema.url), args.reads, args.rounds, args.source)
            else:
                verify = bench_verify(_settings(tmp / "v", None), args.entries)
                reads = bench_reads(_settings(tmp / "r", None), args.reads, args.rounds, args.source)
        rows += [
            (
                f"{backend} audit verify (entries/s, median of 3)",
                f"{verify['verify_per_s']:,.0f}",
                ">= 100,000",
                verdict(verify["verify_per_s"] >= 100_000),
            ),
            (f"{backend} audit append (entries/s, for information)", f"{verify['append_per_s']:,.0f}", "", ""),
        ]
        for kind, pairs in reads.items():
            ratios = [on / off for on, off in pairs]
            target = ">= 0.85" if kind == "http" else "(info)"
            rows += [
                (f"{backend} {kind} reads/s audit on (median)", f"{median([p[0] for p in pairs]):,.0f}", "", ""),
                (f"{backend} {kind} reads/s audit off (median)", f"{median([p[1] for p in pairs]):,.0f}", "", ""),
                (
                    f"{backend} {kind} audit on / off (median per-round ratio)",
                    f"{median(ratios):.3f}",
                    target,
                    verdict(median(ratios) >= 0.85) if kind == "http" else "",
                ),
            ]
    print()
    print(table(["summary", "figure", "target", ""], rows))
    print(f"finished {datetime.now(UTC).strftime('%H:%M UTC')}")


if __name__ == "__main__":
    main()
