"""A real Prometheus (the Debian package's binary) scrapes a real control plane with a real
agent, evaluates the shipped rules, and its query API answers the fleet series: devices by
status, ingest rates, alerts, rollouts and the OTLP export counters. promtool checks the
rules and runs their unit tests."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

from edgefleet.client import FleetClient
from edgefleet.localfleet import ManagedProcess, ServerProcess, wait_for
from tests.conftest import AgentFactory
from tests.releases import free_port
from tests.telemetry_fleet import fast_policy, send_lines, start_agent, statsd_port

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")


def test_promtool_checks_the_rules_and_runs_their_tests() -> None:
    if PROMTOOL is None:
        pytest.skip("promtool not installed (Debian package prometheus)")
    for args in (["check", "rules", "edgefleet-rules.yml"],
                 ["test", "rules", "edgefleet-rules.test.yml"]):  # fmt: skip
        result = subprocess.run([PROMTOOL, *args], cwd=RULES, capture_output=True, text=True,
                                timeout=60)  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        assert "SUCCESS" in result.stdout + result.stderr


@pytest.fixture
def prometheus(server: ServerProcess, tmp_path: Path) -> Iterator[str]:
    """Prometheus on a free port, scraping `server` every second with the shipped rules."""
    if PROMETHEUS is None:
        pytest.skip("prometheus not installed (Debian package prometheus)")
    target = urlsplit(server.url).netloc
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES / "edgefleet-rules.yml")],
        "scrape_configs": [{"job_name": "edgefleet", "metrics_path": "/metrics",
                            "static_configs": [{"targets": [target]}]}],
    }  # fmt: skip
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    process = ManagedProcess([
        PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}",
    ], tmp_path / "prometheus.log")  # fmt: skip
    process.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: httpx.get(f"{url}/-/ready", timeout=2).status_code == 200,
                 timeout_s=30, what="prometheus ready")  # fmt: skip
        yield url
    finally:
        process.stop()


def query(url: str, expr: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert answer["status"] == "success", answer
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


def values(url: str, expr: str, by: str = "") -> dict[str, float]:
    """Each series' value by its `by` label ("" for a series without labels)."""
    return {series["metric"].get(by, ""): float(series["value"][1])
            for series in query(url, expr)}  # fmt: skip


def test_prometheus_scrapes_the_fleet_and_records_the_rules(
    prometheus: str, admin: FleetClient, agents: AgentFactory
) -> None:
    admin.set_telemetry_policy(fast_policy())
    agent = start_agent(agents, admin, "prom-cam")
    send_lines(statsd_port(agent), ["inference.requests:1|c"] * 50)
    wait_for(lambda: values(prometheus, 'up{job="edgefleet"}') == {"": 1.0},
             timeout_s=30, what="a successful scrape")  # fmt: skip

    online = wait_for(
        lambda: values(prometheus, "edgefleet:devices:by_status", "status").get("online"),
        timeout_s=30, what="the recorded devices by status")  # fmt: skip
    assert online is not None and online >= 1
    statuses = values(prometheus, 'edgefleet_devices{enrollment="approved"}', "status")
    assert set(statuses) == {"online", "stale", "offline"}
    wait_for(lambda: values(prometheus, "edgefleet:telemetry_batches_accepted:rate5m")
             .get("", 0) > 0, timeout_s=60, what="an ingest rate")  # fmt: skip
    assert values(prometheus, "edgefleet:telemetry_windows_accepted:rate5m")[""] > 0
    assert set(values(prometheus, "edgefleet:alerts_open:by_kind", "kind")) == {
        "anomaly", "drift", "cohort"}  # fmt: skip
    assert set(values(prometheus, "edgefleet:rollouts:by_state", "state")) >= {
        "pending", "progressing", "soaking", "paused", "rolling-back"}  # fmt: skip
    assert set(values(prometheus, "edgefleet_otlp_dropped_windows_total", "reason")) == {
        "queue_full", "rejected"}  # fmt: skip
    latency = values(prometheus, "edgefleet:http_request_duration_seconds:p95_5m", "route")
    assert "/v1/devices/{device_id}/telemetry" in latency, sorted(latency)

    rules = httpx.get(f"{prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"]
    health = {r.get("name") or r.get("alert"): r["health"] for g in rules for r in g["rules"]}
    assert health and set(health.values()) == {"ok"}, health
    alerts = httpx.get(f"{prometheus}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
    assert not [a for a in alerts if a["labels"]["alertname"] == "EdgefleetControlPlaneDown"]
