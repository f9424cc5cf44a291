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
IDLE_HEARTBEAT_S = 12  # what the MQTT control plane tells an idle device online


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
    process = ServerProcess(tmp_path_factory.mktemp("server") / "data", ADMIN_TOKEN, env={
        "EDGEFLEET_MQTT_URL": broker.admin_url,
        "EDGEFLEET_MQTT_IDLE_HEARTBEAT_S": str(IDLE_HEARTBEAT_S)})  # fmt: skip
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


def load_devices(admin: FleetClient, prefix: str) -> list[dict[str, Any]]:
    """The devices of one load run (its names' prefix)."""
    return [d for d in admin.list_devices(selector="fleet=load")
            if d["name"].startswith(f"{prefix}-")]  # fmt: skip


def label_every_device_once_in_sync(admin: FleetClient, prefix: str,
                                    done: threading.Event) -> None:  # fmt: skip
    """Once every load device holds its first desired state, change a label on each."""

    def in_sync() -> bool:
        devices = load_devices(admin, prefix)
        return len(devices) == DEVICES and all(d["applied_generation"] >= 1 for d in devices)

    wait_for(in_sync, timeout_s=60, what="every load device in sync")
    for device in load_devices(admin, prefix):
        admin.label_device(device["id"], {"wave": "one"}, [])
    done.set()


def run_load(server: ServerProcess, admin: FleetClient, ids: Path, *extra: str,
             prefix: str = "load", reports_each: int = 8) -> dict[str, Any]:  # fmt: skip
    """A 25 s load of DEVICES devices named PREFIX-..., heartbeating every 2 s (unless told
    otherwise), a label changed on each once they are in sync."""
    labelled = threading.Event()
    labeller = threading.Thread(target=label_every_device_once_in_sync,
                                args=(admin, prefix, labelled), daemon=True)  # fmt: skip
    labeller.start()
    result = subprocess.run(
        [sys.executable, "-m", "edgefleet.cli", "sim", "load", "--server", server.url,
         "--token", ADMIN_TOKEN, "--devices", str(DEVICES), "--duration", "25s",
         "--heartbeat-interval", "2", "--telemetry-interval", "5s", "--workers", "2",
         "--sources", "2", "--identities", str(ids), "--name-prefix", prefix, "-o", "json",
         *extra],
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
    assert summary["reports_failed"] == 0 and summary["reports_sent"] >= DEVICES * reports_each
    assert summary["telemetry_failed"] == 0 and summary["telemetry_sent"] >= DEVICES * 3
    assert summary["source_addresses"] == ["127.0.0.2", "127.0.0.3"]
    return summary


def check_the_change_reached_every_device(
    admin: FleetClient, summary: dict[str, Any], ids: Path
) -> None:
    assert summary["desired_updates"] == DEVICES
    devices = load_devices(admin, "load")
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
    """Devices reporting at their own interval, as nodes hosting replicas do."""
    with mqtt_server.client() as admin:
        summary = run_load(mqtt_server, admin, tmp_path / "ids.json", "--transport", "mqtt",
                           "--mqtt", broker.url, "--no-presence")  # fmt: skip
        assert summary["presence"] is False

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


def test_a_light_fleet_on_mqtt_keeps_presence_as_the_agent_does(
    mqtt_server: ServerProcess, broker: BrokerProcess, tmp_path: Path
) -> None:
    """By default a virtual device does what the agent does on MQTT: a signed Will, a
    signed `online`, then heartbeats at the long interval an idle device is told; at the
    end it leaves as the agent does, its Will published: every device offline."""
    with mqtt_server.client() as admin:
        before = admin.prometheus_metrics()
        summary = run_load(mqtt_server, admin, tmp_path / "ids.json", "--transport", "mqtt",
                           "--mqtt", broker.url, prefix="idle", reports_each=1)  # fmt: skip
        assert summary["presence"] is True

        def taken(state: str) -> float:
            metrics = admin.prometheus_metrics()
            label = f'state="{state}"'
            return (counted(metrics, "edgefleet_presence_taken_total", label)
                    - counted(before, "edgefleet_presence_taken_total", label))  # fmt: skip

        wait_for(lambda: taken("offline") >= DEVICES, timeout_s=30, what="every Will taken")
        assert taken("online") >= DEVICES and taken("offline") == DEVICES
        assert counted(admin.prometheus_metrics(), "edgefleet_messages_dropped_total") == 0
        # Told the idle interval, not the 2 s asked: the first report, one per new desired
        # state (the first, the label) and one or two at 12 s (at 2 s: 8 or more each).
        assert summary["reports_sent"] <= DEVICES * 6
        # Two changes for each: the idle interval once `online` was taken (pushed, unless
        # the first document the device got already had it), the label; a third, its own
        # interval again once its Will was taken, for when it is back.
        assert DEVICES <= summary["desired_updates"] <= 2 * DEVICES
        devices = load_devices(admin, "idle")
        assert len(devices) == DEVICES and all(d["labels"]["wave"] == "one" for d in devices)
        assert all(d["desired_generation"] == d["applied_generation"] + 1 >= 4 for d in devices)
