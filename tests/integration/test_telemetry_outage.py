"""Store-and-forward through an outage: the control plane is stopped for a while, one agent
is killed with SIGKILL in the middle of it and restarted, another one's queue overflows.
Afterwards every batch the first agent queued is stored exactly once (sent == stored by
sequence, window for window), and the second one's drops are counted on both sides."""

from __future__ import annotations

import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from edgefleet.localfleet import AgentProcess, ServerProcess, wait_for
from tests.conftest import ADMIN_TOKEN, AgentFactory
from tests.telemetry_fleet import (
    fast_policy,
    queue_counters,
    queued_batches,
    start_agent,
    stored_windows,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def own_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A control plane of our own: this module stops and restarts it."""
    process = ServerProcess(tmp_path_factory.mktemp("outage") / "data", ADMIN_TOKEN)
    process.start()
    yield process
    process.stop()


def server_acked(server: ServerProcess, agent: AgentProcess) -> int:
    with server.client() as client:
        return int(client.telemetry_status(agent.device_id or "")["acked_through_seq"])


def acked_at_least(server: ServerProcess, agent: AgentProcess, seq: int) -> bool:
    return server_acked(server, agent) >= seq


def test_exactly_once_through_a_server_outage_an_agent_kill_and_a_full_queue(
    own_server: ServerProcess, tmp_path: Path
) -> None:
    server = own_server
    factory = AgentFactory(server, tmp_path)
    try:
        with server.client() as admin:
            admin.set_telemetry_policy(fast_policy(host_window_s=1, inference_window_s=1))
            steady = start_agent(factory, admin, "steady")
            small = start_agent(factory, admin, "small-queue", ["--telemetry-queue-max-rows", "3"])
        for agent in (steady, small):
            wait_for(
                partial(acked_at_least, server, agent, 2),
                timeout_s=20,
                what="uploads before the outage",
            )

        server.stop()
        before_outage = queue_counters(steady)["next_seq"]
        time.sleep(2)  # the agents keep collecting and retrying
        steady.kill()  # SIGKILL, mid-outage
        steady.start()
        wait_for(
            lambda: queue_counters(steady)["next_seq"] > before_outage + 3,
            timeout_s=20,
            what="batches queued during the outage",
        )
        wait_for(
            lambda: queue_counters(small)["dropped_batches_total"] >= 2,
            timeout_s=20,
            what="the small queue to overflow",
        )
        server.start()  # same port, same database

        during = queue_counters(steady)["next_seq"] - 1
        wait_for(
            lambda: server_acked(server, steady) >= during,
            timeout_s=30,
            what="the steady agent to catch up",
        )
        wait_for(
            lambda: server_acked(server, small) >= queue_counters(small)["next_seq"] - 2,
            timeout_s=30,
            what="the small agent to catch up",
        )

        # Stop the steady agent so the server's tables and its own status stop moving
        # between the two reads below; its queue keeps whatever it did not send yet.
        steady.stop()
        # Sent == stored, by sequence and window count; nothing missing, nothing twice.
        rows = stored_windows(server.db_path, steady.device_id or "")
        stored: dict[int, int] = {}
        for seq, *_ in rows:
            stored[seq] = stored.get(seq, 0) + 1
        last = max(stored)
        assert last >= during
        assert sorted(stored) == list(range(1, last + 1))
        sent = queued_batches(steady)
        assert sent, "the agent logs every batch it queues"
        for seq, windows in sent.items():
            if seq <= last:
                assert stored[seq] == windows, f"batch {seq}: sent {windows}, stored {stored[seq]}"
        series = [(name, tags, start_s) for _, name, tags, start_s, _ in rows]
        assert len(series) == len(set(series)), "a window was stored twice"
        with server.client() as admin:
            status = admin.telemetry_status(steady.device_id or "")
            assert status["batches_stored"] == len(stored)
            assert status["windows_stored"] == len(rows)
            assert status["dropped_batches_total"] == 0

            # The overflowing agent: the server knows what the device dropped, and every
            # sequence up to the acknowledgement is either stored or counted as dropped.
            def drops_reported() -> dict | None:
                status = admin.telemetry_status(small.device_id or "")
                device = queue_counters(small)
                same = all(
                    status[k] == device[k]
                    for k in ("dropped_batches_total", "dropped_windows_total")
                )
                return status if same else None

            small_status = wait_for(drops_reported, timeout_s=20, what="drops reported")
            assert small_status is not None
            assert small_status["dropped_batches_total"] >= 2
            acked = small_status["acked_through_seq"]
            small_stored = {
                r[0] for r in stored_windows(server.db_path, small.device_id or "") if r[0] <= acked
            }
            assert len(small_stored) + small_status["dropped_batches_total"] == acked
            metrics = admin.prometheus_metrics()
            assert "edgefleet_telemetry_device_dropped_batches " in metrics
    finally:
        for agent in factory.agents:
            agent.stop()
        if not server.running:
            server.start()
