"""Workloads with real agents: placement by labels, regions and residency; failover of a
killed node's replica and fencing of the node when it returns; planned migration with the
state directory and traffic weights; abort; proactive migration off a draining battery."""

from __future__ import annotations

import gzip
import os
import signal
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgefleet.agent.workload_state import archive_state
from edgefleet.artifacts.model_builder import build_mlp
from edgefleet.client import FleetClient
from edgefleet.errors import ApiError
from edgefleet.examples.endpoint_follower import EndpointFollower
from edgefleet.localfleet import AgentProcess, ServerProcess, wait_for
from tests.cli_runner import run_cli
from tests.conftest import ADMIN_TOKEN, AgentFactory
from tests.relay import Relay
from tests.releases import Trust, free_port, publish
from tests.workload_fleet import (
    FILES_SERVICE,
    copies,
    endpoint_weights,
    http_workload,
    placement,
    wait_running,
)

RELEASE = "vision@1.0.0"
FILES_RELEASE = "files@1.0.0"
BERLIN = ("52.52", "13.40")
MUNICH = ("48.14", "11.58")
NEW_YORK = ("40.71", "-74.01")
SERVER_ENV = {
    # Fast, still realistic: every step of a migration is observable by polling.
    "EDGEFLEET_MIGRATION_SHIFT_STEP_S": "1.5",
    "EDGEFLEET_MIGRATION_DRAIN_S": "1",
    # Placement moves only what it must: no score-driven migrations behind the tests' back.
    "EDGEFLEET_REBALANCE_MIGRATIONS": "false",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("server") / "data", ADMIN_TOKEN, SERVER_ENV)
    process.start()
    yield process
    process.stop()


# What the two releases run: their signed service manifests (a workload only names one).
INFERENCE_SERVICE = {
    "command": ["{python}", "-m", "edgefleet.examples.inference_server",
                "--model", "{artifact:vision-model}", "--port", "{port}",
                "--state-dir", "{state_dir}"],
    "port": "auto",
    "health": {"http": "/healthz", "interval_s": 0.5},
}  # fmt: skip


@pytest.fixture(scope="module")
def release(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> str:
    with server.client() as client:
        trust = Trust.install(client)
        workdir = tmp_path_factory.mktemp("release")
        publish(client, workdir, "vision", "1.0.0", build_mlp(4, 8, 3, seed=1), free_port(),
                trust.targets_keys, manifest=INFERENCE_SERVICE)  # fmt: skip
        publish(client, workdir, "files", "1.0.0", build_mlp(4, 8, 3, seed=2), free_port(),
                trust.targets_keys, manifest=FILES_SERVICE)  # fmt: skip
    return RELEASE


@pytest.fixture
def fleet(
    admin: FleetClient, agents: AgentFactory, release: str
) -> Iterator[tuple[FleetClient, AgentFactory]]:
    """The admin client and the agent factory; workloads applied in the test are deleted
    at its end (the next test's agents must not inherit them)."""
    yield admin, agents
    for workload in admin.list_workloads():
        admin.delete_workload(workload["name"])


def applied_generation(agent: AgentProcess) -> Any:
    """The generation the agent applied: falsy until it follows its desired state."""
    return agent.state().get("applied_generation")


def start_agents(
    admin: FleetClient, agents: AgentFactory, specs: dict[str, dict[str, Any]]
) -> dict[str, AgentProcess]:
    token = admin.create_enrollment_token(auto_approve=True)["token"]
    started = {}
    for name, spec in specs.items():
        args = ["--region", spec["region"], "--zone", spec.get("zone", spec["region"] + "-a")]
        if "at" in spec:
            args += ["--latitude", spec["at"][0], "--longitude", spec["at"][1]]
        if "battery" in spec:
            args += ["--simulated-battery", spec["battery"]]
        started[name] = agents(name, token, labels=spec.get("labels"), extra_args=args)
    for agent in started.values():
        wait_for(partial(applied_generation, agent), what=f"{agent.name} sync")
    return started


def inference_workload(name: str) -> dict[str, Any]:
    return {"kind": "Workload", "metadata": {"name": name}, "spec": {
        "artifacts": [RELEASE],
        "resources": {"cpu_millicores": 250, "memory_mb": 1024},
        "service": {"port": "auto"},
        "health_check": {"http": "/healthz", "interval_s": 0.5, "timeout_s": 0.5},
        "state_dir": "/var/lib/infer",
    }}  # fmt: skip


def answers(port: int, path: str = "/") -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=2).status_code < 500
    except httpx.HTTPError:
        return False


