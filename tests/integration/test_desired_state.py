"""Desired state: generations, the long poll, and agents converging to changes."""

from __future__ import annotations

import threading
import time

import pytest

from edgefleet.client import FleetClient
from edgefleet.localfleet import ServerProcess, wait_for
from tests.conftest import AgentFactory
from tests.device_requests import RawDevice


@pytest.fixture
def device(server: ServerProcess, admin: FleetClient) -> RawDevice:
    raw = RawDevice(server.url)
    token = admin.create_enrollment_token(auto_approve=True)["token"]
    assert raw.enroll(token, labels={"tier": "a"}).status_code == 200
    return raw


def test_document_carries_generation_and_etag(device: RawDevice) -> None:
    response = device.call("GET", f"/v1/devices/{device.id}/desired")
    assert response.status_code == 200
    doc = response.json()
    assert doc["device_id"] == device.id
    assert doc["generation"] >= 1
    assert doc["labels"] == {"tier": "a"}
    assert response.headers["etag"] == f'"{doc["generation"]}"'


def test_unchanged_state_long_polls_to_304(device: RawDevice) -> None:
    generation = device.call("GET", f"/v1/devices/{device.id}/desired").json()["generation"]
    target = f"/v1/devices/{device.id}/desired?wait=1"
    body, headers = device.signed("GET", target)
    response = device.send("GET", target, body, {**headers, "if-none-match": f'"{generation}"'})
    assert response.status_code == 304


def test_change_wakes_a_waiting_long_poll(admin: FleetClient, device: RawDevice) -> None:
    generation = device.call("GET", f"/v1/devices/{device.id}/desired").json()["generation"]
    target = f"/v1/devices/{device.id}/desired?wait=60"
    body, headers = device.signed("GET", target)
    result: dict = {}

    def poll() -> None:
        response = device.send("GET", target, body, {**headers, "if-none-match": f'"{generation}"'})
        result["status"] = response.status_code
        result["doc"] = response.json()
        result["returned_at"] = time.monotonic()

    waiter = threading.Thread(target=poll)
    waiter.start()
    time.sleep(0.5)  # let the poll reach the server and start waiting
    assert waiter.is_alive(), "the long poll must hold while nothing changes"
    admin.label_device(device.id, {"tier": "b"}, [])
    waiter.join(timeout=30)
    assert not waiter.is_alive()
    assert result["status"] == 200
    assert result["doc"]["generation"] == generation + 1
    assert result["doc"]["labels"] == {"tier": "b"}


def test_identical_change_does_not_bump_generation(admin: FleetClient, device: RawDevice) -> None:
    before = admin.get_device(device.id)["desired_generation"]
    admin.label_device(device.id, {"tier": "a"}, [])
    assert admin.get_device(device.id)["desired_generation"] == before


def test_agent_converges_through_long_poll_not_heartbeat(
    admin: FleetClient, agents: AgentFactory
) -> None:
    token = admin.create_enrollment_token(auto_approve=True)["token"]
    # A 60 s heartbeat: anything that arrives sooner came through the long poll.
    agent = agents("slow-heart", token, heartbeat_interval_s=60)
    device_id = wait_for(lambda: agent.state().get("applied_generation") and agent.device_id)
    assert device_id is not None
    applied = agent.state()["applied_generation"]

    admin.label_device(device_id, {"zone": "b"}, [])
    state = wait_for(
        lambda: (s := agent.state())["applied_generation"] > applied and s,
        timeout_s=10,
        what="the agent to apply the new generation",
    )
    assert state["desired"]["labels"]["zone"] == "b"
    # The agent reports right after applying, so the server sees it in sync.
    wait_for(lambda: admin.get_device(device_id)["in_sync"], timeout_s=10, what="in sync")


def test_heartbeat_interval_change_reaches_agent(admin: FleetClient, agents: AgentFactory) -> None:
    token = admin.create_enrollment_token(auto_approve=True)["token"]
    agent = agents("retuned", token, heartbeat_interval_s=30)
    device_id = wait_for(lambda: agent.state().get("applied_generation") and agent.device_id)
    assert device_id is not None
    admin.configure_device(device_id, 1)
    wait_for(
        lambda: agent.state()["desired"]["agent"]["heartbeat_interval_s"] == 1,
        what="agent to take the new interval",
    )
    first = admin.get_device(device_id)["last_seen"]
    wait_for(
        lambda: admin.get_device(device_id)["last_seen"] != first,
        timeout_s=10,
        what="heartbeats at the new, faster interval",
    )
