"""Engine and unit-of-work plumbing. The face (request, CLI command) owns commit/rollback."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from medvault.config import Settings


def make_engine(settings: Settings) -> Engine:
    url = settings.sqlalchemy_url
    if url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # pysqlite's own transaction handling issues no BEGIN before a SAVEPOINT, so releasing
            # a savepoint would commit half a transaction. Take control: driver in autocommit
            # mode, and SQLAlchemy's "begin" event below emits BEGIN (SQLAlchemy's documented recipe).
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            # WAL lets readers run while rotation/import writes; temp_store=MEMORY keeps sort and
            # temp B-trees out of temp files on disk (no stray copies of index data).
            for pragma in (
                "PRAGMA journal_mode=WAL",
                "PRAGMA synchronous=NORMAL",
                "PRAGMA foreign_keys=ON",
                "PRAGMA temp_store=MEMORY",
                # Overwrite freed cells and pages with zeros: no fragments of old rows linger in
                # the file (crypto-shredding and the stolen-copy scan both rely on it).
                "PRAGMA secure_delete=ON",
                "PRAGMA busy_timeout=30000",
            ):
                cur.execute(pragma)
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            # A deferred transaction that reads and then writes fails at once with "database is
            # locked" when another writer got in between (busy_timeout does not apply to that
            # upgrade). Writers therefore take the write lock up front; readers stay deferred so
            # they never wait for one another.
            write = conn.get_execution_options().get("medvault_write", True)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)


def make_sessionmaker(engine: Engine, *, write: bool = True) -> sessionmaker[Session]:
    """Sessions for writing (SQLite: BEGIN IMMEDIATE) or for reading only (deferred)."""
    return sessionmaker(engine.execution_options(medvault_write=write), expire_on_commit=False, autoflush=False)


@contextmanager
def unit_of_work(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One transaction: commit on success, roll back on any error."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
