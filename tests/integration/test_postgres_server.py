"""The same control plane on PostgreSQL: enrollment, approval, audit, over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edgefleet.localfleet import ServerProcess
from tests.cli_runner import run_cli
from tests.conftest import ADMIN_TOKEN
from tests.device_requests import RawDevice
from tests.postgres import postgres_unavailable, throwaway_schema

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_server(tmp_path: Path) -> Iterator[ServerProcess]:
    reason = postgres_unavailable()
    if reason:
        pytest.skip(reason)
    with throwaway_schema() as url:
        env = {"EDGEFLEET_DATABASE_URL": url}
        process = ServerProcess(tmp_path / "pg-data", ADMIN_TOKEN, env=env)
        process.start()
        try:
            yield process
        finally:
            process.stop()


def test_server_runs_on_postgres(pg_server: ServerProcess) -> None:
    assert not pg_server.db_path.exists(), "no SQLite file when PostgreSQL is configured"
    with pg_server.client() as admin:
        raw = RawDevice(pg_server.url)
        assert raw.enroll(admin.create_enrollment_token()["token"], name="pg-1").status_code == 200
        assert raw.report().status_code == 403
        admin.change_enrollment(raw.id, "approve")
        assert raw.report().status_code == 200
        assert admin.get_device(raw.id)["status"] == "online"
    env = {"EDGEFLEET_SERVER": pg_server.url, "EDGEFLEET_TOKEN": ADMIN_TOKEN}
    verdict = run_cli("audit", "verify", "-o", "json", env=env).json()
    assert verdict["ok"] and verdict["records"] >= 4
