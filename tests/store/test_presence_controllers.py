"""Presence with the workload controllers over a real store and a fake clock: a node online
on the MQTT channel that hosts nothing is told the long idle interval while a hosting one
keeps the fast hosting interval; a Will makes an idle node dead at once, but a hosting
node's replica is only held (suspect) until phi or the grace period says otherwise, and a
Will older than the last presence taken changes nothing."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from edgefleet.core.presence import PresenceState
from edgefleet.core.workloads.failure_detector import Liveness
from edgefleet.core.workloads.record import WorkloadRecord
from edgefleet.errors import Unauthenticated
from edgefleet.server.services.desired import refresh_device
from edgefleet.server.services.presence import PresenceService
from edgefleet.server.settings import ServerSettings
from edgefleet.server.watch import DesiredStateWatch
from edgefleet.store import Database
from tests.store.test_workload_controllers import DOC, T0, Fleet

ONLINE, OFFLINE = PresenceState.ONLINE, PresenceState.OFFLINE


@pytest.fixture
def fleet(db: Database, tmp_path: Path) -> Fleet:
    """Two nodes heartbeating, one hosting the replica of `det` (as in
    test_workload_controllers)."""
    fleet = Fleet(db, tmp_path)
    for device_id in ("a", "b"):
        fleet.add_device(device_id)
    for _ in range(20):
        fleet.tick(1.0)
    with db.transaction() as tx:
        tx.workloads.insert(WorkloadRecord("det", DOC, (), "op", T0, "op", T0))
    for _ in range(3):
        fleet.tick()
    return fleet


def presence_of(fleet: Fleet, tmp_path: Path) -> PresenceService:
    settings = ServerSettings(data_dir=tmp_path, mqtt_idle_heartbeat_s=300.0)
    return PresenceService(fleet.db, fleet.clock, settings, DesiredStateWatch())


def liveness(fleet: Fleet, device_id: str) -> Liveness:
    with fleet.db.read() as tx:
        health = tx.node_health.find(device_id)
    assert health is not None
    return health.state


def interval(fleet: Fleet, device_id: str) -> float:
    return float(fleet.desired(device_id)["agent"]["heartbeat_interval_s"])


def both_online(fleet: Fleet, tmp_path: Path) -> tuple[PresenceService, str, str]:
    node, _ = fleet.where()
    other = "b" if node == "a" else "a"
    with fleet.db.transaction() as tx:  # at the agent's default of 15 s
        for device_id in ("a", "b"):
            tx.devices.update(replace(tx.devices.get(device_id), heartbeat_interval_s=15.0))
            refresh_device(tx, device_id)
    presence = presence_of(fleet, tmp_path)
    presence.take(node, ONLINE, 10)
    presence.take(other, ONLINE, 10)
    return presence, node, other


def test_an_idle_node_on_mqtt_is_told_the_long_interval_a_hosting_node_the_fast_one(
    fleet: Fleet, tmp_path: Path
) -> None:
    presence, node, other = both_online(fleet, tmp_path)
    assert interval(fleet, node) == 1.0  # hosts the replica: phi keeps watching closely
    assert interval(fleet, other) == 300.0
    with fleet.db.read() as tx:
        assert tx.devices.get(other).connection(fleet.clock.now()).value == "online"
    # Its Will: offline, and told its own interval again (for when it comes back).
    presence.take(other, OFFLINE, 11)
    assert interval(fleet, other) == 15.0


def test_a_will_makes_an_idle_node_dead_at_once(fleet: Fleet, tmp_path: Path) -> None:
    presence, _, other = both_online(fleet, tmp_path)
    assert liveness(fleet, other) is Liveness.ALIVE
    taken = presence.take(other, OFFLINE, 11)
    assert taken.liveness == "dead" and liveness(fleet, other) is Liveness.DEAD
    fleet.liveness.tick(fleet.clock.now())  # phi alone would say alive: the Will holds
    assert liveness(fleet, other) is Liveness.DEAD
    with fleet.db.read() as tx:
        assert tx.devices.get(other).connection(fleet.clock.now()).value == "offline"


def test_a_will_holds_a_hosting_node_s_replica_until_phi_says_dead(
    fleet: Fleet, tmp_path: Path
) -> None:
    presence, node, _ = both_online(fleet, tmp_path)
    where = fleet.where()
    taken = presence.take(node, OFFLINE, 11)
    assert taken.liveness == "suspect"
    fleet.tick(0.5, silent=frozenset({node}))
    assert liveness(fleet, node) is Liveness.SUSPECT
    assert fleet.where() == where  # held in place, not moved: the grace period runs
    for _ in range(20):  # silent for 10 s: phi says dead, the replica fails over
        fleet.tick(0.5, silent=frozenset({node}))
    assert liveness(fleet, node) is Liveness.DEAD
    assert fleet.where()[0] != node


def test_a_will_older_than_the_last_presence_is_refused(fleet: Fleet, tmp_path: Path) -> None:
    presence, _, other = both_online(fleet, tmp_path)  # online #10
    presence.take(other, ONLINE, 20)  # reconnected: online #20, its Will #21
    with pytest.raises(Unauthenticated) as refused:
        presence.take(other, OFFLINE, 11)  # the first connection's Will, late or replayed
    assert refused.value.code == "stale_presence"
    assert liveness(fleet, other) is Liveness.ALIVE
    assert interval(fleet, other) == 300.0
