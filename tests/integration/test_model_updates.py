"""Model updates end to end with real agents: signed releases installed into A/B slots,
served, health-checked, rolled back; staged delivery; refusals that leave the device on
its working slot."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgefleet.artifacts.blob_files import FilesystemBlobStore
from edgefleet.artifacts.model_builder import build_mlp, build_nan_mlp, save_model
from edgefleet.cli.releases import push_file
from edgefleet.client import FleetClient
from edgefleet.core.updates.release import ArtifactKind
from edgefleet.errors import ApiError
from edgefleet.localfleet import AgentProcess, ServerProcess, wait_for
from tests.conftest import AgentFactory
from tests.releases import Trust, free_port, publish


@pytest.fixture(scope="module")
def trust(server: ServerProcess) -> Trust:
    with server.client() as client:
        return Trust.install(client)


@pytest.fixture
def device(admin: FleetClient, agents: AgentFactory, trust: Trust) -> Iterator[AgentProcess]:
    token = admin.create_enrollment_token(auto_approve=True)["token"]
    agent = agents(f"cam-{free_port()}", token)
    wait_for(lambda: agent.state().get("applied_generation"), what="agent in sync")
    yield agent


def release_state(admin: FleetClient, agent: AgentProcess) -> dict[str, Any]:
    return admin.get_device(agent.device_id or "")["release_status"]


def wait_release(
    admin: FleetClient, agent: AgentProcess, version: str, state: str, timeout_s: float = 60
) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        status = release_state(admin, agent)
        if status.get("version") == version and status.get("state") == state:
            return status
        return None

    status = wait_for(
        reached,
        timeout_s=timeout_s,
        what=f"release {version} {state} (now {release_state(admin, agent)})",
    )
    assert status is not None
    return status


def health(port: int) -> dict[str, Any]:
    result: dict[str, Any] = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).json()
    return result


def test_release_installs_serves_and_a_bad_one_rolls_back(
    admin: FleetClient, device: AgentProcess, trust: Trust, tmp_path: Path
) -> None:
    port = free_port()
    publish(
        admin, tmp_path, "vision", "1.0.0", build_mlp(4, 8, 3, seed=1), port, trust.targets_keys
    )
    admin.assign_release("vision", "1.0.0", device=device.device_id)
    status = wait_release(admin, device, "1.0.0", "installed")
    assert status["active"] == {"name": "vision", "version": "1.0.0", "port": port}
    assert status["bytes_done"] == status["bytes_total"] > 0
    served = health(port)
    assert served["status"] == "ok" and "/slots/a/" in served["model_path"]
    answer = httpx.post(f"http://127.0.0.1:{port}/infer", json={"input": [[1, 2, 3, 4]]}).json()
    assert len(answer["outputs"]["y"][0]) == 3

    publish(
        admin, tmp_path, "vision", "2.0.0", build_nan_mlp(4, 8, 3, seed=2), port, trust.targets_keys
    )
    admin.assign_release("vision", "2.0.0", device=device.device_id)
    status = wait_release(admin, device, "2.0.0", "rolled-back")
    assert "not finite" in status["reason"]
    assert status["active"] == {"name": "vision", "version": "1.0.0", "port": port}
    wait_for(lambda: health(port)["status"] == "ok", what="v1 serving again")
    assert "/slots/a/" in health(port)["model_path"]

    publish(
        admin, tmp_path, "vision", "3.0.0", build_mlp(4, 8, 3, seed=3), port, trust.targets_keys
    )
    admin.assign_release("vision", "3.0.0", device=device.device_id)
    wait_release(admin, device, "3.0.0", "installed")
    wait_for(lambda: "/slots/b/" in health(port)["model_path"], what="v3 serving from slot b")


# A service that takes 4 s to listen (a model server loading its model), then answers 200:
# longer than its 1 s window and than five failed probes 0.5 s apart, well within the
# default 60 s start period.
SLOW_START = (
    "import sys, time, http.server as h\n"
    "time.sleep(4)\n"
    "class Ok(h.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        self.send_response(200)\n"
    "        self.end_headers()\n"
    "h.HTTPServer(('127.0.0.1', int(sys.argv[1])), Ok).serve_forever()\n"
)


def test_a_slow_starting_service_gets_its_start_period_then_its_window(
    admin: FleetClient, device: AgentProcess, trust: Trust, tmp_path: Path
) -> None:
    port = free_port()
    health = {"http": "/healthz", "window_s": 1, "interval_s": 0.5}
    manifest: dict[str, Any] = {"command": ["{python}", "-c", SLOW_START, "{port}"],
                                "port": port, "health": health}  # fmt: skip
    publish(admin, tmp_path, "slow", "1.0.0", build_mlp(4, 8, 3, seed=5), port,
            trust.targets_keys, manifest=manifest)  # fmt: skip
    admin.assign_release("slow", "1.0.0", device=device.device_id)
    status = wait_release(admin, device, "1.0.0", "installed")
    assert status["active"] == {"name": "slow", "version": "1.0.0", "port": port}
    assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200

    # One that never listens is rolled back when its start period ends, saying why.
    manifest = {**manifest, "command": ["{python}", "-c", "import time; time.sleep(3600)"],
                "health": {**health, "start_period_s": 3}}  # fmt: skip
    publish(admin, tmp_path, "slow", "2.0.0", build_mlp(4, 8, 3, seed=6), port,
            trust.targets_keys, manifest=manifest)  # fmt: skip
    admin.assign_release("slow", "2.0.0", device=device.device_id)
    status = wait_release(admin, device, "2.0.0", "rolled-back")
    assert "start period of 3 s" in status["reason"], status
    assert status["active"] == {"name": "slow", "version": "1.0.0", "port": port}


def test_stage_only_delivers_then_activate_installs(
    admin: FleetClient, device: AgentProcess, trust: Trust, tmp_path: Path
) -> None:
    port = free_port()
    publish(
        admin, tmp_path, "staged", "1.0.0", build_mlp(4, 8, 3, seed=4), port, trust.targets_keys
    )
    admin.assign_release("staged", "1.0.0", device=device.device_id, stage_only=True)
    wait_release(admin, device, "1.0.0", "staged")
    with pytest.raises(httpx.ConnectError):
        health(port)  # delivered and verified, but nothing runs yet
    admin.activate(device.device_id or "")
    wait_release(admin, device, "1.0.0", "installed")
    assert health(port)["status"] == "ok"
    with pytest.raises(ApiError) as nothing:
        admin.activate(device.device_id or "")
    assert nothing.value.code == "nothing_staged"


def test_incompatible_unsigned_and_invalid_are_refused(
    admin: FleetClient, device: AgentProcess, trust: Trust, tmp_path: Path
) -> None:
    publish(
        admin,
        tmp_path,
        "riscv-only",
        "1.0.0",
        build_mlp(4, 8, 3, seed=5),
        free_port(),
        trust.targets_keys,
        requires=["arch=riscv64"],
    )
    with pytest.raises(ApiError) as refused:
        admin.assign_release("riscv-only", "1.0.0", device=device.device_id)
    assert refused.value.code == "incompatible_device"
    assert "arch=riscv64" in refused.value.message
    result = admin.assign_release("riscv-only", "1.0.0", selector="")
    assert result["assigned"] == []
    assert device.device_id in [s["id"] for s in result["skipped"]]

    model = save_model(build_mlp(4, 8, 3, seed=6), tmp_path / "m.onnx")
    push_file(admin, model, "unsigned-model", "1.0.0", ArtifactKind.ONNX_MODEL, [])
    admin.create_release("unsigned", "1.0.0", ["unsigned-model@1.0.0"])
    with pytest.raises(ApiError) as unsigned:
        admin.assign_release("unsigned", "1.0.0", device=device.device_id)
    assert unsigned.value.code == "release_not_signed"

    bogus = tmp_path / "bogus.onnx"
    bogus.write_bytes(b"definitely not protobuf")
    with pytest.raises(ApiError) as invalid:
        push_file(admin, bogus, "bogus", "1.0.0", ArtifactKind.ONNX_MODEL, [])
    assert invalid.value.code == "invalid_onnx"
    assert admin.list_artifacts("bogus") == []


def test_tampered_blob_is_refused_and_the_device_keeps_its_slot(
    server: ServerProcess,
    admin: FleetClient,
    device: AgentProcess,
    trust: Trust,
    tmp_path: Path,
) -> None:
    port = free_port()
    publish(
        admin, tmp_path, "guarded", "1.0.0", build_mlp(4, 8, 3, seed=7), port, trust.targets_keys
    )
    admin.assign_release("guarded", "1.0.0", device=device.device_id)
    wait_release(admin, device, "1.0.0", "installed")

    release = publish(
        admin, tmp_path, "guarded", "2.0.0", build_mlp(4, 8, 3, seed=8), port, trust.targets_keys
    )
    model_sha = next(f["sha256"] for f in release["files"] if f["kind"] == "onnx-model")
    blob = FilesystemBlobStore(server.data_dir / "blobs").path(model_sha)
    assert blob.exists()
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF  # same length, different content
    blob.chmod(0o644)
    blob.write_bytes(bytes(data))
    admin.assign_release("guarded", "2.0.0", device=device.device_id)
    status = wait_release(admin, device, "2.0.0", "failed")
    assert "does not match" in status["reason"]
    assert status["active"] == {"name": "guarded", "version": "1.0.0", "port": port}
    assert health(port)["status"] == "ok"


def test_blob_downloads_resume_with_http_range(
    server: ServerProcess, admin: FleetClient, trust: Trust, tmp_path: Path
) -> None:
    model = save_model(build_mlp(64, 256, 8, seed=9), tmp_path / "big.onnx")
    artifact = push_file(admin, model, "rangey", "1.0.0", ArtifactKind.ONNX_MODEL, [])
    url = f"{server.url}/v1/blobs/{artifact['sha256']}"
    auth = {"authorization": f"Bearer {server.admin_token}"}
    whole = httpx.get(url, headers=auth).content
    assert whole == model.read_bytes()
    tail = httpx.get(url, headers={**auth, "range": "bytes=100-"})
    assert tail.status_code == 206
    assert tail.headers["content-range"] == f"bytes 100-{len(whole) - 1}/{len(whole)}"
    assert whole[:100] + tail.content == whole
    beyond = httpx.get(url, headers={**auth, "range": f"bytes={len(whole)}-"})
    assert beyond.status_code == 416
    anonymous = httpx.get(url)
    assert anonymous.status_code == 401
