"""The systemd units of the agent and the control plane, as `install-service` writes them.

`systemd-analyze verify` (Debian's systemd package; `make system-deps` installs it) checks
every directive and the command; where systemd runs the machine (PID 1), the server's unit is
also started and answers /healthz.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from edgefleet.service_unit import (
    HIDDEN_ROOTS,
    UnitSpec,
    render_unit,
    replace_directive,
    shipped_unit,
)
from tests.releases import free_port

PYTHON = Path(sys.executable)
HARDENING = ["NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
             "Restart=always"]  # fmt: skip


def directives(unit: str) -> list[str]:
    return [line for line in unit.splitlines() if line and line[0] not in "#;["]


def install_service(role: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgefleet.cli", role, "install-service", *args],
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def needs_visible_install() -> None:
    hidden = [root for root in HIDDEN_ROOTS if Path(sys.prefix).is_relative_to(root)]
    if hidden:
        pytest.skip(f"this venv ({sys.prefix}) is under {hidden[0]}, which the units' sandbox "
                    "hides, so install-service refuses it")  # fmt: skip


def verify(unit_path: Path) -> None:
    """`systemd-analyze verify`, which exits 0 even on unknown or bad directives: it must
    say nothing about the unit."""
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed (Debian: apt-get install systemd)")
    proc = subprocess.run([tool, "verify", str(unit_path)], capture_output=True, text=True,
                          timeout=60, cwd=unit_path.parent)  # fmt: skip
    said = [line for line in (proc.stdout + proc.stderr).splitlines() if unit_path.name in line]
    assert proc.returncode == 0 and said == [], proc.stdout + proc.stderr


@pytest.mark.parametrize("role", ["agent", "server"])
def test_the_shipped_units_are_hardened_and_keep_secrets_off_the_command_line(role: str) -> None:
    unit = directives(shipped_unit(role))  # type: ignore[arg-type]
    for line in HARDENING:
        assert line in unit
    assert f"EnvironmentFile=/etc/edgefleet/{role}.env" in unit
    (exec_start,) = [line for line in unit if line.startswith("ExecStart=")]
    assert "token" not in exec_start.lower() and "database-url" not in exec_start


def test_a_data_dir_outside_var_lib_is_made_writable_instead_of_a_state_directory() -> None:
    spec = UnitSpec("agent", Path("/opt/ef/bin/python"), Path("/data/edgefleet"),
                    Path("/etc/edgefleet/agent.env"), service_user="edgefleet-svc")  # fmt: skip
    unit = directives(render_unit(shipped_unit("agent"), spec))
    assert "ReadWritePaths=/data/edgefleet" in unit
    assert not any(line.startswith("StateDirectory") for line in unit)
    assert "ExecStart=/opt/ef/bin/python -OO -m edgefleet.agent --data-dir /data/edgefleet" in unit
    assert "Environment=EDGEFLEET_SERVICE_USER=edgefleet-svc" in unit


def test_a_dynamic_user_agent_has_no_service_user() -> None:
    spec = UnitSpec("agent", Path("/opt/ef/bin/python"), Path("/var/lib/fleet/agent"),
                    Path("/etc/ef.env"), dynamic_user=True)  # fmt: skip
    unit = directives(render_unit(shipped_unit("agent"), spec))
    assert "DynamicUser=yes" in unit and "StateDirectory=fleet/agent" in unit
    assert not any("EDGEFLEET_SERVICE_USER" in line for line in unit)


def test_replace_directive_refuses_a_key_the_unit_does_not_have_once() -> None:
    with pytest.raises(ValueError, match="0 User= lines"):
        replace_directive("[Service]\nExecStart=/bin/true\n", "User", ["User=x"])


def test_install_service_writes_a_unit_systemd_accepts_and_a_private_env_file(
    tmp_path: Path,
) -> None:
    needs_visible_install()
    env_file = tmp_path / "etc" / "agent.env"
    proc = install_service("agent", "--dest", str(tmp_path), "--env-file", str(env_file),
                           "--service-user", "nobody")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    unit_path = tmp_path / "edgefleet-agent.service"
    assert proc.stdout.splitlines() == [
        f"wrote {unit_path}",
        f"wrote {env_file} (mode 0600): set your values in it",
        "then: systemctl daemon-reload && systemctl enable --now edgefleet-agent.service",
    ]
    unit = directives(unit_path.read_text())
    assert f"ExecStart={PYTHON} -OO -m edgefleet.agent --data-dir /var/lib/edgefleet-agent" in unit
    assert f"EnvironmentFile={env_file}" in unit
    assert "Environment=EDGEFLEET_SERVICE_USER=nobody" in unit
    assert unit_path.stat().st_mode & 0o777 == 0o644
    assert env_file.stat().st_mode & 0o777 == 0o600
    assert "#EDGEFLEET_ENROLL_TOKEN=" in env_file.read_text()
    verify(unit_path)

    env_file.write_text("EDGEFLEET_SERVER=https://fleet.example\n")
    again = install_service("agent", "--dest", str(tmp_path), "--env-file", str(env_file),
                            "--dynamic-user")  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert f"kept {env_file} as it is" in again.stdout.splitlines()
    assert env_file.read_text() == "EDGEFLEET_SERVER=https://fleet.example\n"
    assert "DynamicUser=yes" in directives(unit_path.read_text())
    verify(unit_path)


def test_install_service_writes_the_servers_unit(tmp_path: Path) -> None:
    needs_visible_install()
    env_file = tmp_path / "server.env"
    proc = install_service("server", "--dest", str(tmp_path), "--env-file", str(env_file),
                           "--data-dir", "/var/lib/fleet")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    unit = directives((tmp_path / "edgefleet-server.service").read_text())
    assert f"ExecStart={PYTHON} -m edgefleet.cli server --data-dir /var/lib/fleet" in unit
    assert "StateDirectory=fleet" in unit and "DynamicUser=yes" in unit
    verify(tmp_path / "edgefleet-server.service")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data-dir", "/home/fleet"], "--data-dir /home/fleet is under /home, which the "
         "unit's sandbox hides from the service"),
        (["--data-dir", "relative/dir"], "--data-dir must be an absolute path"),
        (["--data-dir", "/srv/no such dir"], "a unit line cannot carry '/srv/no such dir'"),
        (["--data-dir", "/srv/edgefleet-absent"], "--data-dir /srv/edgefleet-absent does not "
         "exist"),
        (["--service-user", "edgefleet-no-such-user"], "no user edgefleet-no-such-user on "
         "this machine: create it (useradd --system"),
        (["--dynamic-user", "--data-dir", "/srv"], "--dynamic-user needs a --data-dir under "
         "/var/lib"),
    ],
)  # fmt: skip
def test_install_service_refuses_a_unit_that_could_not_start(
    tmp_path: Path, args: list[str], message: str
) -> None:
    needs_visible_install()
    proc = install_service("agent", "--dest", str(tmp_path), "--env-file",
                           str(tmp_path / "agent.env"), *args)  # fmt: skip
    assert proc.returncode == 1
    (line,) = proc.stderr.splitlines()
    assert line.startswith("error: ") and message in line and line.endswith("(bad_setting)")
    assert list(tmp_path.iterdir()) == []


def test_the_server_unit_runs_under_systemd(tmp_path: Path) -> None:
    """Started for real where systemd is PID 1, as a transient unit under /run."""
    if not Path("/run/systemd/system").is_dir():
        pytest.skip("systemd is not running this machine (PID 1), so no unit can be started")
    if os.geteuid() != 0:
        pytest.skip("starting a system unit needs root")
    needs_visible_install()
    port = free_port()
    name = f"edgefleet-test-{uuid.uuid4().hex[:8]}"
    env_file = tmp_path / "server.env"
    env_file.write_text(f"EDGEFLEET_PORT={port}\nEDGEFLEET_ADMIN_TOKEN={uuid.uuid4().hex}\n")
    env_file.chmod(0o600)
    proc = install_service("server", "--dest", str(tmp_path), "--env-file", str(env_file),
                           "--data-dir", f"/var/lib/{name}")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    unit_path = Path("/run/systemd/system") / f"{name}.service"
    shutil.copy(tmp_path / "edgefleet-server.service", unit_path)
    try:
        subprocess.run(["systemctl", "daemon-reload"], check=True)
        subprocess.run(["systemctl", "start", name], check=True, timeout=60)
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, subprocess.run(
                ["journalctl", "-u", name, "--no-pager"], capture_output=True, text=True
            ).stdout
            time.sleep(0.5)
    finally:
        subprocess.run(["systemctl", "stop", name], timeout=60)
        unit_path.unlink()
        subprocess.run(["systemctl", "daemon-reload"])
        Path(f"/var/lib/{name}").unlink(missing_ok=True)
        shutil.rmtree(f"/var/lib/private/{name}", ignore_errors=True)
