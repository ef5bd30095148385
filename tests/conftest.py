"""Shared fixtures: every storage/API test runs on SQLite and on PostgreSQL (own schema per test).

PostgreSQL is the machine's server at 127.0.0.1:5432 (trust auth, database `test`); when none
answers, the PostgreSQL leg is skipped with that reason and the SQLite leg still runs.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from medvault.config import Settings, load_settings
from medvault.db import make_engine, make_sessionmaker
from medvault.store.crypto_context import CryptoContext, build_crypto
from medvault.store.setup import initialise

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SYNTHEA = SHARED / "data" / "synthea" / "r4-transaction-bundles"
FHIR_EXAMPLES = SHARED / "data" / "fhir-examples"
IPS_EXAMPLES = SHARED / "data" / "ips-examples"
CANARY_SCAN = SHARED / "tools" / "canary-scan"
PG_HOST = os.environ.get("MEDVAULT_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("MEDVAULT_TEST_PG_PORT", "5432"))
PG_BASE = f"postgresql+psycopg://postgres@{PG_HOST}:{PG_PORT}/test"


def _pg_reason() -> str | None:
    try:
        with socket.create_connection((PG_HOST, PG_PORT), timeout=2):
            pass
    except OSError as exc:
        return f"PostgreSQL not reachable at {PG_HOST}:{PG_PORT} ({exc.strerror or exc}); PostgreSQL leg skipped"
    try:
        engine = create_engine(PG_BASE)
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
    except Exception as exc:  # noqa: BLE001 - any failure means: no usable server
        return f"PostgreSQL at {PG_HOST}:{PG_PORT} refused the test connection ({exc.__class__.__name__}); leg skipped"
    return None


_PG_SKIP: list[str | None] = []


def pg_skip_reason() -> str | None:
    if not _PG_SKIP:
        _PG_SKIP.append(_pg_reason())
    return _PG_SKIP[0]


@dataclass
class PgSchema:
    name: str
    url: str
    libpq_url: str


@pytest.fixture
def pg_schema() -> Iterator[PgSchema]:
    reason = pg_skip_reason()
    if reason:
        pytest.skip(reason)
    name = f"mvtest_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_BASE, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{name}"'))
    try:
        yield PgSchema(
            name,
            f"{PG_BASE}?options=-csearch_path%3D{name}",
            f"postgresql://postgres@{PG_HOST}:{PG_PORT}/test",
        )
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{name}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def settings(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    """An initialised data directory on the parametrised backend."""
    url = None
    if backend == "postgresql":
        url = request.getfixturevalue("pg_schema").url
    s = load_settings(data_dir=tmp_path / "data", database_url=url, environment="development")
    initialise(s)
    return s


@dataclass
class VaultHandle:
    settings: Settings
    factory: Any
    crypto: CryptoContext
    engine: Any


@pytest.fixture
def vault_env(settings: Settings) -> Iterator[VaultHandle]:
    engine = make_engine(settings)
    factory = make_sessionmaker(engine)
    with factory() as session:
        crypto = build_crypto(settings, session)
    yield VaultHandle(settings, factory, crypto, engine)
    engine.dispose()


@pytest.fixture
def api(settings: Settings) -> Iterator[Any]:
    """A FastAPI TestClient with the operator token set."""
    from fastapi.testclient import TestClient

    from medvault.api.app import create_app

    token = settings.token_path.read_text().strip()
    with TestClient(create_app(settings), base_url="http://testserver") as client:
        client.headers.update({"Authorization": f"Bearer {token}"})
        yield client
