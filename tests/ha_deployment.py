"""The scale-out deployment for tests: three `edgefleet server` replicas on one PostgreSQL
database (a throwaway one) and one data dir, behind HAProxy with `deploy/haproxy.cfg`; or a
clear skip reason where PostgreSQL or HAProxy is missing."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgefleet.client import FleetClient
from edgefleet.localfleet import LoadBalancerProcess, ManagedProcess, ServerProcess, wait_for
from tests.conftest import ADMIN_TOKEN
from tests.postgres import postgres_unavailable, throwaway_database
from tests.releases import free_port

REPLICAS = ("control-plane-1", "control-plane-2", "control-plane-3")


@dataclass
class Deployment:
    database_url: str
    replicas: dict[str, ServerProcess]
    balancer: ManagedProcess
    url: str  # HAProxy's

    def client(self) -> FleetClient:
        return FleetClient(self.url, ADMIN_TOKEN)

    def ready(self, name: str) -> dict[str, Any]:
        response = httpx.get(f"{self.replicas[name].url}/readyz", timeout=5)
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def lease_holder(self, lease: str) -> str:
        """The replica holding `lease`, as any replica (through HAProxy) reports it."""
        response = httpx.get(f"{self.url}/v1/leases", timeout=5,
                             headers={"authorization": f"Bearer {ADMIN_TOKEN}"})  # fmt: skip
        response.raise_for_status()
        return str(next(held["holder"] for held in response.json() if held["name"] == lease))


def replicas_answering(deployment: Deployment, calls: int) -> set[str]:
    """The replicas that answered `calls` readiness checks made through HAProxy."""
    seen = set()
    with httpx.Client(base_url=deployment.url, timeout=5) as http:
        for _ in range(calls):
            response = http.get("/readyz", headers={"connection": "close"})
            if response.status_code == 200:
                seen.add(response.json()["replica"])
    return seen


@contextmanager
def run_deployment(root: Path, env: dict[str, str] | None = None) -> Iterator[Deployment]:
    """Start the deployment (every replica with `env` too); stop all of it afterwards.
    Skips the test where PostgreSQL or HAProxy is missing."""
    reason = postgres_unavailable()
    if reason:
        pytest.skip(reason)
    if not (shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin")):
        pytest.skip("haproxy is not installed (Debian: apt-get install haproxy)")
    ports = {name: free_port() for name in REPLICAS}
    started: list[ManagedProcess] = []
    with throwaway_database() as database_url:
        try:
            replicas = {}
            for name in REPLICAS:
                server = ServerProcess(root / "data", ADMIN_TOKEN, port=ports[name], env={
                    "EDGEFLEET_DATABASE_URL": database_url, "EDGEFLEET_REPLICA_ID": name,
                    **(env or {}),
                })  # fmt: skip
                server.log_path = root / f"{name}.log"
                started.append(server)
                server.start()
                replicas[name] = server
            balancer = LoadBalancerProcess(root / "haproxy", free_port(), ports)
            started.append(balancer)
            balancer.start()
            deployment = Deployment(database_url, replicas, balancer, balancer.url)
            wait_for(lambda: len(replicas_answering(deployment, 12)) == 3, timeout_s=60,
                     what="HAProxy to send traffic to every replica")  # fmt: skip
            yield deployment
        finally:
            for process in reversed(started):
                process.stop()
