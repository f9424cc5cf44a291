"""The liveness controller's tick at fleet scale: what one run of `LivenessController.tick`
costs the control plane, over SQLite, as the fleet heartbeats.

    .venv/bin/python bench/liveness/tick.py [--quick] [--nodes 10000] [--ticks 20]

Setup: a migrated SQLite file with `--nodes` node-health rows as the server stores them:
each node heard from every 15 s (1% jitter) for 30 minutes, so its detector history holds
120 intervals and its battery 120 samples; last heartbeats spread over the last 15 s. The
controller (`controllers/liveness.py` over `services/liveness_store.py`, the server's
settings) runs on a fake clock, one tick every 0.5 s (the default `controller_interval_s`).
Between two ticks some nodes heartbeat (`record_report` + `put_report`, as the device link
stores them; not timed). Reported per situation: the median and the worst wall-clock ms of
a tick over `--ticks` ticks, and the nodes it judged.

    first        the first tick of a replica: every row decoded, every node judged
    quiet        no heartbeat between two ticks
    fleet rate   the fleet's own rate between two ticks: nodes / 15 s x 0.5 s (333 of 10,000)
    5x rate      five times that (a fleet of 3 s heartbeats)

Prints a table and writes bench/results/liveness-tick.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from edgefleet.controllers.liveness import LivenessController  # noqa: E402
from edgefleet.core.protocol import NodeStatus  # noqa: E402
from edgefleet.core.workloads.liveness import observe_heartbeat  # noqa: E402
from edgefleet.core.workloads.node_health import NodeHealth, add_sample, record_report  # noqa: E402
from edgefleet.server.services.liveness_store import SqlLivenessStore  # noqa: E402
from edgefleet.server.workload_settings import WorkloadSettings  # noqa: E402
from edgefleet.store import Database  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "liveness-tick.json"
T0 = datetime(2026, 6, 1, tzinfo=UTC)
INTERVAL_S = 15.0
HISTORY_BEATS = 120
TICK_S = 0.5


def populate(db: Database, nodes: int, rng: random.Random) -> datetime:
    """`nodes` rows heard from every 15 s for 30 minutes; returns now."""
    record, samples, t = None, [], 0.0
    for i in range(HISTORY_BEATS):
        t += INTERVAL_S * rng.uniform(0.99, 1.01)
        record = observe_heartbeat(record, T0 + timedelta(seconds=t), interval_s=INTERVAL_S)
        samples = add_sample(samples, T0 + timedelta(seconds=t),
                             {"battery_pct": 90.0 - i * 0.01, "cpu_load": 0.2})  # fmt: skip
    assert record is not None
    last = record.history.last_heartbeat_at
    assert last is not None
    now = last + timedelta(seconds=INTERVAL_S)
    with db.transaction() as tx:
        for n in range(nodes):
            shift = timedelta(seconds=rng.uniform(0, INTERVAL_S))
            liveness = replace(record, history=replace(record.history,
                               last_heartbeat_at=last + shift))  # fmt: skip
            tx.node_health.put_report(NodeHealth(
                f"node-{n:05d}", liveness,
                node={"address": "10.0.0.1", "battery_pct": 90.0, "cpu_load": 0.2},
                samples=tuple((at + shift, v) for at, v in samples), reported_at=last + shift,
            ))  # fmt: skip
    return now


def heartbeats(db: Database, ids: list[str], at: datetime) -> None:
    """What the device link stores for a heartbeat of each of `ids` (one batch)."""
    with db.transaction() as tx:
        for device_id in ids:
            status = NodeStatus(address="10.0.0.1", battery_pct=89.0, cpu_load=0.2)
            tx.node_health.put_report(record_report(tx.node_health.find(device_id), device_id,
                                                    at, None, status, INTERVAL_S))  # fmt: skip


def run(nodes: int, ticks: int, seed: int = 1) -> dict[str, Any]:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite:///{tmp}/bench.db")
        db.migrate()
        now = populate(db, nodes, rng)
        ids = [f"node-{n:05d}" for n in range(nodes)]
        controller = LivenessController(SqlLivenessStore(db),
                                        WorkloadSettings().liveness_policy(), T0)  # fmt: skip
        began = time.perf_counter()
        controller.tick(now)
        rows: dict[str, Any] = {"first": {"ms": [1000 * (time.perf_counter() - began)],
                                          "judged": [controller.judged]}}  # fmt: skip
        rate = round(nodes / INTERVAL_S * TICK_S)
        for name, per_tick in (("quiet", 0), ("fleet rate", rate), ("5x rate", 5 * rate)):
            times, judged = [], []
            for _ in range(ticks):
                now += timedelta(seconds=TICK_S)
                heartbeats(db, rng.sample(ids, per_tick), now - timedelta(seconds=0.1))
                began = time.perf_counter()
                controller.tick(now)
                times.append(1000 * (time.perf_counter() - began))
                judged.append(controller.judged)
            rows[name] = {"ms": times, "judged": judged, "heartbeats_per_tick": per_tick}
        db.dispose()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 nodes, 5 ticks")
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--ticks", type=int, default=20)
    args = parser.parse_args()
    nodes, ticks = (1_000, 5) if args.quick else (args.nodes, args.ticks)
    rows = run(nodes, ticks)
    print(f"LivenessController.tick over SQLite, {nodes:,} nodes, a tick every {TICK_S} s")
    header = (f"{'situation':<12} {'heartbeats/tick':>15} {'median ms':>10} {'max ms':>8} "
              f"{'judged':>8}")  # fmt: skip
    print(header)
    print("-" * len(header))
    summary = {}
    for name, row in rows.items():
        median, worst = statistics.median(row["ms"]), max(row["ms"])
        judged = statistics.median(row["judged"])
        per_tick = row.get("heartbeats_per_tick", nodes if name == "first" else 0)
        print(f"{name:<12} {per_tick:>15} {median:>10.1f} {worst:>8.1f} {judged:>8.0f}")
        summary[name] = {"median_ms": round(median, 2), "max_ms": round(worst, 2),
                         "judged": judged, "heartbeats_per_tick": per_tick}  # fmt: skip
    report = {
        "benchmark": "liveness-tick",
        "nodes": nodes,
        "ticks": ticks,
        "tick_s": TICK_S,
        "situations": summary,
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
