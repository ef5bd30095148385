"""The command line: init, import, re-import, keys rotate, demo, and one-line errors."""

from __future__ import annotations

import os
import shutil
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from medvault.cli import main as cli
from tests.conftest import SYNTHEA

runner = CliRunner()


def invoke(*args: str, env: dict[str, str] | None = None) -> Any:
    return runner.invoke(cli.app, list(args), env={"MEDVAULT_ENVIRONMENT": "development", **(env or {})})


def db_env(settings: Any) -> dict[str, str]:
    return {"MEDVAULT_DATABASE_URL": settings.database_url} if settings.database_url else {}


def test_init_makes_private_keys_and_token(tmp_path: Path) -> None:
    data = tmp_path / "d"
    result = invoke("init", "--data-dir", str(data))
    assert result.exit_code == 0, result.output
    assert "created" in result.output
    assert stat.S_IMODE((data / "keys").stat().st_mode) == 0o700
    for f in [*(data / "keys").iterdir(), data / "operator-token", data / "medvault.db"]:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    token = (data / "operator-token").read_text()
    again = invoke("init", "--data-dir", str(data))
    assert again.exit_code == 0
    assert "already there" in again.output
    assert (data / "operator-token").read_text() == token  # never overwritten


def test_sqlite_file_outside_the_data_dir_is_private_too(tmp_path: Path) -> None:
    db = tmp_path / "elsewhere" / "vault.sqlite"
    db.parent.mkdir()
    result = invoke("init", "--data-dir", str(tmp_path / "d"), "--database-url", f"sqlite:///{db}")
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(db.stat().st_mode) == 0o600


def test_separate_key_dir(tmp_path: Path) -> None:
    result = invoke("init", "--data-dir", str(tmp_path / "d"), "--key-dir", str(tmp_path / "k"))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "k" / "index.key").exists()
    assert not (tmp_path / "d" / "keys").exists()


def _two_bundles(tmp_path: Path) -> Path:
    src = tmp_path / "in"
    src.mkdir()
    for f in sorted(SYNTHEA.glob("*.json"))[:2]:
        shutil.copy(f, src / f.name)
    return src


@pytest.mark.skipif(not SYNTHEA.is_dir(), reason="../shared Synthea data not present")
def test_import_and_reimport_creates_no_duplicates(settings: Any, tmp_path: Path) -> None:
    src = _two_bundles(tmp_path)
    first = invoke("import", "--data-dir", str(settings.data_dir), str(src), env=db_env(settings))
    assert first.exit_code == 0, first.output
    assert "0 rejected" in first.output
    assert "Observation" in first.output
    second = invoke("import", "--data-dir", str(settings.data_dir), str(src), env=db_env(settings))
    assert second.exit_code == 0, second.output
    total_line = next(line for line in second.output.splitlines() if "total" in line)
    cells = [c.strip() for c in total_line.strip("│ ").split("│")]
    assert cells[1:3] == ["0", "0"]  # created, updated: nothing new the second time
    assert int(cells[3]) > 100


def test_import_reports_rejections(tmp_path: Path) -> None:
    data = tmp_path / "d"
    assert invoke("init", "--data-dir", str(data)).exit_code == 0
    src = tmp_path / "in"
    src.mkdir()
    (src / "good.json").write_text('{"resourceType": "Patient", "id": "p1", "gender": "female"}')
    (src / "bad.json").write_text('{"resourceType": "Patient", "id": "p2", "birthDate": "sometimes"}')
    (src / "broken.json").write_text('{"resourceType": ')
    (src / "lines.ndjson").write_text('{"resourceType": "Patient", "id": "p3"}\n{"resourceType": "Nope"}\n')
    result = invoke("import", "--data-dir", str(data), str(src))
    assert result.exit_code == 0, result.output
    assert "3 rejected" in result.output
    for label in ("file 1", "file 2", "file 4 line 2"):
        assert label in result.output
    for name in ("bad.json", "broken.json", "lines.ndjson"):
        assert name not in result.output  # file names can be patients' names
    assert "sometimes" not in result.output  # rejected values are never echoed


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (["import", "/definitely/not/here"], {}, "no such file or folder"),
        (["serve"], {}, "medvault init"),
        (["init"], {"MEDVAULT_UNSAFE_DISABLE_ENCRYPTION": "1", "MEDVAULT_ENVIRONMENT": "production"}, "benchmark"),
    ],
)
def test_errors_are_one_line(tmp_path: Path, args: list[str], env: dict[str, str], needle: str) -> None:
    result = runner.invoke(cli.app, [*args, "--data-dir", str(tmp_path / "empty")], env=env)
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert needle in lines[0]
    assert "Traceback" not in result.output


def test_missing_key_is_one_line(tmp_path: Path) -> None:
    data = tmp_path / "d"
    assert invoke("init", "--data-dir", str(data)).exit_code == 0
    (data / "keys" / "index.key").unlink()
    result = invoke("import", "--data-dir", str(data), str(tmp_path))
    assert result.exit_code == 1
    assert "no keys" in result.output or "index key not found" in result.output
    assert len([x for x in result.output.splitlines() if x.strip()]) == 1


