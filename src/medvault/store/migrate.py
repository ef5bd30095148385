"""Schema migrations (Alembic), run from code so `medvault init` needs no alembic.ini."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

MIGRATIONS = Path(__file__).parent / "migrations"


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def upgrade(engine: Engine, *, keys_path: Path | None = None) -> None:
    """Bring the schema to the newest revision (idempotent). `keys_path`: the key directory, for
    the migrations that turn stored identifiers into keyed tokens (0012); a store that holds such
    rows cannot be upgraded without it."""
    cfg = _config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        cfg.attributes["keys_path"] = keys_path
        command.upgrade(cfg, "head")


def is_current(engine: Engine) -> bool:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision() == head


def revision(engine: Engine, message: str) -> None:
    """Developer helper: autogenerate a new revision against `engine`."""
    cfg = _config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.revision(cfg, message=message, autogenerate=True)
