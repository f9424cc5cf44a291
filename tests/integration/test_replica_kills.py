"""A control-plane replica SIGKILLed in the middle of a workload's failover and in the
middle of a planned migration, on the scale-out deployment (`tests.ha_deployment`: three
replicas on PostgreSQL behind HAProxy) with real agents that know only HAProxy's address.

- failover: the node running a replica is SIGKILLed; once the workload controllers see it
  suspect (before they decide the failover), the replica holding the
  `workload-controllers` lease is SIGKILLed too. Another replica takes the lease over and
  the failover completes: the replica runs healthy on the other node, and exactly one
  failover move is recorded (the placement generation moved once);
- planned migration: with the state archive on its way, the lease holder is SIGKILLed.
  The migration completes from another replica: the state directory moved, traffic weights
  end at the target, every step was applied once (the step history is the plain sequence)
  and one migration move is recorded.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest

from edgefleet.artifacts.model_builder import build_mlp
from edgefleet.client import FleetClient
from edgefleet.client_views import MoveView
from edgefleet.core.lease import LeaseName
from edgefleet.localfleet import AgentProcess, wait_for
from tests.ha_deployment import REPLICAS, Deployment, run_deployment
from tests.releases import Trust, publish
from tests.workload_fleet import (
    FILES_SERVICE,
    copies,
    endpoint_weights,
    http_workload,
    placement,
    wait_running,
)

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

SERVER_ENV = {
    # Every step of a migration is observable by polling; no score-driven moves.
    "EDGEFLEET_MIGRATION_SHIFT_STEP_S": "1.5",
    "EDGEFLEET_MIGRATION_DRAIN_S": "1",
    "EDGEFLEET_REBALANCE_MIGRATIONS": "false",
}
TAKEOVER_S = 60  # the lease's TTL, then a controller tick and the agents' next poll


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with run_deployment(tmp_path_factory.mktemp("kills"), SERVER_ENV) as running:
        with running.client() as client:
            trust = Trust.install(client)
            publish(client, tmp_path_factory.mktemp("kills-release"), "files", "1.0.0",
                    build_mlp(4, 8, 3, seed=2), 0, trust.targets_keys,
                    manifest=FILES_SERVICE)  # fmt: skip
        yield running


@dataclass
class Nodes:
    selector: str  # these agents' label, for a workload's constraints
    agents: list[AgentProcess]

    def by_id(self, device_id: str) -> AgentProcess:
        return next(agent for agent in self.agents if agent.device_id == device_id)

    def other_than(self, agent: AgentProcess) -> AgentProcess:
        return next(other for other in self.agents if other is not agent)


def applied_generation(agent: AgentProcess) -> int:
    return int(agent.state().get("applied_generation") or 0)


@pytest.fixture
def nodes(deployment: Deployment, tmp_path: Path) -> Iterator[Nodes]:
    """Two agents of this test's own in two zones, labelled with the test's name; the
    workloads are deleted afterwards."""
    group = re.sub(r"[^a-z0-9]+", "-", tmp_path.name.lower())[-30:].strip("-")
    with deployment.client() as client:
        token = client.create_enrollment_token(auto_approve=True)["token"]
    started = Nodes(f"group={group}", [])
    try:
        for zone in ("a", "b"):
            zone_args = ["--region", "eu-west", "--zone", f"eu-west-{zone}"]
            agent = AgentProcess(deployment.url, tmp_path / zone, token, f"{group}-{zone}",
                                 {"group": group}, extra_args=zone_args)  # fmt: skip
            started.agents.append(agent)
            agent.start()
        for agent in started.agents:
            wait_for(partial(applied_generation, agent), timeout_s=60,
                     what=f"{agent.name} in sync")  # fmt: skip
        yield started
    finally:
        for agent in started.agents:
            agent.stop()
        with deployment.client() as client:
            for workload in client.list_workloads():
                client.delete_workload(workload["name"])


def kill_lease_holder(deployment: Deployment) -> str:
    """SIGKILL the replica holding the workload controllers' lease; wait until another one
    holds it. Returns the victim's name."""
    victim = deployment.lease_holder(LeaseName.WORKLOADS)
    deployment.replicas[victim].kill()
    survivors = [name for name in REPLICAS if name != victim]
    wait_for(lambda: deployment.lease_holder(LeaseName.WORKLOADS) in survivors,
             timeout_s=TAKEOVER_S, what="another replica to take the lease over")  # fmt: skip
    return victim


