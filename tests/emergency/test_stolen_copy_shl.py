"""The stolen-copy scan (tests/test_stolen_copy.py) with SMART Health Links in use: after importing
Synthea patients and making their emergency cards (CLI), passcode-protected sharing links, and
responder openings (right and wrong passcodes, file downloads) through the real app, the data
directory (database, WAL, logs) holds none of the patients' canaries, and no passcode, file key,
manifest id, location token or patient-written alert in the clear. On PostgreSQL the same for a
pg_dump of the vault's schema (against the baseline of an empty schema's dump, as in the vault's
own stolen-copy test)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from medvault.cli.main import app as cli_app
from medvault.emergency import links, reader, shl
from medvault.records import service
from tests.conftest import CANARY_SCAN, SYNTHEA
from tests.emergency.links_support import http_over_testclient
from tests.helpers import OPERATOR, open_vault
from tests.test_stolen_copy import _empty_dump, _found

pytestmark = pytest.mark.skipif(not SYNTHEA.is_dir(), reason="../shared Synthea data not present")

BASE = "https://127.0.0.1"
PASSCODE = "passcode-7391"
ALERT = "Irradiated blood only - fludarabine-treated patient"


def _scan(fhir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(CANARY_SCAN), "--fhir", str(fhir), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_links_cards_and_openings_leave_no_canaries(
    vault_env: Any, tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    from medvault.api.app import create_app

    subset = tmp_path / "synthea"
    subset.mkdir()
    for f in sorted(SYNTHEA.glob("*.json"))[:3]:
        shutil.copy(f, subset / f.name)
    settings = vault_env.settings
    env = {"MEDVAULT_ENVIRONMENT": "development", "MEDVAULT_DATABASE_URL": settings.database_url or ""}
    result = CliRunner().invoke(cli_app, ["import", "--data-dir", str(settings.data_dir), str(subset)], env=env)
    assert result.exit_code == 0, result.output
    with open_vault(vault_env) as v:
        patients = [p["id"] for p in service.search(vault=v, rtype="Patient", params=[("_count", "10")]).resources]
    assert len(patients) == 3
    secrets_seen: list[str] = [PASSCODE, ALERT]
    with TestClient(create_app(settings), base_url=BASE) as client:
        http = http_over_testclient(client)
        for pid in patients:
            args = ["emergency", "card", "--patient", pid, "--out", str(tmp_path / "cards" / pid), "--base-url", BASE]
            made = CliRunner().invoke(
                cli_app, [*args, "--alert", ALERT, "--label", "My card", "--data-dir", str(settings.data_dir)], env=env
            )
            assert made.exit_code == 0, made.output
            card_link = made.output.strip().splitlines()[-1]
            sharing = links.create_link(
                factory=vault_env.factory,
                crypto=vault_env.crypto,
                caller=OPERATOR,
                patient_id=pid,
                purpose="sharing",
                share="record",
                base_url=BASE,
                passcode=PASSCODE,
            )
            for link in (card_link, sharing.shlink()):
                payload = shl.parse_shlink(link)
                secrets_seen += [payload.key, payload.url.rsplit("/", 1)[1]]
            resolved = reader.resolve(card_link, recipient="Paramedic Lee", http=http)
            assert ALERT.encode() in resolved.files[0].plaintext
            with pytest.raises(Exception, match="passcode"):
                reader.resolve(sharing.shlink(), recipient="Dr Rao", passcode="wrong-guess", http=http)
            got = client.post(
                sharing.payload.url.removeprefix(BASE), json={"recipient": "Dr Rao", "passcode": PASSCODE}
            ).json()
            token = got["files"][0]["location"].rsplit("/", 1)[1]
            secrets_seen.append(token)
            assert client.get(f"/shl/f/{token}").status_code == 200
    outcome = _scan(subset, "--scan", str(settings.data_dir), "--exclude", str(settings.keys_path))
    assert "canaries:" in outcome.stdout
    assert outcome.returncode == 0, outcome.stdout + outcome.stderr
    assert "0 canaries found" in outcome.stdout
    blobs = [
        p.read_bytes() for p in settings.data_dir.rglob("*") if p.is_file() and settings.keys_path not in p.parents
    ]
    assert any(b"/shl/m/{link_id}" in b for b in blobs), "the request log must be among the scanned files"
    for secret in secrets_seen:
        assert not any(secret.encode() in b for b in blobs), "a link secret or alert is in the data directory"
    if backend == "postgresql":
        schema = request.getfixturevalue("pg_schema")
        pg_outcome = _scan(subset, "--pg-url", schema.libpq_url)
        baseline = _scan(subset, "--scan", str(_empty_dump(schema.libpq_url, request)))
        assert "canaries:" in pg_outcome.stdout
        # pg_dump's own preamble trips a few of the scanner's word lists: our data adds nothing.
        assert _found(pg_outcome.stdout) == _found(baseline.stdout), pg_outcome.stdout
        dump = tmp_path / "vault.sql"
        subprocess.run(
            ["pg_dump", "--no-owner", "-n", schema.name, "-f", str(dump), schema.libpq_url], check=True, timeout=120
        )
        dumped = dump.read_bytes()
        assert b"shl_link" in dumped  # the dump holds the links' table
        for secret in secrets_seen:
            assert secret.encode() not in dumped, "a link secret or alert is in the database dump"
    # Control: the secrets searched for are the real ones (the cards written outside the data dir hold them).
    card_keys = {shl.parse_shlink(p.read_text()).key for p in (tmp_path / "cards").rglob("emergency-link.txt")}
    assert len(card_keys) == 3
    assert card_keys <= set(secrets_seen)
