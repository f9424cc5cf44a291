"""Several real `edgefleet server` replicas on one PostgreSQL database and data dir: one
holder per controller lease, takeover after the holder dies, a paused former holder's late
write refused by its fencing token, migrations run once when replicas start together, and
routes of a role a replica lacks answered 503 role_not_served."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from edgefleet.artifacts.model_builder import build_mlp
from edgefleet.core.lease import LeaseName
from edgefleet.localfleet import ManagedProcess, ServerProcess, wait_for
from tests.conftest import ADMIN_TOKEN
from tests.device_requests import RawDevice
from tests.postgres import postgres_unavailable, throwaway_database
from tests.releases import Trust, free_port, publish

pytestmark = pytest.mark.postgres

LEASES = {name.value for name in LeaseName}
TAKEOVER_BOUND_S = 10.0  # with the default 6 s TTL, renewed every 2 s


@pytest.fixture
def database_url() -> Iterator[str]:
    reason = postgres_unavailable()
    if reason:
        pytest.skip(reason)
    with throwaway_database() as url:
        yield url


class Replicas:
    """Replicas of one control plane, started one by one over a shared data dir."""

    def __init__(self, root: Path, database_url: str) -> None:
        self.data_dir = root / "data"
        self.root = root
        self.database_url = database_url
        self.started: list[ServerProcess] = []

    def start(self, replica_id: str, **env: str) -> ServerProcess:
        process = ServerProcess(self.data_dir, ADMIN_TOKEN, env={
            "EDGEFLEET_DATABASE_URL": self.database_url, "EDGEFLEET_REPLICA_ID": replica_id,
            **env,
        })  # fmt: skip
        process.log_path = self.root / f"{replica_id}.log"
        self.started.append(process)
        process.start()
        return process

    def stop_all(self) -> None:
        for process in self.started:
            if process.proc is not None and process.proc.poll() is None:
                os.kill(process.proc.pid, signal.SIGCONT)
            process.stop()


@pytest.fixture
def replicas(tmp_path: Path, database_url: str) -> Iterator[Replicas]:
    group = Replicas(tmp_path, database_url)
    try:
        yield group
    finally:
        group.stop_all()


def leases(server: ServerProcess) -> dict[str, dict[str, Any]]:
    response = httpx.get(f"{server.url}/v1/leases", timeout=5,
                         headers={"authorization": f"Bearer {ADMIN_TOKEN}"})  # fmt: skip
    response.raise_for_status()
    return {lease["name"]: lease for lease in response.json()}


def ready(server: ServerProcess) -> dict[str, Any]:
    response = httpx.get(f"{server.url}/readyz", timeout=5)
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def test_one_replica_holds_each_lease_and_another_takes_over_when_it_dies(
    replicas: Replicas,
) -> None:
    a = replicas.start("replica-a")
    wait_for(lambda: set(ready(a)["leading"]) == LEASES, what="replica-a to lead")
    b = replicas.start("replica-b")
    c = replicas.start("replica-c")
    assert {ready(r)["replica"] for r in (a, b, c)} == {"replica-a", "replica-b", "replica-c"}
    # Every replica sees the same leases, held by replica-a, and only replica-a acts.
    for replica in (a, b, c):
        seen = leases(replica)
        assert set(seen) == LEASES
        assert {lease["holder"] for lease in seen.values()} == {"replica-a"}
        assert all(lease["live"] for lease in seen.values())
    assert ready(b)["leading"] == [] and ready(c)["leading"] == []
    tokens = {name: lease["token"] for name, lease in leases(b).items()}

    a.kill()
    killed_at = time.monotonic()

    def taken_over() -> dict[str, dict[str, Any]] | None:
        seen = leases(b)
        live = all(lease["live"] and lease["holder"] != "replica-a" for lease in seen.values())
        return seen if live else None

    seen = wait_for(taken_over, timeout_s=30, what="the leases to be taken over")
    assert time.monotonic() - killed_at <= TAKEOVER_BOUND_S
    for name, lease in seen.items():
        assert lease["token"] == tokens[name] + 1

    # Each lease has exactly one acting replica, the one the table names.
    def acting() -> dict[str, set[str]]:
        return {"replica-b": set(ready(b)["leading"]), "replica-c": set(ready(c)["leading"])}

    wait_for(lambda: all(name in acting()[lease["holder"]] for name, lease in seen.items()),
             what="the new holders to act")  # fmt: skip
    now_acting = acting()
    assert not now_acting["replica-b"] & now_acting["replica-c"]
    assert now_acting["replica-b"] | now_acting["replica-c"] == LEASES


def _lock_waiters(url: str, table: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return int(
                connection.execute(
                    text(
                        "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                        "WHERE c.relname = :table AND NOT l.granted"
                    ),
                    {"table": table},
                ).scalar_one()
            )
    finally:
        engine.dispose()


def test_a_paused_former_holder_has_its_late_write_refused(replicas: Replicas) -> None:
    """replica-a's housekeeping blocks inside its transaction (the test holds a lock its
    write needs); replica-a is stopped past its lease, replica-b takes the lease over;
    replica-a resumes and its write goes through the database at last, but not past the
    fence: its commit is refused and rolled back."""
    fast = {"EDGEFLEET_HOUSEKEEPING_INTERVAL_S": "0.5", "EDGEFLEET_LEASE_TTL_S": "3"}
    a = replicas.start("replica-a", **fast)
    wait_for(lambda: LeaseName.HOUSEKEEPING in ready(a)["leading"], what="replica-a to lead")
    b = replicas.start("replica-b", **fast)
    token = leases(b)[LeaseName.HOUSEKEEPING]["token"]
    assert a.proc is not None
    engine = create_engine(replicas.database_url)
    try:
        with engine.connect() as blocker:
            blocker.execute(text("LOCK TABLE device_nonces IN EXCLUSIVE MODE"))
            wait_for(lambda: _lock_waiters(replicas.database_url, "device_nonces") >= 1,
                     what="replica-a's housekeeping to wait for the lock")  # fmt: skip
            os.kill(a.proc.pid, signal.SIGSTOP)
            try:
                wait_for(lambda: leases(b)[LeaseName.HOUSEKEEPING]["holder"] == "replica-b",
                         timeout_s=30, what="replica-b to take the lease over")  # fmt: skip
            finally:
                os.kill(a.proc.pid, signal.SIGCONT)
            wait_for(lambda: LeaseName.HOUSEKEEPING not in ready(a)["leading"],
                     what="replica-a to stop acting")  # fmt: skip
            assert leases(a)[LeaseName.HOUSEKEEPING]["token"] == token + 1
            blocker.rollback()  # replica-a's write proceeds, then meets the fence
    finally:
        engine.dispose()
    wait_for(lambda: ready(a)["fenced_writes_refused"] >= 1,
             what="replica-a's late write to be refused")  # fmt: skip
    assert "fenced write refused" in a.log()
    assert ready(b)["fenced_writes_refused"] == 0
    assert LeaseName.HOUSEKEEPING in ready(b)["leading"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_replicas_starting_together_migrate_once(tmp_path: Path, database_url: str) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    processes: list[tuple[ManagedProcess, str]] = []
    try:
        for i in range(3):
            port = _free_port()
            process = ManagedProcess(
                [*ServerProcess(data_dir, ADMIN_TOKEN).args[:-1], str(port)],
                tmp_path / f"replica-{i}.log",
                {"EDGEFLEET_DATABASE_URL": database_url, "EDGEFLEET_ADMIN_TOKEN": ADMIN_TOKEN,
                 "EDGEFLEET_REPLICA_ID": f"replica-{i}"},
            )  # fmt: skip
            processes.append((process, f"http://127.0.0.1:{port}"))
        for process, _url in processes:
            process.start()
        for process, url in processes:

            def ready(url: str = url) -> bool:
                return httpx.get(f"{url}/readyz", timeout=2).status_code == 200

            wait_for(ready, timeout_s=60, what=f"{url} to be ready")
            assert process.running
        logs = [process.log() for process, _url in processes]
        assert sum("migrated the database schema" in log for log in logs) == 1, logs
        # Same TUF keys and one admin token for all: each replica answers with them.
        keys = [httpx.get(f"{url}/v1/trust/online-keys", timeout=5,
                          headers={"authorization": f"Bearer {ADMIN_TOKEN}"}).json()
                for _process, url in processes]  # fmt: skip
        assert keys[0] == keys[1] == keys[2]
    finally:
        for process, _url in processes:
            process.stop()


def test_a_replica_without_a_role_answers_its_routes_503(replicas: Replicas) -> None:
    full = replicas.start("replica-full")
    devices_only = replicas.start("replica-devices", EDGEFLEET_ROLES="device")
    headers = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    refused = httpx.get(f"{devices_only.url}/v1/devices", headers=headers, timeout=5)
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "role_not_served"
    assert "replica-devices" in refused.json()["error"]["message"]
    assert httpx.get(f"{full.url}/v1/devices", headers=headers, timeout=5).status_code == 200
    body = ready(devices_only)
    assert body["roles"] == ["device"] and body["leading"] == []
    delta = httpx.get(f"{devices_only.url}/v1/blobs/{'a' * 64}/delta/{'b' * 64}", timeout=5)
    assert delta.status_code == 503 and delta.json()["error"]["code"] == "role_not_served"
    # A router of both kinds is gated route by route: attestation evidence is the device
    # role's, the attestation listing the api role's.
    listing = httpx.get(f"{devices_only.url}/v1/attestations", headers=headers, timeout=5)
    assert listing.status_code == 503
    challenge = httpx.post(f"{devices_only.url}/v1/devices/nobody/attestation/challenge",
                           timeout=5)  # fmt: skip
    assert challenge.status_code == 401  # refused by the device's authentication
    api_only = replicas.start("replica-api", EDGEFLEET_ROLES="api")
    assert httpx.get(f"{api_only.url}/v1/attestations", headers=headers, timeout=5
                     ).status_code == 200  # fmt: skip
    report = httpx.post(f"{api_only.url}/v1/devices/nobody/report", json={}, timeout=5)
    assert report.status_code == 503 and report.json()["error"]["code"] == "role_not_served"
    # The device API is there: an enrollment without a token is refused by the route
    # itself, not by the role gate.
    enroll = httpx.post(f"{devices_only.url}/v1/enroll", json={}, timeout=5)
    assert enroll.status_code != 503


def test_a_paused_rollout_controller_applies_no_wave_twice(
    replicas: Replicas, tmp_path: Path
) -> None:
    """replica-a's rollout controller decides to start a rollout (wave 1: two devices) and
    blocks inside its apply transaction; it is stopped past its lease, replica-b takes over
    and decides the same; replica-a resumes and its write meets the fence. The wave is
    applied once: two devices assigned, one start-rollout in the audit log."""
    fast = {"EDGEFLEET_LEASE_TTL_S": "3"}
    a = replicas.start("replica-a", **fast)
    wait_for(lambda: LeaseName.ROLLOUTS in ready(a)["leading"], what="replica-a to lead")
    b = replicas.start("replica-b", **fast)
    assert a.proc is not None
    with b.client() as admin:
        trust = Trust.install(admin)
        publish(admin, tmp_path / "release", "fenced", "1.0.0", build_mlp(4, 8, 3, seed=5),
                free_port(), trust.targets_keys)  # fmt: skip
        token = admin.create_enrollment_token(auto_approve=True)["token"]
        devices = [RawDevice(b.url) for _ in range(4)]
        for device in devices:
            assert device.enroll(token, labels={"fleet": "fenced"}).status_code == 200
            assert device.report().status_code == 200
        engine = create_engine(replicas.database_url)
        try:
            with engine.connect() as blocker:
                blocker.execute(text("LOCK TABLE devices IN EXCLUSIVE MODE"))
                rollout = admin.create_rollout({
                    "kind": "Rollout", "metadata": {"name": "fenced"},
                    "spec": {"release": "fenced@1.0.0", "target": "fleet=fenced",
                             "strategy": {"waves": [2, "100%"], "soak": "1h",
                                          "max_unavailable": "100%", "install_timeout": "1h"}},
                })  # fmt: skip
                rollout_id = rollout["rollout"]["id"]
                wait_for(lambda: _lock_waiters(replicas.database_url, "devices") >= 1,
                         what="replica-a's apply to wait for the lock")  # fmt: skip
                os.kill(a.proc.pid, signal.SIGSTOP)
                try:
                    wait_for(lambda: leases(b)[LeaseName.ROLLOUTS]["holder"] == "replica-b",
                             timeout_s=30, what="replica-b to take the lease over")  # fmt: skip
                finally:
                    os.kill(a.proc.pid, signal.SIGCONT)
                wait_for(lambda: LeaseName.ROLLOUTS not in ready(a)["leading"],
                         what="replica-a to stop acting")  # fmt: skip
                blocker.rollback()
        finally:
            engine.dispose()
        wait_for(lambda: ready(a)["fenced_writes_refused"] >= 1,
                 what="replica-a's late write to be refused")  # fmt: skip
        refusals = [line for line in a.log().splitlines() if "fenced write refused" in line]
        assert any(LeaseName.ROLLOUTS in line for line in refusals), refusals

        def assigned() -> list[str]:
            listed = admin.list_devices(selector="fleet=fenced")
            return [d["id"] for d in listed if d.get("release")]

        wait_for(lambda: len(assigned()) == 2, what="wave 1 to be assigned")
        status = admin.get_rollout(rollout_id)
        assert status["state"] not in ("failed", "aborted")
        starts = [r for r in admin.audit_page(limit=1000)
                  if r["action"] == "rollout.start-rollout"
                  and r["target"] == f"rollout/{rollout_id}"]  # fmt: skip
        assert len(starts) == 1, starts
        # Nothing later adds to the wave: its soak is an hour, and no device reported.
        time.sleep(2)
        assert len(assigned()) == 2
