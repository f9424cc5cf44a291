"""Stopping an agent whose link to the control plane died: it stops promptly (no wait on the
dead link outlives the stop), and every KPI its release service counted up to its own stop
reaches the control plane once the link is back and the agent runs again."""

from __future__ import annotations

import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import httpx
import pytest

from edgefleet.artifacts.model_builder import build_mlp
from edgefleet.client import FleetClient
from edgefleet.localfleet import AgentProcess, ServerProcess, wait_for
from tests.relay import Relay
from tests.releases import Trust, free_port, publish
from tests.telemetry_fleet import FAST_AGENT_ARGS, fast_policy, queue_counters

pytestmark = pytest.mark.slow


class Inference:
    """One client sending /infer requests to a port back to back until the service there
    stops answering; `answered` counts the responses it got."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.answered = 0
        self.stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=5, trust_env=False) as http:
            while True:
                try:
                    http.post(f"http://127.0.0.1:{self.port}/infer",
                              json={"input": [[0.5, -0.5, 0.25, 1.0]]})  # fmt: skip
                except httpx.HTTPError:
                    break
                self.answered += 1
        self.stopped.set()

    @contextmanager
    def running(self) -> Iterator[Inference]:
        self._thread.start()
        try:
            yield self
        finally:
            self._thread.join(timeout=60)


def counted_requests(server: ServerProcess, device_id: str) -> int:
    """`inference.requests` the control plane stored for the device, all windows summed."""
    with closing(sqlite3.connect(f"file:{server.db_path}?mode=ro", uri=True, timeout=10)) as db:
        (total,) = db.execute(
            "SELECT COALESCE(SUM(sum), 0) FROM telemetry_windows "
            "WHERE device_id = ? AND name = 'inference.requests'",
            (device_id,),
        ).fetchone()
    return int(total)


def test_a_stop_on_a_dead_link_is_prompt_and_loses_no_kpi_of_the_release_service(
    server: ServerProcess, admin: FleetClient, tmp_path: Path
) -> None:
    trust = Trust.install(admin)
    admin.set_telemetry_policy(fast_policy(host_window_s=1, inference_window_s=1))
    token = admin.create_enrollment_token(auto_approve=True)["token"]
    with Relay(server.url) as relay:
        agent = AgentProcess(relay.url, tmp_path / "cam", token, "cam", extra_args=FAST_AGENT_ARGS)
        agent.start()
        try:
            wait_for(lambda: agent.state().get("applied_generation"), what="agent in sync")
            port = free_port()
            publish(admin, tmp_path / "release", "counted", "1.0.0", build_mlp(4, 8, 3, seed=1),
                    port, trust.targets_keys)  # fmt: skip
            admin.assign_release("counted", "1.0.0", device=agent.device_id)
            wait_for(
                lambda: (
                    admin.get_device(agent.device_id or "")["release_status"].get("state")
                    == "installed"
                ),
                timeout_s=90,
                what="release installed",
            )
            with Inference(port).running() as inference:
                wait_for(lambda: inference.answered >= 50, what="requests answered")
                failures_before = agent.log().count("retry_in_s=")
                relay.blackholed = True
                # A heartbeat times out on the dead link (15 s); the agent backs off (at most
                # 1 s) and sends the next one: wait until it is waiting on that one.
                wait_for(lambda: agent.log().count("retry_in_s=") > failures_before,
                         timeout_s=60, what="a request to time out on the dead link")  # fmt: skip
                time.sleep(2)
                assert agent.proc is not None
                asked_s = time.monotonic()
                agent.proc.send_signal(signal.SIGTERM)
                assert agent.proc.wait(timeout=60) == 0
                # It took the rest of the request's timeout (up to 13 s here) before.
                assert time.monotonic() - asked_s < 5
                assert inference.stopped.wait(30), "the release service outlived its agent"
            answered = inference.answered
            assert answered >= 50
        finally:
            agent.stop()
        relay.blackholed = False

        agent.start()
        try:
            device = agent.device_id or ""

            def all_uploaded() -> bool:
                acked = admin.telemetry_status(device)["acked_through_seq"]
                return acked >= queue_counters(agent)["next_seq"] - 1

            wait_for(all_uploaded, timeout_s=60, what="the queue to drain")
            # Every request answered was counted; one more only if the service was stopped
            # between counting a request and answering it.
            assert answered <= counted_requests(server, device) <= answered + 1
        finally:
            agent.stop()
