"""`edgefleet diff -f FILE` and `apply --diff` against a real control plane: nothing to
change is exit 0 and no output; a changed workload shows the unified diff of its stored
manifest and exits 1; a new document says `created` (a rollout with its devices and waves);
an error is one line and exit 2; a diff stores and audits nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from edgefleet.artifacts.model_builder import build_mlp
from edgefleet.client import FleetClient
from edgefleet.localfleet import ServerProcess
from tests.cli_runner import CliResult, run_cli
from tests.conftest import ADMIN_TOKEN
from tests.device_requests import RawDevice
from tests.releases import Trust, free_port, publish

FILES_SERVICE = {
    "command": ["{python}", "-m", "http.server", "{port}", "--bind", "127.0.0.1",
                "--directory", "{state_dir}"],
    "port": "auto",
    "health": {"http": "/", "interval_s": 0.5},
}  # fmt: skip


@pytest.fixture(scope="module")
def release(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A signed release carrying a service manifest, and one camera to roll it out to."""
    with server.client() as client:
        trust = Trust.install(client)
        publish(client, tmp_path_factory.mktemp("release"), "files", "1.0.0", build_mlp(),
                free_port(), trust.targets_keys, manifest=FILES_SERVICE)  # fmt: skip
        token = client.create_enrollment_token(auto_approve=True)["token"]
    assert RawDevice(server.url).enroll(token, "diff-cam", {"fleet": "diff"}).is_success
    return "files@1.0.0"


@pytest.fixture
def env(server: ServerProcess) -> dict[str, str]:
    return {"EDGEFLEET_SERVER": server.url, "EDGEFLEET_TOKEN": ADMIN_TOKEN}


def workload(name: str, release: str, memory_mb: int = 256) -> dict[str, Any]:
    return {"kind": "Workload", "metadata": {"name": name}, "spec": {
        "artifacts": [release],
        "constraints": {"selector": "fleet=diff"},
        "resources": {"cpu_millicores": 100, "memory_mb": memory_mb},
        "service": {"port": "auto"},
    }}  # fmt: skip


def manifest(tmp_path: Path, *documents: dict[str, Any]) -> str:
    path = tmp_path / "manifest.yaml"
    path.write_text(yaml.safe_dump_all(documents))
    return str(path)


def applied(result: CliResult) -> None:
    assert result.code == 0, (result.stdout, result.stderr)


def test_unchanged_documents_exit_0_with_no_output(
    release: str, env: dict[str, str], tmp_path: Path
) -> None:
    path = manifest(tmp_path, workload("same", release))
    applied(run_cli("apply", "-f", path, env=env))
    for command in (["diff", "-f", path], ["apply", "--diff", "-f", path]):
        result = run_cli(*command, env=env)
        assert (result.code, result.stdout, result.stderr) == (0, "", "")


def test_a_changed_workload_shows_its_diff_and_nothing_is_stored_or_audited(
    release: str, env: dict[str, str], tmp_path: Path, admin: FleetClient
) -> None:
    path = manifest(tmp_path, workload("grows", release))
    applied(run_cli("apply", "-f", path, env=env))
    stored = admin.get_workload("grows")
    audit_head = admin.audit_tail(1)[0]["seq"]
    path = manifest(tmp_path, workload("grows", release, memory_mb=512),
                    workload("fresh", release))  # fmt: skip

    for command in (["diff", "-f", path], ["apply", "--diff", "-f", path]):
        result = run_cli(*command, env=env)
        assert result.code == 1, (result.stdout, result.stderr)
        lines = result.stdout.splitlines()
        assert lines[:2] == ["--- stored workload/grows", "+++ new workload/grows"]
        assert [line for line in lines if line[:1] in "+-" and line[1:2] != line[:1]] == [
            "-    memory_mb: 256", "+    memory_mb: 512"]  # fmt: skip
        assert lines[-1] == f"workload/fresh created (1 replica(s), releases {release})"
    assert admin.audit_tail(1)[0]["seq"] == audit_head
    assert admin.get_workload("grows")["version"] == stored["version"]
    assert admin.get_workload("grows")["manifest"] == stored["manifest"]
    assert "fresh" not in [w["name"] for w in admin.list_workloads()]


def test_a_new_rollout_shows_the_devices_and_waves_it_would_get(
    release: str, env: dict[str, str], tmp_path: Path, admin: FleetClient
) -> None:
    rollouts_before = admin.list_rollouts()
    path = manifest(
        tmp_path,
        {
            "kind": "Rollout",
            "metadata": {"name": "diffed"},
            "spec": {"release": release, "target": "fleet=diff"},
        },
    )
    result = run_cli("diff", "-f", path, env=env)
    assert result.code == 1, (result.stdout, result.stderr)
    [line] = result.stdout.splitlines()
    assert line.startswith(f"rollout/diffed created ({release}, ")
    assert "1 device(s), 0 incompatible; wave 1 (" in line and line.endswith("): diff-cam)")
    assert admin.list_rollouts() == rollouts_before


def test_an_error_is_one_line_and_exit_2(release: str, env: dict[str, str], tmp_path: Path) -> None:
    broken = manifest(
        tmp_path,
        {
            "kind": "Workload",
            "metadata": {"name": "broken"},
            "spec": {"artifacts": ["missing@9.9.9"]},
        },
    )
    for path in (broken, str(tmp_path / "absent.yaml")):
        result = run_cli("diff", "-f", path, env=env)
        assert result.code == 2, (result.stdout, result.stderr)
        [line] = result.stderr.strip().splitlines()
        assert line.startswith("error: ")


def test_a_changed_policy_and_release_train_show_their_diffs(
    release: str, env: dict[str, str], tmp_path: Path, admin: FleetClient
) -> None:
    def documents(max_wave_size: int, allow_insufficient_data: bool) -> str:
        policy = {
            "kind": "Policy",
            "metadata": {"name": "diffed-policy"},
            "spec": {"max_wave_size": max_wave_size},
        }
        train = {
            "kind": "ReleaseTrain",
            "metadata": {"name": "diffed-train"},
            "spec": {
                "releases": [release],
                "rollout": {"target": "fleet=nobody"},
                "allow_insufficient_data": allow_insufficient_data,
            },
        }
        return manifest(tmp_path, policy, train)  # fmt: skip

    applied(run_cli("apply", "-f", documents(50, False), env=env))
    try:
        assert run_cli("diff", "-f", documents(50, False), env=env).code == 0
        result = run_cli("diff", "-f", documents(40, True), env=env)
        assert result.code == 1, (result.stdout, result.stderr)
        changes = [line for line in result.stdout.splitlines() if line[:1] in "+-"]
        assert changes == [
            "--- stored policy/diffed-policy", "+++ new policy/diffed-policy",
            "-  max_wave_size: 50", "+  max_wave_size: 40",
            "--- stored releasetrain/diffed-train", "+++ new releasetrain/diffed-train",
            "-  allow_insufficient_data: false", "+  allow_insufficient_data: true",
        ]  # fmt: skip
    finally:
        admin.delete_policy("diffed-policy")
