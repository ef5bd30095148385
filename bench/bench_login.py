"""Other requests' latency during a burst of concurrent sign-ins (issue 3: Argon2id off the event loop).

What it measures
    A real `medvault serve` (uvicorn, one process) on 127.0.0.1 over a fresh SQLite vault with one
    Patient, one Observation and `--logins` + 1 patient accounts (production Argon2id: t=3, 64 MiB).
    "Other requests" are, alternately, an authenticated page (GET / with a session cookie) and a
    FHIR read by id with the operator token (both write an access-log entry, so both need the
    database's write lock). The script measures their latency:

    * idle: `--idle` sequential requests with nothing else running;
    * burst: the same requests, sequential, while `--logins` sign-ins are sent at once, each from its
      own thread, connection, account and loopback address (127.0.0.x: the per-address throttle
      never refuses one before hashing), every other one with a wrong password. The burst repeats
      `--bursts` times (each time with fresh addresses); other requests run until the last sign-in
      of the burst has answered.

    It prints idle p95, burst p95, their ratio (target < 3), and the sign-ins' own latency. p95 is
    nearest-rank over all requests of the phase.

How to run (from the repository root, after `pip install -e .`)
    python bench/bench_login.py
    python bench/bench_login.py --logins 20 --bursts 3 --idle 300
"""

from __future__ import annotations

import argparse
import http.client
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import banner, free_port, median, open_vault_store, percentile, table, temp_dir, verdict, wait_for_quiet

PASSWORD = "correct horse battery staple 42"  # noqa: S105 - a throwaway benchmark vault
WRONG = "incorrect horse battery staple 42"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def prepare(data_dir: Path, logins: int) -> tuple[str, str, list[str]]:
    """Initialise a vault with one Patient, one Observation and `logins` + 1 patient accounts.
    Returns (operator token, observation id, login names); the last name is the page client's."""
    from medvault.auth import accounts
    from medvault.auth.passwords import Hasher
    from medvault.config import load_settings
    from medvault.db import unit_of_work
    from medvault.records import guard, service
    from medvault.store.setup import initialise

    settings = load_settings(data_dir=data_dir, environment="benchmark")
    initialise(settings)
    engine, factory, crypto = open_vault_store(settings)
    try:
        with guard.unit_of_work(factory, crypto, guard.OPERATOR_CLI) as vault:
            pid = service.create(vault=vault, resource={"resourceType": "Patient", "gender": "female"}).rid
            oid = service.create(
                vault=vault,
                resource={
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"text": "bench"},
                    "subject": {"reference": f"Patient/{pid}"},
                },
            ).rid
        hasher = Hasher()
        names = [f"bench{i}@example.org" for i in range(logins + 1)]
        with unit_of_work(factory) as session:
            for name in names:
                accounts.create_account(
                    session=session,
                    crypto=crypto,
                    hasher=hasher,
                    login=name,
                    password=PASSWORD,
                    role="patient",
                    patient_id=pid,
                    now=datetime.now(UTC),
                )
        return settings.token_path.read_text().strip(), oid, names
    finally:
        engine.dispose()


