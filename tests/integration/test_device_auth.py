"""Device request authentication: forged, replayed, stale and cross-device requests."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest

from edgefleet.client import FleetClient
from edgefleet.localfleet import ServerProcess
from edgefleet.security.keys import DeviceKey
from tests.device_requests import INVENTORY, RawDevice


@pytest.fixture
def device(server: ServerProcess, admin: FleetClient) -> RawDevice:
    raw = RawDevice(server.url)
    token = admin.create_enrollment_token(auto_approve=True)["token"]
    assert raw.enroll(token).status_code == 200
    return raw


def error_code(response: httpx.Response) -> str:
    return response.json()["error"]["code"]


def test_signed_report_is_accepted(device: RawDevice) -> None:
    response = device.report()
    assert response.status_code == 200, response.text
    assert response.json()["desired_generation"] >= 1


def test_replayed_request_is_refused(device: RawDevice) -> None:
    target = f"/v1/devices/{device.id}/report"
    body, headers = device.signed("POST", target, {"applied_generation": 0, "inventory": INVENTORY})
    assert device.send("POST", target, body, headers).status_code == 200
    replay = device.send("POST", target, body, headers)
    assert replay.status_code == 401
    assert error_code(replay) == "replayed_request"


def test_forged_signature_is_refused(server: ServerProcess, device: RawDevice) -> None:
    impostor = RawDevice(server.url, key=DeviceKey.generate())
    target = f"/v1/devices/{device.id}/report"
    body, headers = impostor.signed(
        "POST", target, {"applied_generation": 0, "inventory": INVENTORY}, as_device=device.id
    )
    response = impostor.send("POST", target, body, headers)
    assert response.status_code == 401
    assert error_code(response) == "bad_signature"


def test_tampered_body_is_refused(device: RawDevice) -> None:
    target = f"/v1/devices/{device.id}/report"
    body, headers = device.signed("POST", target, {"applied_generation": 0, "inventory": INVENTORY})
    tampered = body.replace(b'"cpu_count": 2', b'"cpu_count": 64')
    assert tampered != body
    response = device.send("POST", target, tampered, headers)
    assert response.status_code == 401
    assert error_code(response) == "bad_signature"


def test_request_for_another_device_is_refused(
    server: ServerProcess, admin: FleetClient, device: RawDevice
) -> None:
    other = RawDevice(server.url)
    other.enroll(admin.create_enrollment_token(auto_approve=True)["token"])
    response = device.call(
        "POST",
        f"/v1/devices/{other.id}/report",
        {
            "applied_generation": 0,
            "inventory": INVENTORY,
        },
    )
    assert response.status_code == 403
    assert error_code(response) == "wrong_device"
    desired = device.call("GET", f"/v1/devices/{other.id}/desired")
    assert desired.status_code == 403


def test_stale_timestamp_is_refused(device: RawDevice) -> None:
    device.clock_offset = timedelta(minutes=-30)
    response = device.report()
    assert response.status_code == 401
    assert error_code(response) == "stale_request"
    assert "device clock" in response.json()["error"]["message"]


def test_unsigned_and_unknown_device_requests_are_refused(server: ServerProcess) -> None:
    unsigned = httpx.post(f"{server.url}/v1/devices/d-x/report", json={})
    assert unsigned.status_code == 401
    assert error_code(unsigned) == "unsigned_request"
    stranger = RawDevice(server.url)
    response = stranger.report()
    assert response.status_code == 401
    assert error_code(response) == "unknown_device"


def test_enrollment_requires_proof_of_key_possession(
    server: ServerProcess, admin: FleetClient
) -> None:
    victim_key = DeviceKey.generate()
    attacker = RawDevice(server.url)
    token = admin.create_enrollment_token(auto_approve=True)["token"]
    payload = {
        "enrollment_token": token,
        "public_key": victim_key.public_key_b64,  # someone else's key, signed with ours
        "name": "stolen",
        "inventory": INVENTORY,
    }
    response = attacker.call("POST", "/v1/enroll", payload)
    assert response.status_code == 401
    assert error_code(response) == "bad_signature"


def test_invalid_enrollment_token_is_refused(server: ServerProcess) -> None:
    response = RawDevice(server.url).enroll("efe_not-a-real-token")
    assert response.status_code == 401
    assert error_code(response) == "invalid_enrollment_token"


def test_report_ahead_of_desired_generation_is_refused(device: RawDevice) -> None:
    response = device.report(applied_generation=999)
    assert response.status_code == 409
    assert error_code(response) == "generation_ahead"


def reports_ingested(server: ServerProcess) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=10,
                     headers={"authorization": f"Bearer {server.admin_token}"}).text  # fmt: skip
    line = 'edgefleet_reports_ingested_total{transport="http"} '
    return sum(float(row.split()[-1]) for row in text.splitlines() if row.startswith(line))


def test_a_report_is_decoded_by_the_device_protocol_and_counted_once_stored(
    server: ServerProcess, device: RawDevice
) -> None:
    before = reports_ingested(server)
    assert device.report().status_code == 200
    assert reports_ingested(server) == before + 1
    bad = {"applied_generation": 0, "release": {"name": "m", "version": "1", "serial": 1,
                                                "state": "exploded"}}  # fmt: skip
    response = device.call("POST", f"/v1/devices/{device.id}/report", bad)
    assert response.status_code == 400
    assert error_code(response) == "invalid_input"
    assert response.json()["error"]["message"].startswith("report.release.state: 'exploded'")
    assert reports_ingested(server) == before + 1
