"""A device's install: the wheel with the `agent` extra alone, in a venv of its own.

The wheel is built from the source tree (as the Dockerfile builds it), installed into a fresh
venv with `edgefleet[agent]` (from PyPI, as a device gets it), and its `edgefleet agent`
enrolls with a real control plane, pinning the fleet's TUF root through the install helper.
The operator CLI's libraries must not be in that venv at all.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgefleet.client import FleetClient
from edgefleet.localfleet import ManagedProcess, ServerProcess, wait_for
from tests.integration.test_pinned_root import new_root

REPO = Path(__file__).resolve().parents[2]
# The operator CLI's and the server's libraries: a device must not carry them.
NOT_ON_A_DEVICE = ["typer", "rich", "click", "pydantic", "httpx", "numpy", "fastapi", "sqlalchemy"]
# pip's words when it cannot reach the package index (a laptop offline).
OFFLINE = ("NewConnectionError", "Temporary failure in name resolution", "Network is unreachable")


def pip(*args: str) -> subprocess.CompletedProcess[str]:
    """The dev venv's pip, failing the test with its output, or skipping it when offline."""
    proc = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    if proc.returncode != 0:
        if any(word in proc.stdout + proc.stderr for word in OFFLINE):
            pytest.skip(f"PyPI is not reachable, so no venv can be built: {proc.stderr[-300:]}")
        pytest.fail(f"pip {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def agent_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv holding `edgefleet[agent]` from a wheel of this source tree, and no pip."""
    base = tmp_path_factory.mktemp("agent-install")
    source = base / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(REPO / "edgefleet", source / "edgefleet",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    pip("wheel", "--quiet", "--no-deps", "--wheel-dir", str(base / "wheels"), str(source))
    (wheel,) = (base / "wheels").glob("edgefleet-*.whl")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    pip("--python", str(venv / "bin" / "python"), "install", "--quiet", f"{wheel}[agent]")
    return venv


def test_the_agent_install_has_none_of_the_cli_libraries(agent_venv: Path) -> None:
    python = agent_venv / "bin" / "python"
    probe = (
        "import importlib.util, json, sys; "
        "print(json.dumps([m for m in sys.argv[1:] if importlib.util.find_spec(m)]))"
    )
    found = subprocess.run([python, "-c", probe, *NOT_ON_A_DEVICE], capture_output=True,
                           text=True, check=True).stdout  # fmt: skip
    assert json.loads(found) == []


def test_operator_commands_say_what_to_install(agent_venv: Path) -> None:
    proc = subprocess.run([agent_venv / "bin" / "edgefleet", "devices", "list"],
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "error: this install has the device agent only (`edgefleet agent ...`); the operator "
        "commands need the CLI: pip install 'edgefleet[cli]' (missing_dependency)"
    ]
    assert "Traceback" not in proc.stdout + proc.stderr


@pytest.fixture
def agent(
    agent_venv: Path, server: ServerProcess, tmp_path: Path
) -> Iterator[tuple[ManagedProcess, FleetClient]]:
    with server.client() as admin:
        fleet = new_root(admin.online_keys())
        admin.initialize_trust(json.loads(fleet.root))
        root_file = tmp_path / "root.json"
        root_file.write_bytes(fleet.root)
        token = admin.create_enrollment_token(auto_approve=True)["token"]
        data_dir = tmp_path / "device"
        process = ManagedProcess(
            [str(agent_venv / "bin" / "edgefleet"), "agent", "--server", server.url,
             "--data-dir", str(data_dir), "--name", "slim-1", "--heartbeat-interval", "1",
             "--statsd-port", "0", "--root-file", str(root_file), "--log-level", "debug"],
            tmp_path / "device.log",
            {"EDGEFLEET_ENROLL_TOKEN": token},
        )  # fmt: skip
        process.start()
        try:
            yield process, admin
        finally:
            process.stop()


def test_the_agent_install_enrolls_and_heartbeats(
    agent: tuple[ManagedProcess, FleetClient], agent_venv: Path, tmp_path: Path
) -> None:
    process, admin = agent

    state_file = tmp_path / "device" / "agent-state.json"

    def enrolled_and_online() -> bool:
        assert process.running, process.log()
        state = json.loads(state_file.read_text()) if state_file.exists() else {}
        if state.get("enrollment") != "approved":
            return False
        devices = admin.list_devices()
        return any(d["name"] == "slim-1" and d["status"] == "online" for d in devices)

    wait_for(enrolled_and_online, timeout_s=60, what="the slim agent enrolled and online")
    # Before saving its enrollment, the install helper pinned the fleet's root, verified with
    # python-tuf from this venv.
    assert (tmp_path / "device" / "tuf" / "enrollment_root.json").is_file(), process.log()
    # `edgefleet agent` handed over to the lean process, same pid.
    assert process.proc is not None
    cmdline = Path(f"/proc/{process.proc.pid}/cmdline").read_bytes().split(b"\0")
    assert cmdline[:4] == [os.fsencode(agent_venv / "bin" / "python"), b"-OO", b"-m",
                           b"edgefleet.agent"]  # fmt: skip
