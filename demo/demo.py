"""`make demo`: the edgefleet showcase on the embedded defaults (SQLite, HTTP).

Starts a control plane on a free port with a temporary data dir, three real agent
processes with different labels, and walks through the operator's day with the real CLI.
It ends with the web dashboard's URL and a token to log in with; with DEMO_KEEP=1 the fleet
keeps running for a person to look at it until Ctrl-C. Everything is stopped cleanly at the
end, on error, and on Ctrl-C.
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
from typing import Any

import httpx
from rich.console import Console
from rich.rule import Rule

from edgefleet.agent.telemetry.statsd import format_line
from edgefleet.artifacts.model_builder import build_faulty_mlp, build_mlp, build_nan_mlp, save_model
from edgefleet.client import FleetClient
from edgefleet.core.telemetry.windows import MetricKind
from edgefleet.examples.release_traffic import ReleaseTraffic
from edgefleet.localfleet import EDGEFLEET, AgentProcess, ServerProcess, wait_for

console = Console()

SERVICE_MANIFEST = """\
command: ["{python}", "-m", "edgefleet.examples.inference_server",
          "--model", "{artifact:detector}", "--port", "{port}",
          "--state-dir", "{state_dir}"]
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
load_factor: 1
detection:
  min_baseline: 6
  open_after: 2
  close_after: 2
  kpis:
    - {name: p95_latency_ms, metric: inference.latency_ms, statistic: p95, min_samples: 5}
    - {name: error_rate_pct, metric: inference.errors, statistic: ratio,
       denominator: inference.requests, min_samples: 5}
"""

# Releases for fleet rollouts: the device's own health window only checks that the service
# answers (min_requests is out of reach), so a model that is wrong on some inputs installs
# cleanly and only the fleet's error-rate gate, fed by real traffic, can catch it.
ROLLOUT_SERVICE_MANIFEST = """\
command: ["{python}", "-m", "edgefleet.examples.inference_server",
          "--model", "{artifact:detector}", "--port", "{port}",
          "--state-dir", "{state_dir}"]
port: auto
health: {http: /healthz, window_s: 1, interval_s: 0.5, min_requests: 1000000}
"""

ROLLOUT = """\
kind: Rollout
metadata: {{name: {name}}}
spec:
  release: {release}
  target: "region in (eu,us)"
  strategy: {{waves: [1, 50%, 100%], soak: 4s, max_unavailable: 100%, install_timeout: 3m}}
  gates:
    install_failure_rate: {{max_percent: 0, min_devices: 1}}
    workload_error_rate: {{max_percent: 5, min_devices: 1, min_requests: 40}}{kpis}
    insufficient_data: {{wait: 60s, then: fail}}
  on_failure: rollback
"""

WORKLOAD = """\
kind: Workload
metadata: {name: detector-api}
spec:
  artifacts: [vision@3.0.0]             # its signed service manifest says what runs
  resources: {cpu_millicores: 250, memory_mb: 512}
  service: {port: auto}
  health_check: {http: /healthz, interval_s: 0.5, timeout_s: 0.5}
  state_dir: /var/lib/detector-api
  constraints: {residency: [eu]}
  preferences:
    near: [{name: berlin, lat: 52.52, lon: 13.40}]
"""

# A KPI gate compares a wave's devices with their own pre-rollout baseline, so it suits
# the second rollout, when every device has served 3.0.0 for a while.
KPI_GATE = """
    kpis:
      - {kpi: error_rate_pct, max_increase: 5, min_devices: 1, min_samples: 40}"""

# The same release rehearsed on 10,000 virtual retail cameras (a shipped fleet profile):
# night-time maintenance windows in each shop's time zone, gates that need real numbers.
RETAIL_ROLLOUT = """\
kind: Rollout
metadata: {name: vision-3-retail}
spec:
  release: vision@3.0.0
  target: fleet=retail
  strategy: {waves: [1%, 10%, 50%, 100%], soak: 1h, max_unavailable: 10%}
  gates:
    install_failure_rate: {max_percent: 2, min_devices: 20}
    workload_error_rate: {max_percent: 2, min_devices: 20, min_requests: 1000}
    kpis:
      - {kpi: p95_latency_ms, max_increase_percent: 20, min_devices: 20}
  maintenance_windows:
    - {cron: "0 1 * * *", duration: 5h, time_zone: device}
