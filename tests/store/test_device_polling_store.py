"""What the server's hot device path and its polling loops read and write: heartbeats,
the generations that wake long polls, the node markers the liveness controller polls, and
concurrent writers (SQLite queues them in-process). Runs against every backend."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import timedelta

from edgefleet.core.enrollment import EnrollmentState
from edgefleet.core.protocol import NodeStatus
from edgefleet.core.workloads.node_health import record_report
from edgefleet.store import Database
from tests.store.test_store import T0, new_device


def test_heartbeat_is_stored_and_generations_report_what_long_polls_need(db: Database) -> None:
    with db.transaction() as tx:
        tx.devices.insert(new_device("d-1", "cam-1"))
        tx.devices.insert(replace(new_device("d-2", "cam-2"), enrollment=EnrollmentState.APPROVED,
                                  desired_generation=7))  # fmt: skip
    seen = T0 + timedelta(seconds=30)
    with db.transaction() as tx:
        tx.devices.record_report("d-2", seen, {"os": "linux"}, 6, {"state": "installed"})
    with db.read() as tx:
        stored = tx.devices.get("d-2")
        generations = tx.devices.desired_generations(["d-1", "d-2", "d-unknown"])
    assert (stored.last_seen, stored.inventory, stored.applied_generation) == (
        seen, {"os": "linux"}, 6)  # fmt: skip
    assert stored.release_status == {"state": "installed"}
    assert generations == {"d-1": (1, "pending"), "d-2": (7, "approved")}


def test_node_markers_move_with_each_heartbeat(db: Database) -> None:
    with db.transaction() as tx:
        for i in range(3):
            tx.node_health.put_report(record_report(None, f"d-{i}", T0, None, None))
    with db.read() as tx:
        before = tx.node_health.markers()
        previous = tx.node_health.find("d-1")
    later = T0 + timedelta(seconds=30)
    with db.transaction() as tx:
        tx.node_health.put_report(record_report(previous, "d-1", later, None,
                                                NodeStatus(cpu_load=1.0)))  # fmt: skip
    with db.read() as tx:
        after = tx.node_health.markers()
        found = tx.node_health.find_many(["d-1", "d-2", "d-unknown"])
    # The reported_at part is an opaque token (the driver's value): equal for equal times.
    assert sorted(before) == ["d-0", "d-1", "d-2"]
    assert len({marker for marker in before.values()}) == 1
    assert {state for _, state in before.values()} == {"alive"}
    assert {d: m for d, m in after.items() if d != "d-1"} == {d: m for d, m in before.items()
                                                               if d != "d-1"}  # fmt: skip
    assert after["d-1"] != before["d-1"] and after["d-1"][1] == "alive"
    assert sorted(found) == ["d-1", "d-2"]
    assert (found["d-1"].reported_at, found["d-1"].node["cpu_load"]) == (later, 1.0)


def test_concurrent_writers_all_commit(db: Database) -> None:
    def write(worker: int) -> None:
        for n in range(10):
            with db.transaction() as tx:
                tx.nonces.remember(f"d-{worker}", f"nonce-{n:016d}", T0)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with db.transaction() as tx:
        assert tx.nonces.prune(T0 + timedelta(seconds=1)) == 80
