"""Residency policies judged by the placement controller, against a real control plane and
two real agents: a workload placed under no policy keeps its running replica once a Policy
applied afterwards refuses it, but gets no new placement (a node that becomes eligible
stays empty), and `workloads show` says which rule and why; the policy deleted, the
replica is placed."""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import pytest
import yaml

from edgefleet.artifacts.model_builder import build_mlp
from edgefleet.client import FleetClient
from edgefleet.localfleet import ServerProcess, wait_for
from tests.cli_runner import run_cli
from tests.conftest import ADMIN_TOKEN, AgentFactory
from tests.releases import Trust, free_port, publish
from tests.workload_fleet import FILES_SERVICE, http_workload, placement, wait_running

POLICY = {"kind": "Policy", "metadata": {"name": "eu-data"},
          "spec": {"residency": [{"devices": "site=held", "allowed": ["eu"]}]}}  # fmt: skip


@pytest.fixture(scope="module")
def release(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> None:
    with server.client() as client:
        trust = Trust.install(client)
        publish(client, tmp_path_factory.mktemp("release"), "files", "1.0.0", build_mlp(),
                free_port(), trust.targets_keys, manifest=FILES_SERVICE)  # fmt: skip


def test_a_policy_applied_later_keeps_what_runs_and_places_nothing_new(
    server: ServerProcess, admin: FleetClient, agents: AgentFactory, release: None,
    tmp_path: Path,
) -> None:  # fmt: skip
    token = admin.create_enrollment_token(auto_approve=True)["token"]
    gold = agents("held-gold", token, {"site": "held", "tier": "gold"},
                  extra_args=["--region", "eu-west", "--zone", "eu-west-a"])  # fmt: skip
    plain = agents("held-plain", token, {"site": "held"},
                   extra_args=["--region", "eu-west", "--zone", "eu-west-b"])  # fmt: skip
    for agent in (gold, plain):
        wait_for(partial(lambda a: a.state().get("applied_generation"), agent),
                 what=f"{agent.name} sync")  # fmt: skip
    admin.apply_workload(http_workload("kept", replicas=2,
                                       constraints={"selector": "tier=gold"}))  # fmt: skip
    assert wait_running(admin, "kept", 0)["node_id"] == gold.device_id
    env = {"EDGEFLEET_SERVER": server.url, "EDGEFLEET_TOKEN": ADMIN_TOKEN}
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(yaml.safe_dump(POLICY))
    assert run_cli("apply", "-f", str(policy_file), env=env).code == 0

    def says_why() -> bool:
        return all("no new placements: policy eu-data, rule residency" in row["reason"]
                   for row in placement(admin, "kept"))  # fmt: skip

    wait_for(says_why, what="both replicas naming the policy")
    shown = run_cli("workloads", "show", "kept", env=env)
    assert shown.code == 0, shown.stderr
    assert "rule residency" in " ".join(shown.stdout.split())

    # A node that becomes eligible gets nothing; what runs stays.
    admin.label_device("held-plain", {"tier": "gold"}, [])
    for _ in range(20):  # several placement ticks
        rows = placement(admin, "kept")
        assert rows[0]["node_id"] == gold.device_id and rows[0]["state"] == "running"
        assert rows[1]["node_id"] is None, rows[1]
        time.sleep(0.25)

    admin.delete_policy("eu-data")
    assert wait_running(admin, "kept", 1)["node_id"] == plain.device_id
    assert wait_running(admin, "kept", 0)["node_id"] == gold.device_id
    admin.delete_workload("kept")
