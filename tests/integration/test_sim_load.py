"""`edgefleet sim load` against a real control plane, over HTTP and over MQTT (a real
Mosquitto): light virtual devices enroll in bulk with an auto-approving token, heartbeat
with signed reports, upload telemetry and follow their desired state, from two worker
processes and two loopback source addresses. The server stored every report and telemetry
batch they sent, and a label change reached every device (long poll, or pushed)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgefleet.client import FleetClient
from edgefleet.localfleet import ServerProcess, wait_for
from tests.conftest import ADMIN_TOKEN
from tests.mqtt_broker import BrokerProcess

DEVICES = 20
REPORT_ROUTE = 'route="/v1/devices/{device_id}/report"'


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    process = BrokerProcess(tmp_path_factory.mktemp("broker"))
    process.start()  # skips the test without Mosquitto
    yield process
    process.stop()


@pytest.fixture(scope="module")
def mqtt_server(
    tmp_path_factory: pytest.TempPathFactory, broker: BrokerProcess
) -> Iterator[ServerProcess]:
    """A control plane with the MQTT device channel."""
    process = ServerProcess(tmp_path_factory.mktemp("server") / "data", ADMIN_TOKEN,
                            env={"EDGEFLEET_MQTT_URL": broker.admin_url})  # fmt: skip
    process.start()
    yield process
    process.stop()


def counted(metrics: str, name: str, *labels: str) -> float:
    """The sum of a Prometheus counter's samples whose labels include all of `labels`."""
    total = 0.0
    for line in metrics.splitlines():
        sample, _, value = line.rpartition(" ")
        if sample.split("{")[0] == name and all(label in sample for label in labels):
            total += float(value)
    return total


def label_every_device_once_in_sync(admin: FleetClient, done: threading.Event) -> None:
    """Once every load device holds its first desired state, change a label on each."""

    def in_sync() -> bool:
        devices = admin.list_devices(selector="fleet=load")
        return len(devices) == DEVICES and all(d["applied_generation"] >= 1 for d in devices)

    wait_for(in_sync, timeout_s=60, what="every load device in sync")
    for device in admin.list_devices(selector="fleet=load"):
        admin.label_device(device["id"], {"wave": "one"}, [])
    done.set()


def run_load(server: ServerProcess, admin: FleetClient, ids: Path, *extra: str) -> dict[str, Any]:
    """A 25 s load of DEVICES devices, a label changed on each once they are in sync."""
    labelled = threading.Event()
    labeller = threading.Thread(target=label_every_device_once_in_sync, args=(admin, labelled),
                                daemon=True)  # fmt: skip
    labeller.start()
    result = subprocess.run(
        [sys.executable, "-m", "edgefleet.cli", "sim", "load", "--server", server.url,
         "--token", ADMIN_TOKEN, "--devices", str(DEVICES), "--duration", "25s",
         "--heartbeat-interval", "2", "--telemetry-interval", "5s", "--workers", "2",
         "--sources", "2", "--identities", str(ids), "-o", "json", *extra],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    labeller.join(timeout=5)
    assert labelled.is_set()
    summary: dict[str, Any] = json.loads(result.stdout)
    assert summary["errors"] == {}
    assert (summary["enrolled"], summary["enroll_failed"], summary["online"]) == (
        DEVICES,
        0,
        DEVICES,
    )
    assert summary["reports_failed"] == 0 and summary["reports_sent"] >= DEVICES * 8
    assert summary["telemetry_failed"] == 0 and summary["telemetry_sent"] >= DEVICES * 3
    assert summary["source_addresses"] == ["127.0.0.2", "127.0.0.3"]
    return summary


def check_the_change_reached_every_device(
    admin: FleetClient, summary: dict[str, Any], ids: Path
) -> None:
    assert summary["desired_updates"] == DEVICES
    devices = admin.list_devices(selector="fleet=load")
    assert len(devices) == DEVICES
    assert all(d["labels"]["wave"] == "one" for d in devices)
    assert all(d["applied_generation"] == d["desired_generation"] >= 2 for d in devices)
    # The identities file names exactly these devices (a later run reuses them).
    kept = json.loads(ids.read_text())
    assert sorted(i["name"] for i in kept) == sorted(d["name"] for d in devices)


def test_every_report_a_light_fleet_sends_over_http_is_stored(
    server: ServerProcess, admin: FleetClient, tmp_path: Path
) -> None:
    summary = run_load(server, admin, tmp_path / "ids.json", "--transport", "http")
    # The server answered every report (after storing it) and took every telemetry batch.
    metrics = admin.prometheus_metrics()
    answered = counted(metrics, "edgefleet_http_requests_total", REPORT_ROUTE, 'status="200"')
    assert answered == summary["reports_sent"]
    accepted = counted(metrics, "edgefleet_telemetry_batches_accepted_total")
    assert accepted == summary["telemetry_sent"]
    check_the_change_reached_every_device(admin, summary, tmp_path / "ids.json")


def test_every_report_a_light_fleet_sends_over_mqtt_is_stored(
    mqtt_server: ServerProcess, broker: BrokerProcess, tmp_path: Path
) -> None:
    with mqtt_server.client() as admin:
        summary = run_load(mqtt_server, admin, tmp_path / "ids.json", "--transport", "mqtt",
                           "--mqtt", broker.url)  # fmt: skip

        # Every report and batch published (each acknowledged by the broker) was stored.
        def stored() -> tuple[float, float]:
            metrics = admin.prometheus_metrics()
            return (
                counted(metrics, "edgefleet_reports_ingested_total", 'transport="mqtt"'),
                counted(metrics, "edgefleet_telemetry_batches_accepted_total"),
            )

        sent = (summary["reports_sent"], summary["telemetry_sent"])
        wait_for(lambda: stored() == sent, timeout_s=30, what=f"{sent} stored")
        assert counted(admin.prometheus_metrics(), "edgefleet_messages_dropped_total") == 0
        assert summary["traffic"]["desired"]["requests"] >= 2 * DEVICES  # pushed, no polls
        check_the_change_reached_every_device(admin, summary, tmp_path / "ids.json")
