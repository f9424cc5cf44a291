"""Conformance: a virtual agent goes through the same agent code paths as a real one.

One scenario, run against a real agent process and against a virtual agent (the real agent
code with simulated hardware, processes and network): enrollment with a token, pending
until approved through the API, heartbeats with inventory, the desired state followed over
the long poll, and a signed release installed, health-checked and reported.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from edgefleet.artifacts.model_builder import build_mlp
from edgefleet.client import FleetClient
from edgefleet.localfleet import AgentProcess, ServerProcess, wait_for
from tests.releases import Trust, free_port, publish
from tests.sim_agents import VirtualAgentProcess


class Agent(Protocol):
    name: str

    def start(self) -> None: ...
    def stop(self) -> Any: ...
    def state(self) -> dict[str, Any]: ...
    @property
    def device_id(self) -> str | None: ...


@pytest.fixture(scope="module")
def trust(server: ServerProcess) -> Trust:
    with server.client() as client:
        return Trust.install(client)


@pytest.fixture(params=["real", "virtual"])
def make_agent(
    request: pytest.FixtureRequest, server: ServerProcess, tmp_path: Path
) -> Iterator[Callable[[str, str], Agent]]:
    started: list[Agent] = []

    def make(name: str, token: str) -> Agent:
        labels = {"kind": "camera"}
        agent: Agent
        if request.param == "real":
            agent = AgentProcess(server.url, tmp_path / name, token, name, labels, 1.0,
                                 ["--statsd-port", "0"])  # fmt: skip
        else:
            agent = VirtualAgentProcess(server.url, tmp_path / name, token, name, labels, 1.0)
        agent.start()
        started.append(agent)
        return agent

    yield make
    for agent in started:
        agent.stop()


def device_of(admin: FleetClient, name: str) -> dict[str, Any] | None:
    return next((d for d in admin.list_devices() if d["name"] == name), None)


def test_enroll_approve_heartbeat_follow_and_install(
    make_agent: Callable[[str, str], Agent], admin: FleetClient, trust: Trust, tmp_path: Path
) -> None:
    name = f"conf-{free_port()}"
    token = admin.create_enrollment_token()["token"]
    agent = make_agent(name, token)

    pending = wait_for(lambda: device_of(admin, name), what="device enrolled")
    assert pending is not None
    assert pending["enrollment"] == "pending"
    wait_for(lambda: agent.state().get("enrollment") == "pending", what="agent sees pending")
    device_id = pending["id"]
    assert agent.device_id == device_id

    admin.change_enrollment(device_id, "approve")
    wait_for(lambda: agent.state().get("enrollment") == "approved", what="agent approved")
    first = wait_for(lambda: (d := admin.get_device(device_id))["last_seen"] and d,
                     what="heartbeat")  # fmt: skip
    assert first["status"] == "online"
    assert first["inventory"]["hardware"]["arch"]
    assert first["inventory"]["location"] is not None
    wait_for(lambda: admin.get_device(device_id)["last_seen"] != first["last_seen"],
             what="a later heartbeat")  # fmt: skip

    admin.label_device(device_id, {"tier": "gold"}, [])
    wait_for(lambda: admin.get_device(device_id)["in_sync"]
             and agent.state()["desired"].get("labels", {}).get("tier") == "gold",
             what="desired state applied")  # fmt: skip

    release = f"vision-{name}"  # one server serves both runs: a release each
    publish(admin, tmp_path / "release", release, "1.0.0", build_mlp(4, 8, 3, seed=1),
            free_port(), trust.targets_keys, window_s=2)  # fmt: skip
    admin.assign_release(release, "1.0.0", device=device_id)

    def installed() -> dict[str, Any] | None:
        status: dict[str, Any] = admin.get_device(device_id)["release_status"]
        return status if status.get("state") == "installed" else None

    status = wait_for(installed, timeout_s=90, what="release installed")
    assert status is not None
    assert status["version"] == "1.0.0" and status["bytes_done"] == status["bytes_total"] > 0
    assert status["active"]["name"] == release
