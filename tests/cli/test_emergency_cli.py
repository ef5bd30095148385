"""`medvault emergency card`: the files it writes, the link it prints (it resolves to the summary),
reuse of the live link on a second run, and errors as one line."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from medvault.cli import main as cli
from medvault.emergency import reader
from medvault.emergency.card import HTML_FILE, LINK_FILE, QR_FILE
from tests.emergency.links_support import ALLERGY, BASE, FLAG, http_over_testclient, make_patient

runner = CliRunner()


def _invoke(env: Any, *args: str) -> Any:
    settings = env.settings
    extra = {"MEDVAULT_DATABASE_URL": settings.database_url} if settings.database_url else {}
    return runner.invoke(
        cli.app,
        [*args, "--data-dir", str(settings.data_dir)],
        env={"MEDVAULT_ENVIRONMENT": "development", **extra},
    )


@pytest.fixture(params=["sqlite"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)  # a face over the service: tests/emergency/test_links.py covers both DBs


def test_card_files_and_link(vault_env: Any, tmp_path: Path) -> None:
    person = make_patient(vault_env)
    out = tmp_path / "card"
    args = ("emergency", "card", "--patient", person.patient_id, "--out", str(out), "--base-url", BASE)
    result = _invoke(vault_env, *args, "--label", "Ada's card", "--alert", "Irradiated blood only")
    assert result.exit_code == 0, result.output
    names = {p.name for p in out.iterdir()}
    assert names == {"emergency-card.pdf", LINK_FILE, QR_FILE, HTML_FILE}
    for p in out.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
    assert (out / "emergency-card.pdf").read_bytes().startswith(b"%PDF")
    link = result.output.strip().splitlines()[-1]
    assert link.startswith(f"{BASE}/shl/view#shlink:/")
    assert (out / LINK_FILE).read_text().strip() == link
    assert "new emergency link" in result.output
    from medvault.api.app import create_app

    with TestClient(create_app(vault_env.settings), base_url=BASE) as client:
        resolved = reader.resolve(link, recipient="Paramedic", http=http_over_testclient(client))
    text = resolved.files[0].plaintext.decode()
    for wanted in (ALLERGY, FLAG, "Irradiated blood only"):
        assert wanted in text
    from medvault.records import service
    from tests.helpers import open_vault

    with open_vault(vault_env) as v:  # the record changes: the next card run rebuilds the summary
        service.create(
            vault=v,
            resource={
                "resourceType": "AllergyIntolerance",
                "patient": {"reference": f"Patient/{person.patient_id}"},
                "clinicalStatus": {"coding": [{"code": "active"}]},
                "code": {"text": "Allergy to latex"},
            },
        )
    again = _invoke(vault_env, *args)
    assert again.exit_code == 0, again.output
    assert "existing emergency link" in again.output
    assert again.output.strip().splitlines()[-1] == link
    with TestClient(create_app(vault_env.settings), base_url=BASE) as client:
        resolved = reader.resolve(link, recipient="Paramedic", http=http_over_testclient(client))
    assert "Allergy to latex" in resolved.files[0].plaintext.decode()


@pytest.mark.parametrize(
    ("patient", "base", "needle"),
    [
        ("no-such-patient", BASE, "not known"),
        ("bad id!", BASE, "FHIR id"),
        (None, "http://example.org", "https"),
    ],
)
def test_errors_are_one_line(vault_env: Any, tmp_path: Path, patient: str | None, base: str, needle: str) -> None:
    pid = patient or make_patient(vault_env).patient_id
    result = _invoke(vault_env, "emergency", "card", "--patient", pid, "--out", str(tmp_path), "--base-url", base)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert needle in lines[0]
    assert "Traceback" not in result.output
