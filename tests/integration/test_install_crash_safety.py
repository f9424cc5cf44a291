"""An agent killed with SIGKILL at any step of an install restarts into a working slot and
either finishes the install or rolls it back. The simulator's faulty agent loses power
right after journaling the chosen state (EDGEFLEET_FAULT_KILL_AT, sim/faulty_agent.py),
which makes every step reachable deterministically."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgefleet.artifacts.model_builder import build_mlp, build_nan_mlp
from edgefleet.client import FleetClient
from edgefleet.localfleet import AgentProcess, ServerProcess, wait_for
from edgefleet.sim.faulty_agent import KILL_AT_ENV
from tests.conftest import AgentFactory
from tests.releases import Trust, free_port, publish

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trust(server: ServerProcess) -> Trust:
    with server.client() as client:
        return Trust.install(client)


@pytest.fixture(scope="module")
def port() -> int:
    return free_port()


@pytest.fixture
def fleet(admin: FleetClient, agents: AgentFactory, trust: Trust, tmp_path: Path) -> Iterator[Any]:
    token = admin.create_enrollment_token(auto_approve=True)["token"]
    data_dir = tmp_path / "device"

    def start(fault: str | None = None) -> AgentProcess:
        # One device per test (names are unique in a fleet), restarted under its own name.
        agent = agents(f"crashy-{tmp_path.name}", token, data_dir=data_dir, start=False)
        if fault:
            agent.inject_faults({KILL_AT_ENV: fault})
        agent.start()
        return agent

    yield start


def status(admin: FleetClient, agent: AgentProcess) -> dict[str, Any]:
    return admin.get_device(agent.device_id or "")["release_status"]


def serving(port: int) -> dict[str, Any] | None:
    try:
        result: dict[str, Any] = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).json()
        return result
    except httpx.HTTPError:
        return None


def killed(agent: AgentProcess) -> bool:
    return not agent.running and agent.proc is not None and agent.proc.returncode == -9


def installed(admin: FleetClient, agent: AgentProcess, version: str) -> bool:
    s = status(admin, agent)
    return s.get("version") == version and s.get("state") == "installed"


def active_version(admin: FleetClient, agent: AgentProcess) -> Any:
    """The version in the active slot, once the agent has written its state."""
    return agent.state() and (status(admin, agent).get("active") or {}).get("version")


def test_sigkill_at_every_install_step_ends_installed_or_rolled_back(
    admin: FleetClient, fleet: Any, trust: Trust, port: int, tmp_path: Path
) -> None:
    agent = fleet()
    wait_for(lambda: agent.state().get("applied_generation"), what="enrolled and in sync")
    publish(admin, tmp_path, "crash", "1.0.0", build_mlp(4, 8, 3, seed=1), port, trust.targets_keys)
    admin.assign_release("crash", "1.0.0", device=agent.device_id)
    wait_for(lambda: status(admin, agent).get("state") == "installed", timeout_s=60)
    agent.stop()

    steps = ["downloading", "verifying", "staged", "installing", "health-check"]
    for minor, step in enumerate(steps, start=1):
        version = f"1.{minor}.0"
        publish(
            admin,
            tmp_path,
            "crash",
            version,
            build_mlp(4, 8, 3, seed=10 + minor),
            port,
            trust.targets_keys,
        )
        crashing = fleet(fault=step)
        admin.assign_release("crash", version, device=crashing.device_id)
        wait_for(partial(killed, crashing), timeout_s=60, what=f"SIGKILL at {step}")
        # After the crash the device must still serve something that works, or be about to.
        restarted = fleet()
        wait_for(
            partial(installed, admin, restarted, version),
            timeout_s=90,
            what=f"install of {version} to finish after a kill at {step}",
        )
        health = wait_for(lambda: serving(port), what="the service answering")
        assert health is not None
        assert health["status"] == "ok", f"after a kill at {step}: {health}"
        slot_version = wait_for(partial(active_version, admin, restarted))
        assert slot_version == version
        restarted.stop()


def test_bad_release_killed_in_health_window_is_rolled_back(
    admin: FleetClient, fleet: Any, trust: Trust, port: int, tmp_path: Path
) -> None:
    agent = fleet()
    wait_for(lambda: agent.state().get("applied_generation"), what="enrolled and in sync")
    publish(admin, tmp_path, "nan", "1.0.0", build_mlp(4, 8, 3, seed=21), port, trust.targets_keys)
    admin.assign_release("nan", "1.0.0", device=agent.device_id)
    wait_for(lambda: status(admin, agent).get("state") == "installed", timeout_s=60)
    agent.stop()

    publish(
        admin, tmp_path, "nan", "2.0.0", build_nan_mlp(4, 8, 3, seed=22), port, trust.targets_keys
    )
    # The health window is interrupted twice: the release is then judged unhealthy instead
    # of being retried forever.
    first = fleet(fault="health-check")
    admin.assign_release("nan", "2.0.0", device=first.device_id)
    wait_for(lambda: killed(first), timeout_s=60, what="first kill in the health window")
    second = fleet(fault="health-check")
    wait_for(lambda: killed(second), timeout_s=60, what="second kill in the health window")
    third = fleet()
    final = wait_for(
        lambda: s if (s := status(admin, third)).get("state") == "rolled-back" else None,
        timeout_s=60,
        what="rollback after repeated interruptions",
    )
    assert final is not None
    assert final["version"] == "2.0.0"
    assert "restarted repeatedly" in final["reason"]
    assert final["active"] == {"name": "nan", "version": "1.0.0", "port": port}
    health = wait_for(lambda: serving(port), what="v1 serving again")
    assert health is not None
    assert health["status"] == "ok"