def sign_in(port: int, login: str, password: str, source: str) -> tuple[int, float, str | None]:
    """POST /login from `source` (a loopback address); (status, seconds, session cookie or None)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120, source_address=(source, 0))
    try:
        body = urlencode({"login": login, "password": password, "code": ""})
        t0 = time.perf_counter()
        # As a browser sends it: sign-in refuses a form POST that does not name our own origin.
        conn.request("POST", "/login", body=body, headers={**FORM, "Origin": f"http://127.0.0.1:{port}"})
        response = conn.getresponse()
        response.read()
        elapsed = time.perf_counter() - t0
        cookie = response.getheader("set-cookie")
        return response.status, elapsed, cookie.split(";", 1)[0] if cookie else None
    finally:
        conn.close()


class Other:
    """The 'other requests': page GET and FHIR read by id, alternately, on one keep-alive connection."""

    def __init__(self, port: int, cookie: str, token: str, oid: str) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.requests = [
            ("/", {"Cookie": cookie}),
            (f"/fhir/Observation/{oid}", {"Authorization": f"Bearer {token}"}),
        ]
        self.n = 0

    def one(self) -> tuple[str, float]:
        path, headers = self.requests[self.n % 2]
        self.n += 1
        t0 = time.perf_counter()
        self.conn.request("GET", path, headers=headers)
        response = self.conn.getresponse()
        response.read()
        elapsed = time.perf_counter() - t0
        if response.status != 200:
            raise SystemExit(f"GET {path.split('/')[1] or 'page'} answered {response.status}")
        return ("page" if path == "/" else "read"), elapsed


def burst(port: int, other: Other, names: list[str], first_host: int) -> tuple[list[tuple[str, float]], list[float]]:
    """Sign in with every name at once (every other one with a wrong password) and keep sending
    other requests until the last sign-in answered. Returns (other samples, sign-in latencies)."""
    results: list[tuple[int, float, str | None]] = []
    lock = threading.Lock()
    go = threading.Barrier(len(names) + 1)

    def attempt(i: int, name: str) -> None:
        go.wait(timeout=60)
        outcome = sign_in(port, name, PASSWORD if i % 2 == 0 else WRONG, f"127.0.0.{first_host + i}")
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=attempt, args=(i, n), daemon=True) for i, n in enumerate(names)]
    for t in threads:
        t.start()
    go.wait(timeout=60)
    samples = []
    while any(t.is_alive() for t in threads):
        samples.append(other.one())
    for t in threads:
        t.join()
    statuses = sorted(r[0] for r in results)
    ok = sum(1 for r in results if r[0] == 303)
    failed = sum(1 for r in results if r[0] == 401)
    # Right passwords must sign in and wrong ones fail: a 429 would mean the throttle refused
    # before hashing, and the burst would not have measured what it claims.
    if ok != (len(names) + 1) // 2 or failed != len(names) // 2:
        raise SystemExit(f"expected {(len(names) + 1) // 2} sign-ins and {len(names) // 2} refusals, got {statuses}")
    return samples, [r[1] for r in results]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--logins", type=int, default=20, help="concurrent sign-ins per burst")
    parser.add_argument("--bursts", type=int, default=3)
    parser.add_argument("--idle", type=int, default=300, help="other requests measured while idle")
    parser.add_argument("--quiet-busy", type=float, default=0.3)
    parser.add_argument("--quiet-wait", type=float, default=10.0)
    args = parser.parse_args()
    if args.logins * args.bursts > 250:
        raise SystemExit("--logins x --bursts must be at most 250 (one loopback address each)")
    banner("bench_login: other requests' latency during a burst of concurrent sign-ins")
    from bench_api import server, wait_ready

    with temp_dir("mvbench-login") as tmp:
        data_dir = tmp / "data"
        t0 = time.perf_counter()
        token, oid, names = prepare(data_dir, args.logins)
        print(f"   prepared  {len(names)} accounts (production Argon2id) in {time.perf_counter() - t0:.1f} s")
        port = free_port()
        log_path = tmp / "server.log"
        with server(data_dir, port, log_path) as proc:
            wait_ready(proc, port, log_path)
            status, took, cookie = sign_in(port, names[-1], PASSWORD, "127.0.0.1")
            if status != 303 or cookie is None:
                raise SystemExit(f"the page client could not sign in: {status}")
            print(f"   one sign-in alone: {took * 1e3:.0f} ms")
            other = Other(port, cookie, token, oid)
            for _ in range(50):
                other.one()  # warm-up
            print(f"   {wait_for_quiet(args.quiet_busy, args.quiet_wait)}", flush=True)
            other.conn.close()  # the server drops keep-alive connections idle for 5 s: a fresh one
            other.one()
            idle = [other.one() for _ in range(args.idle)]
            during: list[tuple[str, float]] = []
            login_times: list[float] = []
            for b in range(args.bursts):
                samples, took_each = burst(port, other, names[:-1], 2 + b * args.logins)
                during += samples
                login_times += took_each
                print(
                    f"   burst {b + 1}: {len(samples)} other requests, p95 "
                    f"{percentile([s for _, s in samples], 95) * 1e3:.1f} ms; sign-ins p50 "
                    f"{median(took_each) * 1e3:.0f} ms, max {max(took_each) * 1e3:.0f} ms",
                    flush=True,
                )
                # A short idle stretch between bursts, measured too (it shows the server recovered).
                idle += [other.one() for _ in range(args.idle // max(1, args.bursts))]
            other.conn.close()
    rows: list[tuple[Any, ...]] = []
    for kind in ("all", "page", "read"):
        pick_idle = [s for k, s in idle if kind in ("all", k)]
        pick_burst = [s for k, s in during if kind in ("all", k)]
        p_idle, p_burst = percentile(pick_idle, 95) * 1e3, percentile(pick_burst, 95) * 1e3
        ratio = p_burst / p_idle
        rows.append(
            (
                f"other requests ({kind}) p95 idle / burst (ms), n={len(pick_idle)}/{len(pick_burst)}",
                f"{p_idle:.1f} / {p_burst:.1f}",
                "",
                "",
            )
        )
        rows.append((f"other requests ({kind}) burst p95 / idle p95", f"{ratio:.2f}", "< 3", verdict(ratio < 3)))
    rows.append(
        (
            f"sign-ins during bursts p50 / p95 / max (ms), n={len(login_times)}",
            f"{median(login_times) * 1e3:.0f} / {percentile(login_times, 95) * 1e3:.0f} / {max(login_times) * 1e3:.0f}",
            "",
            "",
        )
    )
    print()
    print(table(["summary", "figure", "target", ""], rows))
    print(f"finished {datetime.now(UTC).strftime('%H:%M UTC')}")


if __name__ == "__main__":
    main()
