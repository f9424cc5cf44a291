"""Agreement, failover: the lab moves a killed node's replicas where the control plane does,
and as soon.

A real run: a control plane (its controllers every 0.1 s, as in the liveness agreement),
four real agents in two zones, a workload of two replicas spread over the zones (a light
HTTP server from a signed release), running. The lab's copy of that fleet (`copy_fleet`,
`copy_workloads`, `copy_placement`) is taken; then the agent hosting replica 0 is killed.
In the lab the same node falls silent after its last heartbeat, the control plane's own
liveness controller judges the silence and its own placement controller
(`controllers.placement`, over the in-memory store) acts on the verdict, on simulated
time. The moves must be the same (which replica, from which node, to which), and the time
from the node's last heartbeat to the move within 20 % of the real one.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from edgefleet.artifacts.model_builder import build_mlp
from edgefleet.client import FleetClient
from edgefleet.controllers.liveness import LivenessPolicy
from edgefleet.core.workloads.failover import FailoverPolicy
from edgefleet.localfleet import ServerProcess, wait_for
from edgefleet.server.workload_settings import WorkloadSettings
from edgefleet.sim.lab.controller import TimelineEntry
from edgefleet.sim.lab.failover import FailoverRehearsal
from edgefleet.sim.lab.fleet_copy import copy_fleet, copy_placement, copy_workloads
from edgefleet.sim.lab.liveness import LabLiveness
from edgefleet.sim.lab.scheduler import EventScheduler
from tests.conftest import ADMIN_TOKEN, AgentFactory
from tests.releases import Trust, free_port, publish
from tests.workload_fleet import FILES_SERVICE, http_workload, wait_running

WORKLOAD = "fo-web"
ZONES = {"fo-0": "eu-a", "fo-1": "eu-b", "fo-2": "eu-a", "fo-3": "eu-b"}
SERVER_ENV = {
    # Liveness is judged every 0.1 s (the default 0.5 s would be most of the 20 % allowed;
    # the lab judges at the exact moment phi crosses), and placement in the same tick.
    "EDGEFLEET_CONTROLLER_INTERVAL_S": "0.1",
    # No score-driven migrations: the only moves are the ones the kill causes.
    "EDGEFLEET_REBALANCE_MIGRATIONS": "false",
}
TOLERANCE = 0.2  # of the real time from the last heartbeat to the move
HEARTBEATS_SEEN = 30  # a detector history per node before the kill


def moves_after(admin: FleetClient, killed_at: datetime) -> list[tuple[Any, ...]]:
    """The workload's moves since the kill, oldest first: (replica, from, to, kind, at)."""
    found = [(m["replica"], m["from"], m["to"], m["kind"], datetime.fromisoformat(m["at"]))
             for m in admin.workload_moves(WORKLOAD)]  # fmt: skip
    return sorted((m for m in found if m[4] > killed_at), key=lambda m: m[4])


@pytest.mark.slow
def test_the_lab_fails_over_a_killed_node_as_the_control_plane_does(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "server", ADMIN_TOKEN, SERVER_ENV)
    server.start()
    agents = AgentFactory(server, tmp_path)
    try:
        with server.client() as admin:
            trust = Trust.install(admin)
            publish(admin, tmp_path / "release", "files", "1.0.0", build_mlp(4, 8, 3, seed=2),
                    free_port(), trust.targets_keys, manifest=FILES_SERVICE)  # fmt: skip
            token = admin.create_enrollment_token(auto_approve=True)["token"]
            fleet = {name: agents(name, token, {"kind": "fo"},
                                  extra_args=["--region", "eu", "--zone", zone])
                     for name, zone in ZONES.items()}  # fmt: skip
            wait_for(lambda: len(admin.list_nodes()) == len(ZONES), what="every node seen")
            admin.apply_workload(http_workload(WORKLOAD, replicas=2,
                                               preferences={"spread": "zones"}))  # fmt: skip
            for replica in (0, 1):
                wait_running(admin, WORKLOAD, replica)
            wait_for(lambda: all(n["heartbeats_seen"] >= HEARTBEATS_SEEN
                                 for n in admin.list_nodes()),
                     timeout_s=120, what="a detector history of every node")  # fmt: skip
            devices = copy_fleet(admin, "kind=fo", "1h")
            workloads = copy_workloads(admin)
            placement = copy_placement(admin)
            victim = placement.assignments[0].node_id  # the node of replica 0
            [victim_agent] = [a for a in fleet.values() if a.device_id == victim]
            killed_at = datetime.now(UTC)
            victim_agent.kill()
            real_moves = wait_for(lambda: moves_after(admin, killed_at), timeout_s=60,
                                  what="the killed node's replica moved")  # fmt: skip
            [node] = [n for n in admin.list_nodes() if n["id"] == victim]
    finally:
        for agent in agents.agents:
            agent.stop()
        server.stop()
    assert node["liveness"] == "dead" and node["last_heartbeat_at"] is not None
    last_heartbeat = datetime.fromisoformat(node["last_heartbeat_at"])
    real = [(WORKLOAD, replica, source, target, kind)
            for replica, source, target, kind, _ in real_moves]  # fmt: skip
    real_move_s = (real_moves[0][4] - last_heartbeat).total_seconds()

    # The lab: the copied fleet and placement, the server's default policies.
    settings = WorkloadSettings()
    scheduler, timeline = EventScheduler(), list[TimelineEntry]()
    lab = FailoverRehearsal(workloads, devices, scheduler, datetime.now(UTC), timeline,
                            settings.failover_policy(), placement)  # fmt: skip
    liveness = LabLiveness(scheduler, datetime.now(UTC), seed=1, on_change=lab.set_liveness,
                           policy=LivenessPolicy(settings.thresholds()))  # fmt: skip
    [device] = [d for d in devices if d.id == victim]
    lab.node_failed(victim)
    liveness.fall_silent(victim, 0.0, device.heartbeat_interval_s, device.network)
    scheduler.run(until_s=600.0)

    predicted = [(m.workload, m.replica, m.from_node, m.to_node, m.kind) for m in lab.moves]
    assert predicted == real, f"the lab moved {predicted}, the control plane {real}"
    assert real == [(WORKLOAD, 0, victim, real[0][3], "failover")]
    assert settings.failover_policy() == FailoverPolicy()  # the lab's defaults are the server's
    lab_move_s = lab.moves[0].decided_s
    assert abs(lab_move_s - real_move_s) <= TOLERANCE * real_move_s, (
        f"moved {lab_move_s:.2f} s after the last heartbeat in the lab, really {real_move_s:.2f}"
    )
