"""`edgefleet sim run` against a real control plane: virtual devices enroll (approved through
the API), heartbeat, live through the profile's faults, and the run ends with a summary."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from edgefleet.client import FleetClient
from edgefleet.localfleet import ServerProcess
from tests.conftest import ADMIN_TOKEN

PROFILE = {
    "kind": "FleetProfile",
    "metadata": {"name": "tiny"},
    "spec": {
        "name_prefix": "tiny",
        "heartbeat_interval": "1s",
        "telemetry": {"sample_interval": "1s", "batch_interval": "2s"},
        "regions": [{"name": "lab", "time_zone": "Europe/Berlin",
                     "zones": [{"name": "lab-a", "lat": 52.5, "lon": 13.4}]}],
        "classes": [{"name": "box", "network": {"latency_ms": 5, "jitter_ms": 1},
                     "hardware": {"power": "battery",
                                  "battery": {"start_percent": 90,
                                              "drain_percent_per_hour": 1}}}],
        "faults": [
            {"kind": "agent-crash", "at": "4s", "devices": 2, "restart_after": "2s"},
            {"kind": "node-death", "at": "5s", "devices": 1, "return_after": "3s"},
            {"kind": "partition", "at": "6s", "duration": "2s", "devices": 1},
        ],
    },
}  # fmt: skip


def test_a_virtual_fleet_runs_through_its_faults(
    server: ServerProcess, admin: FleetClient, tmp_path: Path
) -> None:
    profile = tmp_path / "tiny.yaml"
    profile.write_text(yaml.safe_dump(PROFILE))
    summary = tmp_path / "summary.json"
    result = subprocess.run(
        [sys.executable, "-m", "edgefleet.cli", "sim", "run", "--server", server.url,
         "--token", ADMIN_TOKEN, "--devices", "5", "--profile", str(profile),
         "--duration", "14s", "--approve", "api", "--ramp", "1s", "--quiet",
         "--summary", str(summary), "--data-dir", str(tmp_path / "sim")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(summary.read_text())
    assert report["errors"] == []
    assert report["devices"] == 5 and report["enrollment"] == {"approved": 5}
    assert report["phases"] == {"running": 5}  # the dead node came back, crashes restarted
    assert report["faults_played"] == 3 and report["agent_crashes"] >= 2
    traffic = report["traffic"]
    assert traffic["report"]["requests"] > 5 * 5 and traffic["enroll"]["requests"] >= 5
    assert traffic["report"]["http_errors"] > 0  # pending until the API approved them
    names = {d["name"] for d in admin.list_devices() if d["name"].startswith("tiny-")}
    assert names == {f"tiny-{i:05d}" for i in range(5)}
    ids = {d["id"] for d in admin.list_devices() if d["name"].startswith("tiny-")}
    assert not ids & {a["device_id"] for a in admin.list_attestations()}  # virtual: no attesting
    assert (tmp_path / "sim" / "devices" / "tiny-00000" / "device.key").exists()
