"""`medvault audit checkpoint|verify` from the command line, on both backends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import update
from typer.testing import CliRunner

from medvault.audit import log as audit_log
from medvault.cli import main as cli
from medvault.db import unit_of_work
from medvault.store.models import AuditEntry

runner = CliRunner()


def _invoke(env: Any, *args: str) -> Any:
    settings = env.settings
    extra = {"MEDVAULT_DATABASE_URL": settings.database_url} if settings.database_url else {}
    return runner.invoke(
        cli.app,
        [*args, "--data-dir", str(settings.data_dir)],
        env={"MEDVAULT_ENVIRONMENT": "development", **extra},
    )


def test_checkpoint_then_verify_then_tamper(vault_env: Any, tmp_path: Path) -> None:
    with unit_of_work(vault_env.factory) as session:
        for n in range(6):
            audit_log.append(session=session, crypto=vault_env.crypto, event={"n": n}, patient_id=f"p{n % 2}")
    out = tmp_path / "cp-1.txt"
    result = _invoke(vault_env, "audit", "checkpoint", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert out.read_text().splitlines()[:2] == ["medvault", "6"]

    again = _invoke(vault_env, "audit", "checkpoint", "--out", str(out))
    assert again.exit_code == 1
    assert "never overwritten" in again.output

    ok = _invoke(vault_env, "audit", "verify", "--checkpoint", str(out))
    assert ok.exit_code == 0, ok.output
    assert "log verified: 6 entries" in ok.output

    with unit_of_work(vault_env.factory) as session:
        session.execute(update(AuditEntry).where(AuditEntry.seq == 2).values(blob=b"\xa1" * 32))
    bad = _invoke(vault_env, "audit", "verify", "--checkpoint", str(out))
    assert bad.exit_code == 1
    assert "TAMPERED" in bad.output
    assert "Traceback" not in bad.output


def test_verify_errors_are_one_line(vault_env: Any, tmp_path: Path) -> None:
    missing = _invoke(vault_env, "audit", "verify", "--checkpoint", str(tmp_path / "nope.txt"))
    assert missing.exit_code == 1
    assert len(missing.output.strip().splitlines()) == 1
    garbage = tmp_path / "garbage.txt"
    garbage.write_text("medvault\n1\nnot base64\n")
    result = _invoke(vault_env, "audit", "verify", "--checkpoint", str(garbage))
    assert result.exit_code == 1
    assert len(result.output.strip().splitlines()) == 1


def test_user_commands(vault_env: Any) -> None:
    from medvault.records import service
    from tests.helpers import open_vault

    with open_vault(vault_env) as v:
        pid = service.create(vault=v, resource={"resourceType": "Patient", "gender": "female"}).rid
    settings = vault_env.settings
    extra = {"MEDVAULT_DATABASE_URL": settings.database_url} if settings.database_url else {}
    env = {"MEDVAULT_ENVIRONMENT": "development", "COLUMNS": "200", **extra}
    base = ["--data-dir", str(settings.data_dir)]

    def run(*args: str, stdin: str | None = None) -> Any:
        return runner.invoke(cli.app, [*args, *base], env=env, input=stdin)

    made = run(
        "user",
        "create",
        "--login",
        "pat@example.org",
        "--role",
        "patient",
        "--patient",
        pid,
        "--password-stdin",
        stdin="a long and private passphrase\n",
    )
    assert made.exit_code == 0, made.output
    weak = run(
        "user", "create", "--login", "x2@example.org", "--role", "researcher", "--password-stdin", stdin="short\n"
    )
    assert weak.exit_code == 1
    assert len(weak.output.strip().splitlines()) == 1
    assert "short" not in weak.output.replace("too short", "")
    listed = run("user", "list")
    assert "pat@example.org" in listed.output
    # The console's width is fixed when the CLI module is imported (80 under xdist), so the id
    # may fold over two lines: compare without the table's layout.
    flat = "".join(ch for ch in listed.output if ch.isalnum() or ch in "/-")
    assert f"Patient/{pid}" in flat
    assert run("user", "disable", "pat@example.org").exit_code == 0
    assert "disabled" in run("user", "list").output
    assert run("user", "enable", "pat@example.org").exit_code == 0
    assert run("user", "reset-mfa", "pat@example.org").exit_code == 0
    missing = run("user", "disable", "nobody@example.org")
    assert missing.exit_code == 1
    assert "no account" in missing.output
