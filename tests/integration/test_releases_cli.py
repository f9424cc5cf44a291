"""Releases through the operator CLI against a real control plane: `releases create` with
a service file is all or nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgefleet.artifacts.model_builder import build_mlp, save_model
from edgefleet.client import FleetClient
from edgefleet.errors import ApiError
from edgefleet.localfleet import ServerProcess
from tests.cli_runner import CliResult, run_cli
from tests.conftest import ADMIN_TOKEN
from tests.releases import service_manifest


def cli(server: ServerProcess, *args: str) -> CliResult:
    return run_cli(*args, env={"EDGEFLEET_SERVER": server.url, "EDGEFLEET_TOKEN": ADMIN_TOKEN})


def test_a_refused_create_leaves_no_service_artifact_and_the_same_command_then_succeeds(
    server: ServerProcess, admin: FleetClient, tmp_path: Path
) -> None:
    service = tmp_path / "service.json"
    service.write_text(service_manifest(8080, "atomic-model"))
    create = ("releases", "create", "atomic", "--version", "1.0.0",
              "--artifact", "atomic-model@1.0.0", "--service-file", str(service))

    missing = cli(server, *create)
    assert missing.code == 1
    assert missing.stderr.count("\n") == 1 and "atomic-model@1.0.0" in missing.stderr
    assert admin.list_artifacts("atomic-service") == []
    with pytest.raises(ApiError) as absent:
        admin.get_release("atomic", "1.0.0")
    assert absent.value.code == "release_not_found"

    model = save_model(build_mlp(4, 8, 3, seed=3), tmp_path / "model.onnx")
    pushed = cli(server, "artifacts", "push", str(model), "--name", "atomic-model",
                 "--version", "1.0.0")
    assert pushed.code == 0, pushed.stderr
    created = cli(server, *create, "-o", "json")
    assert created.code == 0, created.stderr
    assert created.json()["artifacts"] == ["atomic-model@1.0.0", "atomic-service@1.0.0"]
    stored = admin.get_artifact("atomic-service", "1.0.0")
    assert stored["file_name"] == "service.json"
    assert stored["size_bytes"] == service.stat().st_size


def test_a_service_manifest_naming_an_artifact_outside_the_release_creates_nothing(
    server: ServerProcess, admin: FleetClient, tmp_path: Path
) -> None:
    model = save_model(build_mlp(4, 8, 3, seed=4), tmp_path / "model.onnx")
    assert cli(server, "artifacts", "push", str(model), "--name", "lonely-model",
               "--version", "1.0.0").code == 0
    service = tmp_path / "service.json"
    service.write_text(service_manifest(8080, "other-model"))

    refused = cli(server, "releases", "create", "lonely", "--version", "1.0.0",
                  "--artifact", "lonely-model@1.0.0", "--service-file", str(service))
    assert refused.code == 1
    assert "'other-model', which is not in the release" in refused.stderr
    assert admin.list_artifacts("lonely-service") == []
    assert [r["name"] for r in admin.list_releases() if r["name"] == "lonely"] == []


def test_a_service_file_that_is_not_text_is_refused_before_anything_is_sent(
    server: ServerProcess, admin: FleetClient, tmp_path: Path
) -> None:
    service = tmp_path / "service.bin"
    service.write_bytes(b"\xff\xfe not utf-8")
    refused = cli(server, "releases", "create", "binary", "--version", "1.0.0",
                  "--service-file", str(service))
    assert refused.code == 1
    assert "is not UTF-8 text" in refused.stderr
    assert admin.list_artifacts("binary-service") == []
