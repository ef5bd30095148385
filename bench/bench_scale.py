"""How import speed and search latency change with the number of patients (100 -> 1,000 -> 10,000).

What it measures
    One vault grows in steps (--sizes, default 100,1000,10000 patients; ~152 resources each, so
    10,000 patients is ~1.5 M resources). Patients 0-99 are the 100 Synthea bundles as they are;
    every further patient is a clone of bundle (i mod 100) with a fresh identity: a new UUID for
    every UUID in the bundle (fullUrls, resource ids, references, the Synthea/MRN identifiers), new
    names, SSN / driver's licence / passport numbers, phone and mother's maiden name, and the birth
    date shifted by up to a year. Clones come from a deterministic RNG (--seed), so two runs import
    the same data. The clinical record is unchanged, so the expected search totals of the template
    apply to its clones and every answer is checked.

    Import: the clones are written in batches (--batch bundles) as files to a temporary folder
    OUTSIDE the data directory and imported with `Importer(factory, crypto).run(files)`, as
    `medvault import` does (validation in worker processes); each batch's files are deleted right
    after. --feed bytes instead generates them in memory and calls `Importer.import_bytes` (no
    plaintext on disk, but validation then runs in this process: slower). Only the import calls
    are timed, not the generation; the figure is resources stored per second for the increment.

    Search, after each step: --samples patients drawn at random from all patients imported so far;
    for each, the five within-patient searches of bench_api.py and the two identity lookups
    (Patient?identifier=<MRN>, Patient?family=<name>); and, for information, --cross searches
    across all patients (Condition?code=<hypertension>&_count=10: the keyed tokens are per-patient,
    so this one grows with the number of patients by design). Measured IN-PROCESS through the service
    layer (`medvault.records.service.search` inside a unit of work, as one API request does), not
    over HTTP: add ~1-2 ms of HTTP/JSON overhead for what a client sees (bench_api.py measures that).

    The blind-index width is sized at init for --expected-patients (default: the largest size), as
    an operator would with `medvault init --expected-patients`.

How to run (from the repository root, after `pip install -e .`)
    python bench/bench_scale.py --sizes 100,1000
    nohup python bench/bench_scale.py --sizes 100,1000,10000 > /tmp/bench_scale.log 2>&1 &
        (10,000 patients: ~1.5 M resources, a few GB of disk, ~22 min on a quiet 2-core VM, ~50 min on a busy one)
    python bench/bench_scale.py --feed bytes --sizes 100,500

The data directory is temporary (deleted at the end, also on Ctrl-C / SIGTERM) unless --data-dir
is given (it must not exist yet) or --keep.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import re
import shutil
import signal
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import orjson

from _common import (
    DEFAULT_SOURCE,
    banner,
    describe_rejection,
    mib,
    open_vault_store,
    percentile,
    source_files,
    sqlite_bytes,
    table,
    temp_dir,
    verdict,
    wait_for_quiet,
)
from _queries import PatientFacts, Query, bundle_facts, check_bundle_result, identity_queries

TARGET_SEARCH_P95_MS = 50.0
UUID_RE = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
SYLLABLES = [
    "ka",
    "lo",
    "mi",
    "ren",
    "sa",
    "to",
    "vi",
    "bel",
    "dor",
    "fen",
    "gar",
    "hal",
    "jor",
    "kel",
    "lan",
    "mor",
    "nor",
    "pel",
    "quin",
    "ros",
    "sel",
    "tam",
    "ulm",
    "var",
    "wen",
    "yar",
    "zel",
    "bran",
    "cor",
    "dal",
]
SSN = "http://hl7.org/fhir/sid/us-ssn"
DRIVERS_LICENSE = "urn:oid:2.16.840.1.113883.4.3.25"
PASSPORT = "http://standardhealthrecord.org/fhir/StructureDefinition/passportNumber"
MAIDEN_NAME = "http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName"
CROSS_CODE = "38341003"  # SNOMED CT hypertensive disorder: in ~1 patient of 5


# ---------------------------------------------------------------------------------------------
# clones with fresh identities


@dataclass
class Template:
    name: str
    raw: bytes
    uuids: list[bytes]
    facts: PatientFacts
    resources: int
    patient_index: int
    cross_hits: int  # Conditions with CROSS_CODE


def load_templates(files: list[Path]) -> tuple[list[Template], list[str]]:
    """The source bundles, and the pool of given names clones draw from."""
    templates: list[Template] = []
    given: set[str] = set()
    for path in files:
        raw = path.read_bytes()
        bundle = orjson.loads(raw)
        # The template's own query choices (which LOINC code) come from a per-template RNG.
        facts, ids = bundle_facts(bundle, random.Random(path.name))
        entries = bundle["entry"]
        index = next(i for i, e in enumerate(entries) if e["resource"]["resourceType"] == "Patient")
        for name in entries[index]["resource"].get("name", []):
            given.update(g for g in name.get("given", []) if isinstance(g, str))
        uuids = list(dict.fromkeys(UUID_RE.findall(raw)))
        hits = sum(
            1
            for e in entries
            if e["resource"]["resourceType"] == "Condition"
            and any(c.get("code") == CROSS_CODE for c in e["resource"].get("code", {}).get("coding", []))
        )
        templates.append(Template(path.name, raw, uuids, facts, len(ids), index, hits))
    return templates, sorted(given)


def family_name(rng: random.Random) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(3)).capitalize()


def clone(t: Template, rng: random.Random, given_pool: list[str]) -> tuple[bytes, PatientFacts]:
    """Bundle bytes for a new patient with the template's clinical record, and the facts to query it by."""
    from medvault.crypto.indexes import normalise

    mapping = {u: str(uuid.UUID(int=rng.getrandbits(128), version=4)).encode() for u in t.uuids}
    raw = UUID_RE.sub(lambda m: mapping.get(m.group(0), m.group(0)), t.raw)
    bundle = orjson.loads(raw)
    patient: dict[str, Any] = bundle["entry"][t.patient_index]["resource"]
    for name in patient.get("name", []):
        name["family"] = family_name(rng)
        name["given"] = [rng.choice(given_pool)]
    for ident in patient.get("identifier", []):
        system = ident.get("system")
        if system == SSN:
            ident["value"] = f"999-{rng.randint(10, 99)}-{rng.randint(1000, 9999)}"
        elif system == DRIVERS_LICENSE:
            ident["value"] = f"S99{rng.randint(100000, 999999)}"
        elif system == PASSPORT:
            ident["value"] = f"X{rng.randint(10**7, 10**8 - 1)}X"
    if isinstance(patient.get("birthDate"), str):
        born = date.fromisoformat(patient["birthDate"][:10]) + timedelta(days=rng.randint(-365, 365))
        patient["birthDate"] = born.isoformat()
    for tel in patient.get("telecom", []):
        if tel.get("system") == "phone":
            tel["value"] = f"555-{rng.randint(100, 999)}-{rng.randint(1000, 9999)}"
    for ext in patient.get("extension", []):
        if ext.get("url") == MAIDEN_NAME:
            ext["valueString"] = f"{rng.choice(given_pool)} {family_name(rng)}"
    pid = patient["id"]
    names = patient.get("name", [])
    facts = PatientFacts(
        pid=pid,
        family=names[0]["family"],
        families={normalise(n["family"]) for n in names},
        mrn=mapping[t.facts.mrn.encode()].decode(),
        searches=[q.for_patient(pid) for q in t.facts.searches],
        compartment=t.facts.compartment,
    )
    return orjson.dumps(bundle), facts


