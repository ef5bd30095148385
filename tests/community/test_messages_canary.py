"""Acceptance: "a scan of the database finds no message text". Members send messages holding canary
phrases (a name, a rare diagnosis, a phone number, an e-mail address), one of them is reported (so
its sealed snapshot is stored too); then the SQLite file with its write-ahead log still in place,
the logs, and on PostgreSQL a pg_dump, are searched for the phrases: directly (bytes, any case,
UTF-8 and UTF-16) and with the vault's canary scanner fed a FHIR file holding the same canaries.
Controls: the same searches find the phrases once one is stored in plaintext, so they can fail."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, text

from medvault.community import messages, moderation
from medvault.db import make_engine, make_sessionmaker, unit_of_work
from medvault.store.crypto_context import build_crypto
from tests.community.support import NOW, new_member
from tests.conftest import CANARY_SCAN

NAME = ("Quillibet", "Marrowgate")
DIAGNOSIS = "Fibrodysplasia ossificans progressiva"
PHONE = "555 867 5309"
EMAIL = "quillibet.canary@marrowgate.example"
TEXTS = (
    f"Hi, I am {NAME[0]} {NAME[1]}; my {DIAGNOSIS} flared again this week",
    f"You can call me on {PHONE} or write to {EMAIL}",
    "Thanks, that is kind. The physio helped with my jaw too.",
)
# What a thief would search for: each word and number on its own, any case.
PHRASES = (*NAME, "fibrodysplasia", "ossificans", "progressiva", "5558675309", "867 5309", EMAIL, "physio helped")


def _fhir_canaries(folder: Path) -> Path:
    """The canaries in the shape the scanner reads them from: a Patient and a Condition."""
    folder.mkdir()
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {
                "resource": {
                    "resourceType": "Patient",
                    "name": [{"given": [NAME[0]], "family": NAME[1]}],
                    "telecom": [{"system": "phone", "value": PHONE}],
                }
            },
            {"resource": {"resourceType": "Condition", "code": {"coding": [{"display": DIAGNOSIS}]}}},
        ],
    }
    (folder / "canaries.json").write_text(json.dumps(bundle))
    return folder


def _scanner(fhir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(CANARY_SCAN), "--fhir", str(fhir), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def _hits(blob: bytes) -> set[str]:
    """Canary phrases in `blob` as UTF-8 or UTF-16 text, in any letter case."""
    views = [blob.lower()]
    for start in (0, 1):
        views.append(blob[start:].decode("utf-16-le", errors="ignore").encode("utf-8", errors="ignore").lower())
    return {p for p in PHRASES if any(p.lower().encode() in v for v in views)}


def _files(settings: Any) -> list[Path]:
    keys = settings.keys_path.resolve()
    return [p for p in settings.data_dir.rglob("*") if p.is_file() and keys not in p.resolve().parents]


def _no_checkpoint(dbapi_conn: Any, _record: Any) -> None:
    if type(dbapi_conn).__module__.startswith("sqlite3"):
        dbapi_conn.execute("PRAGMA wal_autocheckpoint=0")


def _pg_dump(request: pytest.FixtureRequest, out: Path) -> bytes:
    schema = request.getfixturevalue("pg_schema")
    subprocess.run(
        ["pg_dump", "--no-owner", "-n", schema.name, "-f", str(out), schema.libpq_url], check=True, timeout=300
    )
    return out.read_bytes()


def test_a_stolen_copy_holds_no_message_text(
    settings: Any, backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    # Automatic checkpoints off and a reader held open: the WAL still holds every page written.
    event.listen(Engine, "connect", _no_checkpoint)
    engine = make_engine(settings)
    reader = engine.execution_options(medvault_write=False).connect()
    try:
        reader.execute(text("SELECT 1"))
        factory = make_sessionmaker(engine)
        with factory() as session:
            crypto = build_crypto(settings, session)
        env = type("Env", (), {"factory": factory, "crypto": crypto})()
        _, ann = new_member(env)
        _, bob = new_member(env)
        with unit_of_work(factory) as session:
            conv = messages.start(session=session, crypto=crypto, member=ann, peer_id=bob.id, now=NOW)
            ids = [
                messages.send(
                    session=session,
                    crypto=crypto,
                    member=sender,
                    conversation_id=conv,
                    text=body,
                    now=NOW,
                    confirm_contact=True,
                )
                for sender, body in ((ann, TEXTS[0]), (ann, TEXTS[1]), (bob, TEXTS[2]))
            ]
        with unit_of_work(factory) as session:
            moderation.report(
                session=session,
                crypto=crypto,
                reporter=bob,
                kind="message",
                content_id=ids[1],
                reason="private-information",
                note=f"{NAME[1]} posted a phone number",
                now=NOW,
            )
        with unit_of_work(factory) as session:  # the members can still read it all
            seen = messages.thread(session=session, crypto=crypto, member=bob, conversation_id=conv, now=NOW)
        assert [m.text for m in seen.messages] == list(TEXTS)
        if backend == "sqlite":
            wal = Path(str(settings.data_dir / "medvault.db") + "-wal")
            assert wal.stat().st_size > 0, "the WAL should hold the messages' pages"
        canaries = _fhir_canaries(tmp_path / "fhir")

        found = {str(p): _hits(p.read_bytes()) for p in _files(settings)}
        assert {k: v for k, v in found.items() if v} == {}
        scanned = _scanner(canaries, "--scan", str(settings.data_dir), "--exclude", str(settings.keys_path))
        assert "canaries:" in scanned.stdout
        assert scanned.returncode == 0, scanned.stdout
        dump = b""
        if backend == "postgresql":
            dump = _pg_dump(request, tmp_path / "dump.sql")
            assert b"community_message" in dump  # the table is there, with rows ...
            assert _hits(dump) == set()  # ... and none of the words
            assert _scanner(canaries, "--scan", str(tmp_path / "dump.sql")).returncode == 0

        # Control: one message text stored in plaintext is found by both searches.
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE plain_control (body TEXT)"))
            conn.execute(text("INSERT INTO plain_control VALUES (:b)"), {"b": TEXTS[0]})
        if backend == "sqlite":
            plain = set().union(*(_hits(p.read_bytes()) for p in _files(settings)))
            caught = _scanner(canaries, "--scan", str(settings.data_dir), "--exclude", str(settings.keys_path))
        else:
            plain = _hits(_pg_dump(request, tmp_path / "control.sql"))
            caught = _scanner(canaries, "--scan", str(tmp_path / "control.sql"))
        assert {*NAME, "fibrodysplasia"} <= plain
        assert caught.returncode == 1, caught.stdout
        assert "FOUND name" in caught.stdout
        assert "FOUND clinical" in caught.stdout
    finally:
        event.remove(Engine, "connect", _no_checkpoint)
        reader.close()
        engine.dispose()
