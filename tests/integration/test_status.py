"""Connection status from last-seen: online, then stale and offline when the agent stops."""

from __future__ import annotations

from edgefleet.client import FleetClient
from edgefleet.localfleet import wait_for
from tests.conftest import AgentFactory


def test_stopped_agent_goes_stale_then_offline(admin: FleetClient, agents: AgentFactory) -> None:
    token = admin.create_enrollment_token(auto_approve=True)["token"]
    agent = agents("fading", token, heartbeat_interval_s=1)
    device_id = wait_for(lambda: agent.device_id, what="enrollment")
    assert device_id is not None
    wait_for(lambda: admin.get_device(device_id)["status"] == "online", what="online")
    assert agent.stop() == 0, "SIGTERM stops the agent cleanly"
    wait_for(lambda: admin.get_device(device_id)["status"] == "stale", what="stale")
    wait_for(lambda: admin.get_device(device_id)["status"] == "offline", what="offline")
    offline = admin.list_devices(status="offline")
    assert device_id in [d["id"] for d in offline]
