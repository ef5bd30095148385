"""Initialising a data directory: keys, schema, index sizing, and the operator token.

The operator token is an ordinary SMART access token with scope system/*.cruds, stored in the
token table only as its hash; its value is written once, 0600, to `settings.token_path` for the
CLI's bulk work and the benchmarks. A token file from before SMART (a bare random string that the
server compared with) is no longer accepted: init replaces it with a registered one."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from medvault.config import Settings
from medvault.crypto.indexes import blind_bits_for
from medvault.crypto.keys import KeyRing
from medvault.crypto.signing import ensure_signing_key
from medvault.db import make_engine, make_sessionmaker, unit_of_work
from medvault.smart import tokens as smart_tokens
from medvault.smart.idtoken import ensure_key as ensure_id_token_key
from medvault.store import migrate
from medvault.store.crypto_context import (
    ENCRYPTION_BENCHMARK_PLAINTEXT,
    ENCRYPTION_REQUIRED,
    build_crypto,
    index_key_check,
)
from medvault.store.models import Meta

# Blind index entries a patient contributes (identifiers, names, birth date, phone, e-mail).
ENTRIES_PER_PATIENT = 12  # measured on the Synthea set: 12.4


@dataclass(frozen=True)
class InitResult:
    created_keys: bool
    created_token: bool
    blind_bits: int


def initialise(settings: Settings) -> InitResult:
    """Idempotent: creates what is missing, never overwrites keys or the token."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(settings.data_dir, 0o700)
    ring = KeyRing(settings.keys_path)
    created_keys = False
    if not ring.exists():
        KeyRing.create(settings.keys_path)
        created_keys = True
    # Made for key directories from before the access log too (init is idempotent).
    created_keys = ensure_signing_key(settings.keys_path) or created_keys
    created_keys = ensure_id_token_key(settings.keys_path) or created_keys
    created_token = False
    engine = make_engine(settings)
    try:
        migrate.upgrade(engine, keys_path=settings.keys_path)
        with unit_of_work(make_sessionmaker(engine)) as session:
            if session.get(Meta, "encryption") is None:
                # Plaintext only for a brand-new benchmark store: a store made before this marker
                # existed already holds ciphertext and stays an encrypted one.
                fresh = session.get(Meta, "blind_index_bits") is None
                plaintext = settings.unsafe_disable_encryption and fresh
                mode = ENCRYPTION_BENCHMARK_PLAINTEXT if plaintext else ENCRYPTION_REQUIRED
                session.add(Meta(key="encryption", value=mode))
            if session.get(Meta, "index_key_check") is None:
                session.add(Meta(key="index_key_check", value=index_key_check(KeyRing(settings.keys_path))))
            row = session.get(Meta, "blind_index_bits")
            if row is None:
                bits = blind_bits_for(settings.expected_patients * ENTRIES_PER_PATIENT)
                session.add(Meta(key="blind_index_bits", value=str(bits)))
            else:
                bits = int(row.value)
        created_token = _ensure_operator_token(settings, make_sessionmaker(engine))
    finally:
        engine.dispose()
    if settings.is_sqlite:
        # Wherever the file lives (a custom MEDVAULT_DATABASE_URL may put it outside the data dir),
        # only the owner may read it or its journal.
        database = make_url(settings.sqlalchemy_url).database
        if database and database != ":memory:":
            for suffix in ("", "-wal", "-shm"):
                db_file = Path(database + suffix)
                if db_file.exists():
                    os.chmod(db_file, 0o600)
    return InitResult(created_keys, created_token, bits)


def _ensure_operator_token(settings: Settings, factory: Any) -> bool:
    """Keep a token file whose token is live in the table; otherwise issue one and write it."""
    now = datetime.now(UTC)
    with unit_of_work(factory) as session:
        try:
            current = settings.token_path.read_text().strip()
        except FileNotFoundError:
            current = ""
        if current and smart_tokens.system_token_valid(session=session, token=current):
            return False
        # Not audited when the store is new (its log starts empty); audited when it replaces a
        # token file from before SMART, which needs the store's keys.
        crypto = build_crypto(settings, session) if current else None
        token = smart_tokens.issue_system_token(session=session, crypto=crypto, now=now)
        write_token_file(settings.token_path, token)
    return True


def write_token_file(path: Path, token: str) -> None:
    """Replace the file atomically, readable by the owner only."""
    tmp = path.with_name(path.name + ".new")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, token.encode() + b"\n")
    finally:
        os.close(fd)
    os.replace(tmp, path)
