"""PostgreSQL restarted for real under two `edgefleet server` replicas and a real agent.

The server is a private one of this test's own (`initdb`, `pg_ctl` on a free port; the
shared cluster other tests use is left alone), restarted with `pg_ctl restart -m fast`
while the agent runs a release service and uploads telemetry every second. Afterwards:
both replicas are ready again, a change made through the API reaches the agent, the audit
chain verifies, every telemetry batch (those queued across the restart too) is stored
exactly once, and the agent kept running its release service the whole time (same PIDs).
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from edgefleet.artifacts.model_builder import build_mlp
from edgefleet.localfleet import AgentProcess, ServerProcess, wait_for
from tests.cli_runner import run_cli
from tests.conftest import ADMIN_TOKEN
from tests.postgres import PrivateCluster, postgres_binaries, private_cluster
from tests.releases import Trust, free_port, publish
from tests.sleeping_service import SERVICE, service_pids
from tests.telemetry_fleet import FAST_AGENT_ARGS, fast_policy, queue_counters, queued_batches

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

REPLICAS = ("replica-a", "replica-b")


@pytest.fixture
def cluster() -> Iterator[PrivateCluster]:
    if postgres_binaries() is None:
        pytest.skip("initdb is not installed (Debian: apt-get install postgresql)")
    with private_cluster(free_port()) as running:
        yield running


@pytest.fixture
def replicas(cluster: PrivateCluster, tmp_path: Path) -> Iterator[dict[str, ServerProcess]]:
    started: dict[str, ServerProcess] = {}
    try:
        for name in REPLICAS:  # one by one: the first migrates the empty database
            server = ServerProcess(tmp_path / "data", ADMIN_TOKEN, env={
                "EDGEFLEET_DATABASE_URL": cluster.url, "EDGEFLEET_REPLICA_ID": name,
            })  # fmt: skip
            server.log_path = tmp_path / f"{name}.log"
            started[name] = server
            server.start()
        yield started
    finally:
        for server in started.values():
            server.stop()


def ready(server: ServerProcess) -> bool:
    try:
        response = httpx.get(f"{server.url}/readyz", timeout=5)
    except httpx.HTTPError:
        return False
    return response.status_code == 200 and response.json()["status"] == "ready"


def acked(server: ServerProcess, agent: AgentProcess) -> int:
    with server.client() as client:
        return int(client.telemetry_status(agent.device_id or "")["acked_through_seq"])


def active_release(server: ServerProcess, device: str) -> str | None:
    with server.client() as client:
        active = (client.get_device(device).get("release_status") or {}).get("active") or {}
    return f"{active['name']}@{active['version']}" if active else None


def applied(server: ServerProcess, device: str) -> dict[str, Any] | None:
    with server.client() as client:
        found = client.get_device(device)
    return found if found["applied_generation"] == found["desired_generation"] else None


def test_replicas_and_an_agent_ride_through_a_real_postgres_restart(
    cluster: PrivateCluster, replicas: dict[str, ServerProcess], tmp_path: Path
) -> None:
    a, b = replicas["replica-a"], replicas["replica-b"]
    with a.client() as admin:
        admin.set_telemetry_policy(fast_policy(host_window_s=1, inference_window_s=1))
        trust = Trust.install(admin)
        publish(admin, tmp_path / "release", "steady", "1.0.0", build_mlp(4, 8, 3, seed=3), 0,
                trust.targets_keys, manifest=SERVICE)  # fmt: skip
        token = admin.create_enrollment_token(auto_approve=True)["token"]
    agent = AgentProcess(a.url, tmp_path / "agent", token, "pg-restart", {"fleet": "pg"},
                         extra_args=FAST_AGENT_ARGS)  # fmt: skip
    try:
        agent.start()
        wait_for(lambda: agent.state().get("applied_generation"), timeout_s=60,
                 what="the agent in sync")  # fmt: skip
        device = agent.device_id or ""
        with b.client() as admin:
            admin.assign_release("steady", "1.0.0", device=device)
        wait_for(lambda: active_release(a, device) == "steady@1.0.0", timeout_s=120,
                 what="the release to run")  # fmt: skip
        services = wait_for(partial(service_pids, agent), what="the release service")
        wait_for(lambda: acked(a, agent) >= 2, timeout_s=30, what="telemetry uploads")
        queued_before = queue_counters(agent)["next_seq"]

        cluster.restart()

        for server in (a, b):
            wait_for(partial(ready, server), timeout_s=60,
                     what=f"{server.data_dir} replica to reconnect")  # fmt: skip
        # A batch queued across the restart, and one after it, reach the database.
        wait_for(lambda: queue_counters(agent)["next_seq"] > queued_before + 2, timeout_s=30,
                 what="batches queued across the restart")  # fmt: skip
        through = queue_counters(agent)["next_seq"] - 1
        wait_for(lambda: acked(a, agent) >= through, timeout_s=60,
                 what="the agent's uploads to catch up")  # fmt: skip

        def relabel() -> bool:
            with b.client() as admin:
                admin.label_device(device, {"after": "restart"}, [])
            return True

        wait_for(relabel, timeout_s=30, what="a change through the API")
        changed = wait_for(partial(applied, a, device), timeout_s=60,
                           what="the agent to apply the change")  # fmt: skip
        assert changed is not None
        assert (changed["desired"] or {}).get("labels", {}).get("after") == "restart"
        assert agent.running
        assert service_pids(agent) == services
        assert active_release(b, device) == "steady@1.0.0"

        agent.stop()  # the stored batches and the server's status stop moving
        engine = create_engine(cluster.url)
        try:
            with engine.connect() as connection:
                rows = connection.execute(
                    text(
                        "SELECT seq, name, tags, start_s FROM telemetry_windows"
                        " WHERE device_id = :device ORDER BY seq, idx"
                    ),
                    {"device": device},
                ).all()
        finally:
            engine.dispose()
        stored: dict[int, int] = {}
        for seq, *_ in rows:
            stored[seq] = stored.get(seq, 0) + 1
        last = max(stored)
        assert last >= through > queued_before
        assert sorted(stored) == list(range(1, last + 1))
        for seq, windows in queued_batches(agent).items():
            if seq <= last:
                assert stored[seq] == windows, f"batch {seq}: sent {windows}, stored {stored[seq]}"
        series = [(name, tags, start_s) for _, name, tags, start_s in rows]
        assert len(series) == len(set(series)), "a window was stored twice"
        with a.client() as admin:
            status = admin.telemetry_status(device)
        assert status["batches_stored"] == len(stored)
        assert status["windows_stored"] == len(rows)

        cli_env = {"EDGEFLEET_SERVER": b.url, "EDGEFLEET_TOKEN": ADMIN_TOKEN}
        verdict = run_cli("audit", "verify", "-o", "json", env=cli_env)
        assert verdict.code == 0, verdict.stderr
        assert verdict.json()["ok"] is True
    finally:
        agent.stop()