def patient_bundle(
    i: int, templates: list[Template], given_pool: list[str], seed: int
) -> tuple[str, bytes, PatientFacts, int]:
    """Patient number i: the source bundle itself for i < len(templates), else a clone (deterministic).
    Returns (name, bytes, facts, Conditions with CROSS_CODE)."""
    t = templates[i % len(templates)]
    if i < len(templates):
        return t.name, t.raw, t.facts, t.cross_hits
    raw, facts = clone(t, random.Random(seed * 1_000_003 + i), given_pool)
    return f"clone-{i:06d}.json", raw, facts, t.cross_hits


# ---------------------------------------------------------------------------------------------
# import one step


@dataclass
class Step:
    size: int
    patients_added: int = 0
    stored: int = 0
    import_seconds: float = 0.0
    generate_seconds: float = 0.0
    rejected: int = 0
    db_bytes: int = 0
    lat: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))  # ms
    wrong: Counter[str] = field(default_factory=Counter)

    @property
    def rate(self) -> float:
        return self.stored / self.import_seconds if self.import_seconds else float("nan")


def batches(start: int, stop: int, size: int) -> Iterator[range]:
    for lo in range(start, stop, size):
        yield range(lo, min(stop, lo + size))


def import_step(
    step: Step,
    start: int,
    importer: Any,
    templates: list[Template],
    given_pool: list[str],
    args: argparse.Namespace,
    patients: list[PatientFacts],
    families: Counter[str],
) -> int:
    """Imports patients start..step.size-1; returns how many Conditions with CROSS_CODE they hold."""
    from medvault.records.importer import ImportReport

    t_step = time.perf_counter()
    done = 0
    cross = 0
    for chunk in batches(start, step.size, args.batch):
        t0 = time.perf_counter()
        generated = [patient_bundle(i, templates, given_pool, args.seed) for i in chunk]
        step.generate_seconds += time.perf_counter() - t0
        for _, _, facts, hits in generated:
            patients.append(facts)
            families.update(facts.families)
            cross += hits
        gc.collect()
        note = wait_for_quiet(args.quiet_busy, args.quiet_wait)
        if args.feed == "bytes":
            report = ImportReport()
            t0 = time.perf_counter()
            for name, raw, _, _ in generated:
                importer.import_bytes(name, raw, report)
            seconds = time.perf_counter() - t0
        else:
            # Plaintext clones on disk only for the batch's import, outside the data directory.
            feed = Path(tempfile.mkdtemp(prefix="mvbench-scale-feed-", dir=args.feed_dir))
            try:
                t0 = time.perf_counter()
                files = []
                for name, raw, _, _ in generated:
                    (feed / name).write_bytes(raw)
                    files.append(feed / name)
                step.generate_seconds += time.perf_counter() - t0
                del generated
                t0 = time.perf_counter()
                report = importer.run(files)
                seconds = time.perf_counter() - t0
            finally:
                shutil.rmtree(feed, ignore_errors=True)
        step.import_seconds += seconds
        step.stored += report.stored
        step.rejected += len(report.rejected)
        if report.rejected:
            print(f"   !! {len(report.rejected)} rejected, first: {describe_rejection(report.rejected[0])}", flush=True)
        done += len(chunk)
        step.patients_added = done
        print(
            f"   [{step.size:,}] {start + done:,}/{step.size:,} patients | batch {report.stored:,} res "
            f"in {seconds:.1f} s = {report.stored / seconds:,.0f} res/s | step so far {step.rate:,.0f} res/s "
            f"| elapsed {(time.perf_counter() - t_step) / 60:.1f} min | load {os.getloadavg()[0]:.2f}, {note}",
            flush=True,
        )
    return cross


