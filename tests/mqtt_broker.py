"""A real Mosquitto for tests and benchmarks: the dynamic-security plugin with an admin
client (`mosquitto_ctrl dynsec init`), persistence, a plain listener and optionally a TLS
one, on free loopback ports, in a directory of its own.

`BrokerProcess.start()` is skipped by tests (`require_mosquitto`) where Debian's mosquitto
or its plugin is absent.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from edgefleet.localfleet import wait_for
from tests.releases import free_port

DYNSEC_PLUGIN = Path("/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so")
ADMIN_USER = "edgefleet-admin"
ADMIN_PASSWORD = "broker-admin-password-for-tests"


def require_mosquitto() -> tuple[str, str]:
    """mosquitto and mosquitto_ctrl, or skip the test saying what to install."""
    mosquitto = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin")
    ctrl = shutil.which("mosquitto_ctrl")
    if mosquitto is None or ctrl is None or not DYNSEC_PLUGIN.exists():
        pytest.skip("needs Mosquitto 2 with its dynamic-security plugin "
                    "(Debian: apt-get install mosquitto mosquitto-clients)")  # fmt: skip
    return mosquitto, ctrl


class BrokerProcess:
    def __init__(self, directory: Path, tls: tuple[Path, Path, Path] | None = None) -> None:
        """`tls`: (ca, certificate, key) PEM files for an extra mqtts listener."""
        self.directory = directory
        self.port = free_port()
        self.tls_port = free_port() if tls else None
        self._tls = tls
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def admin_url(self) -> str:
        return f"mqtt://{ADMIN_USER}:{ADMIN_PASSWORD}@127.0.0.1:{self.port}"

    @property
    def admin_tls_url(self) -> str:
        return f"mqtts://{ADMIN_USER}:{ADMIN_PASSWORD}@127.0.0.1:{self.tls_port}"

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def tls_url(self) -> str:
        return f"mqtts://127.0.0.1:{self.tls_port}"

    def start(self) -> None:
        mosquitto, ctrl = require_mosquitto()
        data = self.directory / "data"
        data.mkdir(parents=True, exist_ok=True)
        dynsec = data / "dynamic-security.json"
        if not dynsec.exists():
            subprocess.run([ctrl, "dynsec", "init", str(dynsec), ADMIN_USER, ADMIN_PASSWORD],
                           check=True, capture_output=True, timeout=30)  # fmt: skip
        lines = [
            "per_listener_settings false", "allow_anonymous false",
            f"plugin {DYNSEC_PLUGIN}", f"plugin_opt_config_file {dynsec}",
            "persistence true", f"persistence_location {data}/",
            # A control plane that falls behind must not lose acknowledged reports: its
            # session's queue holds a million (Mosquitto's default drops beyond 1,000).
            "max_queued_messages 1000000",
            "log_dest stdout", "log_type error", "log_type warning", "log_type notice",
            f"listener {self.port} 127.0.0.1",
        ]  # fmt: skip
        if self._tls is not None:
            ca, certificate, key = self._tls
            lines += [f"listener {self.tls_port} 127.0.0.1", f"cafile {ca}",
                      f"certfile {certificate}", f"keyfile {key}"]  # fmt: skip
        if os.geteuid() == 0:  # as root it would switch to user mosquitto: no access here
            lines.append("user root")
        config = self.directory / "mosquitto.conf"
        config.write_text("\n".join(lines) + "\n")
        log = (self.directory / "mosquitto.log").open("ab")
        self.process = subprocess.Popen([mosquitto, "-c", str(config)], stdout=log,
                                        stderr=subprocess.STDOUT)  # fmt: skip
        log.close()
        process = self.process
        try:
            wait_for(lambda: _accepts(self.port) or process.poll() is not None, timeout_s=20,
                     what="mosquitto listening")  # fmt: skip
            if process.poll() is not None:
                raise RuntimeError(f"mosquitto exited:\n{self.log()}")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=20)
        self.process = None

    def log(self) -> str:
        path = self.directory / "mosquitto.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True
