"""Rolling back to the release in the standby slot transfers nothing: the agent copies the
slot's files and checks them against the signed targets. A standby file that was altered
does not match, so it is fetched from the control plane instead. A counting relay between
agent and server sees every request the agent makes."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from edgefleet.artifacts.model_builder import build_mlp
from edgefleet.client import FleetClient
from edgefleet.localfleet import AgentProcess, ServerProcess, wait_for
from tests.relay import Relay
from tests.releases import Trust, fine_tuned, free_port, publish, service_manifest


@pytest.fixture(scope="module")
def trust(server: ServerProcess) -> Trust:
    with server.client() as client:
        return Trust.install(client)


def install(admin: FleetClient, agent: AgentProcess, version: str) -> None:
    """Assign `version` of release rb to the agent and wait until it reports it installed
    (under the new assignment's serial)."""
    device = agent.device_id or ""
    before = (admin.get_device(device)["release_status"] or {}).get("serial", -1)
    admin.assign_release("rb", version, device=device)

    def done() -> bool:
        s = admin.get_device(device)["release_status"] or {}
        return bool(s.get("version") == version and s.get("serial", -1) > before
                    and s.get("state") == "installed")  # fmt: skip

    wait_for(done, timeout_s=240, what=f"rb {version} installed")


def blob_requests(relay: Relay, before: Counter[str]) -> list[str]:
    """Paths of the blob and delta downloads relayed since `before` was taken (by count:
    the relay lists requests per connection, so a list index is no point in time)."""
    return sorted((blob_paths(relay) - before).elements())


def blob_paths(relay: Relay) -> Counter[str]:
    return Counter(path for method, path, _ in relay.requests()
                   if method == "GET" and path.startswith("/v1/blobs/"))  # fmt: skip


def model_sha(release: dict[str, Any]) -> str:
    return str(next(f["sha256"] for f in release["files"] if f["kind"] == "onnx-model"))


def live_model(agent: AgentProcess) -> Path:
    return next((agent.data_dir / "release" / "current").glob("*.onnx"))


def test_a_rollback_reuses_the_standby_slot_and_refuses_an_altered_one(
    server: ServerProcess, admin: FleetClient, trust: Trust, tmp_path: Path
) -> None:
    token = admin.create_enrollment_token(auto_approve=True)["token"]
    port = free_port()
    base = build_mlp(64, 512, 16, seed=7)
    # Probes 3 s apart: five failed in a row (15 s) before a slow start counts as unhealthy.
    manifest = json.loads(service_manifest(port, "rb-model"))
    manifest["health"]["interval_s"] = 3
    v1 = publish(admin, tmp_path, "rb", "1.0.0", base, port, trust.targets_keys,
                 manifest=manifest)  # fmt: skip
    v2 = publish(admin, tmp_path, "rb", "2.0.0", fine_tuned(base, 1e-3, 1), port,
                 trust.targets_keys, manifest=manifest)  # fmt: skip
    with Relay(server.url) as relay:
        agent = AgentProcess(relay.url, tmp_path / "agent", token, "rollback-cam",
                             log_level="info")  # fmt: skip
        agent.start()
        try:
            wait_for(lambda: agent.state().get("applied_generation"), what="agent in sync")
            install(admin, agent, "1.0.0")
            install(admin, agent, "2.0.0")

            # Back to v1, which the standby slot holds: no blob or delta is asked for.
            before = blob_paths(relay)
            install(admin, agent, "1.0.0")
            assert blob_requests(relay, before) == []
            assert hashlib.sha256(live_model(agent).read_bytes()).hexdigest() == model_sha(v1)
            assert "reused a verified file already on the device" in agent.log()

            # The standby slot now holds v2: alter its model (same length), then go back to
            # v2. The altered copy is refused and the model is fetched again.
            standby = next(
                p for p in (agent.data_dir / "release" / "slots").iterdir()
                if p.resolve() != (agent.data_dir / "release" / "current").resolve()
            )  # fmt: skip
            model = next(standby.glob("*.onnx"))
            data = bytearray(model.read_bytes())
            data[len(data) // 2] ^= 0xFF
            model.write_bytes(bytes(data))
            before = blob_paths(relay)
            install(admin, agent, "2.0.0")
            fetched = blob_requests(relay, before)
            assert any(path.startswith(f"/v1/blobs/{model_sha(v2)}") for path in fetched)
            assert hashlib.sha256(live_model(agent).read_bytes()).hexdigest() == model_sha(v2)
            assert "file on the device not reused; fetching it" in agent.log()
        finally:
            agent.stop()
