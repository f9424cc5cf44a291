"""The predictive controllers through a real control plane.

`window: predicted`: devices upload three weeks of their own telemetry (signed batches, as
an agent does), a rollout with `window: predicted` is applied, and the real rollout
controller installs on the device whose quiet hours are now and holds the one whose quiet
hours come later, naming when. Telemetry fidelity: with a threshold declared in the fleet
policy, a device whose latency climbs towards it is told (in its desired state) to sample
that metric finer, and coarser once it is far below."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from edgefleet.cli.releases import push_file
from edgefleet.client import FleetClient
from edgefleet.core.telemetry.policy import default_fleet_policy, fleet_policy_to_document
from edgefleet.core.telemetry.quiet_hours import CPU_METRIC, REQUESTS_METRIC
from edgefleet.core.telemetry.windows import MetricKind, Window
from edgefleet.core.telemetry.wire import Batch, encode_batch
from edgefleet.core.updates.release import ArtifactKind
from edgefleet.errors import ApiError
from edgefleet.localfleet import ServerProcess, wait_for
from edgefleet.security.request_signing import sign_request
from edgefleet.security.tuf_metadata import sign_metadata
from tests.device_requests import RawDevice
from tests.releases import Trust

TELEMETRY = "application/x-edgefleet-telemetry"
HOUR_S = 3600


def hourly_history(now: datetime, quiet_offsets_h: range) -> list[Window]:
    """21 days of hourly request counts and CPU: quiet in the hours `quiet_offsets_h` after
    the current hour's start (modulo a day), busy otherwise."""
    this_hour_s = int(now.timestamp()) // HOUR_S * HOUR_S
    quiet = {(this_hour_s // HOUR_S + k) % 24 for k in quiet_offsets_h}
    windows = []
    for h in range(21 * 24, 0, -1):
        start_s = this_hour_s - h * HOUR_S
        idle = (start_s // HOUR_S) % 24 in quiet
        requests = 360.0 if idle else 18_000.0
        cpu = 5.0 if idle else 45.0
        windows.append(Window(REQUESTS_METRIC, MetricKind.COUNTER, (), start_s, HOUR_S, 60,
                              requests, 0.0, requests / 30, requests / 60))  # fmt: skip
        windows.append(Window(CPU_METRIC, MetricKind.GAUGE, (), start_s, HOUR_S, 60,
                              cpu * 60, cpu, cpu, cpu))  # fmt: skip
    return windows


def upload(device: RawDevice, windows: list[Window], seq: int = 1) -> None:
    body = encode_batch(Batch(seq, tuple(windows)))
    target = f"/v1/devices/{device.id}/telemetry?dropped_through_seq=0"
    headers = sign_request(device.key, "POST", target, body, device.id, datetime.now(UTC))
    response = device.send("POST", target, body, {**headers, "content-type": TELEMETRY})
    assert response.status_code == 200, response.text


def publish_file_release(client: FleetClient, trust: Trust, workdir: Path) -> str:
    path = workdir / "settings.json"
    path.write_text(json.dumps({"threshold": 0.5}))
    push_file(client, path, "quiet-settings", "1.0.0", ArtifactKind.FILE, [])
    client.create_release("quiet", "1.0.0", ["quiet-settings@1.0.0"])
    staged = client.stage_release("quiet", "1.0.0")
    for key in trust.targets_keys:
        staged = sign_metadata(staged, key)
    client.publish_release("quiet", "1.0.0", staged)
    return "quiet@1.0.0"


@pytest.fixture(scope="module")
def devices(server: ServerProcess) -> dict[str, RawDevice]:
    """Two devices with opposite habits: `idle-now` is quiet from the hour before this one to
    the next, `idle-later` is busy now and quiet from 6 to 8 hours from now."""
    now = datetime.now(UTC)
    out = {}
    with server.client() as client:
        token = client.create_enrollment_token(auto_approve=True)["token"]
    for name, quiet in (("idle-now", range(-1, 2)), ("idle-later", range(6, 9))):
        raw = RawDevice(server.url)
        assert raw.enroll(token, name=name, labels={"fleet": "quiet"}).status_code == 200
        assert raw.report().status_code == 200
        upload(raw, hourly_history(now, quiet))
        out[name] = raw
    return out


def test_a_predicted_window_installs_only_in_the_device_s_predicted_idle_time(
    server: ServerProcess, admin: FleetClient, devices: dict[str, RawDevice], tmp_path: Path
) -> None:
    trust = Trust.install(admin)
    release = publish_file_release(admin, trust, tmp_path)
    manifest: dict[str, Any] = {
        "kind": "Rollout",
        "metadata": {"name": "quiet-hours"},
        "spec": {
            "release": release,
            "target": "fleet=quiet",
            "strategy": {"waves": ["100%"], "max_unavailable": "100%"},
            "window": {"mode": "predicted", "max_wait": "12h", "min_confidence": 0.5},
        },
    }
    with pytest.raises(ApiError, match=r"spec\.window: expected one of static, predicted") as e:
        admin.create_rollout({**manifest, "spec": {**manifest["spec"], "window": "soon"}})
    assert e.value.status == 400
    created = admin.create_rollout(manifest)
    rollout_id = created["rollout"]["id"]

    def states() -> dict[str, tuple[str, str]] | None:
        found = admin.get_rollout(rollout_id)["devices"]
        by_name = {d["name"]: (d["state"], d["reason"]) for d in found}
        settled = by_name.get("idle-later", ("",))[0] == "outside-window"
        return by_name if settled and by_name.get("idle-now", ("",))[0] == "updating" else None

    by_name = wait_for(states, timeout_s=60, what="the controller's first decision")
    assert "predicted idle" in by_name["idle-now"][1]
    # Its first quiet hour may begin busy: the install waits for the second one.
    expected = (datetime.now(UTC) + timedelta(hours=7)).strftime("%Y-%m-%d %H:00")
    assert by_name["idle-later"][1].startswith(f"waiting for its predicted idle time at {expected}")
    # Only the idle device's desired state names the release.
    names = {d["name"]: d for d in admin.list_devices(selector="fleet=quiet")}
    assert names["idle-now"]["release"]["version"] == "1.0.0"
    assert names["idle-later"]["release"] is None
    # The stored manifest keeps the window as written (the spec is re-parsed from it).
    stored = admin.get_rollout(rollout_id)
    assert stored["manifest"]["spec"]["window"]["mode"] == "predicted"


# --- telemetry fidelity ---------------------------------------------------------------------


def latency_windows(start_s: int, values: list[float]) -> list[Window]:
    return [
        Window("inference.latency_ms", MetricKind.GAUGE, (), start_s + 60 * i, 60, 10, 10 * v,
               v, v, v)
        for i, v in enumerate(values)
    ]  # fmt: skip


def test_a_device_near_a_declared_threshold_is_told_to_sample_finer(
    server: ServerProcess, admin: FleetClient, devices: dict[str, RawDevice]
) -> None:
    policy = fleet_policy_to_document(default_fleet_policy())
    assert policy["fidelity"] == {"enabled": True, "thresholds": [], "near": 0.1, "far": 0.25,
                                  "horizon": 900.0}  # fmt: skip
    admin.set_telemetry_policy(
        {**policy, "fidelity": {"thresholds": [{"metric": "inference.latency_ms", "above": 200}]}}
    )
    raw = devices["idle-later"]  # its hourly history is older than these windows
    start_s = int(datetime.now(UTC).timestamp()) // 60 * 60 - 600

    def section() -> dict[str, Any]:
        return dict(admin.get_device(raw.id)["desired"]["telemetry"])

    upload(raw, latency_windows(start_s, [150, 170, 185, 190, 192]), seq=2)
    assert section()["fine_metrics"] == ["inference.latency_ms"]
    assert "coarse_metrics" not in section()
    upload(raw, latency_windows(start_s + 300, [60, 58, 61, 59, 60]), seq=3)
    assert section()["coarse_metrics"] == ["inference.latency_ms"]
    assert "fine_metrics" not in section()
    with pytest.raises(ApiError, match=r"fidelity\.thresholds\[0\]") as e:
        admin.set_telemetry_policy({**policy, "fidelity": {"thresholds": [{"metric": "x"}]}})
    assert e.value.status == 400
    # Without thresholds the advice is no longer rendered (the policy change re-renders).
    admin.set_telemetry_policy(policy)
    assert "fine_metrics" not in section() and "coarse_metrics" not in section()
