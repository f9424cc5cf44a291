"""Alembic environment: migrations run on the connection the Database hands over."""

from __future__ import annotations

from alembic import context

from edgefleet.store.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("edgefleet migrations run through Database.migrate(), not the alembic CLI")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