# ---------------------------------------------------------------------------------------------
# search latencies (in-process, service layer)


def measure(
    step: Step,
    factory: Any,
    crypto: Any,
    patients: list[PatientFacts],
    families: Counter[str],
    cross_total: int,
    args: argparse.Namespace,
) -> None:
    from medvault.db import unit_of_work
    from medvault.records import service
    from medvault.records.guard import OPERATOR_CLI
    from medvault.records.vault import Vault

    rng = random.Random(args.seed + step.size)
    sample = rng.sample(patients, min(args.samples, len(patients)))
    plan: list[tuple[str, Query]] = []
    for p in sample:
        plan += [("search within one patient", q) for q in p.searches]
        plan += [(q.kind, q) for q in identity_queries(p, families)]
    rng.shuffle(plan)
    cross = Query(
        "Condition code, all patients",
        "Condition",
        (("code", f"http://snomed.info/sct|{CROSS_CODE}"), ("_count", "10")),
        cross_total,
    )
    plan += [(cross.kind, cross)] * args.cross

    def one(q: Query) -> tuple[float, bool]:
        t0 = time.perf_counter()
        with unit_of_work(factory) as session:
            result = service.search(
                vault=Vault(session, crypto, caller=OPERATOR_CLI), rtype=q.rtype, params=list(q.params)
            )
        seconds = time.perf_counter() - t0
        bundle = {"total": result.total, "entry": [{"resource": r} for r in result.resources]}
        return seconds, check_bundle_result(bundle, q)

    for _, q in plan[:20]:  # warm-up: statement caches, model classes
        one(q)
    wait_for_quiet(args.quiet_busy, args.quiet_wait)
    t0 = time.perf_counter()
    for label, q in plan:
        seconds, ok = one(q)
        step.lat[label].append(seconds * 1000)
        if label != q.kind:
            step.lat[q.kind].append(seconds * 1000)
        if not ok:
            step.wrong[q.kind] += 1
            if step.wrong[q.kind] <= 2:
                print(f"   !! {q.kind} {q.params}: wrong total or missing id (expected {q.expected_total})")
    print(f"   [{step.size:,}] {len(plan):,} searches in {time.perf_counter() - t0:.1f} s", flush=True)


def pcts(values: list[float]) -> str:
    return f"{percentile(values, 50):.1f} / {percentile(values, 95):.1f}"


# ---------------------------------------------------------------------------------------------


