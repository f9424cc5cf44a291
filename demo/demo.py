"""`make demo`: the edgefleet showcase on the embedded defaults (SQLite, HTTP).

Starts a control plane on a free port with a temporary data dir, three real agent
processes with different labels, and walks through the operator's day with the real CLI.
Everything is stopped cleanly at the end, on error, and on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
from rich.console import Console
from rich.rule import Rule

from edgefleet.artifacts.model_builder import build_mlp, build_nan_mlp, save_model
from edgefleet.client import FleetClient
from edgefleet.localfleet import EDGEFLEET, AgentProcess, ServerProcess, wait_for
from edgefleet.telemetry.statsd import format_line
from edgefleet.telemetry.windows import MetricKind

console = Console()

SERVICE_MANIFEST = """\
command: ["{python}", "-m", "edgefleet.workloads.inference_server",
          "--model", "{artifact:detector}", "--port", "{port}"]
port: auto
health: {http: /healthz, window_s: 5, interval_s: 0.5}
"""

# Short windows so the demo shows detection within a minute; the shipped default uses
# 60 s windows and uploads every 5 minutes.
DEMO_TELEMETRY_POLICY = """\
sets:
  - {name: host, prefixes: ["host.", "agent."], window_s: 5}
  - {name: inference, prefixes: ["inference."], window_s: 2}
active_sets: [host, inference]
upload_interval_s: 1
anomaly_upload_interval_s: 1
min_window_s: 1
detection:
  min_baseline: 6
  open_after: 2
  close_after: 2
  kpis:
    - {name: p95_latency_ms, metric: inference.latency_ms, statistic: p95, min_samples: 5}
