"""An agent process that has verified and installed releases, one of them rebuilt from a
delta, holds none of the heavy libraries that work needed: python-tuf's signature checks
(cryptography's Rust core) and the delta codec (numpy) ran in the install helper's child
processes, which are gone. Read from the agent's memory map, so the agent needs no hook."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest

from edgefleet.artifacts.model_builder import build_mlp
from edgefleet.client import FleetClient
from edgefleet.localfleet import AgentProcess, wait_for
from tests.conftest import AgentFactory
from tests.releases import Trust, fine_tuned, free_port, publish

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

# cryptography's Rust core (what python-tuf and securesystemslib verify with), numpy and
# the OpenBLAS its wheels bring, and onnxruntime (the sandbox check's) never belong here.
HEAVY = re.compile(r"/(cryptography|numpy|numpy\.libs|onnxruntime|securesystemslib|tuf)/")


def heavy_libraries(pid: int) -> list[str]:
    with open(f"/proc/{pid}/maps") as maps:
        files = {fields[5] for line in maps if len(fields := line.split()) > 5}
    return sorted(f for f in files if HEAVY.search(f))


def installed(admin: FleetClient, agent: AgentProcess, version: str) -> dict[str, Any] | None:
    status: dict[str, Any] = admin.get_device(agent.device_id or "")["release_status"]
    return status if (status.get("version"), status.get("state")) == (version, "installed") \
        else None  # fmt: skip


def test_after_verified_installs_and_a_delta_the_agent_holds_no_heavy_libraries(
    admin: FleetClient, agents: AgentFactory, tmp_path: Path
) -> None:
    token = admin.create_enrollment_token(auto_approve=True)["token"]
    agent = agents("lean-cam", token)
    wait_for(lambda: agent.state().get("applied_generation"), what="agent in sync")
    assert agent.proc is not None
    assert heavy_libraries(agent.proc.pid) == []
    # The fleet gets its root of trust after the device enrolled: the agent pins it on first
    # use, through its helper like every other metadata check.
    trust = Trust.install(admin)
    port = free_port()
    base = build_mlp(64, 512, 16, seed=5)
    publish(admin, tmp_path, "lean", "1.0.0", base, port, trust.targets_keys)
    admin.assign_release("lean", "1.0.0", device=agent.device_id)
    wait_for(lambda: installed(admin, agent, "1.0.0"), timeout_s=60, what="1.0.0 installed")
    publish(admin, tmp_path, "lean", "2.0.0", fine_tuned(base, 1e-3, 1), port,
            trust.targets_keys)  # fmt: skip
    admin.assign_release("lean", "2.0.0", device=agent.device_id)
    second = wait_for(lambda: installed(admin, agent, "2.0.0"), timeout_s=90,
                      what="2.0.0 installed")  # fmt: skip
    assert second is not None
    assert second["bytes_saved"] > 0 and "rebuilt from a delta" in agent.log()
    assert "trust on first use" in agent.log()
    assert heavy_libraries(agent.proc.pid) == []
