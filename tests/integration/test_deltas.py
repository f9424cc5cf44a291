"""Delta updates end to end: the server computes a delta from the version the device runs,
the device rebuilds the new model from it and reports the bytes saved; a damaged delta
falls back to the full download and still ends on a verified model."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from edgefleet.artifacts.model_builder import build_mlp
from edgefleet.client import FleetClient
from edgefleet.errors import ApiError
from edgefleet.localfleet import AgentProcess, ServerProcess, wait_for
from tests.conftest import AgentFactory
from tests.releases import Trust, fine_tuned, free_port, publish


@pytest.fixture(scope="module")
def trust(server: ServerProcess) -> Trust:
    with server.client() as client:
        return Trust.install(client)


def status(admin: FleetClient, agent: AgentProcess) -> dict[str, Any]:
    return admin.get_device(agent.device_id or "")["release_status"]


def installed(admin: FleetClient, agent: AgentProcess, version: str) -> dict[str, Any] | None:
    s = status(admin, agent)
    return s if s.get("version") == version and s.get("state") == "installed" else None


def test_device_rebuilds_from_a_delta_and_reports_bytes_saved(
    server: ServerProcess,
    admin: FleetClient,
    agents: AgentFactory,
    trust: Trust,
    tmp_path: Path,
) -> None:
    token = admin.create_enrollment_token(auto_approve=True)["token"]
    agent = agents("delta-cam", token)
    wait_for(lambda: agent.state().get("applied_generation"), what="agent in sync")
    port = free_port()
    base = build_mlp(64, 512, 16, seed=5)
    publish(admin, tmp_path, "tuned", "1.0.0", base, port, trust.targets_keys)
    admin.assign_release("tuned", "1.0.0", device=agent.device_id)
    first = wait_for(lambda: installed(admin, agent, "1.0.0"), timeout_s=60, what="v1")
    assert first is not None
    assert first["bytes_saved"] == 0

    v2 = publish(
        admin, tmp_path, "tuned", "2.0.0", fine_tuned(base, 1e-3, 1), port, trust.targets_keys
    )
    admin.assign_release("tuned", "2.0.0", device=agent.device_id)
    second = wait_for(lambda: installed(admin, agent, "2.0.0"), timeout_s=90, what="v2")
    assert second is not None
    model = next(f for f in v2["files"] if f["kind"] == "onnx-model")
    assert second["bytes_saved"] > model["size_bytes"] * 0.2
    assert "rebuilt from a delta" in agent.log()

    stats = admin.delta_stats("tuned-model")
    pair = next(p for p in stats if (p["from_version"], p["to_version"]) == ("1.0.0", "2.0.0"))
    assert pair["state"] == "ready" and pair["delta_size"] < model["size_bytes"]

    # A damaged cached delta: the device refuses it and downloads the full model instead.
    v3 = publish(
        admin, tmp_path, "tuned", "3.0.0", fine_tuned(base, 1e-3, 2), port, trust.targets_keys
    )
    new_sha = next(f["sha256"] for f in v3["files"] if f["kind"] == "onnx-model")
    old_sha = model["sha256"]
    cached = server.data_dir / "deltas" / new_sha / f"{old_sha}.delta"
    admin.delta_stats("tuned-model", compute=True)  # operators can precompute pairs
    wait_for(lambda: cached.exists(), timeout_s=60, what="the v2->v3 delta to be computed")
    data = bytearray(cached.read_bytes())
    data[len(data) // 2] ^= 0xFF
    cached.write_bytes(bytes(data))
    admin.assign_release("tuned", "3.0.0", device=agent.device_id)
    third = wait_for(lambda: installed(admin, agent, "3.0.0"), timeout_s=90, what="v3")
    assert third is not None
    assert third["bytes_saved"] == 0
    assert "delta not used; downloading in full" in agent.log()


def test_a_delta_between_blobs_that_are_not_versions_of_one_artifact_is_refused(
    server: ServerProcess,
    admin: FleetClient,
    tmp_path: Path,
) -> None:
    """Naming two stored blobs must not make the server compute anything for them."""
    shas = []
    for i in range(2):
        blob = tmp_path / f"blob{i}"
        blob.write_bytes(bytes([i]) * 4096)
        shas.append(hashlib.sha256(blob.read_bytes()).hexdigest())
        admin.put_blob(blob, shas[-1])
    with pytest.raises(ApiError) as refused:
        admin._call("GET", f"/v1/blobs/{shas[1]}/delta/{shas[0]}")
    assert refused.value.status == 404 and refused.value.code == "delta_unavailable"
    assert "not two versions of one artifact" in refused.value.message
    assert not (server.data_dir / "deltas" / shas[1]).exists()
