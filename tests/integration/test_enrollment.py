"""Enrollment with real agent processes: approval, auto-approval, reject, revoke, restart."""

from __future__ import annotations

import os
import stat

import pytest

from edgefleet.client import FleetClient
from edgefleet.errors import ApiError
from edgefleet.localfleet import ServerProcess, wait_for
from tests.conftest import AgentFactory


def device_named(admin: FleetClient, name: str) -> dict | None:
    matches = [d for d in admin.list_devices() if d["name"] == name]
    return matches[0] if matches else None


def test_pending_device_is_refused_until_approved_then_reports(
    admin: FleetClient, agents: AgentFactory
) -> None:
    token = admin.create_enrollment_token(description="lab")["token"]
    agent = agents("cam-pending", token, labels={"region": "eu", "kind": "camera"})

    device = wait_for(lambda: device_named(admin, "cam-pending"), what="enrollment")
    assert device is not None
    assert device["enrollment"] == "pending"
    assert device["labels"] == {"region": "eu", "kind": "camera"}
    wait_for(lambda: "device_pending" in agent.log(), what="agent to be told it is pending")
    assert agent.running, "a pending agent backs off; it must not exit"
    assert admin.get_device(device["id"])["applied_generation"] == 0

    admin.change_enrollment(device["id"], "approve")
    synced = wait_for(
        lambda: (d := admin.get_device(device["id"]))["in_sync"] and d["status"] == "online" and d,
        what="approved device to converge",
    )
    assert synced["applied_generation"] == synced["desired_generation"] >= 1
    inventory = synced["inventory"]
    assert inventory["hardware"]["cpu_count"] >= 1
    assert inventory["software"]["agent_version"]
    assert agent.state()["enrollment"] == "approved"


def test_auto_approve_token_admits_device_directly(
    admin: FleetClient, agents: AgentFactory
) -> None:
    token = admin.create_enrollment_token(auto_approve=True)["token"]
    agent = agents("gw-auto", token)
    device = wait_for(
        lambda: (d := device_named(admin, "gw-auto")) and d["in_sync"] and d,
        what="auto-approved device in sync",
    )
    assert device is not None
    assert device["enrollment"] == "approved"
    assert agent.device_id == device["id"]


def test_key_file_is_private_and_restart_keeps_identity(
    server: ServerProcess, admin: FleetClient, agents: AgentFactory
) -> None:
    created = admin.create_enrollment_token(auto_approve=True, max_uses=1)
    agent = agents("kiosk-restart", created["token"])
    device = wait_for(lambda: device_named(admin, "kiosk-restart"), what="enrollment")
    assert device is not None
    key_mode = stat.S_IMODE(os.stat(agent.data_dir / "device.key").st_mode)
    assert key_mode == 0o600

    agent.kill()
    agents("kiosk-restart", None, data_dir=agent.data_dir)  # no token needed any more
    wait_for(lambda: admin.get_device(device["id"])["status"] == "online", what="back online")
    assert [d["id"] for d in admin.list_devices() if d["name"] == "kiosk-restart"] == [device["id"]]
    token = next(t for t in admin.list_enrollment_tokens() if t["id"] == created["id"])
    assert token["uses"] == 1


def test_reject_and_revoke_refuse_the_device_without_crashing_the_agent(
    admin: FleetClient, agents: AgentFactory
) -> None:
    token = admin.create_enrollment_token()["token"]
    rejected = agents("rogue", token)
    device = wait_for(lambda: device_named(admin, "rogue"), what="enrollment")
    assert device is not None
    admin.change_enrollment(device["id"], "reject")
    wait_for(lambda: "device_rejected" in rejected.log(), what="agent told it is rejected")
    assert rejected.running

    good = agents("gate-1", admin.create_enrollment_token(auto_approve=True)["token"])
    good_id = wait_for(
        lambda: d["id"] if (d := device_named(admin, "gate-1")) and d["in_sync"] else None
    )
    assert good_id is not None
    admin.change_enrollment(good_id, "revoke")
    wait_for(lambda: "device_revoked" in good.log(), what="agent told it is revoked")
    assert good.running
    with pytest.raises(ApiError) as refused:
        admin.change_enrollment(good_id, "approve")
    assert refused.value.status == 409 and refused.value.code == "illegal_transition"


def test_exhausted_and_expired_enrollment_tokens_are_refused(
    admin: FleetClient, agents: AgentFactory
) -> None:
    once = admin.create_enrollment_token(max_uses=1)["token"]
    agents("first", once)
    wait_for(lambda: device_named(admin, "first"), what="first enrollment")
    second = agents("second", once)
    wait_for(lambda: "enrollment_token_exhausted" in second.log(), what="exhausted token refusal")
    assert device_named(admin, "second") is None

    expired = admin.create_enrollment_token(expires_in_s=0.001)["token"]
    late = agents("late", expired)
    wait_for(lambda: "enrollment_token_expired" in late.log(), what="expired token refusal")
    assert device_named(admin, "late") is None
