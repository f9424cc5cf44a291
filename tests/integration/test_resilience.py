"""Outages and restarts: the agent rides out a dead control plane; the server keeps its
state across restarts; a misconfigured agent says so in one line."""

from __future__ import annotations

from pathlib import Path

from edgefleet.client import FleetClient
from edgefleet.localfleet import ServerProcess, wait_for
from tests.cli_runner import run_cli
from tests.conftest import AgentFactory


def test_agent_survives_a_server_restart(
    server: ServerProcess, admin: FleetClient, agents: AgentFactory
) -> None:
    token = admin.create_enrollment_token(auto_approve=True)["token"]
    agent = agents("outage", token, labels={"site": "a"})
    device_id = wait_for(lambda: agent.state().get("applied_generation") and agent.device_id)
    assert device_id is not None

    server.kill()
    wait_for(
        lambda: "unavailable" in agent.log() or "cannot" in agent.log().lower(),
        what="agent to notice the outage",
    )
    assert agent.running
    server.start()

    with server.client() as fresh:
        first_seen = fresh.get_device(device_id)["last_seen"]
        wait_for(
            lambda: fresh.get_device(device_id)["last_seen"] != first_seen,
            what="heartbeats to resume after the restart",
        )
        fresh.label_device(device_id, {"site": "b"}, [])
        wait_for(
            lambda: agent.state()["desired"]["labels"] == {"site": "b"},
            what="desired state to flow again",
        )
        assert [d["id"] for d in fresh.list_devices() if d["name"] == "outage"] == [device_id]


def test_unenrolled_agent_without_token_exits_with_one_line(tmp_path: Path) -> None:
    result = run_cli(
        "agent",
        "--server",
        "http://127.0.0.1:9",
        "--data-dir",
        str(tmp_path / "fresh"),
    )
    assert result.code == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: this agent is not enrolled")
