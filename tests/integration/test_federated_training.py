"""Federated training end to end: a real control plane, four real agents, three rounds of
secure aggregation; every byte the devices send goes through a relay and is inspected."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
import yaml

from edgefleet.artifacts.model_builder import build_mlp, save_model
from edgefleet.cli.releases import push_file
from edgefleet.client import FleetClient
from edgefleet.core.learning.ring import to_signed, unpack
from edgefleet.core.updates.release import ArtifactKind
from edgefleet.errors import ApiError
from edgefleet.examples.federated_task import CLASSES, HIDDEN_SIZE, INPUT_SIZE, site_data
from edgefleet.localfleet import AgentProcess, ServerProcess, wait_for
from tests.cli_runner import CliResult, run_cli
from tests.conftest import ADMIN_TOKEN, AgentFactory
from tests.relay import Relay

SAMPLES = 300
JOB = "sites"


def manifest(name: str = JOB, **changes: Any) -> dict[str, Any]:
    spec = {
        "model": {"release": "fl-base", "version": "1.0.0", "artifact": "fl-base-model"},
        "selector": "role=fl",
        "rounds": 3,
        "clientsPerRound": 3,
        "minClients": 2,
        "roundDeadline": "90s",
        "strategy": {"name": "fedprox", "mu": 0.01},
        "local": {"epochs": 2, "batchSize": 32, "learningRate": 0.05},
        "eligibility": {"maxLoad": 1000},
        **changes,
    }
    return {"kind": "FederatedTraining", "metadata": {"name": name}, "spec": spec}


@pytest.fixture(scope="module")
def base_release(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> None:
    path = save_model(build_mlp(INPUT_SIZE, HIDDEN_SIZE, CLASSES, seed=3),
                      tmp_path_factory.mktemp("model") / "mlp.onnx")  # fmt: skip
    with server.client() as client:
        push_file(client, path, "fl-base-model", "1.0.0", ArtifactKind.ONNX_MODEL, [])
        client.create_release("fl-base", "1.0.0", ["fl-base-model@1.0.0"])


@pytest.fixture
def relay(server: ServerProcess) -> Iterator[Relay]:
    with Relay(server.url) as r:
        yield r


def test_three_rounds_with_four_agents_and_nothing_in_the_clear(
    server: ServerProcess,
    admin: FleetClient,
    agents: AgentFactory,
    relay: Relay,
    base_release: None,
    tmp_path: Path,
) -> None:
    token = admin.create_enrollment_token(auto_approve=True)["token"]
    # The agents talk through the relay: every byte they send is kept.
    fleet = []
    for i in range(4):
        agent = AgentProcess(relay.url, agents.base / f"fl-{i}", token, f"fl-{i}", {"role": "fl"})
        agents.agents.append(agent)  # stopped with the others
        agent.start()
        fleet.append(agent)
    wait_for(lambda: all(a.device_id for a in fleet), what="agents to enroll", timeout_s=60)
    ids = {a.device_id for a in fleet}
    wait_for(lambda: all(d["status"] == "online" for d in admin.list_devices()
                         if d["id"] in ids), what="agents online", timeout_s=60)  # fmt: skip

    # A bad manifest is refused with the field's name, before anything is stored.
    bad = cli(server, tmp_path, manifest(rounds=0), "apply", "-f")
    assert bad.code != 0 and "spec.rounds" in bad.stderr and "Traceback" not in bad.stderr
    applied = cli(server, tmp_path, manifest(), "apply", "-f")
    assert applied.code == 0, applied.stderr
    assert "federatedtraining/sites created" in applied.stdout
    assert admin.apply_training(manifest())["created"] is False  # the same manifest again
    with pytest.raises(ApiError) as conflict:  # another manifest under a job's name
        admin.apply_training(manifest(rounds=5))
    assert conflict.value.status == 409
    # A dry run checks the manifest and its model, shows the privacy budget, stores nothing.
    private = manifest("private", privacy={"clipNorm": 1.0, "noiseMultiplier": 1.0})
    checked = admin.apply_training(private, dry_run=True)
    assert checked["privacy"]["epsilon_so_far"] == 0.0
    assert 9.8 < checked["privacy"]["epsilon_at_end"] < 9.9  # 3 rounds at z = 1, delta 1e-5
    assert [j["name"] for j in admin.training_jobs()] == [JOB]

    def finished() -> bool:
        return admin.training_status(JOB)["status"] != "running"

    wait_for(finished, what="the training job to finish", timeout_s=240)
    watched = run_cli("training", "status", JOB, "--watch", "-o", "json", env=env(server))
    assert watched.code == 0 and json.loads(watched.stdout.splitlines()[-1])["rounds_done"] == 3
    shown = run_cli("training", "report", JOB, env=env(server))
    assert "3/3 rounds" in shown.stdout and f"--artifact {JOB}-model@0.0.3" in shown.stdout
    job = admin.training_report(JOB)
    assert job["status"] == "completed", job
    done = [h for h in job["history"] if h["outcome"] == "done"]
    assert [h["round"] for h in done] == [1, 2, 3]
    assert all(h["masked"] >= 2 for h in done)
    # Each round, the device that sat out the round before is in it.
    cohorts = [set(_cohort(admin, r)) for r in (1, 2, 3)]
    for before, after in itertools.pairwise(cohorts):
        assert ids - before <= after
    # The clients' accuracy on their own data rises as the global model trains.
    assert done[-1]["accuracy"] > done[0]["accuracy"] + 0.1
    # Every round's model is an artifact; the last one is the ONNX model to release.
    final = admin.get_artifact(f"{JOB}-model", "0.0.3")
    assert final["kind"] == "onnx-model"

    _check_wire(relay, fleet_ids=ids)


def env(server: ServerProcess) -> dict[str, str]:
    return {"EDGEFLEET_SERVER": server.url, "EDGEFLEET_TOKEN": ADMIN_TOKEN}


def cli(server: ServerProcess, tmp: Path, document: dict[str, Any], *args: str) -> CliResult:
    path = tmp / "training.yaml"
    path.write_text(yaml.safe_dump(document))
    return run_cli(*args, str(path), env=env(server))


def _cohort(admin: FleetClient, number: int) -> list[str]:
    return [d for d in admin.training_report(JOB)["history"][number - 1]["clients"]]


def _check_wire(relay: Relay, fleet_ids: set[str | None]) -> None:
    """No raw sample and no unmasked update in any byte a device sent."""
    streams = [bytes(s) for s in relay.streams]
    for device_id in fleet_ids:
        assert device_id is not None
        x, _, x_test, _ = site_data(device_id, SAMPLES)
        for rows in (x, x_test):
            for row in rows[:: max(1, len(rows) // 40)]:
                for encoded in (
                    row.astype("<f8").tobytes(),
                    row.astype("<f4").tobytes(),
                    row.astype(">f8").tobytes(),
                    row.astype(">f4").tobytes(),
                ):
                    assert not any(encoded[:16] in s for s in streams)
    answers = [msgpack.unpackb(body, strict_map_key=False)
               for method, path, body in relay.requests()
               if method == "POST" and "/training/" in path]  # fmt: skip
    phases = [a["phase"] for a in answers]
    assert phases.count("masked") >= 6 and phases.count("keys") >= 6
    for answer in answers:
        payload = answer["payload"]
        if answer["phase"] == "keys":
            assert set(payload) == {"c_pk", "s_pk"} and {len(v) for v in payload.values()} == {32}
        elif answer["phase"] in ("shares", "unmask"):
            # ciphertexts (AES-GCM) of shares, or single Shamir shares: small and opaque
            assert all(isinstance(v, bytes) and len(v) <= 100 for v in payload.values())
        else:
            assert answer["phase"] == "masked"
            assert set(answer["metrics"]) == {"accuracy", "samples"}
            _check_masked(payload)


def _check_masked(payload: bytes) -> None:
    # A quantised update is integers within +-127: a masked one is uniform over the ring.
    length = INPUT_SIZE * HIDDEN_SIZE + HIDDEN_SIZE + HIDDEN_SIZE * CLASSES + CLASSES
    bits = len(payload) * 8 // length
    y = to_signed(unpack(payload, length, bits), bits)
    small = float(np.mean(np.abs(y) <= 127))
    assert small < 0.5, f"{small:.0%} of the elements look like an unmasked update"
