"""`edgefleet sim load` against a real control plane: light virtual devices enroll in bulk
with an auto-approving token, heartbeat with signed reports, upload telemetry and follow
their desired state, from two worker processes and two loopback source addresses; the
server stored every report and telemetry batch they sent, and a label change reached every
device."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

from edgefleet.client import FleetClient
from edgefleet.localfleet import ServerProcess, wait_for
from tests.conftest import ADMIN_TOKEN

DEVICES = 20


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


def test_every_report_a_light_fleet_sends_is_stored(
    server: ServerProcess, admin: FleetClient, tmp_path: Path
) -> None:
    labelled = threading.Event()
    labeller = threading.Thread(target=label_every_device_once_in_sync, args=(admin, labelled),
                                daemon=True)  # fmt: skip
    labeller.start()
    result = subprocess.run(
        [sys.executable, "-m", "edgefleet.cli", "sim", "load", "--server", server.url,
         "--token", ADMIN_TOKEN, "--devices", str(DEVICES), "--transport", "http",
         "--duration", "25s", "--heartbeat-interval", "2", "--telemetry-interval", "5s",
         "--workers", "2", "--sources", "2", "--identities", str(tmp_path / "ids.json"),
         "-o", "json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    labeller.join(timeout=5)
    assert labelled.is_set()
    assert summary["errors"] == {}
    assert (summary["devices"], summary["enrolled"], summary["enroll_failed"]) == (
        DEVICES,
        DEVICES,
        0,
    )
    assert summary["reports_failed"] == 0 and summary["reports_sent"] >= DEVICES * 8
    assert summary["telemetry_failed"] == 0 and summary["telemetry_sent"] >= DEVICES * 3
    assert summary["source_addresses"] == ["127.0.0.2", "127.0.0.3"]

    # The server answered (after storing) every report and took every telemetry batch.
    metrics = admin.prometheus_metrics()
    route = 'route="/v1/devices/{device_id}/report"'
    assert (
        counted(metrics, "edgefleet_http_requests_total", route, 'status="200"')
        == (summary["reports_sent"])
    )
    assert (
        counted(metrics, "edgefleet_telemetry_batches_accepted_total")
        == (summary["telemetry_sent"])
    )

    # The label change reached every device through its long poll, and each reported
    # applying it at once.
    assert summary["desired_updates"] == DEVICES
    devices = admin.list_devices(selector="fleet=load")
    assert len(devices) == DEVICES
    assert all(d["labels"]["wave"] == "one" for d in devices)
    assert all(d["applied_generation"] == d["desired_generation"] >= 2 for d in devices)

    # A second run reuses the same identities: the devices are the same ones.
    ids = json.loads((tmp_path / "ids.json").read_text())
    assert sorted(i["name"] for i in ids) == sorted(d["name"] for d in devices)
