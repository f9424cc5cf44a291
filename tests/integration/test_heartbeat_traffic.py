"""What a device's steady heartbeating costs on the wire: one kept-alive connection across
heartbeat-sized gaps (a new one per heartbeat would mean, with https, a TLS handshake every
15 s on both sides), and the inventory only when it changed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgefleet.client import FleetClient
from edgefleet.localfleet import AgentProcess, ServerProcess, wait_for
from edgefleet.transport.http import HttpTransport
from tests.device_requests import INVENTORY, RawDevice
from tests.relay import Relay

UVICORN_DEFAULT_KEEP_ALIVE_S = 5  # what the server closed idle connections after before


@pytest.fixture
def relay(server: ServerProcess) -> Iterator[Relay]:
    with Relay(server.url) as running:
        yield running


def test_requests_seconds_apart_share_one_connection(relay: Relay) -> None:
    async def two_requests() -> None:
        transport = HttpTransport(relay.url)
        try:
            for pause_s in (UVICORN_DEFAULT_KEEP_ALIVE_S + 1, 0):
                answer = await transport.request("GET", "/healthz", b"", {}, timeout_s=10)
                assert answer.status == 200
                await asyncio.sleep(pause_s)
        finally:
            await transport.close()

    asyncio.run(two_requests())
    assert relay.connections == 1


def test_heartbeats_carry_the_inventory_only_when_it_changed(
    admin: FleetClient, relay: Relay, tmp_path: Path
) -> None:
    token = admin.create_enrollment_token(auto_approve=True)["token"]
    agent = AgentProcess(relay.url, tmp_path / "agent", token, "thrifty", heartbeat_interval_s=1)
    agent.start()
    try:
        wait_for(lambda: len(relay.report_bodies()) >= 5, what="five heartbeats")
    finally:
        agent.stop()
    reports = relay.report_bodies()
    assert "inventory" in reports[0]
    assert sum("inventory" not in r for r in reports) >= len(reports) // 2
    device = admin.get_device(agent.device_id or "")
    assert device["inventory"]["hardware"]["cpu_count"] >= 1


def test_a_heartbeat_without_inventory_keeps_the_stored_one(
    admin: FleetClient, server: ServerProcess
) -> None:
    token = admin.create_enrollment_token(auto_approve=True)["token"]
    device = RawDevice(server.url)
    assert device.enroll(token).status_code == 200
    target = f"/v1/devices/{device.id}/report"
    bare = device.call("POST", target, {"applied_generation": 0})
    assert bare.status_code == 200
    assert "inventory_optional" not in bare.json()  # said only in answer to an inventory
    assert admin.get_device(device.id)["inventory"]["hardware"]["disk_mb"] == 4096
    changed = json.loads(json.dumps(INVENTORY))
    changed["hardware"]["disk_mb"] = 64
    answer = device.call("POST", target, {"applied_generation": 0, "inventory": changed})
    assert answer.status_code == 200
    assert answer.json()["inventory_optional"] is True  # what lets agents leave it out
    assert admin.get_device(device.id)["inventory"]["hardware"]["disk_mb"] == 64