def _sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds the context managers: temporary folders are deleted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sizes", default="100,1000,10000", help="patient counts, comma-separated, ascending")
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="folder of FHIR transaction bundles")
    parser.add_argument("--data-dir", type=Path, default=None, help="data directory to create (must not exist)")
    parser.add_argument("--feed", choices=("files", "bytes"), default="files", help="how clones reach the importer")
    parser.add_argument("--feed-dir", type=Path, default=None, help="parent of the temporary batch folders")
    parser.add_argument("--batch", type=int, default=1000, help="bundles generated and imported per batch")
    parser.add_argument("--samples", type=int, default=200, help="patients sampled for the search latencies")
    parser.add_argument("--cross", type=int, default=10, help="cross-patient searches per step (information)")
    parser.add_argument("--expected-patients", type=int, default=None, help="blind-index sizing (default: max size)")
    parser.add_argument("--workers", type=int, default=None, help="importer worker processes (default: its own)")
    parser.add_argument("--seed", type=int, default=20261123)
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    parser.add_argument("--quiet-busy", type=float, default=0.3, help="start timed parts when CPUs are this idle")
    parser.add_argument("--quiet-wait", type=float, default=15, help="...but wait at most this long (s); 0: never")
    args = parser.parse_args()
    sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    if not sizes or sizes[0] < 1:
        parser.error("--sizes needs positive patient counts")
    signal.signal(signal.SIGTERM, _sigterm)

    from medvault.config import load_settings
    from medvault.records.importer import Importer
    from medvault.store.setup import initialise

    banner("bench_scale: import speed and search latency as the vault grows")
    templates, given_pool = load_templates(source_files(args.source))
    per_patient = sum(t.resources for t in templates) / len(templates)
    print(f"   source    {len(templates)} template bundles, {per_patient:.0f} resources per patient on average")
    print(f"   sizes     {', '.join(f'{s:,}' for s in sizes)} patients (~{sizes[-1] * per_patient:,.0f} resources)")
    print(f"   feed      {args.feed}, batches of {args.batch}; search measured in-process (service layer)", flush=True)

    parent = args.data_dir.parent if args.data_dir else None
    if args.data_dir and args.data_dir.exists():
        parser.error(f"--data-dir {args.data_dir} exists; give a new path")
    steps: list[Step] = []
    try:
        with temp_dir("mvbench-scale-", parent, keep=args.keep or bool(args.data_dir)) as tmp:
            data_dir = args.data_dir or tmp / "data"
            if args.feed_dir and args.feed_dir.resolve().is_relative_to(data_dir.resolve()):
                parser.error("--feed-dir must be outside the data directory")
            settings = load_settings(data_dir=data_dir, expected_patients=args.expected_patients or sizes[-1])
            bits = initialise(settings).blind_bits
            print(f"   data dir  {data_dir} (blind index {bits} bits)", flush=True)
            engine, factory, crypto = open_vault_store(settings)
            try:
                importer = Importer(factory, crypto, workers=args.workers)
                patients: list[PatientFacts] = []
                families: Counter[str] = Counter()
                cross_total = 0
                for size in sizes:
                    step = Step(size)
                    print(f"\n== step to {size:,} patients", flush=True)
                    cross_total += import_step(
                        step, len(patients), importer, templates, given_pool, args, patients, families
                    )
                    step.db_bytes = sqlite_bytes(data_dir / "medvault.db")
                    print(
                        f"   [{size:,}] imported {step.stored:,} resources in {step.import_seconds:.1f} s = "
                        f"{step.rate:,.0f} res/s (generation {step.generate_seconds:.1f} s, not timed); "
                        f"database {mib(step.db_bytes)}",
                        flush=True,
                    )
                    measure(step, factory, crypto, patients, families, cross_total, args)
                    print(
                        f"   [{size:,}] p50/p95 ms: within-patient {pcts(step.lat['search within one patient'])}, "
                        f"identifier {pcts(step.lat['Patient identifier'])}, family {pcts(step.lat['Patient family'])}",
                        flush=True,
                    )
                    steps.append(step)
            finally:
                engine.dispose()
    except KeyboardInterrupt:
        print("\ninterrupted: partial results below", flush=True)
    print_summary(steps)


def print_summary(steps: list[Step]) -> None:
    if not steps:
        return
    print()
    rows = []
    total = 0
    for s in steps:
        total += s.stored
        within = s.lat["search within one patient"]
        rows.append(
            [
                f"{s.size:,}",
                f"{total:,}",
                f"{s.rate:,.0f}",
                f"{s.db_bytes / 2**20:,.0f}",
                pcts(within),
                pcts(s.lat["Patient identifier"]),
                pcts(s.lat["Patient family"]),
                str(sum(s.wrong.values())),
                verdict(percentile(within, 95) <= TARGET_SEARCH_P95_MS),
            ]
        )
    headers = [
        "patients",
        "resources",
        "import res/s (step)",
        "db MiB",
        "within-patient p50/p95 ms",
        "identifier p50/p95",
        "family p50/p95",
        "wrong",
        f"p95<={TARGET_SEARCH_P95_MS:.0f}",
    ]
    print(table(headers, rows))
    print("latencies in-process through medvault.records.service.search (one unit of work each), no HTTP")
    per_kind = sorted({k for s in steps for k in s.lat if k != "search within one patient"})
    print()
    print(
        table(
            ["p50 / p95 ms by query", *[f"{s.size:,}" for s in steps]],
            [[k, *[pcts(s.lat[k]) for s in steps]] for k in per_kind],
        )
    )


if __name__ == "__main__":
    main()