def test_placement_respects_labels_regions_and_residency(
    fleet: tuple[FleetClient, AgentFactory], tmp_path: Path
) -> None:
    admin, agents = fleet
    nodes = start_agents(admin, agents, {
        "pl-eu-a": {"region": "eu-west", "zone": "eu-west-a",
                    "labels": {"residency": "eu", "tier": "gold"}},
        "pl-eu-b": {"region": "eu-west", "zone": "eu-west-b", "labels": {"residency": "eu"}},
        "pl-us": {"region": "us-east", "labels": {"residency": "us"}},
    })  # fmt: skip
    ids = {name: agent.device_id for name, agent in nodes.items()}
    admin.apply_workload(http_workload("spread", replicas=2, preferences={"spread": "zones"},
                                       constraints={"residency": ["eu"]}))  # fmt: skip
    manifest = tmp_path / "gold.yaml"
    manifest.write_text(
        "kind: Workload\nmetadata: {name: gold}\nspec:\n"
        "  artifacts: [files@1.0.0]\n"
        "  resources: {cpu_millicores: 100, memory_mb: 256}\n"
        "  service: {port: auto}\n"
        "  constraints: {selector: 'tier=gold', regions: [eu-west]}\n"
        "---\n"
        "kind: Workload\nmetadata: {name: apac}\nspec:\n"
        "  artifacts: [files@1.0.0]\n"
        "  resources: {cpu_millicores: 100, memory_mb: 256}\n"
        "  constraints: {residency: [apac]}\n"
    )
    env = {"EDGEFLEET_SERVER": admin.server_url, "EDGEFLEET_TOKEN": ADMIN_TOKEN}
    applied = run_cli("apply", "-f", str(manifest), env=env)
    assert applied.code == 0, applied.stderr
    assert "workload/gold created" in applied.stdout and "workload/apac created" in applied.stdout

    spread = {wait_running(admin, "spread", r)["node_id"] for r in (0, 1)}
    assert spread == {ids["pl-eu-a"], ids["pl-eu-b"]}  # residency eu, one per zone
    assert wait_running(admin, "gold")["node_id"] == ids["pl-eu-a"]  # selector tier=gold
    apac = wait_for(
        lambda: (
            placement(admin, "apac")[0]["action"] == "unplaceable" and placement(admin, "apac")[0]
        ),
        what="apac reported unplaceable",
    )
    assert apac["node_id"] is None
    assert "residency in (apac)" in apac["reason"]

    explained = run_cli("placements", "explain", "spread", env=env)
    assert explained.code == 0, explained.stderr
    assert "excluded: residency in (eu)" in explained.stdout  # the us node, and why
    assert "chosen for replica" in explained.stdout
    data = run_cli("placements", "explain", "spread", "-o", "json", env=env).json()
    us = [c for r in data["replicas"] for c in r["candidates"] if c["node_id"] == ids["pl-us"]]
    assert us and all(c["excluded_by"] == "residency in (eu)" for c in us)
    chosen = [c for r in data["replicas"] for c in r["candidates"] if c["outcome"].startswith(
        "chosen")]  # fmt: skip
    assert {c["node_id"] for c in chosen} == spread
    assert all(c["terms"]["proximity"] > 0 and c["terms"]["reliability"] > 0 for c in chosen)

    with pytest.raises(ApiError) as refused:  # a migration may not cross residency either
        admin.migrate_workload("spread", 0, to="pl-us")
    assert refused.value.code == "no_migration_target"
    assert "residency in (eu)" in refused.value.message
    with pytest.raises(ApiError) as invalid:
        admin.apply_workload(http_workload("bad", replicas=-1))
    assert invalid.value.status == 400 and "spec.replicas" in invalid.value.message
    viewer = admin.create_api_token("wl-viewer", "viewer")["token"]
    with FleetClient(admin.server_url, viewer) as client, pytest.raises(ApiError) as denied:
        client.apply_workload(http_workload("denied"))
    assert denied.value.status == 403


