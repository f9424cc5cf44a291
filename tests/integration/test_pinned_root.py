"""`agent --root-file`: the fleet's TUF root pinned out of band. An agent enrolls only when
the root the control plane hands over is the pinned one or chains from it through properly
signed rotations; otherwise it refuses with one line and a non-zero exit, keeping nothing."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from edgefleet.client import FleetClient
from edgefleet.localfleet import AgentProcess, ServerProcess, wait_for
from edgefleet.security.tuf_keys import generate_signing_key, public_key_from_dict
from edgefleet.security.tuf_metadata import RoleKeys, build_next_root, build_root, sign_metadata
from tests.conftest import AgentFactory

EXPIRES = datetime.now(UTC) + timedelta(days=365)


@dataclass
class Fleet:
    root_key: Any
    root: bytes  # version 1, as `trust init` made it


def new_root(online: dict[str, Any]) -> Fleet:
    root_key, targets_key = generate_signing_key(), generate_signing_key()
    root = build_root(
        root=RoleKeys((root_key.public_key,)),
        targets=RoleKeys((targets_key.public_key,)),
        snapshot=RoleKeys((public_key_from_dict(online["snapshot"]),)),
        timestamp=RoleKeys((public_key_from_dict(online["timestamp"]),)),
        expires=EXPIRES,
    )
    return Fleet(root_key, sign_metadata(root, root_key))


@pytest.fixture(scope="module")
def fleet(server: ServerProcess) -> Fleet:
    with server.client() as client:
        fleet = new_root(client.online_keys())
        client.initialize_trust(json.loads(fleet.root))
    return fleet


def pinned_agent(agents: AgentFactory, admin: FleetClient, name: str, root: bytes,
                 tmp_path: Path) -> AgentProcess:  # fmt: skip
    root_file = tmp_path / f"{name}.root.json"
    root_file.write_bytes(root)
    token = admin.create_enrollment_token(auto_approve=True)["token"]
    return agents(name, token, extra_args=["--root-file", str(root_file)])


def anchor(agent: AgentProcess) -> dict[str, Any]:
    return json.loads((agent.data_dir / "tuf" / "enrollment_root.json").read_bytes())


def assert_refused(agent: AgentProcess, reason: str) -> None:
    assert agent.proc is not None
    assert agent.proc.wait(timeout=30) == 1
    errors = [line for line in agent.log().splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "(tuf_root_not_pinned)" in errors[0], agent.log()
    assert reason in errors[0]
    assert agent.device_id is None
    assert not (agent.data_dir / "tuf" / "enrollment_root.json").exists()


def test_an_agent_pinned_to_the_fleets_root_enrolls(
    fleet: Fleet, admin: FleetClient, agents: AgentFactory, tmp_path: Path
) -> None:
    agent = pinned_agent(agents, admin, "pinned", fleet.root, tmp_path)
    wait_for(lambda: agent.state().get("enrollment") == "approved", what="enrolled")
    assert anchor(agent)["signed"] == json.loads(fleet.root)["signed"]


def test_an_agent_pinned_to_another_root_refuses_to_enroll(
    server: ServerProcess, fleet: Fleet, admin: FleetClient, agents: AgentFactory,
    tmp_path: Path,
) -> None:  # fmt: skip
    other = new_root(admin.online_keys())  # same online keys, other root and targets keys
    agent = pinned_agent(agents, admin, "elsewhere", other.root, tmp_path)
    assert_refused(agent, "its root v1 is not the pinned one")


def test_a_root_rotated_by_the_pinned_roots_keys_is_followed_and_a_forged_one_refused(
    server: ServerProcess, fleet: Fleet, admin: FleetClient, agents: AgentFactory,
    tmp_path: Path,
) -> None:  # fmt: skip
    new_key = generate_signing_key()
    v2 = build_next_root(fleet.root, expires=EXPIRES, root=RoleKeys((new_key.public_key,)))
    v2 = sign_metadata(sign_metadata(v2, fleet.root_key), new_key)
    admin.rotate_root(json.loads(v2))
    agent = pinned_agent(agents, admin, "rotated", fleet.root, tmp_path)
    wait_for(lambda: agent.state().get("enrollment") == "approved", what="enrolled")
    assert anchor(agent)["signed"]["version"] == 2

    # A control plane that hands over a v3 made with keys of its own (the operators' v2
    # keys never signed it): written straight into its repository, as a thief would.
    thief = generate_signing_key()
    v3 = sign_metadata(build_next_root(v2, expires=EXPIRES, root=RoleKeys((thief.public_key,))),
                       thief)  # fmt: skip
    (server.data_dir / "tuf" / "repository" / "3.root.json").write_bytes(v3)
    agent = pinned_agent(agents, admin, "forged", fleet.root, tmp_path)
    assert_refused(agent, "its root v3 is signed by 0/1 keys of root v2")
