"""Emergency summary build time: `emergency.summary.build_summary` for the largest Synthea patient.

What it measures
    The largest patient of the Synthea set by resource count (the whole transaction Bundle's
    resources as input, so the builder also skips the Observations, Claims, Encounters... it does
    not show). `build_summary` is pure and in-process, so each run is one call, timed with
    perf_counter; the figures are the median and p95 (nearest rank) of `--runs` runs after
    `--warmup` untimed ones. Rows:
      * imported form: references as the transaction Bundle writes them (urn:uuid, conditional
        `Practitioner?identifier=`), default options (the emergency card as the patient first sees it);
      * stored form: references as "Type/id" (as the vault returns them), every sensitive category
        included and two patient-written alerts (the largest output);
      * for information, the same plus serialising the Bundle (orjson), and plus validating it with
        fhir.resources R4B and our own rules (what a test or a cautious caller adds);
      * for information, `--scale` multiplies the record (K copies of every clinical resource with
        fresh ids) to show how the build grows beyond what Synthea holds.

Target (issue 4)
    summary build for the largest Synthea patient <= 200 ms

How to run (from the repository root, after `pip install -e .`)
    python bench/bench_summary.py                 # 200 runs
    python bench/bench_summary.py --runs 500 --scale 10,50
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import DEFAULT_SOURCE, banner, median, percentile, source_files, table, verdict, wait_for_quiet

TARGET_MS = 200.0
NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def _largest(files: list[Path]) -> tuple[Path, dict[str, Any]]:
    best: tuple[int, Path, dict[str, Any]] | None = None
    for path in files:
        doc = json.loads(path.read_bytes())
        n = len(doc.get("entry", []))
        if best is None or n > best[0]:
            best = (n, path, doc)
    assert best is not None
    return best[1], best[2]


def _scaled(resources: list[dict[str, Any]], k: int) -> list[dict[str, Any]]:
    """K copies of every clinical resource (fresh ids; the Patient, Practitioners and Organizations once)."""
    shared = {"Patient", "Practitioner", "Organization"}
    out = [r for r in resources if r["resourceType"] in shared]
    for i in range(k):
        for r in resources:
            if r["resourceType"] not in shared:
                c = copy.deepcopy(r)
                c["id"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{i}/{r['id']}"))
                out.append(c)
    return out


def _time(fn: Callable[[], Any], runs: int, warmup: int) -> tuple[float, float, Any]:
    result = None
    for _ in range(warmup):
        result = fn()
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        result = fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return median(samples), percentile(samples, 95), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--scale", default="10", help="comma-separated multipliers, for information ('' for none)")
    parser.add_argument("--quiet-busy", type=float, default=0.25)
    parser.add_argument("--quiet-wait", type=float, default=60.0)
    args = parser.parse_args()

    import orjson
    from fhir.resources.R4B.bundle import Bundle

    from medvault.access.labels import SENSITIVE_TAGS
    from medvault.emergency.summary import SummaryOptions, build_summary, bundle_resources
    from medvault.fhir.parse import validate

    banner("emergency summary build (issue 4)")
    path, doc = _largest(source_files(args.source))
    imported = [e["resource"] for e in doc["entry"]]
    stored = bundle_resources(doc)
    patient_i = next(r for r in imported if r["resourceType"] == "Patient")
    patient_s = next(r for r in stored if r["resourceType"] == "Patient")
    full = SummaryOptions(
        include_sensitive=SENSITIVE_TAGS,
        extra_alerts=("Irradiated blood only - fludarabine-treated patient", "Difficult airway"),
    )
    print(f"   patient   {path.name[:40]}...: {len(imported)} resources, {len(path.read_bytes()):,} bytes of JSON")
    print(f"   quiet     {wait_for_quiet(args.quiet_busy, args.quiet_wait)}", flush=True)

    def b_imported() -> dict[str, Any]:
        return build_summary(patient=patient_i, resources=imported, now=NOW, options=SummaryOptions())

    def b_stored() -> dict[str, Any]:
        return build_summary(patient=patient_s, resources=stored, now=NOW, options=full)

    def b_serialised() -> bytes:
        return orjson.dumps(b_stored())

    def b_validated() -> dict[str, Any]:
        bundle = b_stored()
        Bundle.model_validate(bundle)
        validate(bundle)
        return bundle

    rows: list[list[Any]] = []
    target_p95: list[float] = []
    for label, fn, counts in (
        ("build, imported form, default options", b_imported, True),
        ("build, stored form, all included + 2 alerts", b_stored, True),
        ("  + orjson serialisation (information)", b_serialised, False),
        ("  + R4B and our validation (information)", b_validated, False),
    ):
        runs = args.runs if counts else max(20, args.runs // 5)
        p50, p95, result = _time(fn, runs, args.warmup)
        size = len(result) if isinstance(result, bytes) else len(orjson.dumps(result))
        entries = len(orjson.loads(result)["entry"]) if isinstance(result, bytes) else len(result["entry"])
        rows.append([label, runs, f"{p50:.2f}", f"{p95:.2f}", entries, f"{size:,}"])
        if counts:
            target_p95.append(p95)
    for k in [int(x) for x in args.scale.split(",") if x.strip()]:
        big = _scaled(stored, k)

        def b_big(big: list[dict[str, Any]] = big) -> dict[str, Any]:
            return build_summary(patient=patient_s, resources=big, now=NOW, options=full)

        runs = max(10, args.runs // (2 * k))
        p50, p95, result = _time(b_big, runs, 2)
        rows.append(
            [f"build, record x{k} ({len(big)} resources, information)", runs, f"{p50:.2f}", f"{p95:.2f}",
             len(result["entry"]), f"{len(orjson.dumps(result)):,}"]
        )  # fmt: skip

    print()
    print(table(["figure", "runs", "p50 ms", "p95 ms", "entries", "bytes"], rows))
    worst = max(target_p95)
    print()
    print(
        table(
            ["target", "measured", "verdict"],
            [["summary build, largest Synthea patient <= 200 ms", f"p95 {worst:.2f} ms", verdict(worst <= TARGET_MS)]],
        )
    )


if __name__ == "__main__":
    main()