@pytest.fixture
def victims(deployment: Deployment) -> Iterator[list[str]]:
    """Replicas a test killed: started again for the tests after it."""
    killed: list[str] = []
    yield killed
    for name in killed:
        deployment.replicas[name].start()


def moves(client: FleetClient, name: str) -> list[MoveView]:
    return list(reversed(client.workload_moves(name)))  # oldest first


def test_a_failover_completes_when_the_lease_holder_is_killed_in_its_middle(
    deployment: Deployment, nodes: Nodes, victims: list[str]
) -> None:
    with deployment.client() as client:
        client.apply_workload(http_workload("survivor",
                                            constraints={"selector": nodes.selector}))  # fmt: skip
        first = wait_running(client, "survivor")
        assert first["node_id"] is not None and first["generation"] is not None
        doomed = nodes.by_id(first["node_id"])
        other = nodes.other_than(doomed)
        [placed] = moves(client, "survivor")

        doomed.kill()  # SIGKILL: the node is gone, its replica with it
        wait_for(lambda: placement(client, "survivor")[0]["liveness"] in ("suspect", "dead"),
                 timeout_s=60, interval_s=0.2, what="the node suspected")  # fmt: skip
        # Killed before the failover is decided (a suspect node keeps its replicas for
        # `suspect_grace_s`, 30 s, unless declared dead first): the new holder decides it.
        at_kill = placement(client, "survivor")[0]
        victims.append(kill_lease_holder(deployment))

        moved = wait_running(client, "survivor", not_on=doomed.device_id, timeout_s=120)
        history = moves(client, "survivor")
    assert at_kill["node_id"] == doomed.device_id, at_kill
    assert moved["node_id"] == other.device_id
    assert copies(other, "survivor") == 1
    assert history[0] == placed
    [failover] = history[1:]  # one failover decision applied, not two
    assert (failover["kind"], failover["from"], failover["to"]) == (
        "failover", doomed.device_id, other.device_id)  # fmt: skip
    assert moved["generation"] == failover["generation"] > first["generation"]


def test_a_planned_migration_completes_when_the_lease_holder_is_killed_in_its_middle(
    deployment: Deployment, nodes: Nodes, victims: list[str]
) -> None:
    with deployment.client() as client:
        client.apply_workload(http_workload("mover", constraints={"selector": nodes.selector}))
        source_id = wait_running(client, "mover")["node_id"]
        assert source_id is not None
        source = nodes.by_id(source_id)
        target = nodes.other_than(source)
        (source.data_dir / "workloads" / "state" / "mover" / "note.txt").write_text("kept")
        migration = client.migrate_workload("mover", 0, to=target.device_id)

        def state() -> str:
            [found] = [m for m in client.workload_migrations("mover")
                       if m["id"] == migration["id"]]  # fmt: skip
            return str(found["state"])

        wait_for(lambda: state() in ("transferring", "starting"), timeout_s=90,
                 interval_s=0.1, what="the migration in flight")  # fmt: skip
        victims.append(kill_lease_holder(deployment))

        wait_for(lambda: state() == "completed", timeout_s=120, interval_s=0.2,
                 what="the migration to complete")  # fmt: skip
        [done] = [m for m in client.workload_migrations("mover") if m["id"] == migration["id"]]
        row = wait_running(client, "mover")
        weights = endpoint_weights(client, "mover")
        history = moves(client, "mover")
    steps = [step["state"] for step in done["steps"]]
    assert steps == ["prestaging", "checkpointing", "transferring", "starting", "shifting",
                     "shifting", "draining", "completed"], steps  # fmt: skip
    assert row["node_id"] == target.device_id
    assert weights == {target.device_id: 100}
    state_dir = target.data_dir / "workloads" / "state" / "mover"
    assert (state_dir / "note.txt").read_text() == "kept"
    wait_for(lambda: copies(source, "mover") == 0, what="the source's copy to stop")
    assert copies(target, "mover") == 1
    assert [m["kind"] for m in history] == ["placed", "migration"]
