"""Rollouts at scale: the wall time and controller overhead to roll a release over a fleet,
rehearsed over 10k virtual devices in the lab, and run for real over virtual devices
against the real control plane and its rollout controller.

    .venv/bin/python bench/rollout/run.py [--quick] [--lab-devices 10000] [--real-devices 200]

    lab          `lab rehearse` of bench/rollout/rollout.yaml (waves 1, 1%, 10%, 50%, 100%;
                 10 min soaks; max 10% unavailable; install-failure and p95 gates) over
                 `--lab-devices` devices of the retail-cameras profile (faults included),
                 24 simulated hours, good release and bad release. Reported: wall time,
                 the controller's share of it (decide + apply_decision, the same pure
                 engine the server runs), decisions, the predicted rollout duration, and
                 the rehearsal speed in simulated hours per wall-clock second.
    real         a control plane (`edgefleet server`) and `--real-devices` virtual devices
                 (`edgefleet sim run`: the real agent code, simulated processes) as separate
                 processes; a signed release (small ONNX model, 2 s health window) rolled out
                 with waves 1, 10%, 50%, 100%, 5 s soaks, 25% max unavailable. Reported:
                 wall time from `create` to `succeeded`, the server's CPU during the rollout,
                 and its overhead: that CPU minus the server's idle rate (the same fleet
                 heartbeating, measured just before) times the duration, per device — the
                 controller's decisions and publishing plus serving the installs (TUF
                 metadata, blobs, status reports), all the work a rollout adds.

A 10k-device real run does not fit this 2-core machine (next to the simulator's agents);
the real run is the smaller fleet and says so. Writes bench/results/rollout.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from edgefleet.artifacts.model_builder import build_mlp  # noqa: E402
from edgefleet.client import FleetClient  # noqa: E402
from edgefleet.localfleet import EDGEFLEET, ServerProcess, wait_for  # noqa: E402
from edgefleet.sim.lab.report import build_report  # noqa: E402
from edgefleet.sim.lab.scenario import load_rollout, scenario_from_profile  # noqa: E402
from tests.releases import Trust, publish  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "rollout.json"
MANIFEST = Path(__file__).resolve().parent / "rollout.yaml"
FLEET = ROOT / "bench" / "capacity" / "fleet.yaml"
ADMIN_TOKEN = "bench-admin-token-0123456789"
START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def lab_run(devices: int, bad: bool) -> dict[str, Any]:
    spec, _ = load_rollout(MANIFEST)
    scenario = scenario_from_profile(spec, "retail-cameras", devices, seed=11)
    began = time.perf_counter()
    rehearsal = scenario.rehearsal(start=START, hours=24, seed=11, bad_release=bad).run()
    wall_s = time.perf_counter() - began
    report = build_report(rehearsal)
    perf, outcome = report["performance"], report["outcome"]
    return {
        "devices": devices,
        "bad_release": bad,
        "outcome": outcome["state"],
        "predicted_rollout_s": outcome["finished_after_s"],
        "wall_s": round(wall_s, 2),
        "controller_wall_s": perf["controller_wall_s"],
        "controller_share": round(perf["controller_wall_s"] / wall_s, 3),
        "controller_ms_per_decision": perf["controller_ms_per_decision"],
        "decisions": perf["decisions"],
        "events": perf["events"],
        "simulated_hours_per_wall_s": round(24 / wall_s, 1),
        "devices_assigned": report["blast_radius"]["devices_assigned"],
    }


def server_cpu(process: psutil.Process) -> float:
    return float(sum(process.cpu_times()[:2]))


def real_run(devices: int, workdir: Path, idle_s: float) -> dict[str, Any]:
    server = ServerProcess(workdir / "server", ADMIN_TOKEN, env={"EDGEFLEET_LOG_LEVEL": "warning"})
    server.start()
    sim: subprocess.Popen[bytes] | None = None
    try:
        assert server.proc is not None
        process = psutil.Process(server.proc.pid)
        with FleetClient(server.url, ADMIN_TOKEN) as admin:
            trust = Trust.install(admin)
            publish(
                admin,
                workdir / "release",
                "fleetapp",
                "1.0.0",
                build_mlp(4, 8, 3, seed=1),
                "auto",
                trust.targets_keys,
                window_s=2,
            )  # type: ignore[arg-type]
            token = admin.create_enrollment_token(auto_approve=True)["token"]
            sim = subprocess.Popen(
                [*EDGEFLEET, "sim", "run", "--server", server.url, "--enroll-token", token,
                 "--devices", str(devices), "--profile", str(FLEET), "--duration", "3h",
                 "--ramp", f"{max(5, devices // 20)}s", "--quiet",
                 "--data-dir", str(workdir / "sim")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
            )  # fmt: skip

            def synced() -> bool:
                fleet = admin.list_devices(selector="fleet=capacity")
                return len(fleet) == devices and all(d["in_sync"] and d["status"] == "online"
                                                     for d in fleet)  # fmt: skip

            wait_for(synced, timeout_s=600, interval_s=2, what="virtual fleet in sync")
            idle_from, idle_cpu = time.monotonic(), server_cpu(process)
            time.sleep(idle_s)
            idle_rate = (server_cpu(process) - idle_cpu) / (time.monotonic() - idle_from)
            document = {"kind": "Rollout", "metadata": {"name": "bench-real"}, "spec": {
                "release": "fleetapp@1.0.0", "target": "fleet=capacity",
                "strategy": {"waves": [1, "10%", "50%", "100%"], "soak": "5s",
                             "max_unavailable": "25%", "install_timeout": "10m"},
                "gates": {"install_failure_rate": {"max_percent": 5}}}}  # fmt: skip
            began, cpu_before = time.monotonic(), server_cpu(process)
            rollout_id = admin.create_rollout(document)["rollout"]["id"]
            state = wait_for(
                lambda: (s := admin.get_rollout(rollout_id)["state"]) in (
                    "succeeded", "failed", "rolled-back", "aborted") and s,
                timeout_s=3600, interval_s=1, what="real rollout finished")  # fmt: skip
            wall_s = time.monotonic() - began
            cpu_s = server_cpu(process) - cpu_before
            status = admin.get_rollout(rollout_id)
    finally:
        if sim is not None and sim.poll() is None:
            sim.send_signal(signal.SIGINT)
            try:
                sim.wait(60)
            except subprocess.TimeoutExpired:
                sim.kill()
        server.stop()
    overhead = max(0.0, cpu_s - idle_rate * wall_s)  # everything the rollout added
    counts: dict[str, int] = {}
    for device in status["devices"]:
        counts[device["state"]] = counts.get(device["state"], 0) + 1
    return {
        "devices": devices,
        "outcome": state,
        "device_states": counts,
        "wall_s": round(wall_s, 1),
        "server_cpu_s": round(cpu_s, 2),
        "server_idle_cpu_percent": round(100 * idle_rate, 1),
        "rollout_server_cpu_s": round(overhead, 2),
        "rollout_server_cpu_ms_per_device": round(1000 * overhead / devices, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lab-devices", type=int, default=10_000)
    parser.add_argument("--real-devices", type=int, default=200)
    parser.add_argument("--skip-real", action="store_true")
    parser.add_argument("--quick", action="store_true", help="50 real devices, no bad run")
    args = parser.parse_args()
    real_devices = 50 if args.quick else args.real_devices
    lab = [lab_run(args.lab_devices, False)]
    if not args.quick:
        lab.append(lab_run(args.lab_devices, True))
    for row in lab:
        print(f"lab {row['devices']} devices ({'bad' if row['bad_release'] else 'good'}): "
              f"{row['outcome']} after {row['predicted_rollout_s']} simulated s; "
              f"wall {row['wall_s']} s, controller {row['controller_wall_s']} s "
              f"({row['decisions']} decisions), {row['simulated_hours_per_wall_s']} sim h/s",
              flush=True)  # fmt: skip
    real = None
    if not args.skip_real:
        workdir = Path(tempfile.mkdtemp(prefix="edgefleet-bench-rollout-"))
        try:
            real = real_run(real_devices, workdir, 10.0 if args.quick else 20.0)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        print(
            f"real {real['devices']} virtual devices: {real['outcome']} in {real['wall_s']} s;"
            f" server CPU {real['server_cpu_s']} s, above idle "
            f"{real['rollout_server_cpu_ms_per_device']} ms/device",
            flush=True,
        )
    report = {
        "benchmark": "rollout",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": psutil.cpu_count(),
        "note": "shared 2-core machine: wall times are noisy",
        "quick": args.quick,
        "lab": lab,
        "real": real,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
