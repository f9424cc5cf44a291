"""Telemetry end to end with a real control plane and real agents: refused batches store
nothing, queries aggregate what workloads pushed, a policy change reaches agents, a
degrading workload opens an alert that makes its device sample finer until it recovers, and
/metrics is valid for promtool."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from edgefleet.client import FleetClient
from edgefleet.core.telemetry.windows import MetricKind, Window
from edgefleet.core.telemetry.wire import Batch, encode_batch
from edgefleet.localfleet import AgentProcess, ServerProcess, wait_for
from edgefleet.security.request_signing import sign_request
from tests.cli_runner import run_cli
from tests.conftest import ADMIN_TOKEN, AgentFactory
from tests.device_requests import RawDevice
from tests.telemetry_fleet import (
    LatencyWorkload,
    fast_policy,
    send_lines,
    start_agent,
    statsd_port,
    stored_windows,
)

TELEMETRY = "application/x-edgefleet-telemetry"
LATENCY = "inference.latency_ms"


@pytest.fixture(scope="module", autouse=True)
def fleet_policy(server: ServerProcess) -> Iterator[None]:
    with server.client() as client:
        client.set_telemetry_policy(fast_policy())
    yield


def cli_env(server: ServerProcess) -> dict[str, str]:
    return {"EDGEFLEET_SERVER": server.url, "EDGEFLEET_TOKEN": ADMIN_TOKEN}


# --- refusals ------------------------------------------------------------------------------


@pytest.fixture
def device(server: ServerProcess, admin: FleetClient) -> RawDevice:
    raw = RawDevice(server.url)
    token = admin.create_enrollment_token(auto_approve=True)["token"]
    assert raw.enroll(token).status_code == 200
    return raw


def window(start_s: int, value: float) -> Window:
    return Window(
        "host.cpu.percent", MetricKind.GAUGE, (), start_s, 10, 2, 2 * value, value, value, value
    )


def signed_upload(
    device: RawDevice, target: str, body: bytes, content_type: str = TELEMETRY
) -> dict[str, str]:
    """Headers of a device request carrying raw batch bytes (RawDevice signs JSON)."""
    headers = sign_request(device.key, "POST", target, body, device.id, datetime.now(UTC))
    return {**headers, "content-type": content_type}


def post(
    device: RawDevice,
    body: bytes,
    dropped_through: int = 0,
    as_device: str | None = None,
    content_type: str = TELEMETRY,
) -> tuple[int, str, dict]:
    target = f"/v1/devices/{as_device or device.id}/telemetry?dropped_through_seq={dropped_through}"
    response = device.send("POST", target, body, signed_upload(device, target, body, content_type))
    payload = response.json()
    code = payload.get("error", {}).get("code", "")
    return response.status_code, code, payload


def test_bad_batches_are_refused_with_precise_codes_and_nothing_is_stored(
    device: RawDevice, server: ServerProcess, admin: FleetClient
) -> None:
    first = encode_batch(Batch(1, (window(1_795_000_000, 10.0), window(1_795_000_010, 11.0))))
    status, _, answer = post(device, first)
    assert (status, answer) == (200, {"acked_through_seq": 1, "stored_windows": 2})

    other = RawDevice(server.url)
    token = admin.create_enrollment_token(auto_approve=True)["token"]
    other.enroll(token, name="raw-other")
    later = Batch(2, (window(1_795_000_020, 12.0),))
    refusals = [
        (post(device, first), 409, "duplicate_batch"),  # a replayed sequence, fresh nonce
        (post(device, b"\x28\xb5\x2f\xfd" + b"\x00" * 20), 400, "corrupt_batch"),
        (post(device, first[:-7]), 400, "corrupt_batch"),  # truncated frame
        (post(device, encode_batch(later), as_device=other.id), 403, "wrong_device"),
        (post(device, encode_batch(Batch(5, later.windows))), 409, "sequence_gap"),
        (post(device, encode_batch(later), dropped_through=2), 400, "bad_dropped_through"),
        (
            post(device, encode_batch(later), content_type="application/json"),
            400,
            "unsupported_content_type",
        ),
        (post(device, b"x" * (2 << 20)), 413, "payload_too_large"),
    ]
    for (status, code, _), want_status, want_code in refusals:
        assert (status, code) == (want_status, want_code)
    # The exact same signed request again is a replay of the request itself.
    target = f"/v1/devices/{device.id}/telemetry?dropped_through_seq=0"
    headers = signed_upload(device, target, encode_batch(later))
    assert device.send("POST", target, encode_batch(later), headers).status_code == 200
    replay = device.send("POST", target, encode_batch(later), headers)
    assert (replay.status_code, replay.json()["error"]["code"]) == (401, "replayed_request")

    telemetry = admin.telemetry_status(device.id)
    assert (
        telemetry["acked_through_seq"],
        telemetry["batches_stored"],
        telemetry["windows_stored"],
    ) == (2, 2, 3)
    assert sorted(w[0] for w in stored_windows(server.db_path, device.id)) == [1, 1, 2]
    # And the device can resume from the cursor.
    cursor = device.call("GET", f"/v1/devices/{device.id}/telemetry").json()
    assert cursor["acked_through_seq"] == 2


# --- queries --------------------------------------------------------------------------------


def test_queries_return_the_aggregates_of_what_the_workload_pushed(
    server: ServerProcess, admin: FleetClient, agents: AgentFactory
) -> None:
    agent = start_agent(agents, admin, "query-cam")
    values = [float(v) for v in range(1, 301)]  # 1..300 ms, each once
    lines = [f"{LATENCY}:{v:g}|ms|#model:v1" for v in values]
    lines += ["inference.requests:1|c"] * 300 + ["inference.errors:3|c"]
    send_lines(statsd_port(agent), lines)

    def complete() -> dict | None:
        result = admin.telemetry_query(LATENCY, device=agent.name, since="10m", quantile=0.95)
        summary = result["summary"]
        return result if summary and summary["count"] == 300 else None

    result = wait_for(complete, timeout_s=30, what="all 300 timings stored")
    assert result is not None
    summary = result["summary"]
    assert (summary["sum"], summary["min"], summary["max"]) == (45150.0, 1.0, 300.0)
    assert summary["mean"] == 150.5
    assert abs(summary["quantile"] - 285.0) <= 0.01 * 285.0  # the sketch's 1% guarantee
    assert sum(p["count"] for p in result["series"][0]["points"]) == 300
    requests = admin.telemetry_query("inference.requests", device=agent.name, since="10m")
    wait_for(
        lambda: (
            admin.telemetry_query("inference.requests", device=agent.name, since="10m")["summary"][
                "sum"
            ]
            == 300
        ),
        timeout_s=15,
        what="request counts",
    )
    assert requests["summary"] is not None
    kpis = admin.telemetry_kpis(device=agent.name, since="10m")
    assert kpis["kpis"][agent.device_id]["error_rate_pct"]["value"] == pytest.approx(1.0)
    assert kpis["kpis"][agent.device_id]["error_rate_pct"]["samples"] == 300

    env = cli_env(server)
    query = ["telemetry", "query", "--device", agent.name, "--metric", LATENCY, "--since", "10m"]
    table = run_cli(*query, "--quantile", "0.95", env=env)
    assert table.code == 0, table.stderr
    assert "P95" in table.stdout and any(c in table.stdout for c in "▁▂▃▄▅▆▇█")
    as_json = run_cli(*query, "-o", "json", env=env)
    assert as_json.json()["summary"]["count"] == 300
    fleet = run_cli("telemetry", "query", "--selector", "", "--metric", LATENCY, env=env)
    assert fleet.code == 0 and agent.name in fleet.stdout


# --- policy ---------------------------------------------------------------------------------


def host_window_lengths(server: ServerProcess, agent: AgentProcess) -> set[int]:
    rows = stored_windows(server.db_path, agent.device_id or "")
    last_seq = max((r[0] for r in rows), default=0)
    return {r[4] for r in rows if r[0] == last_seq and r[1].startswith("host.")}


def test_a_policy_change_reaches_running_agents_without_a_redeploy(
    server: ServerProcess, admin: FleetClient, agents: AgentFactory, tmp_path: Path
) -> None:
    agent = start_agent(agents, admin, "policy-cam")
    policy_file = tmp_path / "policy.yaml"
    changed = fast_policy(host_window_s=5)
    changed["sets"].append({"name": "video", "prefixes": ["video."], "window_s": 5})
    changed["active_sets"].append("video")  # a new KPI set, no redeploy
    policy_file.write_text(json.dumps(changed))
    env = cli_env(server)
    try:
        result = run_cli("telemetry", "policy", "set", "-f", str(policy_file), env=env)
        assert result.code == 0, result.stderr
        assert "video 5s" in result.stdout
        wait_for(
            lambda: (
                {
                    s["name"]: s["window_s"]
                    for s in agent.state()["desired"]["telemetry"]["policy"]["sets"]
                }
                == {"host": 5, "inference": 2, "video": 5}
            ),
            timeout_s=15,
            what="the agent to apply the new policy",
        )
        send_lines(statsd_port(agent), ["video.fps:25|g"] * 5)
        wait_for(
            lambda: host_window_lengths(server, agent) == {5},
            timeout_s=30,
            what="5 s host windows at the server",
        )
        wait_for(
            lambda: admin.telemetry_query("video.fps", device=agent.name, since="5m")["summary"],
            timeout_s=20,
            what="the new KPI set's metric stored",
        )
        shown = run_cli("telemetry", "policy", "show", env=env)
        assert shown.code == 0 and "video." in shown.stdout and "version" in shown.stdout
        audit = admin.audit_tail(5)
        assert any(r["action"] == "telemetry.policy.set" for r in audit)
        bad = policy_file.with_name("bad.yaml")
        bad.write_text("sets: []\n")
        refused = run_cli("telemetry", "policy", "set", "-f", str(bad), env=env)
        assert refused.code == 1 and "bad_policy" in refused.stderr
    finally:
        admin.set_telemetry_policy(fast_policy())


# --- the anomaly feedback loop ------------------------------------------------------------


def open_alerts(admin: FleetClient, device_id: str) -> list[dict]:
    return [a for a in admin.list_alerts(device=device_id) if a["status"] == "open"]


def latency_window_lengths(server: ServerProcess, agent: AgentProcess) -> list[int]:
    rows = stored_windows(server.db_path, agent.device_id or "")
    return [r[4] for r in rows if r[1] == LATENCY][-3:]


@pytest.mark.slow
def test_degrading_latency_opens_an_alert_samples_finer_and_closes_on_recovery(
    server: ServerProcess, admin: FleetClient, agents: AgentFactory
) -> None:
    agent = start_agent(agents, admin, "degrading-cam")
    device_id = agent.device_id or ""
    workload = LatencyWorkload(statsd_port(agent), 10.0)
    with workload.running():
        # Baseline: enough 2 s windows for the detector (min_baseline 6) to learn normal.
        wait_for(
            lambda: (
                len(latency_window_lengths(server, agent)) == 3
                and len([r for r in stored_windows(server.db_path, device_id) if r[1] == LATENCY])
                >= 9
            ),
            timeout_s=40,
            what="a baseline of latency windows",
        )
        assert open_alerts(admin, device_id) == []
        workload.level_ms = 80.0
        [alert] = wait_for(
            lambda: open_alerts(admin, device_id),
            timeout_s=30,
            what="an alert on the degraded latency",
        )
        assert alert["kind"] == "anomaly" and alert["kpi"] == "p95_latency_ms"
        assert "p95_latency_ms" in alert["open_reason"]
        # The feedback loop: the device's policy asks for finer latency windows.
        wait_for(
            lambda: agent.state()["desired"]["telemetry"]["anomalous_metrics"] == [LATENCY],
            timeout_s=15,
            what="the agent to get the anomaly flag",
        )
        wait_for(
            lambda: latency_window_lengths(server, agent) == [1, 1, 1],
            timeout_s=20,
            what="1 s latency windows while the alert is open",
        )
        listed = run_cli("alerts", "list", env=cli_env(server))
        assert listed.code == 0 and alert["id"] in listed.stdout
        workload.level_ms = 10.0
        wait_for(
            lambda: not open_alerts(admin, device_id),
            timeout_s=30,
            what="the alert to close after recovery",
        )
    [closed] = [
        a
        for a in admin.list_alerts(include_closed=True, device=device_id)
        if a["id"] == alert["id"]
    ]
    assert closed["status"] == "closed" and "back to" in closed["close_reason"]
    wait_for(
        lambda: agent.state()["desired"]["telemetry"]["anomalous_metrics"] == [],
        timeout_s=15,
        what="the anomaly flag to clear",
    )
    everything = run_cli("alerts", "list", "--all", "-o", "json", env=cli_env(server))
    assert any(a["id"] == alert["id"] and a["status"] == "closed" for a in everything.json())


# --- /metrics ------------------------------------------------------------------------------


def test_metrics_are_valid_prometheus_exposition(
    server: ServerProcess, admin: FleetClient, device: RawDevice
) -> None:
    post(device, b"not zstd at all")
    before = admin.prometheus_metrics()
    batch = Batch(
        1, (window(1_795_000_000, 10.0),), dropped_batches_total=2, dropped_windows_total=7
    )
    assert post(device, encode_batch(batch))[0] == 200
    text = admin.prometheus_metrics()
    assert 'edgefleet_telemetry_batches_refused_total{code="corrupt_batch"}' in text
    assert 'edgefleet_devices{enrollment="approved",status="online"}' in text
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    by_status = [v for k, v in values.items() if k.startswith("edgefleet_devices{")]
    assert sum(by_status) == len(admin.list_devices())
    # The fleet totals moved by exactly this device's first batch (other tests' stay put).
    for name, step in [
        ("edgefleet_telemetry_devices_reporting", 1),
        ("edgefleet_telemetry_stored_batches", 1),
        ("edgefleet_telemetry_device_dropped_batches", 2),
        ("edgefleet_telemetry_device_dropped_windows", 7),
    ]:
        assert values[name] - _value(before, name) == step, name
    assert "edgefleet_alerts_open" in text
    assert 'route="/v1/devices/{device_id}/telemetry"' in text
    assert "edgefleet_http_request_duration_seconds_bucket" in text
    if shutil.which("promtool") is None:
        pytest.skip("promtool not installed (Debian package prometheus); format not linted")
    result = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_metrics_can_be_limited_to_named_families(server: ServerProcess) -> None:
    def families(*names: str) -> list[str]:
        answer = httpx.get(f"{server.url}/metrics", params=[("name[]", n) for n in names])
        assert answer.status_code == 200
        return [line.split()[2] for line in answer.text.splitlines()
                if line.startswith("# TYPE ")]  # fmt: skip

    # A counter of this process alone, one read of the store, both, an unknown name.
    assert families("edgefleet_reports_ingested_total") == ["edgefleet_reports_ingested_total"]
    assert families("edgefleet_devices") == ["edgefleet_devices"]
    assert sorted(families("edgefleet_devices", "edgefleet_build_info")) == [
        "edgefleet_build_info", "edgefleet_devices"]  # fmt: skip
    assert families("no_such_family") == []
    assert len(families()) > 10  # no name: everything


def _value(exposition: str, name: str) -> float:
    line = next(x for x in exposition.splitlines() if x.startswith(name + " "))
    return float(line.rpartition(" ")[2])
