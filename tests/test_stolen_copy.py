"""The "stolen copy" acceptance test: after importing the 100 Synthea patients, the data directory
(database with its WAL in place, logs) and a pg_dump hold none of their names, addresses, phones,
identifiers, birth dates or diagnoses. The same scanner run over the plaintext input finds them,
which proves the scan can fail."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from medvault.cli.main import app
from tests.conftest import CANARY_SCAN, SYNTHEA

pytestmark = pytest.mark.skipif(not SYNTHEA.is_dir(), reason="../shared Synthea data not present")


def scan(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(CANARY_SCAN), "--fhir", str(SYNTHEA), *args],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def test_scanner_finds_plaintext_input(tmp_path: Path) -> None:
    """Control: the scanner does find the canaries in plaintext copies of the input."""
    copy = tmp_path / "plain"
    copy.mkdir()
    for f in sorted(SYNTHEA.glob("*.json"))[:5]:
        (copy / f.name).write_bytes(f.read_bytes())
    result = scan("--scan", str(copy))
    assert result.returncode == 1, result.stdout
    for category in ("name", "address", "phone", "identifier", "birth_date", "clinical"):
        assert f"FOUND {category}" in result.stdout


def _no_checkpoint(dbapi_conn: Any, _record: Any) -> None:
    if type(dbapi_conn).__module__.startswith("sqlite3"):
        dbapi_conn.execute("PRAGMA wal_autocheckpoint=0")


def test_stolen_copy_reveals_nothing(settings: Any, backend: str, request: pytest.FixtureRequest) -> None:
    from sqlalchemy import Engine, event, text

    from medvault.db import make_engine

    # Hold a connection open across the import and switch off automatic checkpoints, so that the
    # SQLite write-ahead log still holds every page of the import when we scan: the journal must be
    # as blind as the database.
    event.listen(Engine, "connect", _no_checkpoint)
    engine = make_engine(settings)
    # A reader (deferred BEGIN): a writer's BEGIN IMMEDIATE here would lock the import out.
    conn = engine.execution_options(medvault_write=False).connect()
    try:
        conn.execute(text("SELECT 1"))
        env = {"MEDVAULT_DATABASE_URL": settings.database_url or "", "MEDVAULT_ENVIRONMENT": "development"}
        result = CliRunner().invoke(app, ["import", "--data-dir", str(settings.data_dir), str(SYNTHEA)], env=env)
        assert result.exit_code == 0, result.output
        assert "0 rejected" in result.output
        if backend == "sqlite":
            wal = Path(str(settings.data_dir / "medvault.db") + "-wal")
            assert wal.stat().st_size > 1_000_000, "the WAL should hold the import's pages"
        files = [p for p in settings.data_dir.rglob("*") if p.is_file()]
        assert any(p.parent.name == "logs" and p.stat().st_size > 0 for p in files), "import log must be scanned"
        outcome = scan("--scan", str(settings.data_dir), "--exclude", str(settings.keys_path))
        pg_outcome = pg_baseline = None
        if backend == "postgresql":
            schema = request.getfixturevalue("pg_schema")
            pg_outcome = scan("--pg-url", schema.libpq_url)
            pg_baseline = scan("--scan", str(_empty_dump(schema.libpq_url, request)))
    finally:
        event.remove(Engine, "connect", _no_checkpoint)
        conn.close()
        engine.dispose()
    assert "canaries:" in outcome.stdout
    assert outcome.returncode == 0, outcome.stdout + outcome.stderr
    assert "0 canaries found" in outcome.stdout
    if pg_outcome is not None and pg_baseline is not None:
        # pg_dump's own preamble ("SET lock_timeout", "standard_conforming_strings",
        # "check_function_bodies") contains words the scanner counts, even for an empty database.
        # So the PostgreSQL leg asserts that our data adds nothing to what an empty dump shows.
        assert _found(pg_outcome.stdout) == _found(pg_baseline.stdout), pg_outcome.stdout
        assert _found(pg_baseline.stdout) <= {"address", "clinical"}, pg_baseline.stdout


def _found(stdout: str) -> set[str]:
    return {line.split()[1].rstrip(":") for line in stdout.splitlines() if line.startswith("FOUND ")}


def _empty_dump(libpq_url: str, request: pytest.FixtureRequest) -> Path:
    """A pg_dump of an empty schema: the scanner's baseline for what pg_dump itself prints."""
    import uuid

    from sqlalchemy import create_engine, text

    name = f"mvempty_{uuid.uuid4().hex[:10]}"
    admin = create_engine(libpq_url.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE SCHEMA "{name}"'))
    out = Path(str(request.getfixturevalue("tmp_path"))) / "empty.sql"
    try:
        subprocess.run(["pg_dump", "--no-owner", "-n", name, "-f", str(out), libpq_url], check=True, timeout=120)
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP SCHEMA "{name}" CASCADE'))
        admin.dispose()
    return out
