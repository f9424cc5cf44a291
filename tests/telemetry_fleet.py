"""Helpers for telemetry tests with real agents: a short-window fleet policy, agents that
collect fast, workloads' StatsD traffic, and read-only looks at what agents and the server
have on disk (the queue's counters, the stored windows per batch)."""

from __future__ import annotations

import random
import re
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

from edgefleet.client import FleetClient
from edgefleet.localfleet import AgentProcess, wait_for
from tests.conftest import AgentFactory

FAST_AGENT_ARGS = [
    "--statsd-port", "0", "--telemetry-sample-interval", "0.5",
    "--telemetry-batch-interval", "1",
]  # fmt: skip


def fast_policy(host_window_s: int = 2, inference_window_s: int = 2) -> dict[str, Any]:
    """Short windows, uploads every second, no adaptation to the test machine's load, and a
    detector that decides within a few windows."""
    return {
        "sets": [
            {"name": "host", "prefixes": ["host.", "agent."], "window_s": host_window_s},
            {"name": "inference", "prefixes": ["inference."], "window_s": inference_window_s},
        ],
        "active_sets": ["host", "inference"],
        "upload_interval_s": 1,
        "anomaly_upload_interval_s": 1,
        "min_window_s": 1,
        "load_factor": 1,
        "battery_factor": 1,
        "low_battery_factor": 1,
        "anomaly_divisor": 2,
        "detection": {
            "min_baseline": 6,
            "baseline_windows": 30,
            "open_after": 2,
            "close_after": 2,
            "min_relative_spread": 0.1,
            "kpis": [
                {
                    "name": "p95_latency_ms",
                    "metric": "inference.latency_ms",
                    "statistic": "p95",
                    "min_samples": 5,
                },
                {
                    "name": "error_rate_pct",
                    "metric": "inference.errors",
                    "statistic": "ratio",
                    "denominator": "inference.requests",
                    "min_samples": 5,
                },
            ],
        },
    }


def start_agent(
    agents: AgentFactory, admin: FleetClient, name: str, extra_args: list[str] | None = None
) -> AgentProcess:
    """An approved agent that follows the fleet policy, with its StatsD address known."""
    token = admin.create_enrollment_token(auto_approve=True)["token"]
    agent = agents(name, token, extra_args=[*FAST_AGENT_ARGS, *(extra_args or [])])
    wait_for(
        lambda: agent.state().get("desired", {}).get("telemetry"),
        what=f"{name} to apply a telemetry policy",
    )
    wait_for(lambda: (agent.data_dir / "statsd.address").exists(), what="StatsD endpoint")
    return agent


def statsd_port(agent: AgentProcess) -> int:
    return int((agent.data_dir / "statsd.address").read_text().strip().rsplit(":", 1)[1])


def send_lines(port: int, lines: list[str], per_datagram: int = 10) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for i in range(0, len(lines), per_datagram):
            sock.sendto("\n".join(lines[i : i + per_datagram]).encode(), ("127.0.0.1", port))
            time.sleep(0.002)


class LatencyWorkload:
    """Pushes `inference.latency_ms` timings at about 100 a second around `level_ms`,
    as the example inference server does for every request."""

    def __init__(self, port: int, level_ms: float) -> None:
        self.port = port
        self.level_ms = level_ms
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        rng = random.Random(3)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            while not self._stop.is_set():
                lines = [
                    f"inference.latency_ms:{self.level_ms * (1 + 0.05 * rng.random()):.3f}|ms"
                    for _ in range(5)
                ]
                sock.sendto("\n".join(lines).encode(), ("127.0.0.1", self.port))
                self.sent += len(lines)
                self._stop.wait(0.05)

    @contextmanager
    def running(self) -> Iterator[LatencyWorkload]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(timeout=5)


def queue_counters(agent: AgentProcess) -> dict[str, int]:
    """The agent's queue counters and pending rows, read-only from its SQLite file."""
    path = agent.data_dir / "telemetry-queue.sqlite3"
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)) as db:
        counters = dict(db.execute("SELECT name, value FROM counter").fetchall())
        counters["rows"] = db.execute("SELECT COUNT(*) FROM batch").fetchone()[0]
    return counters


def stored_windows(db_path: Path, device_id: str) -> list[tuple[int, str, str, int, int]]:
    """(seq, name, tags, start_s, length_s) of every raw window the server stored."""
    with closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)) as db:
        return db.execute(
            "SELECT seq, name, tags, start_s, length_s FROM telemetry_windows "
            "WHERE device_id = ? ORDER BY seq, idx",
            (device_id,),
        ).fetchall()


_QUEUED = re.compile(r'msg="telemetry batch queued" seq=(\d+) windows=(\d+)')


def queued_batches(agent: AgentProcess) -> dict[int, int]:
    """seq -> windows of every batch the agent logged as queued (all its lifetimes)."""
    found: dict[int, int] = {}
    for match in _QUEUED.finditer(agent.log()):
        seq, windows = int(match.group(1)), int(match.group(2))
        assert seq not in found, f"sequence {seq} handed out twice"
        found[seq] = windows
    return found
