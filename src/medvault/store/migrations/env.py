"""Alembic environment: runs on the connection medvault hands over (see store/migrate.py)."""

from __future__ import annotations

from alembic import context

from medvault.store.models import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
    # No PRIMARY KEY text in the schema (see store/models.py); the version table keeps its one row.
    version_table_pk=False,
)
with context.begin_transaction():
    context.run_migrations()
