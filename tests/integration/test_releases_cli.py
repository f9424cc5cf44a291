"""Releases through the operator CLI against a real control plane: `releases create` with
a service file is all or nothing, and signing refuses whatever the control plane slips
into what it hands over (`HttpMitm` plays a control plane that lies)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tuf.api.metadata import Metadata, Targets

from edgefleet.artifacts.model_builder import build_mlp, save_model
from edgefleet.cli.releases import push_file
from edgefleet.client import FleetClient
from edgefleet.core.updates.release import ArtifactKind
from edgefleet.errors import ApiError
from edgefleet.localfleet import ServerProcess
from edgefleet.security.trust_store import TrustStore
from edgefleet.security.tuf_metadata import ReleaseTarget
from tests.cli_runner import CliResult, run_cli
from tests.conftest import ADMIN_TOKEN
from tests.http_mitm import HttpMitm
from tests.releases import service_manifest


def cli(server: ServerProcess, *args: str) -> CliResult:
    return run_cli(*args, env={"EDGEFLEET_SERVER": server.url, "EDGEFLEET_TOKEN": ADMIN_TOKEN})


def test_a_refused_create_leaves_no_service_artifact_and_the_same_command_then_succeeds(
    server: ServerProcess, admin: FleetClient, tmp_path: Path
) -> None:
    service = tmp_path / "service.json"
    service.write_text(service_manifest(8080, "atomic-model"))
    create = (
        "releases",
        "create",
        "atomic",
        "--version",
        "1.0.0",
        "--artifact",
        "atomic-model@1.0.0",
        "--service-file",
        str(service),
    )

    missing = cli(server, *create)
    assert missing.code == 1
    assert missing.stderr.count("\n") == 1 and "atomic-model@1.0.0" in missing.stderr
    assert admin.list_artifacts("atomic-service") == []
    with pytest.raises(ApiError) as absent:
        admin.get_release("atomic", "1.0.0")
    assert absent.value.code == "release_not_found"

    model = save_model(build_mlp(4, 8, 3, seed=3), tmp_path / "model.onnx")
    pushed = cli(
        server, "artifacts", "push", str(model), "--name", "atomic-model", "--version", "1.0.0"
    )
    assert pushed.code == 0, pushed.stderr
    created = cli(server, *create, "-o", "json")
    assert created.code == 0, created.stderr
    assert created.json()["artifacts"] == ["atomic-model@1.0.0", "atomic-service@1.0.0"]
    stored = admin.get_artifact("atomic-service", "1.0.0")
    assert stored["file_name"] == "service.json"
    assert stored["size_bytes"] == service.stat().st_size
    again = cli(server, *create)
    assert again.code == 1 and "release atomic@1.0.0 already exists" in again.stderr


def test_a_service_manifest_naming_an_artifact_outside_the_release_creates_nothing(
    server: ServerProcess, admin: FleetClient, tmp_path: Path
) -> None:
    model = save_model(build_mlp(4, 8, 3, seed=4), tmp_path / "model.onnx")
    assert (
        cli(
            server, "artifacts", "push", str(model), "--name", "lonely-model", "--version", "1.0.0"
        ).code
        == 0
    )
    service = tmp_path / "service.json"
    service.write_text(service_manifest(8080, "other-model"))

    refused = cli(
        server,
        "releases",
        "create",
        "lonely",
        "--version",
        "1.0.0",
        "--artifact",
        "lonely-model@1.0.0",
        "--service-file",
        str(service),
    )
    assert refused.code == 1
    assert "'other-model', which is not in the release" in refused.stderr
    assert admin.list_artifacts("lonely-service") == []
    assert [r["name"] for r in admin.list_releases() if r["name"] == "lonely"] == []


def test_a_service_file_that_is_not_text_is_refused_before_anything_is_sent(
    server: ServerProcess, admin: FleetClient, tmp_path: Path
) -> None:
    service = tmp_path / "service.bin"
    service.write_bytes(b"\xff\xfe not utf-8")
    refused = cli(
        server, "releases", "create", "binary", "--version", "1.0.0", "--service-file", str(service)
    )
    assert refused.code == 1
    assert "is not UTF-8 text" in refused.stderr
    assert admin.list_artifacts("binary-service") == []


# Signing against a control plane that lies.


@dataclass
class Operators:
    """Operators' machines (each its own config and trust store) reaching the control plane
    through a proxy that can forge its answers."""

    proxy: HttpMitm
    home: Path
    root_key: Path
    targets_key: Path

    def cli(self, *args: str, machine: str = "alice") -> CliResult:
        config = self.home / machine / "config.toml"
        return run_cli(
            *args,
            env={
                "EDGEFLEET_SERVER": self.proxy.url,
                "EDGEFLEET_TOKEN": ADMIN_TOKEN,
                "EDGEFLEET_CONFIG": str(config),
            },
        )

    def trusted_root(self, machine: str = "alice") -> Path:
        return TrustStore.for_server(self.home / machine, self.proxy.url).root_path


def add_release(admin: FleetClient, workdir: Path, name: str, version: str, seed: int) -> Path:
    """Push a model and create NAME@VERSION with a service; returns the model file."""
    (workdir / version).mkdir(parents=True, exist_ok=True)
    model = save_model(build_mlp(4, 8, 3, seed=seed), workdir / version / "model.onnx")
    push_file(admin, model, f"{name}-model", version, ArtifactKind.ONNX_MODEL, [])
    admin.create_release(
        name,
        version,
        [f"{name}-model@{version}"],
        ("service.json", service_manifest(8080, f"{name}-model")),
    )
    return model


@pytest.fixture(scope="module")
def operators(
    server: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operators]:
    """A root of trust set up through the proxy, and vision@1.0.0 signed and published."""
    home = tmp_path_factory.mktemp("operators")
    with HttpMitm(server.url) as proxy, server.client() as admin:
        team = Operators(proxy, home, home / "root.key", home / "targets.key")
        for role, path in (("root", team.root_key), ("targets", team.targets_key)):
            assert team.cli("keys", "generate", "--role", role, "-o", str(path)).code == 0
        init = team.cli(
            "trust",
            "init",
            "--root-key",
            str(team.root_key),
            "--targets-key",
            str(team.targets_key),
        )
        assert init.code == 0, init.stderr
        add_release(admin, home, "vision", "1.0.0", seed=1)
        signed = team.cli("releases", "sign", "vision@1.0.0", "--key", str(team.targets_key))
        assert signed.code == 0, signed.stderr
        yield team


@pytest.fixture
def honest(operators: Operators) -> Iterator[Operators]:
    yield operators
    operators.proxy.forgeries.clear()


def forged(change: Callable[[Targets], None]) -> Callable[[bytes], bytes]:
    """Rewrite staged targets metadata with `change`."""

    def rewrite(body: bytes) -> bytes:
        md: Metadata[Targets] = Metadata.from_bytes(body)
        change(md.signed)
        return md.to_bytes()

    return rewrite


PUBLISHED_MODEL = "releases/vision/1.0.0/model.onnx"


def add_forged_target(signed: Targets) -> None:
    """What the attacker wanted: a release the devices refused, slipped into a signing."""
    genuine = ReleaseTarget.from_target_file(signed.targets[PUBLISHED_MODEL])
    evil = ReleaseTarget(
        "vision",
        "6.6.6",
        "vision-model",
        "6.6.6",
        "onnx-model",
        "model.onnx",
        66,
        "e" * 64,
        genuine.requirements,
    )
    signed.targets[evil.path] = evil.to_target_file()


def change_published_hash(signed: Targets) -> None:
    signed.targets[PUBLISHED_MODEL].hashes["sha256"] = "e" * 64


def remove_published_target(signed: Targets) -> None:
    del signed.targets[PUBLISHED_MODEL]


def skip_a_version(signed: Targets) -> None:
    signed.version += 1


@pytest.mark.parametrize(
    ("forgery", "reason"),
    [
        (
            add_forged_target,
            "the staged targets add releases/vision/6.6.6/model.onnx, which is "
            "not a file of vision@2.0.0",
        ),
        (
            change_published_hash,
            f"the staged targets change the published target {PUBLISHED_MODEL}",
        ),
        (
            remove_published_target,
            f"the staged targets drop the published target {PUBLISHED_MODEL}",
        ),
        (skip_a_version, "the staged targets are v3; the last verified are v1, so the next is v2"),
    ],
)
def test_releases_sign_refuses_forged_staged_targets_and_publishes_nothing(
    honest: Operators,
    admin: FleetClient,
    tmp_path: Path,
    forgery: Callable[[Targets], None],
    reason: str,
) -> None:
    version = "2.0.0"  # one release for every forgery: none of them publishes it
    if not any(r["name"] == "vision" and r["version"] == version for r in admin.list_releases()):
        add_release(admin, tmp_path, "vision", version, seed=2)
    targets_version = admin.trust_status()["targets_version"]
    honest.proxy.forgeries["/staged-targets"] = forged(forgery)

    refused = honest.cli("releases", "sign", f"vision@{version}", "--key", str(honest.targets_key))
    assert refused.code == 1
    assert refused.stderr.count("\n") == 1, refused.stderr
    assert f"refusing to sign: {reason}" in refused.stderr and "refused_to_sign" in refused.stderr
    assert refused.stdout == ""
    assert ("POST", f"/v1/releases/vision/{version}/signed-targets") not in honest.proxy.requests
    assert admin.get_release("vision", version)["signed"] is False
    assert admin.trust_status()["targets_version"] == targets_version


def test_the_honest_path_shows_what_it_adds_and_publishes(
    honest: Operators, admin: FleetClient, tmp_path: Path
) -> None:
    model = add_release(admin, tmp_path, "vision", "3.0.0", seed=3)
    previous = admin.trust_status()["targets_version"]
    signed = honest.cli(
        "releases", "sign", "vision@3.0.0", "--key", str(honest.targets_key), "--file", str(model)
    )
    assert signed.code == 0, signed.stderr
    assert f"targets v{previous} -> v{previous + 1}" in signed.stdout
    assert "+ releases/vision/3.0.0/model.onnx  vision-model@3.0.0 (onnx-model)" in signed.stdout
    assert "+ releases/vision/3.0.0/service.json  vision-service@3.0.0" in signed.stdout
    assert "model.onnx: matches your file" in signed.stdout
    assert admin.get_release("vision", "3.0.0")["signed"] is True

    other = save_model(build_mlp(4, 8, 3, seed=99), tmp_path / "other" / "model.onnx")
    add_release(admin, tmp_path / "4", "vision", "4.0.0", seed=4)
    mismatch = honest.cli(
        "releases", "sign", "vision@4.0.0", "--key", str(honest.targets_key), "--file", str(other)
    )
    assert mismatch.code == 1 and mismatch.stderr.count("\n") == 1
    assert "your model.onnx is" in mismatch.stderr
    assert admin.get_release("vision", "4.0.0")["signed"] is False


def test_forged_published_targets_do_not_verify(
    honest: Operators, admin: FleetClient, tmp_path: Path
) -> None:
    add_release(admin, tmp_path, "vision", "5.0.0", seed=5)
    honest.proxy.forgeries[".targets.json"] = forged(remove_published_target)
    refused = honest.cli("releases", "sign", "vision@5.0.0", "--key", str(honest.targets_key))
    assert refused.code == 1 and refused.stderr.count("\n") == 1
    assert "tuf_hash_mismatch" in refused.stderr
    assert admin.get_release("vision", "5.0.0")["signed"] is False


def test_trust_sign_checks_a_file_passed_along_before_adding_a_signature(
    honest: Operators, admin: FleetClient, tmp_path: Path
) -> None:
    add_release(admin, tmp_path, "vision", "7.0.0", seed=7)
    staged = tmp_path / "targets.json"
    honest.proxy.forgeries["/staged-targets"] = forged(add_forged_target)
    assert honest.cli("releases", "stage", "vision@7.0.0", "-o", str(staged)).code == 0
    honest.proxy.forgeries.clear()
    sign = (
        "trust",
        "sign",
        str(staged),
        "--key",
        str(honest.targets_key),
        "--release",
        "vision@7.0.0",
    )
    untouched = staged.read_bytes()

    stranger = honest.cli(*sign, machine="bob")
    assert stranger.code == 1 and "no trusted root for" in stranger.stderr
    refused = honest.cli(*sign, "--root-file", str(honest.trusted_root()), machine="bob")
    assert refused.code == 1 and refused.stderr.count("\n") == 1
    assert "the staged targets add releases/vision/6.6.6/model.onnx" in refused.stderr
    assert staged.read_bytes() == untouched

    assert honest.cli("releases", "stage", "vision@7.0.0", "-o", str(staged)).code == 0
    signed = honest.cli(*sign, "--root-file", str(honest.trusted_root()), machine="bob")
    assert signed.code == 0, signed.stderr
    assert "+ releases/vision/7.0.0/model.onnx" in signed.stdout
    submitted = honest.cli("releases", "submit", "vision@7.0.0", str(staged), "-o", "json")
    assert submitted.code == 0, submitted.stderr
    assert submitted.json()["signed"] is True
