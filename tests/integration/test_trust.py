"""The root of trust through the operator CLI: keys, thresholds, multi-party signing,
rotation of targets keys that devices follow, and expiry that devices enforce."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from edgefleet.artifacts.model_builder import build_mlp, save_model
from edgefleet.cli.releases import push_file
from edgefleet.client import FleetClient
from edgefleet.core.updates.release import ArtifactKind
from edgefleet.errors import ApiError
from edgefleet.localfleet import AgentProcess, ServerProcess, wait_for
from edgefleet.security.trust_store import TrustStore
from edgefleet.security.tuf_keys import load_signing_key
from edgefleet.security.tuf_metadata import sign_metadata
from tests.cli_runner import CliResult, run_cli
from tests.conftest import ADMIN_TOKEN, AgentFactory
from tests.releases import free_port, publish


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("keys")
    paths = {name: directory / f"{name}.key" for name in ("root", "alice", "bob", "carol")}
    for name, path in paths.items():
        role = "root" if name == "root" else "targets"
        result = run_cli("keys", "generate", "--role", role, "-o", str(path))
        assert result.code == 0, result.stderr
    return paths


def cli(server: ServerProcess, *args: str, machine: str = "admin") -> CliResult:
    """The CLI on one operator's machine (its own config directory and trust store)."""
    config = server.data_dir.parent / "operators" / machine / "config.toml"
    return run_cli(
        *args,
        env={
            "EDGEFLEET_SERVER": server.url,
            "EDGEFLEET_TOKEN": ADMIN_TOKEN,
            "EDGEFLEET_CONFIG": str(config),
        },
    )


@pytest.fixture(scope="module")
def initialized(server: ServerProcess, keys: dict[str, Path]) -> dict[str, Path]:
    """Root of trust with two targets keys and a threshold of 2."""
    result = cli(
        server,
        "trust",
        "init",
        "--root-key",
        str(keys["root"]),
        "--targets-key",
        str(keys["alice"]),
        "--targets-key",
        str(keys["bob"]),
        "--targets-threshold",
        "2",
    )
    assert result.code == 0, result.stderr
    return keys


def test_key_files_are_private_and_never_overwritten(keys: dict[str, Path]) -> None:
    assert keys["root"].stat().st_mode & 0o077 == 0
    again = run_cli("keys", "generate", "--role", "root", "-o", str(keys["root"]))
    assert again.code == 1 and "refusing to overwrite" in again.stderr


def test_status_shows_roles_and_thresholds(
    server: ServerProcess, initialized: dict[str, Path]
) -> None:
    status = cli(server, "trust", "status", "-o", "json").json()
    assert status["initialized"] and status["root_version"] == 1
    assert status["roles"]["targets"]["threshold"] == 2
    assert len(status["roles"]["targets"]["keyids"]) == 2
    again = cli(
        server,
        "trust",
        "init",
        "--root-key",
        str(initialized["root"]),
        "--targets-key",
        str(initialized["alice"]),
    )
    assert again.code == 1 and "already has a root" in again.stderr


def push_release(admin: FleetClient, tmp_path: Path, name: str, version: str) -> None:
    model = save_model(build_mlp(4, 8, 3, seed=hash(version) % 1000), tmp_path / f"{version}.onnx")
    push_file(admin, model, f"{name}-model", version, ArtifactKind.ONNX_MODEL, [])
    admin.create_release(name, version, [f"{name}-model@{version}"])


def test_below_threshold_is_refused_and_multi_party_signing_publishes(
    server: ServerProcess, admin: FleetClient, initialized: dict[str, Path], tmp_path: Path
) -> None:
    push_release(admin, tmp_path, "quorum", "1.0.0")
    alone = cli(server, "releases", "sign", "quorum@1.0.0", "--key", str(initialized["alice"]))
    assert alone.code == 1
    assert "insufficient_signatures" in alone.stderr
    assert admin.get_release("quorum", "1.0.0")["signed"] is False

    staged = tmp_path / "targets.json"
    assert cli(server, "releases", "stage", "quorum@1.0.0", "-o", str(staged)).code == 0
    root = TrustStore.for_server(
        server.data_dir.parent / "operators" / "admin", server.url
    ).root_path
    for signer in ("alice", "bob"):  # each on their own machine, passing the file along
        signed = cli(
            server,
            "trust",
            "sign",
            str(staged),
            "--key",
            str(initialized[signer]),
            "--release",
            "quorum@1.0.0",
            "--root-file",
            str(root),
            machine=signer,
        )
        assert signed.code == 0, signed.stderr
        assert "+ releases/quorum/1.0.0/1.0.0.onnx" in signed.stdout
    submitted = cli(server, "releases", "submit", "quorum@1.0.0", str(staged), "-o", "json")
    assert submitted.code == 0, submitted.stderr
    assert submitted.json()["signed"] is True


