"""Helpers shared by the bench/ scripts (not a benchmark itself).

Everything here is stdlib + medvault: the scripts must run on a fresh machine after `pip install -e .`.
"""

from __future__ import annotations

import os
import platform
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# Third-party test data is read in place, next to the repository (never copied into it).
DEFAULT_SOURCE = REPO.parent / "shared" / "data" / "synthea" / "r4-transaction-bundles"
PG_BASE = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def banner(title: str) -> None:
    """Print what ran where: figures from a noisy 2-core VM mean little without it."""
    print(f"== {title}")
    print(f"   date      {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}")
    print(f"   machine   {platform.node()} / {platform.machine()} / {os.cpu_count()} cores / {platform.platform()}")
    print(f"   python    {sys.version.split()[0]} ({sys.executable})")
    print(f"   code      {git_state()}")
    try:
        import medvault  # only to say which copy runs (PYTHONPATH may point elsewhere)

        print(f"   medvault  {Path(medvault.__file__).resolve().parent}")
    except ImportError:
        pass
    print(f"   load avg  {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)


def git_state() -> str:
    """Commit of the repository and whether src/ has uncommitted changes (figures are for that code)."""
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "src"], capture_output=True, text=True, check=True
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"{head}" + (f" + uncommitted changes in {len(dirty)} src file(s)" if dirty else " (src clean)")


def cpu_busy(interval: float = 1.0) -> float | None:
    """Fraction of all CPUs busy (incl. steal by other VMs) over `interval` seconds; None off Linux."""

    def sample() -> tuple[int, int] | None:
        try:
            fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields[:8]), idle  # user nice system idle iowait irq softirq steal

    a = sample()
    time.sleep(interval)
    b = sample()
    if a is None or b is None or b[0] == a[0]:
        return None
    return 1 - (b[1] - a[1]) / (b[0] - a[0])


def wait_for_quiet(max_busy: float, max_wait: float) -> str:
    """Before a timed run: wait (up to max_wait s) until the machine is at most max_busy busy.

    The VM is shared with other work; starting runs in a quiet moment lowers the noise a little.
    Returns a short note for the log."""
    if max_wait <= 0:
        return ""
    t0 = time.perf_counter()
    busy = cpu_busy()
    while busy is not None and busy > max_busy and time.perf_counter() - t0 < max_wait:
        busy = cpu_busy()
    if busy is None:
        return ""
    waited = time.perf_counter() - t0
    return f"busy {busy:.0%} at start" + (f" after waiting {waited:.0f} s" if waited > 1.5 else "")


def source_files(source: Path) -> list[Path]:
    if not source.is_dir():
        sys.exit(
            f"no Synthea bundles at {source}: put the shared data next to the repository "
            "(../shared/data/synthea/r4-transaction-bundles) or pass --source"
        )
    files = sorted(p for p in source.iterdir() if p.suffix == ".json" and p.is_file())
    if not files:
        sys.exit(f"no .json files in {source}")
    return files


def warm_page_cache(files: Sequence[Path]) -> int:
    """Read every input once so the first timed round does not pay for cold disk reads. Returns bytes."""
    return sum(len(p.read_bytes()) for p in files)


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (no interpolation): p95 of 20 samples is the 19th smallest."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def mib(n: float) -> str:
    return f"{n / 2**20:,.1f} MiB"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table: first column left-aligned, the others right-aligned."""
    cells = [[str(h) for h in headers], *[[str(c) for c in r] for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def temp_dir(prefix: str, parent: Path | None = None, *, keep: bool = False) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield path
    finally:
        if keep:
            print(f"   kept {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# storage size


def sqlite_bytes(db: Path) -> int:
    """Bytes of the SQLite database after a checkpoint: main file + -wal + -shm (what a backup copies)."""
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return sum(p.stat().st_size for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")) if p.exists())


@dataclass
class PgSchema:
    name: str
    url: str


@contextmanager
def pg_schema(prefix: str = "mvbench") -> Iterator[PgSchema]:
    """A throwaway schema on the local PostgreSQL (trust auth), dropped afterwards whatever happens."""
    from sqlalchemy import create_engine, text

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_BASE, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{name}"'))
        try:
            yield PgSchema(name, f"{PG_BASE}?options=-csearch_path%3D{name}")
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP SCHEMA "{name}" CASCADE'))
    finally:
        admin.dispose()


def pg_bytes(schema: str) -> int:
    """pg_total_relation_size (heap + indexes + TOAST) summed over the schema's tables, after VACUUM."""
    from sqlalchemy import create_engine, text

    admin = create_engine(PG_BASE, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            tables = list(
                conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = :s"), {"s": schema}).scalars()
            )
            for t in tables:
                conn.execute(text(f'VACUUM "{schema}"."{t}"'))
            total = conn.execute(
                text(
                    "SELECT coalesce(sum(pg_total_relation_size(format('%I.%I', schemaname, tablename))), 0) "
                    "FROM pg_tables WHERE schemaname = :s"
                ),
                {"s": schema},
            ).scalar_one()
        return int(total)
    finally:
        admin.dispose()


def pg_available() -> str | None:
    """None when the local PostgreSQL answers, else why not."""
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=2):
            pass
    except OSError as exc:
        return f"PostgreSQL not reachable at 127.0.0.1:5432 ({exc})"
    return None


# ---------------------------------------------------------------------------------------------
# medvault plumbing (same calls as cli/main.py's _open / run_import)


def open_vault_store(settings: Any) -> tuple[Any, Any, Any]:
    """(engine, sessionmaker, crypto context) for an initialised data directory."""
    from medvault.db import make_engine, make_sessionmaker
    from medvault.store import migrate
    from medvault.store.crypto_context import build_crypto

    engine = make_engine(settings)
    migrate.upgrade(engine)
    factory = make_sessionmaker(engine)
    with factory() as session:
        crypto = build_crypto(settings, session)
    return engine, factory, crypto


def describe_rejection(r: Any) -> str:
    """An import rejection by file position, never by name (Synthea file names are patients' names)."""
    return r.label + (f" at {r.location}" if r.location else "") + f": {r.reason}"
