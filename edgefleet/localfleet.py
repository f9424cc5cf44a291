"""A local fleet: a control plane and agents as real processes on loopback.

Used by `make demo`, by the integration tests and for quick experiments. Nothing here is a
fake: each object wraps a subprocess running `python -m edgefleet.cli`, with its own data
directory and a log file.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

from edgefleet.client import FleetClient

EDGEFLEET = [sys.executable, "-m", "edgefleet.cli"]
FAULTY_AGENT = [sys.executable, "-m", "edgefleet.sim.faulty_agent"]
# The scale-out stack's load balancer configuration (a source checkout's deploy/).
HAPROXY_CONFIG = Path(__file__).resolve().parents[1] / "deploy" / "haproxy.cfg"
T = TypeVar("T")


def wait_for(
    condition: Callable[[], T | None],
    timeout_s: float = 20.0,
    interval_s: float = 0.1,
    what: str = "",
) -> T:
    """Poll until `condition()` returns something truthy; raise after the timeout.

    Real processes take real time; the timeout only bounds a hang.
    """
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = condition()
            if result:
                return result
        except Exception as e:  # the condition may race with a starting process
            last_error = e
        time.sleep(interval_s)
    raise TimeoutError(f"timed out waiting for {what or condition}: last error {last_error!r}")


class ManagedProcess:
    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None):
        self.args = args
        self.log_path = log_path
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            self.args, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
        )
        log.close()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL if it does not exit; returns the exit status. Whatever is
        left in its process group is killed too."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._kill_group()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL, and to whatever is left in its process group."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._kill_group()

    def _kill_group(self) -> None:
        # The group id is the process's pid (start_new_session); processes that left the
        # group on purpose (an agent's workloads, each in a session of its own) are spared.
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class ServerProcess(ManagedProcess):
    def __init__(
        self, data_dir: Path, admin_token: str, env: dict[str, str] | None = None, port: int = 0
    ):
        self.data_dir = data_dir
        self.admin_token = admin_token
        self.port = port
        data_dir.mkdir(parents=True, exist_ok=True)
        args = [*EDGEFLEET, "server", "--data-dir", str(data_dir), "--port", str(port)]
        super().__init__(
            args,
            data_dir.parent / f"{data_dir.name}.log",
            {"EDGEFLEET_ADMIN_TOKEN": admin_token, **(env or {})},
        )
        self.url = ""

    def start(self) -> None:
        url_file = self.data_dir / "server.url"
        url_file.unlink(missing_ok=True)
        super().start()

        def ready() -> bool:
            if not self.running:
                raise RuntimeError(f"server exited:\n{self.log()}")
            if not url_file.exists():
                return False
            self.url = url_file.read_text().strip()
            return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200

        # Generous: on a loaded machine (tests in parallel) a start takes tens of seconds.
        wait_for(ready, timeout_s=90, what="server to start")
        # Later restarts reuse the same port, so agents find it again.
        self.port = int(self.url.rsplit(":", 1)[1])
        self.args[self.args.index("--port") + 1] = str(self.port)

    def client(self, token: str | None = None) -> FleetClient:
        """A client for this server, with the admin token unless another is given."""
        return FleetClient(self.url, token or self.admin_token)

    @property
    def db_path(self) -> Path:
        return self.data_dir / "edgefleet.db"


class AgentProcess(ManagedProcess):
    def __init__(
        self,
        server_url: str,
        data_dir: Path,
        enroll_token: str | None,
        name: str,
        labels: dict[str, str] | None = None,
        heartbeat_interval_s: float = 1.0,
        extra_args: list[str] | None = None,
        max_backoff_s: float = 1.0,
        log_level: str = "debug",
        env: dict[str, str] | None = None,
    ):
        self.data_dir = data_dir
        self.name = name
        args = [
            *EDGEFLEET,
            "agent",
            "--server",
            server_url,
            "--data-dir",
            str(data_dir),
            "--name",
            name,
            "--heartbeat-interval",
            str(heartbeat_interval_s),
            "--max-backoff",
            str(max_backoff_s),
            "--log-level",
            log_level,
        ]
        for k, v in (labels or {}).items():
            args += ["--label", f"{k}={v}"]
        args += extra_args or []
        # In the environment, as a supervisor passes it: never on a command line.
        token = {"EDGEFLEET_ENROLL_TOKEN": enroll_token} if enroll_token else {}
        super().__init__(args, data_dir.parent / f"{data_dir.name}.log", {**token, **(env or {})})

    def inject_faults(self, faults: dict[str, str]) -> None:
        """Run (when next started) as the simulator's faulty agent with these fault variables
        (sim/faulty_agent.py: EDGEFLEET_FAULT_KILL_AT, EDGEFLEET_FAULT_HEARTBEAT_LOSS)."""
        flags = self.args[self.args.index("agent") + 1 :]
        self.args = [*FAULTY_AGENT, *flags]
        self.env.update(faults)

    def state(self) -> dict[str, Any]:
        path = self.data_dir / "agent-state.json"
        return json.loads(path.read_text()) if path.exists() else {}

    @property
    def device_id(self) -> str | None:
        return self.state().get("device_id")


def haproxy_config(port: int, replicas: dict[str, int]) -> str:
    """deploy/haproxy.cfg for replicas on loopback: `replicas` maps some of its server names
    to ports (the other servers are left out), HAProxy listens on `port`, and `maxconn` is
    cut to what this process's file descriptor limit allows (two per connection);
    everything else as shipped."""
    config = HAPROXY_CONFIG.read_text()
    config = re.sub(r"^[ \t]*#.*\n", "", config, flags=re.MULTILINE)
    config = re.sub(r"^resolvers compose\n(?:[ \t]+.*\n)+", "", config, flags=re.MULTILINE)
    config = config.replace(" resolvers compose", "")
    config = config.replace("    bind :8080\n", f"    bind 127.0.0.1:{port}\n")

    def server(line: re.Match[str]) -> str:  # the replicas given; the others dropped
        port = replicas.get(line[2])
        return "" if port is None else f"{line[1]}server {line[2]} 127.0.0.1:{port}\n"

    config = re.sub(r"^([ \t]+)server (\S+) \S+\n", server, config, flags=re.MULTILINE)
    fds = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if fds != resource.RLIM_INFINITY:
        config = re.sub(r"maxconn (\d+)", lambda m: f"maxconn {min(int(m[1]), fds // 2 - 100)}",
                        config)  # fmt: skip
    if "resolvers" in config or ":8080" in config:
        raise ValueError(f"{HAPROXY_CONFIG} has addresses left for compose's network")
    return config


class LoadBalancerProcess(ManagedProcess):
    """HAProxy with deploy/haproxy.cfg in front of replicas on loopback (`haproxy_config`)."""

    def __init__(self, workdir: Path, port: int, replicas: dict[str, int]):
        haproxy = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin")
        if haproxy is None:
            raise FileNotFoundError("haproxy is not installed (Debian: apt-get install haproxy)")
        workdir.mkdir(parents=True, exist_ok=True)
        config = workdir / "haproxy.cfg"
        config.write_text(haproxy_config(port, replicas))
        super().__init__([haproxy, "-db", "-f", str(config)], workdir / "haproxy.log")
        self.url = f"http://127.0.0.1:{port}"
