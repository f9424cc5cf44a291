"""Persistence: SQLAlchemy tables, repositories and migrations for SQLite and PostgreSQL.

This is the only package that imports SQLAlchemy; everything above it sees `Database`,
`Transaction` and the repositories, which speak in core dataclasses.
"""

from edgefleet.store.database import Database, Transaction

__all__ = ["Database", "Transaction"]
