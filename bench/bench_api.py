"""FHIR REST latency over a real server: read by id, searches within one patient, identity lookups, $everything.

What it measures
    A real `medvault serve` process (uvicorn, 127.0.0.1, a free port, the operator's settings) over a
    data directory holding the 100 Synthea bundles, driven by one synchronous keep-alive HTTP client
    (httpx if installed, else the standard library's http.client) from this process: one request at
    a time, so the figures are latencies, not throughput. Each sample is the wall time from sending
    the request to having read the whole response body. Ids, codes, names and identifiers to query
    are read from the source bundles (never from the database), and result totals are checked
    against what the bundles say, so a fast wrong answer shows up as a mismatch.

      read        GET /fhir/{type}/{id} for --reads random resources (uniform over all resources)
      search      per patient, five searches within the patient's record:
                    Observation?patient=X&code=http://loinc.org|<a code the patient has>
                    Observation?patient=X&date=ge2015&_sort=-date
                    Condition?patient=X&clinical-status=active
                    MedicationRequest?patient=X&status=active
                    Encounter?patient=X&date=2019
                  --search-rounds passes over all patients, shuffled
      identity    Patient?family=<family> and Patient?identifier=<MRN system>|<value>
      everything  GET /fhir/Patient/{id}/$everything for every patient

    Before timing, a warm-up pass sends a few requests of every kind (the first request of each
    resource type loads its model class); the slowest warm-up request is printed for information.

Targets (issue acceptance figures)
    read by id p50 <= 5 ms; search within one patient p95 <= 50 ms

How to run (from the repository root, after `pip install -e .`)
    python bench/bench_api.py                           # imports into a temporary data dir first
    python bench/bench_api.py --data-dir /tmp/mv-api    # imports there if empty, reuses it next time
    python bench/bench_api.py --reads 5000 --search-rounds 5

The server is stopped (SIGTERM, then SIGKILL after 10 s) when the script ends, also on errors.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import urlencode

import orjson

from _common import (
    DEFAULT_SOURCE,
    banner,
    free_port,
    median,
    open_vault_store,
    percentile,
    source_files,
    table,
    temp_dir,
    verdict,
    wait_for_quiet,
    warm_page_cache,
)
from _queries import PatientFacts, Query, bundle_facts, check_bundle_result, identity_queries

TARGET_READ_P50_MS = 5.0
TARGET_SEARCH_P95_MS = 50.0


def read_sources(
    files: list[Path], rng: random.Random
) -> tuple[list[PatientFacts], list[Query], list[tuple[str, str]]]:
    """Patients, the identity lookups to send about them, and every distinct (type, id) in the bundles."""
    patients: list[PatientFacts] = []
    all_ids: set[tuple[str, str]] = set()
    for path in files:
        facts, ids = bundle_facts(orjson.loads(path.read_bytes()), rng)
        patients.append(facts)
        all_ids.update(ids)
    families = Counter(f for p in patients for f in p.families)
    lookups = [q for p in patients for q in identity_queries(p, families)]
    return patients, lookups, sorted(all_ids)


# ---------------------------------------------------------------------------------------------
# HTTP client: httpx when available, else http.client (a fresh machine has only `pip install -e .`)


class Client(Protocol):
    name: str

    def get(self, path: str, params: tuple[tuple[str, str], ...] | None = None) -> tuple[int, bytes]: ...

    def close(self) -> None: ...


class HttpxClient:
    name = "httpx (sync, keep-alive)"

    def __init__(self, base: str, token: str) -> None:
        import httpx

        self._client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60)

    def get(self, path: str, params: tuple[tuple[str, str], ...] | None = None) -> tuple[int, bytes]:
        r = self._client.get(path, params=list(params) if params else None)
        return r.status_code, r.content

    def close(self) -> None:
        self._client.close()


class StdlibClient:
    name = "http.client (stdlib, keep-alive)"

    def __init__(self, host: str, port: int, token: str) -> None:
        import http.client

        self._conn = http.client.HTTPConnection(host, port, timeout=60)
        self._headers = {"Authorization": f"Bearer {token}", "Connection": "keep-alive"}

    def get(self, path: str, params: tuple[tuple[str, str], ...] | None = None) -> tuple[int, bytes]:
        url = f"{path}?{urlencode(params)}" if params else path
        self._conn.request("GET", url, headers=self._headers)
        r = self._conn.getresponse()
        return r.status, r.read()

    def close(self) -> None:
        self._conn.close()


def make_client(kind: str, port: int, token: str) -> Client:
    if kind in ("auto", "httpx"):
        try:
            return HttpxClient(f"http://127.0.0.1:{port}", token)
        except ImportError:
            if kind == "httpx":
                raise
    return StdlibClient("127.0.0.1", port, token)


# ---------------------------------------------------------------------------------------------
# data directory and server


def ensure_imported(data_dir: Path, files: list[Path]) -> None:
    """Initialise and import the bundles unless the directory already holds a vault."""
    from medvault.config import load_settings
    from medvault.records.importer import Importer
    from medvault.store.setup import initialise

    settings = load_settings(data_dir=data_dir)
    if settings.is_sqlite and (data_dir / "medvault.db").exists() and settings.token_path.exists():
        print(f"   reusing   {data_dir} (not re-imported)")
        # Idempotent; migrates, and replaces a token file from before SMART with a registered one.
        initialise(settings)
        return
    print(f"   importing {len(files)} bundles into {data_dir} ...", flush=True)
    initialise(settings)
    engine, factory, crypto = open_vault_store(settings)
    try:
        t0 = time.perf_counter()
        report = Importer(factory, crypto).run(files)
        seconds = time.perf_counter() - t0
        print(f"   imported  {report.stored:,} resources in {seconds:.1f} s, {len(report.rejected)} rejected")
    finally:
        engine.dispose()


@contextmanager
def server(data_dir: Path, port: int, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`medvault serve` in a child process, stopped on exit."""
    cmd = [
        sys.executable,
        "-c",
        "import sys; from medvault.cli.main import app; sys.exit(app())",
        "serve",
        "--data-dir",
        str(data_dir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def wait_ready(proc: subprocess.Popen[bytes], port: int, log_path: Path, timeout: float = 60.0) -> float:
    import http.client

    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}:\n{log_path.read_text(errors='replace')[-2000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                conn.close()
                return time.perf_counter() - t0
            conn.close()
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"server not ready after {timeout:.0f} s:\n{log_path.read_text(errors='replace')[-2000:]}")


# ---------------------------------------------------------------------------------------------
# measuring


@dataclass
class Stats:
    samples: list[float] = field(default_factory=list)  # seconds
    errors: Counter[str] = field(default_factory=Counter)
    mismatches: int = 0
    sizes: list[int] = field(default_factory=list)

    def row(self, name: str, target: str = "", ok: bool | None = None) -> list[str]:
        ms = [s * 1000 for s in self.samples]
        return [
            name,
            str(len(ms)),
            f"{percentile(ms, 50):.1f}",
            f"{percentile(ms, 95):.1f}",
            f"{max(ms, default=float('nan')):.1f}",
            f"{median(self.sizes) / 1024:.0f}",
            str(sum(self.errors.values())),
            str(self.mismatches),
            target,
            "" if ok is None else verdict(ok),
        ]


def timed(client: Client, path: str, params: tuple[tuple[str, str], ...] | None = None) -> tuple[float, int, bytes]:
    t0 = time.perf_counter()
    status, content = client.get(path, params)
    return time.perf_counter() - t0, status, content


def check(stats: Stats, q: Query, status: int, content: bytes) -> None:
    if status != 200:
        stats.errors[str(status)] += 1
        return
    bundle = orjson.loads(content)
    if not check_bundle_result(bundle, q):
        stats.mismatches += 1
        if stats.mismatches <= 3:
            print(f"   !! {q.kind}: total {bundle.get('total')}, the bundles say {q.expected_total}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="folder of FHIR transaction bundles")
    parser.add_argument("--data-dir", type=Path, default=None, help="reuse (or create and import into) this dir")
    parser.add_argument("--reads", type=int, default=2000, help="random reads by id")
    parser.add_argument("--search-rounds", type=int, default=3, help="passes over all patients' searches")
    parser.add_argument("--identity-rounds", type=int, default=2, help="passes of Patient family/identifier lookups")
    parser.add_argument("--everything", type=int, default=100, help="patients for $everything (at most all)")
    parser.add_argument("--client", choices=("auto", "httpx", "stdlib"), default="auto")
    parser.add_argument("--seed", type=int, default=20261123)
    parser.add_argument("--keep", action="store_true", help="keep the temporary data directory")
    parser.add_argument("--quiet-busy", type=float, default=0.3, help="start timing when CPUs are at most this busy")
    parser.add_argument("--quiet-wait", type=float, default=60, help="...but wait at most this long (s); 0: never")
    args = parser.parse_args()

    rng = random.Random(args.seed)
    files = source_files(args.source)
    warm_page_cache(files)
    banner("bench_api: FHIR REST latency over uvicorn on 127.0.0.1")
    patients, lookups, all_ids = read_sources(files, rng)
    print(f"   source    {len(files)} bundles, {len(patients)} patients, {len(all_ids):,} distinct resources")

    with temp_dir("mvbench-api-", keep=args.keep) as tmp:
        data_dir = (args.data_dir or tmp / "data").resolve()
        ensure_imported(data_dir, files)
        token = (data_dir / "operator-token").read_text().strip()
        port = free_port()
        with server(data_dir, port, tmp / "server.log") as proc:
            ready = wait_ready(proc, port, tmp / "server.log")
            print(f"   server    pid {proc.pid}, http://127.0.0.1:{port}, ready in {ready:.1f} s")
            client = make_client(args.client, port, token)
            print(f"   client    {client.name}", flush=True)
            try:
                results = run_all(client, args, rng, patients, lookups, all_ids)
            finally:
                client.close()
        print()
        print_summary(results)


def run_all(
    client: Client,
    args: argparse.Namespace,
    rng: random.Random,
    patients: list[PatientFacts],
    lookups: list[Query],
    ids: list[tuple[str, str]],
) -> dict[str, Stats]:
    # Warm-up: the first request for each resource type loads its model class in the server.
    warm: list[float] = []
    for rtype, rid in {r[0]: r for r in ids}.values():
        warm.append(timed(client, f"/fhir/{rtype}/{rid}")[0])
    for q in [*patients[0].searches, *lookups[:2]]:
        warm.append(timed(client, q.path, q.params)[0])
    warm.append(timed(client, f"/fhir/Patient/{patients[0].pid}/$everything")[0])
    print(f"   warm-up   {len(warm)} requests, slowest {max(warm) * 1000:.0f} ms")
    note = wait_for_quiet(args.quiet_busy, args.quiet_wait)
    if note:
        print(f"   machine   {note}", flush=True)

    results: dict[str, Stats] = defaultdict(Stats)
    reads = results["read by id"]
    sample = [rng.choice(ids) for _ in range(args.reads)]
    t0 = time.perf_counter()
    for rtype, rid in sample:
        dt, status, content = timed(client, f"/fhir/{rtype}/{rid}")
        reads.samples.append(dt)
        reads.sizes.append(len(content))
        if status != 200:
            reads.errors[str(status)] += 1
    # Patient reads also open the identity vault: measured apart, every patient --identity-rounds times.
    patient_reads = results["read Patient by id"]
    for _ in range(args.identity_rounds):
        for p in rng.sample(patients, len(patients)):
            dt, status, content = timed(client, f"/fhir/Patient/{p.pid}")
            patient_reads.samples.append(dt)
            patient_reads.sizes.append(len(content))
            if status != 200:
                patient_reads.errors[str(status)] += 1
    n_reads = len(reads.samples) + len(patient_reads.samples)
    print(f"   reads     {n_reads} in {time.perf_counter() - t0:.1f} s", flush=True)

    def run_queries(queries: list[Query], label: str, overall: str) -> None:
        t0 = time.perf_counter()
        for q in queries:
            dt, status, content = timed(client, q.path, q.params)
            for name in (overall, q.kind):
                results[name].samples.append(dt)
                results[name].sizes.append(len(content))
            check(results[q.kind], q, status, content)
            if status != 200:
                results[overall].errors[str(status)] += 1
        print(f"   {label:<9} {len(queries)} in {time.perf_counter() - t0:.1f} s", flush=True)

    searches = [q for p in patients for q in p.searches]
    plan = [q for _ in range(args.search_rounds) for q in rng.sample(searches, len(searches))]
    run_queries(plan, "searches", "search within one patient (all 5)")
    plan = [q for _ in range(args.identity_rounds) for q in rng.sample(lookups, len(lookups))]
    run_queries(plan, "identity", "Patient identity lookups (both)")

    everything = results["Patient $everything"]
    t0 = time.perf_counter()
    for p in rng.sample(patients, min(args.everything, len(patients))):
        dt, status, content = timed(client, f"/fhir/Patient/{p.pid}/$everything")
        everything.samples.append(dt)
        everything.sizes.append(len(content))
        if status != 200:
            everything.errors[str(status)] += 1
        elif orjson.loads(content).get("total", 0) < p.compartment:
            everything.mismatches += 1
    print(f"   everything {len(everything.samples)} in {time.perf_counter() - t0:.1f} s", flush=True)
    return results


def print_summary(results: dict[str, Stats]) -> None:
    read_p50 = percentile([s * 1000 for s in results["read by id"].samples], 50)
    search_p95 = percentile([s * 1000 for s in results["search within one patient (all 5)"].samples], 95)
    order = [
        ("read by id", f"p50 <= {TARGET_READ_P50_MS:.0f} ms", read_p50 <= TARGET_READ_P50_MS),
        ("read Patient by id", "", None),
        (
            "search within one patient (all 5)",
            f"p95 <= {TARGET_SEARCH_P95_MS:.0f} ms",
            search_p95 <= TARGET_SEARCH_P95_MS,
        ),
        ("Observation code", "", None),
        ("Observation date sort", "", None),
        ("Condition active", "", None),
        ("MedicationRequest active", "", None),
        ("Encounter 2019", "", None),
        ("Patient identity lookups (both)", "", None),
        ("Patient family", "", None),
        ("Patient identifier", "", None),
        ("Patient $everything", "", None),
    ]
    rows = [results[name].row(name, target, ok) for name, target, ok in order if name in results]
    headers = ["summary (ms)", "n", "p50", "p95", "max", "KiB", "errors", "wrong", "target", ""]
    print(table(headers, rows))
    print("KiB: median response body; wrong: totals (or ids) that differ from what the source bundles say")


if __name__ == "__main__":
    main()
