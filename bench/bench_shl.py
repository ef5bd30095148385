"""SMART Health Links serving time: manifest request + file download with 20 concurrent responders.

What it measures
    A real `medvault serve` (uvicorn, 127.0.0.1, a free port) over a data directory holding
    `--patients` Synthea patients, each with an emergency link (made with `emergency.links`, as the
    CLI card does). `--responders` threads (default 20), each with its own keep-alive connection,
    repeatedly open a random patient's link: `POST /shl/m/{id}` with a recipient, then `GET` the
    manifest's `location` (a fresh single-use token each time), and check the JWE is the link's
    (decrypting every `--check-every`-th one with the link's key). Each manifest opening and each
    download writes its access-log entry, as in production.
      * server-side: the time the app itself logs per request (`medvault.log`: from the ASGI call
        to the response's end, route template only), p50/p95 per route and for the pair (the sum of
        the two routes' samples in order, per responder request);
      * client-side, for information: wall time of the pair as a responder sees it on 127.0.0.1.

Target (issue 4)
    manifest request + file download p95 <= 50 ms server-side with 20 concurrent responders

How to run (from the repository root, after `pip install -e .`)
    python bench/bench_shl.py                     # 10 patients, 20 responders x 25 openings
    python bench/bench_shl.py --patients 20 --rounds 50
    python bench/bench_shl.py --think-ms 500      # responders pause between openings (not saturated)

`--think-ms 0` (the default) is a closed loop at saturation: 20 responders each opening again the
moment the last opening ends, so by Little's law the latency is 20 / throughput, whatever the code;
with a think time the figure is the serving time at 20 concurrent responders below saturation.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

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
)

TARGET_MS = 50.0
_LINE = re.compile(r" (POST|GET) (/shl/m/\{link_id\}|/shl/f/\{token\}) (\d{3}) ([0-9.]+)ms$")


def prepare(data_dir: Path, files: list[Path], patients: int) -> list[dict[str, str]]:
    """Initialise, import `patients` bundles, and make one emergency link each (shlink text)."""
    from medvault.config import load_settings
    from medvault.emergency import links
    from medvault.records.guard import OPERATOR_CLI
    from medvault.records.importer import Importer
    from medvault.store.setup import initialise

    settings = load_settings(data_dir=data_dir, environment="development")
    initialise(settings)
    engine, factory, crypto = open_vault_store(settings)
    try:
        Importer(factory, crypto).run(files[:patients])
        from medvault.records import service
        from medvault.records.guard import unit_of_work

        with unit_of_work(factory, crypto, OPERATOR_CLI) as vault:
            ids = [p["id"] for p in service.search(vault=vault, rtype="Patient", params=[("_count", "1000")]).resources]
        out = []
        for pid in ids:
            issued = links.create_link(
                factory=factory,
                crypto=crypto,
                caller=OPERATOR_CLI,
                patient_id=pid,
                purpose="emergency",
                base_url="http://127.0.0.1",
                label="Emergency card",
            )
            out.append({"mid": issued.payload.url.rsplit("/", 1)[1], "key": issued.payload.key})
        return out
    finally:
        engine.dispose()


def server(data_dir: Path, port: int, log: Path, workers: int = 1) -> subprocess.Popen[bytes]:
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
        "--workers",
        str(workers),
    ]
    with log.open("wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)


def wait_ready(proc: subprocess.Popen[bytes], port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                conn.close()
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit("server not ready")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds so far of a process and its live children (uvicorn's workers)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if stat.parent.name == str(pid) or fields[1] == str(pid):
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def responder(
    port: int,
    targets: list[dict[str, str]],
    rounds: int,
    seed: int,
    check_every: int,
    out: list[float],
    errors: list[str],
    think_ms: float = 0.0,
) -> None:
    from medvault.emergency import jwe, shl

    rng = random.Random(seed)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for n in range(rounds):
        if think_ms:
            time.sleep(rng.expovariate(1 / think_ms) / 1000)  # a responder reads before the next opening
        target = rng.choice(targets)
        t0 = time.perf_counter()
        conn.request(
            "POST",
            f"/shl/m/{target['mid']}",
            body=json.dumps({"recipient": f"Responder {seed}"}),
            headers={"Content-Type": "application/json"},
        )
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            errors.append(f"manifest {response.status}")
            continue
        location = json.loads(body)["files"][0]["location"]
        conn.request("GET", urlsplit(location).path)
        response = conn.getresponse()
        token = response.read()
        out.append((time.perf_counter() - t0) * 1000)
        if response.status != 200:
            errors.append(f"file {response.status}")
        elif n % check_every == 0:
            jwe.decrypt_file(token=token, key=shl.decode_key(target["key"]))
    conn.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    ap.add_argument("--patients", type=int, default=10)
    ap.add_argument("--responders", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=25, help="openings per responder (timed)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed openings per responder first")
    ap.add_argument("--check-every", type=int, default=5)
    ap.add_argument(
        "--think-ms",
        type=float,
        default=0.0,
        help="mean pause (exponential) between one responder's openings; 0: back to back (saturation)",
    )
    ap.add_argument("--workers", type=int, default=1, help="server processes (medvault serve --workers)")
    ap.add_argument("--quiet-busy", type=float, default=0.5)
    ap.add_argument("--quiet-wait", type=float, default=60.0)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()

    banner("bench_shl: SMART Health Link manifest + file over uvicorn on 127.0.0.1")
    files = source_files(args.source)
    with temp_dir("mvbench-shl-", keep=args.keep) as tmp:
        data_dir = tmp / "data"
        t0 = time.perf_counter()
        targets = prepare(data_dir, files, args.patients)
        print(f"   prepared  {len(targets)} patients with an emergency link in {time.perf_counter() - t0:.1f} s")
        port = free_port()
        proc = server(data_dir, port, tmp / "server.out", args.workers)
        try:
            wait_ready(proc, port)

            def wave(rounds: int, seed0: int) -> tuple[list[float], list[str], float]:
                samples: list[float] = []
                errors: list[str] = []
                threads = [
                    threading.Thread(
                        target=responder,
                        args=(port, targets, rounds, seed0 + i, args.check_every, samples, errors, args.think_ms),
                    )
                    for i in range(args.responders)
                ]
                start = time.perf_counter()
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                return samples, errors, time.perf_counter() - start

            wave(args.warmup, 10_000)
            # One file per server process with --workers (medvault.<pid>.log), else medvault.log.
            logs_dir = data_dir / "logs"
            skip = {p: len(p.read_text().splitlines()) for p in logs_dir.glob("medvault*.log")}
            print(f"   machine   {wait_for_quiet(args.quiet_busy, args.quiet_wait)}", flush=True)
            server_cpu0, client_cpu0 = cpu_seconds(proc.pid), own_cpu_seconds()
            client, errors, elapsed = wave(args.rounds, 0)
            server_cpu, client_cpu = cpu_seconds(proc.pid) - server_cpu0, own_cpu_seconds() - client_cpu0
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        per_route: dict[str, list[float]] = {"/shl/m/{link_id}": [], "/shl/f/{token}": []}
        statuses: dict[str, int] = {}
        new_lines = [
            line for p in logs_dir.glob("medvault*.log") for line in p.read_text().splitlines()[skip.get(p, 0) :]
        ]
        for line in new_lines:
            m = _LINE.search(line)
            if m:
                per_route[m.group(2)].append(float(m.group(4)))
                statuses[m.group(3)] = statuses.get(m.group(3), 0) + 1
        manifest, file = per_route["/shl/m/{link_id}"], per_route["/shl/f/{token}"]
        pairs = [a + b for a, b in zip(manifest, file, strict=False)]
        n = len(client)
        print(
            f"   load      {args.responders} responders x {args.rounds} openings (think {args.think_ms:.0f} ms):"
            f" {n} pairs in {elapsed:.1f} s"
        )
        print(f"             ({n / elapsed:.0f} pairs/s), statuses {statuses}, errors {len(errors)}")
        # Where the machine's CPU went: the server is one process (one GIL), and the load generator
        # shares the same cores, so at saturation the pairs/s is bounded by these two figures.
        print(
            f"   cpu       server {server_cpu / max(n, 1) * 1000:.2f} ms/pair"
            f" ({server_cpu / elapsed * 100:.0f}% of a core),"
            f" load generator {client_cpu / max(n, 1) * 1000:.2f} ms/pair"
        )
        rows: list[list[Any]] = []
        for name, values in (("manifest (server)", manifest), ("file (server)", file), ("pair (server)", pairs)):
            rows.append([name, len(values), f"{median(values):.1f}", f"{percentile(values, 95):.1f}"])
        rows.append(["pair (client, info)", n, f"{median(client):.1f}", f"{percentile(client, 95):.1f}"])
        print(table(["what", "n", "p50 ms", "p95 ms"], rows))
        p95 = percentile(pairs, 95) if pairs else float("inf")
        print(
            table(
                ["target", "measured", "verdict"],
                [["manifest + file p95 <= 50 ms (server)", f"{p95:.1f} ms", verdict(p95 <= TARGET_MS and not errors)]],
            )
        )


if __name__ == "__main__":
    main()