"""

# Where each demo device is: the placement engine reads region, zone and coordinates.
LOCATION = {
    "cam-berlin-1": [
        "--region",
        "eu-central",
        "--zone",
        "eu-central-a",
        "--latitude",
        "52.52",
        "--longitude",
        "13.40",
    ],
    "gw-berlin-1": [
        "--region",
        "eu-central",
        "--zone",
        "eu-central-b",
        "--latitude",
        "52.51",
        "--longitude",
        "13.38",
        "--simulated-battery",
        "file:{battery}",
    ],
    "kiosk-austin-1": [
        "--region",
        "us-south",
        "--zone",
        "us-south-a",
        "--latitude",
        "30.27",
        "--longitude",
        "-97.74",
    ],
}
# A planned migration shifts traffic in steps; shorter steps than the default for the demo.
DEMO_SERVER_ENV = {
    "EDGEFLEET_MIGRATION_SHIFT_STEP_S": "2",
    "EDGEFLEET_MIGRATION_DRAIN_S": "1",
    "EDGEFLEET_REBALANCE_MIGRATIONS": "false",
}


def latency_windows(client: FleetClient, device_id: str) -> int:
    result = client.telemetry_query("inference.latency_ms", device=device_id, since="5m", step="1")
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
                lines = [
                    format_line(
                        "inference.latency_ms",
                        self.level_ms * (1 + 0.1 * rng.random()),
                        MetricKind.TIMING,
                    )
                    for _ in range(5)
                ]
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
    "cam-berlin-1": {"region": "eu", "site": "berlin", "kind": "camera", "residency": "eu"},
    "gw-berlin-1": {"region": "eu", "site": "berlin", "kind": "gateway", "residency": "eu"},
    "kiosk-austin-1": {"region": "us", "site": "austin", "kind": "kiosk", "residency": "us"},
}


def served_since(client: FleetClient, since: str) -> float:
    """The fewest inference requests any demo device has served in the last `since`."""
    answer = client.telemetry_query("inference.requests", selector="region in (eu,us)", since=since)
    served = {s["device_id"]: (s["summary"] or {}).get("sum", 0.0) for s in answer["series"]}
    return min(served.values()) if len(served) == len(FLEET) else 0.0


def section(markdown: str, heading: str) -> str:
    """One `## ` section of a Markdown report."""
    start = markdown.find(heading)
    if start < 0:
        return ""
    end = markdown.find("\n## ", start + len(heading))
    return markdown[start : end if end > 0 else len(markdown)].strip()


def release_state(client: FleetClient, device: str) -> tuple[str, str] | None:
    status = client.get_device(device)["release_status"]
    return (status["version"], status["state"]) if status else None


class Demo:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.server = ServerProcess(
            workdir / "server", admin_token=secrets.token_urlsafe(24), env=DEMO_SERVER_ENV
        )
        self.agents: list[AgentProcess] = []
        # gw-berlin-1 runs on a battery whose charge the demo sets (a file the agent reads).
        self.battery = workdir / "gw-berlin-1.battery"

    def cli_env(self) -> dict[str, str]:
        return {
            **os.environ,
            "EDGEFLEET_SERVER": self.server.url,
            "EDGEFLEET_TOKEN": self.server.admin_token,
            # The operator's config and trust store (the root `trust init` keeps) live with
            # the demo, not in the user's own config directory.
            "EDGEFLEET_CONFIG": str(self.workdir / "operator" / "config.toml"),
            "COLUMNS": str(max(120, shutil.get_terminal_size().columns)),
        }

    def cli(self, *args: str, show: bool = True) -> str:
        """Run the real `edgefleet` command and show what an operator would see."""
        if show:
            console.print(f"[bold cyan]$ edgefleet {' '.join(args)}[/bold cyan]")
        result = subprocess.run(
            [*EDGEFLEET, *args], capture_output=True, text=True, env=self.cli_env()
        )
        if result.returncode != 0:
            raise RuntimeError(f"edgefleet {' '.join(args)} failed: {result.stderr.strip()}")
        if show:
            sys.stdout.write(result.stdout)
            sys.stdout.flush()
        return result.stdout

    def cli_live(self, *args: str, expect_exit: int = 0) -> None:
        """Run a command that redraws (`--watch`) straight on the terminal; `expect_exit`
        is its exit status when all goes as the act intends (`rollouts status --watch`
        exits 4 on a rollout that rolled back)."""
        console.print(f"[bold cyan]$ edgefleet {' '.join(args)}[/bold cyan]")
        sys.stdout.flush()
        code = subprocess.run([*EDGEFLEET, *args], env=self.cli_env()).returncode
        if code != expect_exit:
            raise RuntimeError(f"edgefleet {' '.join(args)} exited {code}, not {expect_exit}")

    def step(self, title: str) -> None:
        console.print()
        console.print(Rule(f"[bold]{title}"))

    def wait(self, condition: Callable[[], object], what: str, timeout_s: float = 30) -> None:
        with console.status(f"waiting for {what}..."):
            wait_for(condition, timeout_s=timeout_s, what=what)

    def run(self) -> None:
        self.step("1. Start a control plane (SQLite, HTTP) on a free port")
        self.server.start()
        console.print(
            f"control plane at [green]{self.server.url}[/green], data in {self.server.data_dir}"
        )

        self.step("2. Create an enrollment token; devices enrolled with it wait for approval")
        token = json.loads(
            self.cli(
                "enrollment-tokens",
                "create",
                "--expires",
                "1h",
                "--description",
                "demo fleet",
                "-o",
                "json",
                show=False,
            )
        )
        console.print(f"enrollment token {token['id']} (secret shown once, passed to agents)")

        self.step("3. Start three real agents with different labels")
        self.battery.write_text("95")
        for name, labels in FLEET.items():
            agent = AgentProcess(
                self.server.url,
                self.workdir / name,
                token["token"],
                name,
                labels,
                heartbeat_interval_s=1,
                max_backoff_s=2,
                log_level="info",
                extra_args=[
                    "--statsd-port",
                    "0",
                    "--telemetry-sample-interval",
                    "1",
                    "--telemetry-batch-interval",
                    "1",
                    *(a.format(battery=self.battery) for a in LOCATION[name]),
                ],
            )
            agent.start()
            self.agents.append(agent)
            console.print(f"started agent {name} with labels {labels}")
        with self.server.client() as client:
            self.wait(
                lambda: len(client.list_devices(enrollment="pending")) == 3, "three pending devices"
            )
            self.cli("devices", "list")

            self.step("4. Approve them; they start heartbeating and follow desired state")
            self.cli("devices", "approve", *FLEET)
            self.wait(
                lambda: all(
                    d["status"] == "online" and d["in_sync"] for d in client.list_devices()
                ),
                "all devices online and in sync",
            )
            self.cli("devices", "list")

            self.step("5. Select by labels; relabel a device (reaches it via long poll)")
            self.cli("devices", "list", "-l", "region=eu,kind in (camera,gateway)")
            self.cli("devices", "label", "cam-berlin-1", "canary=true")
            self.wait(
                lambda: client.get_device("cam-berlin-1")["in_sync"],
                "the camera to apply its new labels",
            )
            self.cli("devices", "list", "-l", "canary")

            self.step("6. Least privilege: a viewer cannot approve")
            viewer = json.loads(
                self.cli(
                    "tokens", "create", "auditor", "--role", "viewer", "-o", "json", show=False
                )
            )
            console.print(
                "[bold cyan]$ edgefleet --token <viewer> devices revoke kiosk-austin-1[/bold cyan]"
            )
            refused = subprocess.run(
                [
                    *EDGEFLEET,
                    "--server",
                    self.server.url,
                    "--token",
                    viewer["token"],
                    "devices",
                    "revoke",
                    "kiosk-austin-1",
                ],
                capture_output=True,
                text=True,
            )
            sys.stdout.write(refused.stderr)
            console.print(f"(exit status {refused.returncode})")

            self.telemetry(client)
            self.model_updates(client)
            self.rollouts(client)
            self.workloads(client)

            self.step("Every change is in the hash-chained audit log")
            self.cli("audit", "list", "--limit", "8")
            self.cli("audit", "verify")
            self.rehearsal()
        self.dashboard()
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
            console.print(
                "a workload on cam-berlin-1 reports ~12 ms inference latency "
                "(simulated KPI feed into the agent's StatsD endpoint)"
            )
            self.wait(
                lambda: latency_windows(client, device_id) >= 8, "a baseline of latency windows", 60
            )
            self.step("8. The latency rises: an alert opens and the device samples finer")
            latency.level_ms = 90.0
            self.wait(open_alerts, "the anomaly detector to open an alert", 60)
            self.cli("alerts", "list")
            self.wait(
                lambda: client.get_device(device_id)["desired"]["telemetry"]["anomalous_metrics"],
                "the finer sampling policy to reach the camera",
            )
            self.cli(
                "telemetry",
                "query",
                "--device",
                "cam-berlin-1",
                "--metric",
                "inference.latency_ms",
                "--since",
                "5m",
                "--quantile",
                "0.95",
            )
            latency.level_ms = 12.0
            self.wait(lambda: not open_alerts(), "the alert to close after recovery", 60)
        self.cli("alerts", "list", "--all")

    def model_updates(self, client: FleetClient) -> None:
        self.step(
            "9. Root of trust: operators' keys sign releases (TUF); the server never sees them"
        )
        keys = self.workdir / "keys"
        keys.mkdir()
        self.cli("keys", "generate", "--role", "root", "-o", str(keys / "root.key"))
        self.cli("keys", "generate", "--role", "targets", "-o", str(keys / "targets.key"))
        self.cli(
            "trust",
            "init",
            "--root-key",
            str(keys / "root.key"),
            "--targets-key",
            str(keys / "targets.key"),
        )

        self.step("10. Model v1: push (validated ONNX), release with its service, sign, assign")
        models = self.workdir / "models"
        models.mkdir()
        save_model(build_mlp(4, 16, 3, seed=1), models / "detector-v1.onnx")
        save_model(build_nan_mlp(4, 16, 3, seed=2), models / "detector-v2.onnx")
        service = models / "service.yaml"
        service.write_text(SERVICE_MANIFEST)
        self.cli(
            "artifacts",
            "push",
            str(models / "detector-v1.onnx"),
            "--name",
            "detector",
            "--version",
            "1.0.0",
            "--requires",
            "arch=x86_64|aarch64",
        )
        self.cli(
            "releases",
            "create",
            "vision",
            "--version",
            "1.0.0",
            "--artifact",
            "detector@1.0.0",
            "--service-file",
            str(service),
        )
        self.cli("releases", "sign", "vision@1.0.0", "--key", str(keys / "targets.key"))
        self.cli("devices", "set-release", "vision@1.0.0", "-d", "cam-berlin-1")
        self.wait(
            lambda: release_state(client, "cam-berlin-1") == ("1.0.0", "installed"),
            "the camera to verify, sandbox-check, install and health-check v1",
            90,
        )
        self.cli("devices", "show", "cam-berlin-1")
        port = client.get_device("cam-berlin-1")["release_status"]["active"]["port"]
        answer = httpx.post(
            f"http://127.0.0.1:{port}/infer", json={"input": [[0.5, -1.0, 2.0, 0.1]]}
        ).json()
        console.print(f"POST /infer on the camera's service -> {answer['outputs']}")

        self.step(
            "11. Model v2 is broken (NaN outputs): installed, fails its health window, "
            "rolled back by the device itself"
        )
        self.cli(
            "artifacts",
            "push",
            str(models / "detector-v2.onnx"),
            "--name",
            "detector",
            "--version",
            "2.0.0",
        )
        self.cli(
            "releases",
            "create",
            "vision",
            "--version",
            "2.0.0",
            "--artifact",
            "detector@2.0.0",
            "--service-file",
            str(service),
        )
        self.cli("releases", "sign", "vision@2.0.0", "--key", str(keys / "targets.key"))
        self.cli("devices", "set-release", "vision@2.0.0", "-d", "cam-berlin-1")
        self.wait(
            lambda: release_state(client, "cam-berlin-1") == ("2.0.0", "rolled-back"),
            "v2's health window to fail and the device to roll back",
            90,
        )
        self.cli("devices", "show", "cam-berlin-1")

    def publish_vision(self, version: str, model: Any, keys: Path) -> None:
        """Push a detector model and its service, release them together, sign the release."""
        models = self.workdir / "models"
        path = save_model(model, models / f"detector-v{version}.onnx")
        service = models / "rollout-service.yaml"
        service.write_text(ROLLOUT_SERVICE_MANIFEST)
        self.cli(
            "artifacts", "push", str(path), "--name", "detector", "--version", version, show=False
        )
        self.cli(
            "releases",
            "create",
            "vision",
            "--version",
            version,
            "--artifact",
            f"detector@{version}",
            "--service-file",
            str(service),
            show=False,
        )
        self.cli(
            "releases", "sign", f"vision@{version}", "--key", str(keys / "targets.key"), show=False
        )
        console.print(f"published vision@{version} (pushed, released, signed)")

    def rollouts(self, client: FleetClient) -> None:
        self.step(
            "12. A fleet rollout in waves [1, 50%, 100%], each gated on install outcomes "
            "and the workload's error rate under real traffic"
        )
        keys = self.workdir / "keys"
        self.publish_vision("3.0.0", build_mlp(4, 16, 3, seed=3), keys)
        self.publish_vision("4.0.0", build_faulty_mlp(4, 16, 3, bad_fraction=0.5, seed=4), keys)
        good = self.workdir / "rollout-vision-3.yaml"
        good.write_text(ROLLOUT.format(name="vision-3", release="vision@3.0.0", kpis=""))
        console.print(good.read_text(), highlight=False, markup=False, soft_wrap=True)
        with ReleaseTraffic(self.server.client, "region in (eu,us)"):
            console.print("(inference traffic goes to every device's service while it runs)")
            self.cli("apply", "-f", str(good))
            self.cli_live("rollouts", "status", "vision-3", "--watch")
            status = client.get_rollout("vision-3")
            if status["state"] != "succeeded":
                raise RuntimeError(f"rollout vision-3 {status['state']}: {status['reason']}")
            self.wait(
                lambda: all(release_state(client, d) == ("3.0.0", "installed") for d in FLEET),
                "every device to run vision 3.0.0",
            )

            self.step(
                "13. vision 4.0.0 is wrong on half of its inputs: the canary installs it "
                "cleanly, traffic finds the errors, the gate fails, the fleet rolls back"
            )
            bad = self.workdir / "rollout-vision-4.yaml"
            bad.write_text(ROLLOUT.format(name="vision-4", release="vision@4.0.0", kpis=KPI_GATE))
            self.wait(
                lambda: served_since(client, "1m") >= 60,
                "a baseline of traffic on 3.0.0 on every device",
                90,
            )
            console.print(KPI_GATE.strip("\n"), highlight=False, markup=False, soft_wrap=True)
            console.print(
                "(added to the gates: the error rate against each device's own "
                "baseline before the rollout)"
            )
            self.cli("apply", "-f", str(bad))
            self.cli_live("rollouts", "status", "vision-4", "--watch", expect_exit=4)
        self.cli("rollouts", "list")
        report = self.cli("rollouts", "report", "vision-4", show=False)
        console.print("[bold cyan]$ edgefleet rollouts report vision-4[/bold cyan] (excerpt)")
        sys.stdout.write("\n".join(report.splitlines()[:40]) + "\n")
        self.cli("devices", "list")

    def workloads(self, client: FleetClient) -> None:
        self.step("14. A workload placed by residency and proximity, with its score terms")
        manifest = self.workdir / "workload.yaml"
        manifest.write_text(WORKLOAD)
        console.print(manifest.read_text(), highlight=False, markup=False, soft_wrap=True)
        self.cli("apply", "-f", str(manifest))
        names = {a.device_id: a.name for a in self.agents}

        def running(not_on: str | None = None) -> dict[str, Any] | None:
            row: dict[str, Any] = client.get_workload("detector-api")["placement"][0]
            ok = row["state"] == "running" and row["health"] == "ok"
            return row if ok and row["node_id"] != not_on else None

        first = self.wait_value(running, "detector-api to run", 90)
        self.cli("placements", "explain", "detector-api")

        self.step(
            "15. Failover: the node dies (SIGKILL); the replica comes up on the other "
            "EU node, never across the residency boundary"
        )
        victim = next(a for a in self.agents if a.device_id == first["node_id"])
        console.print(f"killing the agent of {victim.name} (detector-api runs there)")
        victim.kill()
        moved = self.wait_value(
            lambda: running(not_on=victim.device_id), "failover to another EU node", 120
        )
        console.print(
            f"detector-api now runs on {names[moved['node_id']]}: {moved['last_move']['reason']}"
        )
        console.print(
            f"restarting {victim.name}: fenced by the placement generation, it "
            "does not revive its old copy"
        )
        victim.start()
        self.wait(
            lambda: client.get_device(victim.device_id or "")["status"] == "online",
            f"{victim.name} back online",
            60,
        )
        self.cli("workloads", "show", "detector-api")

        self.step(
            "16. gw-berlin-1 runs on a battery that drains: the forecast crosses 15% "
            "and the workload migrates with its state before the node dies"
        )
        state = self.workdir / names[moved["node_id"]] / "workloads" / "state" / "detector-api"
        (state / "notes.txt").write_text("kept across the move\n")
        level = 95.0

        def migrated() -> bool:
            nonlocal level
            level = max(20.0, level - 3)
            self.battery.write_text(f"{level}")
            found = client.workload_migrations("detector-api")
            return bool(found) and found[0]["state"] == "completed"

        self.wait(migrated, "the forecast-driven migration to complete", 120)
        self.cli("workloads", "migrations", "detector-api")
        home = self.wait_value(
            lambda: running(not_on=moved["node_id"]), "detector-api running after the migration", 60
        )
        kept = self.workdir / names[home["node_id"]] / "workloads" / "state" / "detector-api"
        console.print(
            f"on {names[home['node_id']]}: notes.txt = {(kept / 'notes.txt').read_text().strip()!r}"
        )
        self.cli("placements", "nodes")

    def wait_value(self, condition: Callable[[], Any], what: str, timeout_s: float = 60) -> Any:
        with console.status(f"waiting for {what}..."):
            return wait_for(condition, timeout_s=timeout_s, what=what)

    def rehearsal(self) -> None:
        self.step(
            "17. Rehearse before touching devices: the demo's rollout replayed on a "
            "copy of this fleet, then on 10,000 virtual retail cameras as a bad release"
        )
        rollout = self.workdir / "rollout-vision-3.yaml"
        self.cli(
            "lab",
            "rehearse",
            "--rollout",
            str(rollout),
            "--fleet-from",
            self.server.url,
            "--hours",
            "2",
            "--seed",
            "1",
            "-o",
            str(self.workdir / "rehearsal.md"),
        )
        copied = (self.workdir / "rehearsal.md").read_text()
        console.print(
            copied[: copied.find("\n## ")].strip(), markup=False, highlight=False, soft_wrap=True
        )
        console.print(section(copied, "## Waves"), markup=False, highlight=False, soft_wrap=True)
        retail = self.workdir / "rollout-retail.yaml"
        retail.write_text(RETAIL_ROLLOUT)
        console.print(retail.read_text(), highlight=False, markup=False, soft_wrap=True)
        report = self.workdir / "rehearsal-10k.md"
        self.cli(
            "lab",
            "rehearse",
            "--rollout",
            str(retail),
            "--profile",
            "retail-cameras",
            "--devices",
            "10000",
            "--bad-release",
            "--hours",
            "24",
            "--seed",
            "1",
            "-o",
            str(report),
        )
        console.print(
            section(report.read_text(), "## Blast radius"),
            markup=False,
            highlight=False,
            soft_wrap=True,
        )

    def dashboard(self) -> None:
        self.step("18. The web dashboard: the same fleet in a browser, live")
        token = json.loads(
            self.cli(
                "tokens",
                "create",
                "dashboard",
                "--role",
                "operator",
                "--expires",
                "24h",
                "-o",
                "json",
                show=False,
            )
        )
        console.print(
            f"dashboard: [green]{self.server.url}/ui[/green]  (log in with the "
            f"operator token {token['token']})",
            soft_wrap=True,
        )
        if os.environ.get("DEMO_KEEP") == "1":
            console.print(
                "DEMO_KEEP=1: the control plane and the agents keep running; Ctrl-C stops them"
            )
            threading.Event().wait()

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
