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
       environment=benchmark), interleaved in ONE run: two real `medvault serve` processes on the
       same data (audit on, audit off) are up the whole time, each with a keep-alive client, and
       every round reads one random sample through each (A B, then B A in the next round), so the
       two modes of a round see the same machine load. That is the acceptance figure: the median
       of the per-round on/off ratios. In-process, for information: the same rounds through
       `guard.unit_of_work` + `records.service.read` + commit, where the audit's share is larger
       because nothing else (HTTP, framework) dilutes it.

Targets (issue 3)
    audit verify >= 100,000 entries/s
    read-by-id throughput audit on / audit off >= 0.85 in one run

How to run (from the repository root, after `pip install -e .`)
    python bench/bench_audit.py                    # 100,000 entries; 30 rounds of 150 reads per mode
    python bench/bench_audit.py --entries 300000 --rounds 20 --pg
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
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


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    """os.environ with `values` set (a child process started inside inherits them), restored after."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc; 0.0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Pair:
    """One round: reads/s and CPU seconds per read (the server's over HTTP, ours in-process)."""

    on: float
    off: float
    cpu_on: float
    cpu_off: float


def bench_reads(
    settings: Any, reads: int, rounds: int, source: Path, quiet_busy: float, quiet_wait: float
) -> dict[str, list[Pair]]:
    """Reads/s with audit on and off, interleaved in one run: over HTTP, two real `medvault serve`
    processes on the same data (one per mode, both up the whole time, each with its keep-alive
    client), and in-process (one unit of work per read, the Caller's `audited` flag switched).
    Each round reads the same random sample once per mode, back to back (A B, then B A in the next
    round, so neither mode always reads a warmer cache); the figure is the median of the per-round
    on/off ratios."""
    import http.client

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
        headers = {"Authorization": f"Bearer {token}"}

        def in_process(sample: list[tuple[str, str]], audited: bool) -> tuple[float, float]:
            caller = guard.Caller(actor=None, via="api", address="127.0.0.1", audited=audited)
            c0, t0 = time.process_time(), time.perf_counter()
            for rtype, rid in sample:
                with guard.unit_of_work(factory, crypto, caller) as vault:
                    service.read(vault=vault, rtype=rtype, rid=rid)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            return len(sample) / wall, cpu / len(sample)

        with contextlib.ExitStack() as stack:
            conns: dict[bool, http.client.HTTPConnection] = {}
            pids: dict[bool, int] = {}
            for audited in (True, False):
                env = {"MEDVAULT_ENVIRONMENT": "benchmark", "MEDVAULT_UNSAFE_DISABLE_AUDIT": "0" if audited else "1"}
                if settings.database_url:
                    env["MEDVAULT_DATABASE_URL"] = settings.database_url
                port = free_port()
                log_path = settings.data_dir / f"server-audit-{'on' if audited else 'off'}.log"
                with _environ(env):
                    proc = stack.enter_context(server(settings.data_dir, port, log_path))
                wait_ready(proc, port, log_path)
                pids[audited] = proc.pid
                conns[audited] = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                stack.callback(conns[audited].close)

            def get(conn: http.client.HTTPConnection, rtype: str, rid: str) -> None:
                conn.request("GET", f"/fhir/{rtype}/{rid}", headers=headers)
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    raise SystemExit(f"read failed: {response.status}")

            def over_http(sample: list[tuple[str, str]], audited: bool) -> tuple[float, float]:
                conn = conns[audited]
                # The server drops a keep-alive connection idle for 5 s (the other mode's turn):
                # open a fresh one, untimed, with the sample's first read.
                conn.close()
                get(conn, *sample[0])
                c0, t0 = _cpu_seconds(pids[audited]), time.perf_counter()
                for rtype, rid in sample:
                    get(conn, rtype, rid)
                wall, cpu = time.perf_counter() - t0, _cpu_seconds(pids[audited]) - c0
                return len(sample) / wall, cpu / len(sample)

            warm = [rng.choice(keys) for _ in range(200)]
            for audited in (True, False):  # data-key caches, page cache, connections, code paths
                over_http(warm, audited)
                in_process(warm, audited)
            out: dict[str, list[Pair]] = {"http": [], "in-process": []}
            print(f"   {wait_for_quiet(quiet_busy, quiet_wait)}", flush=True)
            for i in range(rounds):
                load = os.getloadavg()[0]
                order = (True, False) if i % 2 == 0 else (False, True)
                for kind, run in (("http", over_http), ("in-process", in_process)):
                    sample = [rng.choice(keys) for _ in range(reads)]
                    results = {audited: run(sample, audited) for audited in order}
                    pair = Pair(results[True][0], results[False][0], results[True][1], results[False][1])
                    out[kind].append(pair)
                    print(
                        f"   round {i + 1:2} {kind:10} {'on,off' if order[0] else 'off,on'}  "
                        f"on {pair.on:6,.0f} reads/s  off {pair.off:6,.0f}  ratio {pair.on / pair.off:.3f}  "
                        f"cpu ms/read on {pair.cpu_on * 1e3:.2f} off {pair.cpu_off * 1e3:.2f}  (load {load:.2f})",
                        flush=True,
                    )
            return out
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--reads", type=int, default=150, help="reads per mode per round")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument(
        "--quiet-busy", type=float, default=0.3, help="before the rounds, wait until CPUs are this busy"
    )
    parser.add_argument("--quiet-wait", type=float, default=10.0, help="... but at most this many seconds")
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
                    reads = bench_reads(
                        _settings(tmp / "r", schema.url),
                        args.reads,
                        args.rounds,
                        args.source,
                        args.quiet_busy,
                        args.quiet_wait,
                    )
            else:
                verify = bench_verify(_settings(tmp / "v", None), args.entries)
                reads = bench_reads(
                    _settings(tmp / "r", None), args.reads, args.rounds, args.source, args.quiet_busy, args.quiet_wait
                )
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
            ratios = [p.on / p.off for p in pairs]
            # CPU per read, summed over all rounds (tick resolution): other processes' load slows
            # the wall clock much more than it changes how much CPU one read costs.
            cpu_on = sum(p.cpu_on for p in pairs) / len(pairs)
            cpu_off = sum(p.cpu_off for p in pairs) / len(pairs)
            print(
                f"   {backend} {kind}: per-round ratios {' '.join(f'{r:.3f}' for r in ratios)}; "
                f"min {min(ratios):.3f} max {max(ratios):.3f}",
                flush=True,
            )
            target = ">= 0.85" if kind == "http" else "(info)"
            rows += [
                (f"{backend} {kind} reads/s audit on (median)", f"{median([p.on for p in pairs]):,.0f}", "", ""),
                (f"{backend} {kind} reads/s audit off (median)", f"{median([p.off for p in pairs]):,.0f}", "", ""),
                (
                    f"{backend} {kind} CPU ms per read on / off ({'server' if kind == 'http' else 'in-process'})",
                    f"{cpu_on * 1e3:.2f} / {cpu_off * 1e3:.2f}",
                    "",
                    "",
                ),
                (f"{backend} {kind} audit on / off by CPU per read (off / on)", f"{cpu_off / cpu_on:.3f}", "", ""),
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