"""


def latency_windows(client: FleetClient, device_id: str) -> int:
    result = client.telemetry_query("inference.latency_ms", device=device_id, since="5m",
                                    step="1")
    return sum(len(series["points"]) for series in result["series"])


class LatencyFeed:
    """Inference latency observations pushed to an agent's StatsD endpoint, as a serving
    workload does for every request, around an adjustable level."""

    def __init__(self, port: int, level_ms: float) -> None:
        self.port = port
        self.level_ms = level_ms
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        rng = random.Random(7)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            while not self._stop.is_set():
                lines = [format_line("inference.latency_ms",
                                     self.level_ms * (1 + 0.1 * rng.random()), MetricKind.TIMING)
                         for _ in range(5)]
                sock.sendto("\n".join(lines).encode(), ("127.0.0.1", self.port))
                self._stop.wait(0.05)

    @contextlib.contextmanager
    def running(self) -> Iterator[LatencyFeed]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(timeout=5)


FLEET = {
    "cam-berlin-1": {"region": "eu", "site": "berlin", "kind": "camera"},
    "gw-berlin-1": {"region": "eu", "site": "berlin", "kind": "gateway"},
    "kiosk-austin-1": {"region": "us", "site": "austin", "kind": "kiosk"},
}


def release_state(client: FleetClient, device: str) -> tuple[str, str] | None:
    status = client.get_device(device)["release_status"]
    return (status["version"], status["state"]) if status else None


class Demo:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.server = ServerProcess(workdir / "server", admin_token=secrets.token_urlsafe(24))
        self.agents: list[AgentProcess] = []

    def cli(self, *args: str, show: bool = True) -> str:
        """Run the real `edgefleet` command and show what an operator would see."""
        env = {
            **os.environ,
            "EDGEFLEET_SERVER": self.server.url,
            "EDGEFLEET_TOKEN": self.server.admin_token,
            "COLUMNS": str(max(120, shutil.get_terminal_size().columns)),
        }
        if show:
            console.print(f"[bold cyan]$ edgefleet {' '.join(args)}[/bold cyan]")
        result = subprocess.run([*EDGEFLEET, *args], capture_output=True, text=True, env=env)
        if result.returncode != 0:
            raise RuntimeError(f"edgefleet {' '.join(args)} failed: {result.stderr.strip()}")
        if show:
            sys.stdout.write(result.stdout)
            sys.stdout.flush()
        return result.stdout

    def step(self, title: str) -> None:
        console.print()
        console.print(Rule(f"[bold]{title}"))

    def wait(self, condition: Callable[[], object], what: str, timeout_s: float = 30) -> None:
        with console.status(f"waiting for {what}..."):
            wait_for(condition, timeout_s=timeout_s, what=what)

    def run(self) -> None:
        self.step("1. Start a control plane (SQLite, HTTP) on a free port")
        self.server.start()
        console.print(f"control plane at [green]{self.server.url}[/green], "
                      f"data in {self.server.data_dir}")

        self.step("2. Create an enrollment token; devices enrolled with it wait for approval")
        token = json.loads(self.cli("enrollment-tokens", "create", "--expires", "1h",
                                    "--description", "demo fleet", "-o", "json", show=False))
        console.print(f"enrollment token {token['id']} (secret shown once, passed to agents)")

        self.step("3. Start three real agents with different labels")
        for name, labels in FLEET.items():
            agent = AgentProcess(
                self.server.url, self.workdir / name, token["token"], name, labels,
                heartbeat_interval_s=2, max_backoff_s=2, log_level="info",
                extra_args=["--statsd-port", "0", "--telemetry-sample-interval", "1",
                            "--telemetry-batch-interval", "1"],
            )
            agent.start()
            self.agents.append(agent)
            console.print(f"started agent {name} with labels {labels}")
        with self.server.client() as client:
            self.wait(lambda: len(client.list_devices(enrollment="pending")) == 3,
                      "three pending devices")
            self.cli("devices", "list")

            self.step("4. Approve them; they start heartbeating and follow desired state")
            self.cli("devices", "approve", *FLEET)
            self.wait(
                lambda: all(d["status"] == "online" and d["in_sync"]
                            for d in client.list_devices()),
                "all devices online and in sync",
            )
            self.cli("devices", "list")

            self.step("5. Select by labels; relabel a device (reaches it via long poll)")
            self.cli("devices", "list", "-l", "region=eu,kind in (camera,gateway)")
            self.cli("devices", "label", "cam-berlin-1", "canary=true")
            self.wait(lambda: client.get_device("cam-berlin-1")["in_sync"],
                      "the camera to apply its new labels")
            self.cli("devices", "list", "-l", "canary")

            self.step("6. Least privilege: a viewer cannot approve")
            viewer = json.loads(self.cli("tokens", "create", "auditor", "--role", "viewer",
                                         "-o", "json", show=False))
            console.print("[bold cyan]$ edgefleet --token <viewer> devices revoke "
                          "kiosk-austin-1[/bold cyan]")
            refused = subprocess.run(
                [*EDGEFLEET, "--server", self.server.url, "--token", viewer["token"],
                 "devices", "revoke", "kiosk-austin-1"],
                capture_output=True, text=True,
            )
            sys.stdout.write(refused.stderr)
            console.print(f"(exit status {refused.returncode})")

            self.telemetry(client)
            self.model_updates(client)

            self.step("Every change is in the hash-chained audit log")
            self.cli("audit", "list", "--limit", "8")
            self.cli("audit", "verify")
        self.step("Done: stopping everything")

    def telemetry(self, client: FleetClient) -> None:
        self.step("7. Telemetry: a short-window policy for the demo, pushed to every device")
        policy = self.workdir / "telemetry-policy.yaml"
        policy.write_text(DEMO_TELEMETRY_POLICY)
        self.cli("telemetry", "policy", "set", "-f", str(policy))
        agent = next(a for a in self.agents if a.name == "cam-berlin-1")
        address = self.workdir / "cam-berlin-1" / "statsd.address"
        self.wait(address.exists, "the camera's local KPI endpoint (StatsD)")
        port = int(address.read_text().strip().rsplit(":", 1)[1])
        device_id = agent.device_id or ""

        def open_alerts() -> list[dict[str, object]]:
            return client.list_alerts(device=device_id)

        latency = LatencyFeed(port, level_ms=12.0)
        with latency.running():
            console.print("a workload on cam-berlin-1 reports ~12 ms inference latency "
                          "(simulated KPI feed into the agent's StatsD endpoint)")
            self.wait(lambda: latency_windows(client, device_id) >= 8,
                      "a baseline of latency windows", 60)
            self.step("8. The latency rises: an alert opens and the device samples finer")
            latency.level_ms = 90.0
            self.wait(open_alerts, "the anomaly detector to open an alert", 60)
            self.cli("alerts", "list")
            self.wait(lambda: client.get_device(device_id)["desired"]["telemetry"]
                      ["anomalous_metrics"], "the finer sampling policy to reach the camera")
            self.cli("telemetry", "query", "--device", "cam-berlin-1", "--metric",
                     "inference.latency_ms", "--since", "5m", "--quantile", "0.95")
            latency.level_ms = 12.0
            self.wait(lambda: not open_alerts(), "the alert to close after recovery", 60)
        self.cli("alerts", "list", "--all")

    def model_updates(self, client: FleetClient) -> None:
        self.step("9. Root of trust: operators' keys sign releases (TUF); the server never "
                  "sees them")
        keys = self.workdir / "keys"
        keys.mkdir()
        self.cli("keys", "generate", "--role", "root", "-o", str(keys / "root.key"))
        self.cli("keys", "generate", "--role", "targets", "-o", str(keys / "targets.key"))
        self.cli("trust", "init", "--root-key", str(keys / "root.key"),
                 "--targets-key", str(keys / "targets.key"))

        self.step("10. Model v1: push (validated ONNX), release with its service, sign, assign")
        models = self.workdir / "models"
        models.mkdir()
        save_model(build_mlp(4, 16, 3, seed=1), models / "detector-v1.onnx")
        save_model(build_nan_mlp(4, 16, 3, seed=2), models / "detector-v2.onnx")
        service = models / "service.yaml"
        service.write_text(SERVICE_MANIFEST)
        self.cli("artifacts", "push", str(models / "detector-v1.onnx"), "--name", "detector",
                 "--version", "1.0.0", "--requires", "arch=x86_64|aarch64")
        self.cli("releases", "create", "vision", "--version", "1.0.0",
                 "--artifact", "detector@1.0.0", "--service-file", str(service))
        self.cli("releases", "sign", "vision@1.0.0", "--key", str(keys / "targets.key"))
        self.cli("devices", "set-release", "vision@1.0.0", "-d", "cam-berlin-1")
        self.wait(lambda: release_state(client, "cam-berlin-1") == ("1.0.0", "installed"),
                  "the camera to verify, sandbox-check, install and health-check v1", 90)
        self.cli("devices", "show", "cam-berlin-1")
        port = client.get_device("cam-berlin-1")["release_status"]["active"]["port"]
        answer = httpx.post(f"http://127.0.0.1:{port}/infer",
                            json={"input": [[0.5, -1.0, 2.0, 0.1]]}).json()
        console.print(f"POST /infer on the camera's service -> {answer['outputs']}")

        self.step("11. Model v2 is broken (NaN outputs): installed, fails its health window, "
                  "rolled back by the device itself")
        self.cli("artifacts", "push", str(models / "detector-v2.onnx"), "--name", "detector",
                 "--version", "2.0.0")
        self.cli("releases", "create", "vision", "--version", "2.0.0",
                 "--artifact", "detector@2.0.0", "--service-file", str(service))
        self.cli("releases", "sign", "vision@2.0.0", "--key", str(keys / "targets.key"))
        self.cli("devices", "set-release", "vision@2.0.0", "-d", "cam-berlin-1")
        self.wait(lambda: release_state(client, "cam-berlin-1") == ("2.0.0", "rolled-back"),
                  "v2's health window to fail and the device to roll back", 90)
        self.cli("devices", "show", "cam-berlin-1")

    def stop(self) -> None:
        for agent in self.agents:
            agent.stop()
        self.server.stop()


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="edgefleet-demo-"))
    demo = Demo(workdir)
    keep = "EDGEFLEET_DEMO_KEEP" in os.environ
    try:
        demo.run()
        return 0
    except KeyboardInterrupt:
        console.print("\n[yellow]interrupted; stopping the fleet[/yellow]")
        return 130
    except Exception as e:
        console.print(f"[red]demo failed:[/red] {e}")
        console.print(f"logs kept in {workdir}")
        keep = True
        return 1
    finally:
        demo.stop()
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
