"""A workload instrumented with the official OpenTelemetry SDK, configured only by the
environment the agent gives workloads, exports its KPIs to a real agent over OTLP/HTTP;
the control plane stores them like StatsD KPIs, and the agent never loads a protobuf
runtime to read them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgefleet.agent.telemetry.otlp_receiver import otlp_env
from edgefleet.client import FleetClient
from edgefleet.localfleet import ServerProcess, wait_for
from tests.conftest import AgentFactory
from tests.telemetry_fleet import fast_policy, start_agent

REPO = Path(__file__).resolve().parents[2]
REQUESTS = 200


@pytest.fixture(scope="module", autouse=True)
def fleet_policy(server: ServerProcess) -> Iterator[None]:
    with server.client() as client:
        client.set_telemetry_policy(fast_policy())
    yield


def loaded_files(pid: int) -> set[str]:
    with open(f"/proc/{pid}/maps") as maps:
        return {fields[5] for line in maps if len(fields := line.split()) > 5}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_an_opentelemetry_workload_reports_its_kpis_through_the_agent(
    admin: FleetClient, agents: AgentFactory
) -> None:
    agent = start_agent(agents, admin, "otel-cam", ["--otlp-port", "0"])
    address = wait_for(lambda: (agent.data_dir / "otlp.address").read_text().strip(),
                       what="OTLP endpoint")  # fmt: skip
    env = {**otlp_env(address), "OTEL_METRIC_EXPORT_INTERVAL": "300",
           "OTEL_SERVICE_NAME": "model-server"}  # fmt: skip
    workload = subprocess.run(
        [sys.executable, "-m", "tests.otlp_workload", str(REQUESTS)],
        cwd=REPO, env={**_base_env(), **env}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert workload.returncode == 0, workload.stderr
    assert "Failed to export" not in workload.stderr, workload.stderr

    def stored(metric: str, total: float) -> dict | None:
        result = admin.telemetry_query(metric, device=agent.name, since="10m", quantile=0.5)
        summary = result["summary"]
        return summary if summary and summary["sum"] == total else None

    requests = wait_for(lambda: stored("inference.requests", REQUESTS), timeout_s=30,
                        what="every request counted once")  # fmt: skip
    assert requests is not None and requests["sum"] == REQUESTS
    latency = wait_for(lambda: stored("inference.latency_ms", REQUESTS * (REQUESTS + 1) / 2),
                       timeout_s=30, what="every latency stored once")  # fmt: skip
    assert latency is not None and latency["count"] == REQUESTS
    assert latency["mean"] == (REQUESTS + 1) / 2
    # The SDK's default buckets put the median (100.5 ms) in (75, 100] or (100, 250].
    assert 75 <= latency["quantile"] <= 250
    depth = admin.telemetry_query("inference.queue_depth", device=agent.name, since="10m")
    assert depth["summary"]["last"] == 3
    assert "inference.queue_depth" in admin.telemetry_metrics(agent.name)

    assert agent.proc is not None
    protobuf = re.compile(r"/(google/protobuf|google/_upb|opentelemetry)/")
    assert [f for f in loaded_files(agent.proc.pid) if protobuf.search(f)] == []


def _base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
