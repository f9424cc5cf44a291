"""Workloads with real agents, for tests: a light stateful workload (Python's HTTP server
over its state directory, from a signed release) and looks at where its replicas run, what
traffic they get, and how many copies an agent runs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from edgefleet.client import FleetClient
from edgefleet.client_views import PlacedReplicaView
from edgefleet.localfleet import AgentProcess, wait_for

FILES_RELEASE = "files@1.0.0"  # publish it with FILES_SERVICE as its service manifest
FILES_SERVICE = {
    "command": ["{python}", "-m", "http.server", "{port}", "--bind", "127.0.0.1",
                "--directory", "{state_dir}"],
    "port": "auto",
    "health": {"http": "/", "interval_s": 0.5},
}  # fmt: skip


def http_workload(name: str, **spec: Any) -> dict[str, Any]:
    """A light stateful workload: Python's HTTP server over its state directory."""
    return {"kind": "Workload", "metadata": {"name": name}, "spec": {
        "artifacts": [FILES_RELEASE],
        "resources": {"cpu_millicores": 100, "memory_mb": 256},
        "service": {"port": "auto"},
        "health_check": {"http": "/", "interval_s": 0.5, "timeout_s": 0.5},
        "state_dir": f"/var/lib/{name}",
        **spec,
    }}  # fmt: skip


def placement(admin: FleetClient, name: str) -> list[PlacedReplicaView]:
    return admin.get_workload(name)["placement"]


def wait_running(
    admin: FleetClient,
    name: str,
    replica: int = 0,
    not_on: str | None = None,
    timeout_s: float = 60,
) -> PlacedReplicaView:
    """The placement row of a replica once it runs healthy (on another node than `not_on`)."""

    def running() -> PlacedReplicaView | None:
        row = placement(admin, name)[replica]
        ok = row["state"] == "running" and row["health"] == "ok"
        return row if ok and row["node_id"] != not_on else None

    row = wait_for(
        running,
        timeout_s=timeout_s,
        interval_s=0.2,
        what=f"{name}[{replica}] running (now {placement(admin, name)[replica]})",
    )
    assert row is not None
    return row


def copies(agent: AgentProcess, workload: str) -> int:
    """Processes running a copy of `workload` from this agent's state directory."""
    marker = str(agent.data_dir / "workloads" / "state" / workload).encode()
    count = 0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            count += marker in cmdline and b"workload" not in cmdline.split(b"\0")[0]
    return count


def endpoint_weights(admin: FleetClient, name: str) -> dict[str, int]:
    found = admin.service_endpoints(name)["endpoints"]
    return {e["node_id"]: e["weight"] for e in found}