def test_keys_rotate_cli(tmp_path: Path) -> None:
    data = tmp_path / "d"
    assert invoke("init", "--data-dir", str(data)).exit_code == 0
    src = tmp_path / "in"
    src.mkdir()
    (src / "p.json").write_text('{"resourceType": "Patient", "id": "p1", "name": [{"family": "Rota"}]}')
    assert invoke("import", "--data-dir", str(data), str(src)).exit_code == 0
    before = sorted(p.name for p in (data / "keys").glob("kek-*.key"))
    result = invoke("keys", "rotate", "--data-dir", str(data))
    assert result.exit_code == 0, result.output
    assert "re-wrapped 2 data keys" in result.output
    after = sorted(p.name for p in (data / "keys").glob("kek-*.key"))
    assert set(before).isdisjoint(after)
    assert sorted(p.name for p in (data / "keys" / "retired").iterdir()) == before


def test_demo_generates_synthetic_patients_without_shared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("medvault.demo_data.default_source", lambda: None)
    data = tmp_path / "d"
    result = invoke("demo", "--data-dir", str(data), "--no-serve")
    assert result.exit_code == 0, result.output
    assert "generating 100 synthetic patients" in result.output
    assert "0 rejected" in result.output
    assert "http://127.0.0.1:8000/fhir" in result.output
    assert not any(p.suffix == ".json" for p in data.rglob("*")), "no plaintext copy on disk"
    # A patient sign-in is printed once, with a generated passphrase that only exists as a hash.
    assert "patient@demo.medvault.invalid" in result.output
    password = result.output.split("password  ", 1)[1].split()[0]
    # And a clinician, with an authenticator already set up and the patient's grant.
    assert "clinician@demo.medvault.invalid" in result.output
    clinician_part = result.output.split("clinician sign-in", 1)[1]
    clinician_password = clinician_part.split("password  ", 1)[1].split()[0]
    secret = clinician_part.split("authenticator key  ", 1)[1].split()[0]
    again = invoke("demo", "--data-dir", str(data), "--no-serve")
    assert again.exit_code == 0, again.output
    assert password not in again.output
    assert clinician_password not in again.output
    assert secret not in again.output
    assert "as printed when this data directory was first set up" in again.output
    from medvault.auth import accounts, totp
    from medvault.auth.passwords import Hasher
    from medvault.config import load_settings
    from medvault.db import make_engine, unit_of_work
    from medvault.db import make_sessionmaker as sessions_for
    from medvault.records import guard, service
    from medvault.store.crypto_context import build_crypto

    settings = load_settings(data_dir=data, environment="development")
    engine = make_engine(settings)
    try:
        with unit_of_work(sessions_for(engine)) as session:
            crypto = build_crypto(settings, session)
            result_ok = accounts.authenticate(
                session=session,
                crypto=crypto,
                hasher=Hasher(),
                login="patient@demo.medvault.invalid",
                password=password,
                second_factor=None,
                client_address="127.0.0.1",
                now=datetime.now(UTC),
            )
            clinician_ok = accounts.authenticate(
                session=session,
                crypto=crypto,
                hasher=Hasher(),
                login="clinician@demo.medvault.invalid",
                password=clinician_password,
                second_factor=totp.totp_code(secret=secret, step=totp.time_step(datetime.now(UTC))),
                client_address="127.0.0.1",
                now=datetime.now(UTC),
            )
        assert clinician_ok.status == "ok"
        assert clinician_ok.actor is not None
        assert not clinician_ok.actor.needs_mfa_enrolment
        caller = guard.Caller(actor=clinician_ok.actor, via="page")
        with guard.unit_of_work(sessions_for(engine), crypto, caller) as vault:
            (shared,) = service.granted_patients(vault=vault, now=datetime.now(UTC))
        assert shared.grant.sensitive == frozenset()
        assert shared.grant.resource_types is None
        assert shared.grant.end is not None
        assert 364 <= (shared.grant.end - datetime.now(UTC)).days <= 365
    finally:
        engine.dispose()
    assert result_ok.status == "ok"


def test_benchmark_switch_refused_outside_benchmarks() -> None:
    from medvault.config import load_settings
    from medvault.errors import ConfigError

    with pytest.raises(ConfigError):
        load_settings(unsafe_disable_encryption=True, environment="production")
    assert load_settings(unsafe_disable_encryption=True, environment="benchmark").unsafe_disable_encryption
    assert os.environ.get("MEDVAULT_UNSAFE_DISABLE_ENCRYPTION") is None
    for environment in ("production", "development"):
        with pytest.raises(ConfigError):
            load_settings(unsafe_disable_audit=True, environment=environment)
    assert load_settings(unsafe_disable_audit=True, environment="benchmark").unsafe_disable_audit
