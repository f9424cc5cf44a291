"""Devices with wrong clocks against a real control plane: a device 4 minutes ahead has its
windows stored at the server's times, windows stamped 10 minutes ahead and uploaded once the
clock was set right are stored no later than they arrived, and `edgefleet telemetry status`
says what was moved and why."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from edgefleet.client import FleetClient
from edgefleet.core.telemetry.windows import MetricKind, Window
from edgefleet.core.telemetry.wire import Batch, encode_batch
from edgefleet.localfleet import ServerProcess
from edgefleet.security.request_signing import sign_request
from tests.cli_runner import run_cli
from tests.conftest import ADMIN_TOKEN
from tests.device_requests import RawDevice
from tests.telemetry_fleet import stored_windows

TELEMETRY = "application/x-edgefleet-telemetry"
CPU = "host.cpu.percent"
WINDOW_S = 10
# The signed timestamp has whole seconds, and the request takes a moment on its way.
LATENCY_S = 2


@pytest.fixture
def device(server: ServerProcess, admin: FleetClient) -> RawDevice:
    raw = RawDevice(server.url)
    token = admin.create_enrollment_token(auto_approve=True)["token"]
    assert raw.enroll(token, name=f"clock-{raw.id[:8]}").status_code == 200
    return raw


def minute_of_windows(device: RawDevice) -> tuple[Window, ...]:
    """The last minute's windows as the device stamps them: on its own clock."""
    device_now_s = int((datetime.now(UTC) + device.clock_offset).timestamp())
    last_start_s = device_now_s // WINDOW_S * WINDOW_S - WINDOW_S
    return tuple(
        Window(CPU, MetricKind.GAUGE, (), start_s, WINDOW_S, 2, 2.0 * i, i, i, i)
        for i, start_s in enumerate(range(last_start_s - 5 * WINDOW_S, last_start_s + 1, WINDOW_S))
    )


def upload(device: RawDevice, batch: Batch) -> httpx.Response:
    """POST one batch, signed on the device's (possibly wrong) clock."""
    body = encode_batch(batch)
    target = f"/v1/devices/{device.id}/telemetry?dropped_through_seq=0"
    signed_at = datetime.now(UTC) + device.clock_offset
    headers = sign_request(device.key, "POST", target, body, device.id, signed_at)
    return device.send("POST", target, body, {**headers, "content-type": TELEMETRY})


def cli(server: ServerProcess, *args: str) -> str:
    env = {"EDGEFLEET_SERVER": server.url, "EDGEFLEET_TOKEN": ADMIN_TOKEN}
    result = run_cli("telemetry", *args, env=env)
    assert result.code == 0, result.stderr
    return result.stdout


def last_hour(server: ServerProcess, device: RawDevice) -> list[tuple[int, int]]:
    """(start, windows) of the device's CPU buckets that `telemetry query --since 1h` shows."""
    answer = json.loads(cli(server, "query", "--device", device.id, "--metric", CPU,
                            "--since", "1h", "--step", str(WINDOW_S), "-o", "json"))  # fmt: skip
    [series] = answer["series"]
    return [(p["start_s"], p["windows"]) for p in series["points"]]


def test_a_device_four_minutes_ahead_is_stored_at_the_servers_times(
    server: ServerProcess, device: RawDevice
) -> None:
    device.clock_offset = timedelta(minutes=4)
    windows = minute_of_windows(device)
    answer = upload(device, Batch(1, windows))
    assert answer.status_code == 200, answer.text
    # Stored where the server's clock puts them: 240 s earlier than stamped.
    stored = [start_s for _, _, _, start_s, _ in stored_windows(server.db_path, device.id)]
    for stamped, start_s in zip((w.start_s for w in windows), stored, strict=True):
        assert stamped - 240 - LATENCY_S <= start_s <= stamped - 240 + LATENCY_S
    assert max(stored) + WINDOW_S <= time.time()
    # So the last hour shows every one of them.
    assert sum(count for _, count in last_hour(server, device)) == len(windows)
    status = cli(server, "status", device.id)
    assert "240 s ahead of the server" in status or "239 s ahead of the server" in status
    assert "6 windows in 1 batches" in status


def test_windows_stamped_ahead_and_sent_with_the_clock_set_right_are_not_stored_in_the_future(
    server: ServerProcess, admin: FleetClient, device: RawDevice
) -> None:
    device.clock_offset = timedelta(minutes=10)
    batch = Batch(1, minute_of_windows(device))
    refused = upload(device, batch)  # the signing check: refused, the device keeps the batch
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "stale_request"
    assert "check the device clock" in refused.json()["error"]["message"]

    device.clock_offset = timedelta(0)  # the clock is set right; the queued batch goes up
    answer = upload(device, batch)
    arrived_s = time.time()
    assert answer.status_code == 200, answer.text
    stored = stored_windows(server.db_path, device.id)
    assert [(name, length) for _, name, _, _, length in stored] == [(CPU, WINDOW_S)] * 6
    starts = [start_s for _, _, _, start_s, _ in stored]
    assert starts == sorted(starts)  # in the order measured, the same length apart
    assert starts[-1] - starts[0] == 5 * WINDOW_S
    assert starts[-1] + WINDOW_S <= arrived_s  # none ends in the future
    assert sum(count for _, count in last_hour(server, device)) == 6

    status = cli(server, "status", device.id)
    assert re.search(r"(in step with|1 s behind) the server", status)
    assert "6 windows in 1 batches" in status
    assert "after the batch arrived" in status
    as_json = admin.telemetry_status(device.id)
    assert as_json["clock_skew_s"] in (-1, 0)
    assert (as_json["shifted_batches"], as_json["shifted_windows"]) == (1, 6)
    assert -600 - LATENCY_S <= as_json["last_shift_s"] <= -600 + WINDOW_S
    assert as_json["largest_shift_s"] == as_json["last_shift_s"]
    assert f"device_id={device.id}" in server.log() and "telemetry windows moved" in server.log()