@pytest.mark.slow
def test_failover_within_residency_and_fencing_of_the_returning_node(
    fleet: tuple[FleetClient, AgentFactory],
) -> None:
    admin, agents = fleet
    nodes = start_agents(admin, agents, {
        "fo-berlin": {"region": "eu-west", "labels": {"residency": "eu"}, "at": BERLIN},
        "fo-newyork": {"region": "us-east", "labels": {"residency": "us"}, "at": NEW_YORK},
    })  # fmt: skip
    berlin, newyork = nodes["fo-berlin"], nodes["fo-newyork"]
    near_berlin = {"near": [{"name": "berlin", "lat": 52.52, "lon": 13.40}]}
    admin.apply_workload(http_workload("roam", preferences=near_berlin))
    admin.apply_workload(http_workload("eu-only", preferences=near_berlin,
                                       constraints={"residency": ["eu"]}))  # fmt: skip
    for name in ("roam", "eu-only"):
        assert wait_running(admin, name)["node_id"] == berlin.device_id
    old_port = placement(admin, "roam")[0]["port"]
    assert old_port is not None

    berlin.kill()  # SIGKILL: the node is gone, its replicas with it
    moved = wait_running(admin, "roam", not_on=berlin.device_id)
    assert moved["node_id"] == newyork.device_id
    last_move = moved["last_move"]
    assert last_move is not None
    assert "cross-region failover eu-west -> us-east" in last_move["reason"]
    failover = admin.workload_moves("roam")[0]  # the history, newest first
    assert (failover["kind"], failover["from"], failover["to"]) == (
        "failover", berlin.device_id, newyork.device_id)  # fmt: skip
    assert "cross-region failover eu-west -> us-east" in failover["reason"]
    stranded = wait_for(
        lambda: (
            placement(admin, "eu-only")[0]["action"] == "unplaceable"
            and placement(admin, "eu-only")[0]
        ),
        what="eu-only unplaceable",
    )
    assert "residency in (eu)" in stranded["reason"]  # never across a residency boundary
    assert copies(newyork, "eu-only") == 0

    berlin.start()  # the node returns with the desired state it saved before it died
    assert wait_running(admin, "eu-only")["node_id"] == berlin.device_id  # resumes there
    assert placement(admin, "roam")[0]["node_id"] == newyork.device_id
    assert copies(berlin, "roam") == 0 and not answers(old_port)  # fenced: never restarted
    assert copies(newyork, "roam") == 1

    # A partition: the New York agent freezes while its replica keeps serving.
    stale_port = placement(admin, "roam")[0]["port"]
    assert stale_port is not None
    os.kill(newyork.proc.pid, signal.SIGSTOP)  # type: ignore[union-attr]
    try:
        back = wait_running(admin, "roam", not_on=newyork.device_id)
        assert back["node_id"] == berlin.device_id
        assert answers(stale_port)  # the stale copy still runs while its node is cut off
    finally:
        os.kill(newyork.proc.pid, signal.SIGCONT)  # type: ignore[union-attr]
    wait_for(lambda: copies(newyork, "roam") == 0, timeout_s=30, what="stale copy stopped")
    assert not answers(stale_port)
    assert copies(berlin, "roam") == 1 and copies(berlin, "eu-only") == 1


