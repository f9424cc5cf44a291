"""Mosquitto in the scale-out stack (deploy/compose.yaml, deploy/mosquitto/mosquitto.conf):
the service's structure, and its configuration run for real by Debian's mosquitto (`make
system-deps`) with only paths and the port changed: the admin client created by
`mosquitto_ctrl dynsec init` connects and passes the compose file's healthcheck, a client
without credentials or with a wrong password is refused, and the broker keeps its state in
the data directory."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgefleet.localfleet import wait_for
from tests.releases import free_port

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
CONFIG = DEPLOY / "mosquitto" / "mosquitto.conf"
DEBIAN_PLUGIN = Path("/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so")
ADMIN_PASSWORD = "s3cret-for-the-test"
DATA = "/mosquitto/data/"


@pytest.fixture(scope="module")
def mosquitto_service() -> dict[str, Any]:
    compose: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    service: dict[str, Any] = compose["services"]["mosquitto"]
    return service


def test_the_broker_is_pinned_persistent_and_healthchecked(
    mosquitto_service: dict[str, Any],
) -> None:
    assert re.fullmatch(r"eclipse-mosquitto:2\.\d+\.\d+", mosquitto_service["image"])
    assert mosquitto_service["volumes"] == [
        "./mosquitto/mosquitto.conf:/mosquitto/config/mosquitto.conf:ro",
        "mosquitto-data:/mosquitto/data",
    ]
    assert "ports" not in mosquitto_service  # nothing consumes it yet
    # The first start creates the dynamic-security file with its admin client, once.
    [start] = mosquitto_service["command"][2:]
    assert "[ ! -f /mosquitto/data/dynamic-security.json ]" in start
    assert 'dynsec init /mosquitto/data/dynamic-security.json admin "$$MOSQUITTO_ADMIN_PASSWORD"' \
        in start  # fmt: skip
    assert start.endswith("exec mosquitto -c /mosquitto/config/mosquitto.conf")
    assert mosquitto_service["healthcheck"]["test"][0] == "CMD-SHELL"
    assert "\nMOSQUITTO_ADMIN_PASSWORD=" in (DEPLOY / "secrets.env.example").read_text()
    config = CONFIG.read_text()
    for line in (
        "allow_anonymous false",
        "persistence true",
        f"persistence_location {DATA}",
        "plugin /usr/lib/mosquitto_dynamic_security.so",
        f"plugin_opt_config_file {DATA}dynamic-security.json",
        "listener 1883",
    ):
        assert re.search(rf"^{re.escape(line)}$", config, re.MULTILINE), line


def _tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin")
    if found is None or not DEBIAN_PLUGIN.exists():
        pytest.skip(f"{name} or its dynamic-security plugin is not installed "
                    "(Debian: apt-get install mosquitto mosquitto-clients)")  # fmt: skip
    return found


@dataclass(frozen=True)
class Broker:
    port: int
    data: Path
    process: subprocess.Popen[bytes]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """deploy/mosquitto/mosquitto.conf run by Debian's mosquitto on a free port, its data
    directory in tmp_path, after `mosquitto_ctrl dynsec init`."""
    mosquitto, ctrl = _tool("mosquitto"), _tool("mosquitto_ctrl")
    data = tmp_path / "data"
    data.mkdir()
    port = free_port()
    config = (CONFIG.read_text()
              .replace("/usr/lib/mosquitto_dynamic_security.so", str(DEBIAN_PLUGIN))
              .replace(DATA, f"{data}/")
              .replace("listener 1883", f"listener {port} 127.0.0.1"))  # fmt: skip
    if os.geteuid() == 0:  # as root the broker would drop to user mosquitto: not in tmp_path
        config += "user root\n"
    (tmp_path / "mosquitto.conf").write_text(config)
    subprocess.run([ctrl, "dynsec", "init", str(data / "dynamic-security.json"), "admin",
                    ADMIN_PASSWORD], check=True, capture_output=True, timeout=30)  # fmt: skip
    log = (tmp_path / "mosquitto.log").open("w")
    process = subprocess.Popen([mosquitto, "-c", str(tmp_path / "mosquitto.conf")],
                               stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        wait_for(lambda: _accepts(port) or process.poll() is not None, timeout_s=20,
                 what="mosquitto listening")  # fmt: skip
        assert process.poll() is None, (tmp_path / "mosquitto.log").read_text()
        yield Broker(port, data, process)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)
        log.close()


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def _subscribe(port: int, *credentials: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_tool("mosquitto_sub"), "-h", "127.0.0.1", "-p", str(port), *credentials,
         "-t", "$SYS/broker/version", "-C", "1", "-W", "5"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def test_the_admin_client_connects_and_nobody_else_does(
    broker: Broker, mosquitto_service: dict[str, Any]
) -> None:
    port, data = broker.port, broker.data
    # The compose file's healthcheck, as the container's shell runs it.
    healthcheck = mosquitto_service["healthcheck"]["test"][1].replace("$$", "$") \
        .replace("-p 1883", f"-p {port}")  # fmt: skip
    healthy = subprocess.run(["sh", "-c", healthcheck], capture_output=True, text=True,
                             env={**os.environ, "MOSQUITTO_ADMIN_PASSWORD": ADMIN_PASSWORD},
                             timeout=30)  # fmt: skip
    assert healthy.returncode == 0, healthy.stderr
    admin = _subscribe(port, "-u", "admin", "-P", ADMIN_PASSWORD)
    assert admin.returncode == 0 and admin.stdout.startswith("mosquitto version"), admin
    for credentials in ([], ["-u", "admin", "-P", "wrong"], ["-u", "device-1", "-P", "x"]):
        refused = _subscribe(port, *credentials)
        assert refused.returncode != 0, credentials
        assert "not authorised" in refused.stderr.lower(), refused.stderr
    assert (data / "dynamic-security.json").exists()


def test_the_broker_saves_its_state_in_the_data_directory(broker: Broker) -> None:
    assert not (broker.data / "mosquitto.db").exists()
    # A clean stop (what `docker compose stop` sends) saves it next to the plugin's file.
    broker.process.send_signal(signal.SIGTERM)
    assert broker.process.wait(timeout=20) == 0
    assert (broker.data / "mosquitto.db").stat().st_size > 0
