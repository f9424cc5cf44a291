"""The scale-out deployment, run for real: PostgreSQL, three `edgefleet server` replicas on
one data dir, HAProxy with `deploy/haproxy.cfg` (`localfleet.haproxy_config`: only the
replicas' addresses, the listening port and a `maxconn` within the test's file descriptor
limit changed from the file as shipped), and real agents that reach the fleet only
through HAProxy.

- HAProxy sends calls to all three replicas (before agents hold connections: it balances
  by fewest connections), and any replica answers any API call;
- the replica that runs the rollout controller is SIGKILLed while a wave soaks: the rollout
  goes on from another replica and succeeds, no wave takes more devices than its size, and
  no decision is applied twice (one audit record per rollout action and wave, one
  assignment per device in the timeline, each device's desired release bumped once);
- every database connection is terminated (`pg_terminate_backend`, as a PostgreSQL restart
  does to clients; the cluster itself is shared with other tests, so it is not restarted):
  the replicas reconnect, the agents kept running their release meanwhile, and a change
  made afterwards reaches every device.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from edgefleet.artifacts.model_builder import build_mlp
from edgefleet.client import FleetClient
from edgefleet.core.lease import LeaseName
from edgefleet.localfleet import AgentProcess, wait_for
from tests.conftest import ADMIN_TOKEN
from tests.ha_deployment import REPLICAS, Deployment, run_deployment
from tests.releases import Trust, publish
from tests.sleeping_service import SERVICE, service_pids

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

FLEET = "fleet=ha"
AGENTS = 4
STRATEGY = {"waves": [1, "50%", "100%"], "soak": "8s", "max_unavailable": "100%",
            "install_timeout": "3m"}  # fmt: skip
GATES = {"install_failure_rate": {"max_percent": 0, "min_devices": 1}}
FINAL = ("succeeded", "failed", "aborted", "rolled-back")


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with run_deployment(tmp_path_factory.mktemp("ha")) as running:
        yield running


def answers_ready(deployment: Deployment, name: str) -> bool:
    return deployment.ready(name)["status"] == "ready"


def applied_generation(agent: AgentProcess) -> int:
    return int(agent.state().get("applied_generation") or 0)


@pytest.fixture(scope="module")
def fleet(deployment: Deployment, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[list[AgentProcess]]:  # fmt: skip
    """Agents that know only HAProxy's address."""
    base = tmp_path_factory.mktemp("ha-agents")
    with deployment.client() as client:
        token = client.create_enrollment_token(auto_approve=True)["token"]
    agents = [AgentProcess(deployment.url, base / f"ha-{i}", token, f"ha-{i}",
                           {"fleet": "ha"}) for i in range(AGENTS)]  # fmt: skip
    try:
        for agent in agents:
            agent.start()
        for agent in agents:
            wait_for(partial(applied_generation, agent), timeout_s=60,
                     what=f"{agent.name} in sync")  # fmt: skip
        yield agents
    finally:
        for agent in agents:
            agent.stop()


