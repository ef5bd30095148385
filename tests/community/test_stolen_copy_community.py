"""The stolen-copy scan (tests/test_stolen_copy.py) with the community in use: Synthea patients are
imported, then each joins the community and writes their own name, street, town, postcode, phone,
birth date and diagnoses into their profile (every field, every audience), posts, replies, private
messages, a report and the directory (their ZIP code and name). The data directory (database,
WAL, logs) still holds none of those canaries; on PostgreSQL a pg_dump adds nothing to an empty
schema's baseline. The control: the same scanner finds the canaries in the texts written, kept
outside the data directory."""

from __future__ import annotations

import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from medvault.auth.accounts import Actor
from medvault.cli.main import app as cli_app
from medvault.community import directory, members, messages, moderation, posts, profiles
from medvault.db import unit_of_work
from tests.conftest import CANARY_SCAN, SYNTHEA
from tests.test_stolen_copy import _empty_dump, _found

pytestmark = pytest.mark.skipif(not SYNTHEA.is_dir(), reason="../shared Synthea data not present")

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def _scan(fhir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(CANARY_SCAN), "--fhir", str(fhir), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def _facts(bundle: dict[str, Any]) -> dict[str, str]:
    """What a careless member might write about themselves: their record's identifying facts."""
    resources = [e["resource"] for e in bundle["entry"]]
    patient = next(r for r in resources if r["resourceType"] == "Patient")
    name = patient["name"][0]
    address = patient["address"][0]
    conditions = [r["code"]["text"] for r in resources if r["resourceType"] == "Condition" and "text" in r["code"]]
    return {
        "id": patient["id"],
        "name": f"{name['given'][0]} {name['family']}",
        "street": address["line"][0],
        "town": address["city"],
        "postcode": address.get("postalCode", "02139"),
        "phone": patient["telecom"][0]["value"],
        "birth": patient["birthDate"],
        "ssn": next(
            i["value"] for i in patient["identifier"] if i.get("type", {}).get("text") == "Social Security Number"
        ),
        "diagnosis": conditions[0] if conditions else "Prediabetes",
        "more": "; ".join(conditions[1:6]),
    }


def test_profiles_posts_messages_and_reports_leave_no_canaries(
    vault_env: Any, tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    subset = tmp_path / "synthea"
    subset.mkdir()
    files = sorted(SYNTHEA.glob("*.json"))[:3]
    for f in files:
        shutil.copy(f, subset / f.name)
    settings = vault_env.settings
    env = {"MEDVAULT_ENVIRONMENT": "development", "MEDVAULT_DATABASE_URL": settings.database_url or ""}
    result = CliRunner().invoke(cli_app, ["import", "--data-dir", str(settings.data_dir), str(subset)], env=env)
    assert result.exit_code == 0, result.output
    people = [_facts(orjson.loads(f.read_bytes())) for f in files]
    written: list[str] = []
    joined = []
    for facts in people:
        actor = Actor(account_id=facts["id"].replace("-", "")[:32], role="patient", patient_id=facts["id"])
        with unit_of_work(vault_env.factory) as session:
            member = members.join(session=session, crypto=vault_env.crypto, actor=actor, now=NOW)
            bio = (
                f"I am {facts['name']}, born {facts['birth']}, I live at {facts['street']}, {facts['town']}. "
                f"Call me on {facts['phone']}. SSN {facts['ssn']}. Also: {facts['more']}"
            )
            values = {
                "display_name": facts["name"],
                "birth": facts["birth"][:4],
                "sex": "female",
                "country": "United States",
                "postcode": facts["postcode"],
                "diagnosis": facts["diagnosis"],
                "subtype": facts["more"][:200],
                "treatment": facts["more"],
                "bio": bio,
            }
            profiles.update(
                session=session,
                crypto=vault_env.crypto,
                member=member,
                values=values,
                visibility=dict.fromkeys(values, "everyone"),
                record_linked=True,
                confirm=True,
                now=NOW,
            )
            post_id = posts.create(
                session=session,
                crypto=vault_env.crypto,
                member=member,
                kind="blog",
                title=f"{facts['name']} on {facts['diagnosis']}",
                body=bio,
                audience="everyone",
                confirm=True,
                now=NOW,
            )
            directory.opt_in(
                session=session,
                crypto=vault_env.crypto,
                member=member,
                country="US",
                postcode=facts["postcode"][:5],
                name=facts["name"],
                now=NOW,
            )
        joined.append((actor, member, post_id))
        written += [bio, values["display_name"], values["subtype"]]
    (_ann_actor, ann, ann_post), (b_actor, bob, _bob_post) = joined[0], joined[1]
    text = f"{people[0]['name']} here, {people[0]['street']}, {people[0]['phone']}, {people[0]['diagnosis']}"
    with unit_of_work(vault_env.factory) as session:
        posts.reply(
            session=session,
            crypto=vault_env.crypto,
            actor=b_actor,
            member=bob,
            post_id=ann_post,
            body=f"Dear {people[0]['name']}, I also have {people[0]['diagnosis']}",
            quote_id=None,
            confirm=True,
            now=NOW,
        )
        conv = messages.start(session=session, crypto=vault_env.crypto, member=ann, peer_id=bob.id, now=NOW)
        message_id = messages.send(
            session=session,
            crypto=vault_env.crypto,
            member=ann,
            conversation_id=conv,
            text=text,
            confirm_contact=True,
            now=NOW,
        )
        messages.report(
            session=session,
            crypto=vault_env.crypto,
            member=bob,
            conversation_id=conv,
            message_id=message_id,
            reason="private-information",
            note=f"They posted {people[0]['street']}",
            now=NOW,
        )
    written.append(text)
    with unit_of_work(vault_env.factory) as session:
        assert [
            r.kind for r in moderation.queue(session=session, crypto=vault_env.crypto, actor=_moderator(), now=NOW)
        ] == ["message"]
    # Control: the scanner finds the canaries in the texts the members wrote.
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "written.txt").write_text("\n".join(written))
    control = _scan(subset, "--scan", str(plain))
    assert control.returncode == 1, control.stdout
    for category in ("name", "address", "phone", "identifier", "clinical"):
        assert f"FOUND {category}" in control.stdout
    outcome = _scan(subset, "--scan", str(settings.data_dir), "--exclude", str(settings.keys_path))
    assert "canaries:" in outcome.stdout
    assert outcome.returncode == 0, outcome.stdout + outcome.stderr
    assert "0 canaries found" in outcome.stdout
    if backend == "postgresql":
        schema = request.getfixturevalue("pg_schema")
        pg_outcome = _scan(subset, "--pg-url", schema.libpq_url)
        baseline = _scan(subset, "--scan", str(_empty_dump(schema.libpq_url, request)))
        assert "canaries:" in pg_outcome.stdout
        assert _found(pg_outcome.stdout) == _found(baseline.stdout), pg_outcome.stdout


def _moderator() -> Actor:
    return Actor(account_id="m" * 32, role="moderator", mfa_enrolled=True)
