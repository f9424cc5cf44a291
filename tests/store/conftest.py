"""One store test suite, run against every backend: SQLite (embedded) and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edgefleet.store import Database
from tests.postgres import postgres_unavailable, throwaway_schema


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        database = Database(f"sqlite:///{tmp_path / 'store.db'}")
        database.migrate()
        yield database
        database.dispose()
        return
    reason = postgres_unavailable()
    if reason:
        pytest.skip(reason)
    with throwaway_schema() as url:
        database = Database(url)
        database.migrate()
        try:
            yield database
        finally:
            database.dispose()