def test_rotated_targets_keys_are_followed_and_old_keys_refused(
    server: ServerProcess,
    admin: FleetClient,
    agents: AgentFactory,
    initialized: dict[str, Path],
    tmp_path: Path,
) -> None:
    token = admin.create_enrollment_token(auto_approve=True)["token"]
    agent = agents("follower", token)
    wait_for(lambda: agent.state().get("applied_generation"), what="agent in sync")
    old = [load_signing_key(initialized["alice"]), load_signing_key(initialized["bob"])]
    port = free_port()
    publish(admin, tmp_path / "a", "rotating", "1.0.0", build_mlp(4, 8, 3, seed=31), port, old)
    admin.assign_release("rotating", "1.0.0", device=agent.device_id)
    wait_installed(admin, agent, "1.0.0")

    rotated = cli(
        server,
        "trust",
        "rotate",
        "--root-key",
        str(initialized["root"]),
        "--new-targets-key",
        str(initialized["carol"]),
    )
    assert rotated.code == 0, rotated.stderr
    assert cli(server, "trust", "status", "-o", "json").json()["root_version"] == 2

    with pytest.raises(ApiError) as refused:
        publish(admin, tmp_path / "b", "rotating", "2.0.0", build_mlp(4, 8, 3, seed=32), port, old)
    assert refused.value.code == "insufficient_signatures"
    new = [load_signing_key(initialized["carol"])]
    admin.get_release("rotating", "2.0.0")  # created; only its signature was refused
    staged = admin.stage_release("rotating", "2.0.0")
    admin.publish_release("rotating", "2.0.0", sign_metadata(staged, new[0]))
    admin.assign_release("rotating", "2.0.0", device=agent.device_id)
    wait_installed(admin, agent, "2.0.0")
    root_files = sorted(p.name for p in (agent.data_dir / "tuf").glob("*root*"))
    assert root_files, "the device keeps its trusted roots"
    trusted = json.loads((agent.data_dir / "tuf" / "root.json").read_text())
    assert trusted["signed"]["version"] == 2, "the device followed the root rotation"


def wait_installed(admin: FleetClient, agent: AgentProcess, version: str) -> dict[str, Any]:
    return wait_for(
        lambda: (
            (s := admin.get_device(agent.device_id or "")["release_status"]).get("version")
            == version
            and s.get("state") == "installed"
            and s
        ),
        timeout_s=60,
        what=f"{version} installed",
    )


def test_expired_targets_metadata_is_refused_by_the_device(
    server: ServerProcess,
    admin: FleetClient,
    agents: AgentFactory,
    initialized: dict[str, Path],
    tmp_path: Path,
) -> None:
    signers = [load_signing_key(initialized["carol"])]
    port = free_port()
    publish(
        admin,
        tmp_path,
        "shortlived",
        "1.0.0",
        build_mlp(4, 8, 3, seed=41),
        port,
        signers,
        expires="3s",
    )
    time.sleep(3.5)  # let the operators' targets metadata expire
    token = admin.create_enrollment_token(auto_approve=True)["token"]
    agent = agents("late-device", token)
    wait_for(lambda: agent.state().get("applied_generation"), what="agent in sync")
    admin.assign_release("shortlived", "1.0.0", device=agent.device_id)
    status = wait_for(
        lambda: (
            (s := admin.get_device(agent.device_id or "")["release_status"]).get("state")
            == "failed"
            and s
        ),
        timeout_s=60,
        what="the install to be refused",
    )
    assert "expired" in status["reason"]
    assert status["active"] is None