def set_sealing(server: ServerProcess, enabled: bool) -> None:
    answer = httpx.put(f"{server.url}/v1/telemetry/sealing", json={"enabled": enabled},
                       headers={"authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30)  # fmt: skip
    assert answer.status_code == 200, answer.text


@pytest.mark.slow
def test_planned_migration_moves_state_and_shifts_traffic_then_abort_returns_to_source(
    fleet: tuple[FleetClient, AgentFactory], server: ServerProcess
) -> None:
    admin, agents = fleet
    nodes = start_agents(admin, agents, {
        "mig-a": {"region": "eu-west", "zone": "eu-west-a"},
        "mig-b": {"region": "eu-west", "zone": "eu-west-b"},
    })  # fmt: skip
    by_id = {a.device_id: a for a in nodes.values()}
    admin.apply_workload(inference_workload("infer"))
    source_row = wait_running(admin, "infer")
    source = by_id[source_row["node_id"]]
    target = next(a for a in nodes.values() if a is not source)
    with EndpointFollower(server.url, "infer", ADMIN_TOKEN) as follower:
        for _ in range(5):
            endpoint, response = follower.post("/infer", {"input": [[1, 2, 3, 4]]})
            assert response.status_code == 200 and endpoint["node_id"] == source.device_id
    (source.data_dir / "workloads" / "state" / "infer" / "note.txt").write_text("kept")

    env = {"EDGEFLEET_SERVER": server.url, "EDGEFLEET_TOKEN": ADMIN_TOKEN}
    started = run_cli("workloads", "migrate", "infer", "--to", target.name, "-o", "json",
                      env=env)  # fmt: skip
    assert started.code == 0, started.stderr
    migration_id = started.json()["id"]
    seen: list[int] = []
    target_id = target.device_id
    assert target_id is not None

    def completed() -> bool:
        weight = endpoint_weights(admin, "infer").get(target_id)
        if weight and (not seen or seen[-1] != weight):
            seen.append(weight)
        return bool(admin.workload_migrations("infer")[0]["state"] == "completed")

    wait_for(completed, timeout_s=90, interval_s=0.1, what="migration completed")
    assert seen[:3] == [10, 50, 100]
    [done] = [m for m in admin.workload_migrations("infer") if m["id"] == migration_id]
    steps = [s["state"] for s in done["steps"]]
    assert steps == [
        "prestaging",
        "checkpointing",
        "transferring",
        "starting",
        "shifting",
        "shifting",
        "draining",
        "completed",
    ]
    checkpoint = done["checkpoint"]
    assert checkpoint is not None and (checkpoint["size_bytes"] or 0) > 0
    # The state archive is the workload's data: a viewer may not even ask for it; once the
    # migration completed it is deleted (an operator, who may ask, finds it gone).
    archive = f"{server.url}/v1/blobs/{checkpoint['sha256']}"
    viewer = admin.create_api_token("archive-viewer", "viewer")["token"]
    refused = httpx.get(archive, headers={"authorization": f"Bearer {viewer}"})
    assert refused.status_code == 403
    assert "state archive of migration" in refused.json()["error"]["message"]
    gone = httpx.get(archive, headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
    assert gone.status_code == 404

    row = wait_running(admin, "infer")
    assert row["node_id"] == target.device_id
    state = target.data_dir / "workloads" / "state" / "infer"
    assert (state / "note.txt").read_text() == "kept"  # the state directory moved with it
    restored = httpx.get(f"http://127.0.0.1:{row['port']}/healthz", timeout=5).json()["restored"]
    assert restored["requests"] >= 5  # checkpointed by the source's hook before the move
    wait_for(lambda: copies(source, "infer") == 0, what="source drained and stopped")
    assert endpoint_weights(admin, "infer") == {target.device_id: 100}

    # Abort: the copy on the other node goes, traffic stays with the source.
    serving_port = row["port"]
    assert serving_port is not None
    admin.migrate_workload("infer", to=source.device_id)

    def shifting() -> bool:
        m = admin.workload_migrations("infer")[0]
        return m["state"] in ("shifting", "draining")

    wait_for(shifting, timeout_s=90, interval_s=0.1, what="second migration shifting")
    assert copies(source, "infer") == 1
    aborted = run_cli("workloads", "migrate", "infer", "--abort", "-o", "json", env=env)
    assert aborted.code == 0, aborted.stderr
    assert aborted.json()[0]["state"] == "aborted"
    assert "traffic back on" in aborted.json()[0]["steps"][-1]["detail"]
    assert endpoint_weights(admin, "infer") == {target.device_id: 100}
    wait_for(lambda: copies(source, "infer") == 0, what="aborted copy stopped")
    row = placement(admin, "infer")[0]
    assert row["node_id"] == target.device_id and row["port"] == serving_port
    assert answers(serving_port, "/healthz")  # the source never stopped serving


@pytest.mark.slow
def test_a_sealed_state_archive_passes_a_relay_unread_and_restores_on_the_target(
    fleet: tuple[FleetClient, AgentFactory], server: ServerProcess, tmp_path: Path
) -> None:
    """With the fleet's sealing policy on, two nodes reach the control plane through a
    relay: a planned migration uploads the state archive sealed to the ingest key, so no
    byte of a marker file in the state directory crosses the relay readable, and the target
    restores it (the control plane opened it, and served it to the target)."""
    admin, agents = fleet
    set_sealing(server, True)
    token = admin.create_enrollment_token(auto_approve=True)["token"]
    marker = f"marker {os.urandom(16).hex()}".encode()
    try:
        with Relay(server.url) as relay:
            nodes = {}
            for name, zone in (("seal-a", "eu-west-a"), ("seal-b", "eu-west-b")):
                args = ["--region", "eu-west", "--zone", zone]
                agent = AgentProcess(relay.url, tmp_path / name, token, name, extra_args=args)
                agents.agents.append(agent)
                agent.start()
                nodes[name] = agent
            for agent in nodes.values():
                wait_for(partial(applied_generation, agent), what=f"{agent.name} sync")
            admin.apply_workload(http_workload("sealed-files"))
            by_id = {a.device_id: a for a in nodes.values()}
            source = by_id[wait_running(admin, "sealed-files")["node_id"]]
            target = next(a for a in nodes.values() if a is not source)
            state = source.data_dir / "workloads" / "state" / "sealed-files"
            (state / "marker.bin").write_bytes(marker)
            archive_state(state, tmp_path / "plain.tar.gz")  # the control: unsealed, it shows
            assert marker in gzip.decompress((tmp_path / "plain.tar.gz").read_bytes())

            admin.migrate_workload("sealed-files", to=target.device_id)
            wait_for(lambda: admin.workload_migrations("sealed-files")[0]["state"] == "completed",
                     timeout_s=90, interval_s=0.2, what="migration completed")  # fmt: skip
            row = wait_running(admin, "sealed-files")
            assert row["node_id"] == target.device_id
            restored = target.data_dir / "workloads" / "state" / "sealed-files" / "marker.bin"
            assert restored.read_bytes() == marker
            uploads = [body for method, path, body in relay.requests()
                       if method == "PUT" and path.startswith("/v1/checkpoints/")]  # fmt: skip
            assert uploads
            for body in uploads:  # sealed streams: no gzip inside that a relay could open
                assert body.startswith(b"EFSTRM1\n")
                with pytest.raises(gzip.BadGzipFile):
                    gzip.decompress(body)
            assert marker not in b"".join(bytes(stream) for stream in relay.streams)
    finally:
        set_sealing(server, False)


def test_proactive_migration_when_the_battery_forecast_crosses_the_threshold(
    fleet: tuple[FleetClient, AgentFactory], tmp_path: Path
) -> None:
    admin, agents = fleet
    battery = tmp_path / "battery"
    battery.write_text("95")
    nodes = start_agents(admin, agents, {
        "pro-battery": {"region": "eu-west", "at": BERLIN, "battery": f"file:{battery}"},
        "pro-mains": {"region": "eu-west", "at": MUNICH},
    })  # fmt: skip
    draining, mains = nodes["pro-battery"], nodes["pro-mains"]
    near = {"near": [{"name": "berlin", "lat": 52.52, "lon": 13.40}]}
    admin.apply_workload(http_workload("sensor", preferences=near))
    assert wait_running(admin, "sensor")["node_id"] == draining.device_id
    (draining.data_dir / "workloads" / "state" / "sensor" / "reading.txt").write_text("42")

    level = 95.0

    def migrated() -> bool:
        nonlocal level
        level = max(20.0, level - 3)  # the battery drains fast: forecast below 15% soon
        battery.write_text(f"{level}")
        migrations = admin.workload_migrations("sensor")
        return bool(migrations) and migrations[0]["state"] == "completed"

    wait_for(migrated, timeout_s=90, interval_s=0.5, what="forecast migration completed")
    [m] = admin.workload_migrations("sensor")
    assert m["trigger"] == "forecast" and m["source"] == draining.device_id
    assert "battery_pct forecast below 15" in m["reason"]
    row = wait_running(admin, "sensor")
    assert row["node_id"] == mains.device_id
    assert (mains.data_dir / "workloads" / "state" / "sensor" / "reading.txt").read_text() == "42"
    wait_for(lambda: copies(draining, "sensor") == 0, what="source stopped")
