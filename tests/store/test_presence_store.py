"""Presence on every backend: a device's presence survives the round trip, the dashboard's
SQL counts a Will as offline and an idle MQTT device as online between its long intervals
(as `core.device.classify_connection` does one device), and a liveness judgement read
before a Will does not overwrite the Will's verdict."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from edgefleet.core.device import Device
from edgefleet.core.enrollment import EnrollmentState
from edgefleet.core.presence import Presence, PresenceState
from edgefleet.core.workloads.failure_detector import Liveness
from edgefleet.core.workloads.liveness import evaluate_liveness, observe_will
from edgefleet.core.workloads.node_health import record_report
from edgefleet.server.services.dashboard import status_cutoffs
from edgefleet.store import Database
from edgefleet.store.repositories.dashboard import DashboardRepository
from tests.store.test_store import T0, new_device


def approved(device_id: str, presence: Presence | None, seen_s: float = 0.0) -> Device:
    device = new_device(device_id, f"cam-{device_id}")
    return dataclasses.replace(device, enrollment=EnrollmentState.APPROVED, presence=presence,
                               last_seen=T0 + timedelta(seconds=seen_s))  # fmt: skip


def test_presence_round_trips(db: Database) -> None:
    online = Presence(PresenceState.ONLINE, T0, 2**40, 300.0)
    with db.transaction() as tx:
        tx.devices.insert(approved("d-1", online))
        tx.devices.insert(approved("d-2", None))
    with db.read() as tx:
        assert tx.devices.get("d-1").presence == online
        assert tx.devices.get("d-2").presence is None
        facts = sorted(tx.devices.connection_facts(), key=lambda f: f[3] is None)
    assert facts[0][3] == online


def test_dashboard_counts_agree_with_each_device_s_status(db: Database) -> None:
    will = Presence(PresenceState.OFFLINE, T0 + timedelta(seconds=1), 9)
    idle = Presence(PresenceState.ONLINE, T0, 7, 300.0)
    devices = [
        approved("d-http", None),  # 15 s interval, seen 290 s ago: offline
        approved("d-idle", idle),  # told 300 s, seen 290 s ago: online
        approved("d-gone", will, seen_s=280),  # its Will came after its last report
        approved("d-back", will, seen_s=285),  # ... but this one reported since: online
        approved("d-http-now", None, seen_s=285),  # no presence at all, seen 5 s ago: online
    ]
    devices[2] = dataclasses.replace(devices[2], presence=dataclasses.replace(
        will, at=T0 + timedelta(seconds=281)))  # fmt: skip
    now = T0 + timedelta(seconds=290)
    with db.transaction() as tx:
        for device in devices:
            tx.devices.insert(device)
    with db.read() as tx:
        repo = DashboardRepository(tx.connection)
        cutoffs = status_cutoffs(repo.heartbeat_intervals(), now)
        counts = repo.status_counts(cutoffs)
        _, offline = repo.device_page(cutoffs, status="offline", enrollment=None, search=None,
                                      offset=0, limit=10)  # fmt: skip
    expected = {d.id: d.connection(now).value for d in devices}
    assert expected == {"d-http": "offline", "d-idle": "online", "d-gone": "offline",
                        "d-back": "online", "d-http-now": "online"}  # fmt: skip
    # (a device without presence is not "gone": NULL presence must not make that unknown)
    assert counts == {"online": 3, "stale": 0, "offline": 2}
    assert sorted(row.id for row in offline) == ["d-gone", "d-http"]


def test_a_judgement_read_before_a_will_does_not_undo_it(db: Database) -> None:
    first = record_report(None, "d-1", T0, None, None)
    with db.transaction() as tx:
        tx.node_health.put_report(first)
    with db.read() as tx:
        read = tx.node_health.find("d-1")
    assert read is not None
    will = observe_will(read.liveness, T0 + timedelta(seconds=1), hosting=False)
    with db.transaction() as tx:  # the Will, while a controller tick holds `read`
        tx.node_health.put_liveness(dataclasses.replace(read, liveness=will))
    suspect = dataclasses.replace(
        read, liveness=evaluate_liveness(read.liveness, T0 + timedelta(seconds=6), T0)
    )
    assert suspect.state is Liveness.SUSPECT
    with db.transaction() as tx:
        assert not tx.node_health.put_judgement(suspect, read.reported_at)
    with db.read() as tx:
        stored = tx.node_health.find("d-1")
    assert stored is not None and stored.state is Liveness.DEAD
    assert stored.liveness.floor is Liveness.DEAD and stored.reported_at == T0