@pytest.fixture(scope="module")
def releases(deployment: Deployment, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    workdir = tmp_path_factory.mktemp("ha-releases")
    with deployment.client() as client:
        trust = Trust.install(client)
        for version, seed in (("1.0.0", 1), ("2.0.0", 2)):
            publish(client, workdir, "ha", version, build_mlp(4, 8, 3, seed=seed), 0,
                    trust.targets_keys, manifest=SERVICE)  # fmt: skip
    return ["ha@1.0.0", "ha@2.0.0"]


def running(client: FleetClient) -> dict[str, str | None]:
    out = {}
    for device in client.list_devices(FLEET):
        active = (device.get("release_status") or {}).get("active") or {}
        out[device["id"]] = f"{active['name']}@{active['version']}" if active else None
    return out


def desired_serials(client: FleetClient) -> dict[str, int]:
    return {d["id"]: int(((d.get("desired") or {}).get("release") or {}).get("serial", 0))
            for d in client.list_devices(FLEET)}  # fmt: skip


def rollout(client: FleetClient, name: str, release: str) -> str:
    created = client.create_rollout({"kind": "Rollout", "metadata": {"name": name}, "spec": {
        "release": release, "target": FLEET, "strategy": STRATEGY, "gates": GATES}})  # fmt: skip
    return str(created["rollout"]["id"])


def final(client: FleetClient, rollout_id: str) -> dict[str, Any] | None:
    status = client.get_rollout(rollout_id)
    return status if status["state"] in FINAL else None


def rollouts_holder(deployment: Deployment) -> str:
    return deployment.lease_holder(LeaseName.ROLLOUTS)


def test_any_replica_answers_any_api_call(deployment: Deployment, fleet: list[AgentProcess]
                                          ) -> None:  # fmt: skip
    with FleetClient(deployment.replicas[REPLICAS[0]].url, ADMIN_TOKEN) as first:
        first.label_device(fleet[0].device_id or "", {"answered-by": "one"}, [])
    for name in REPLICAS[1:]:
        with FleetClient(deployment.replicas[name].url, ADMIN_TOKEN) as other:
            assert other.get_device(fleet[0].device_id or "")["labels"]["answered-by"] == "one"
            assert {d["name"] for d in other.list_devices(FLEET)} == {a.name for a in fleet}


def test_a_rollout_goes_on_when_its_controller_replica_is_killed_mid_wave(
    deployment: Deployment, fleet: list[AgentProcess], releases: list[str]
) -> None:
    with deployment.client() as client:
        first = rollout(client, "ha-first", releases[0])
        wait_for(partial(final, client, first), timeout_s=240, interval_s=0.5,
                 what="the first rollout")  # fmt: skip
        before = desired_serials(client)
        rollout_id = rollout(client, "ha-next", releases[1])

        def second_wave_soaking() -> bool:
            status = client.get_rollout(rollout_id)
            assert status["state"] not in FINAL, status["reason"]
            return bool((status["wave"], status["state"]) == (1, "soaking"))

        wait_for(second_wave_soaking, timeout_s=180, interval_s=0.2, what="wave 2 to soak")
        victim = rollouts_holder(deployment)
        deployment.replicas[victim].kill()
        survivors = [name for name in REPLICAS if name != victim]
        wait_for(lambda: rollouts_holder(deployment) in survivors, timeout_s=30,
                 what="another replica to take the rollout controller over")  # fmt: skip
        status = wait_for(partial(final, client, rollout_id), timeout_s=240, interval_s=0.5,
                          what="the rollout to finish")  # fmt: skip
        assert status is not None
        report = client.rollout_report(rollout_id)
        after = desired_serials(client)
        audit = client.audit_page(limit=1000)
        wait_for(lambda: set(running(client).values()) == {releases[1]}, timeout_s=60,
                 what="every device to run the new release")  # fmt: skip
    assert status["state"] == "succeeded", status["reason"]
    ids = sorted(a.device_id or "" for a in fleet)
    for wave in status["waves"]:
        assert sum(wave["counts"].values()) <= wave["size"], wave
    assigned = Counter(e["device_id"] for e in report["timeline"] if e["kind"] == "assign-release")
    assert assigned == dict.fromkeys(ids, 1)
    assert {d: after[d] - before[d] for d in ids} == dict.fromkeys(ids, 1)
    assert all(d["attempts"] == 1 for d in status["devices"])
    actions = Counter((a["action"], json.dumps(a.get("details"), sort_keys=True))
                      for a in audit if a["target"] == f"rollout/{rollout_id}")  # fmt: skip
    assert actions and all(n == 1 for n in actions.values()), actions
    deployment.replicas[victim].start()  # back for the tests after this one


def test_replicas_reconnect_after_the_database_drops_every_connection(
    deployment: Deployment, fleet: list[AgentProcess], releases: list[str]
) -> None:
    with deployment.client() as client:
        wait_for(lambda: all(running(client).values()), what="releases running")
        kept = running(client)
    services = {a.name: service_pids(a) for a in fleet}
    assert all(services.values())
    engine = create_engine(deployment.database_url)
    try:
        with engine.connect() as connection:
            dropped = connection.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).scalar_one()
    finally:
        engine.dispose()
    assert dropped >= len(REPLICAS)
    for name in REPLICAS:
        wait_for(partial(answers_ready, deployment, name), timeout_s=30,
                 what=f"{name} to reconnect")  # fmt: skip
    assert {a.name: service_pids(a) for a in fleet} == services
    assert all(agent.running for agent in fleet)

    def relabel() -> bool:
        with deployment.client() as client:
            for agent in fleet:
                client.label_device(agent.device_id or "", {"after": "drop"}, [])
        return True

    wait_for(relabel, timeout_s=30, what="a change through HAProxy")
    with deployment.client() as client:
        wait_for(lambda: all((d["desired"] or {}).get("labels", {}).get("after") == "drop"
                             and d["applied_generation"] == d["desired_generation"]
                             for d in client.list_devices(FLEET)),
                 timeout_s=60, what="every device to apply the change")  # fmt: skip
        assert running(client) == kept
