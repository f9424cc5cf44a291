"""Control-plane capacity: how many devices one server sustains at a 30 s heartbeat with the
p99 report latency under 250 ms, and the server's CPU time per heartbeat.

    .venv/bin/python bench/capacity/run.py [--quick] [--steps 500 1000 2000 4000]

Setup: one control plane (`edgefleet server`, SQLite, one uvicorn process) and the fleet
simulator (`edgefleet sim run`, bench/capacity/fleet.yaml: the real agent code, a perfect
simulated network, 30 s heartbeats, 30 s long polls, telemetry batches every 60 s) as
separate processes on loopback. The device count steps up; at each step the simulator
starts N devices (those of earlier steps reuse their identities; new ones enroll, spread
over the ramp), runs a warm-up, then a measurement window. Both processes' CPU time is
sampled every second (psutil) and read over the window only.

    p99 report    the 99th percentile of the report (heartbeat) exchange as the simulator
                  timed it around the real HTTP request: the server's response time plus
                  the simulator's own event-loop delay (so it is an upper bound)
    server 250ms  the share of reports the server itself answered within 250 ms in the
                  window, from its own request-duration histogram (/metrics, scraped every
                  5 s), and the histogram bucket that holds its p99
    cpu/hb        server CPU seconds in the window / heartbeats in the window (everything
                  the server did: reports, long polls, telemetry ingest, its controllers);
                  and the marginal figure, with the server's own idle CPU (measured with no
                  device before the first step) taken out
    sustained     the server answered 99% of the window's reports within 250 ms (its own
                  histogram: the simulator's event-loop delay would otherwise count against
                  the server), fewer than 1% of reports failed or were refused, and at least
                  90% of the expected heartbeats (N / 30 s) arrived; the simulator's p99 is
                  reported beside it

Capacity is the largest step sustained (steps stop at the first one that is not). On a
shared 2-core machine the simulator competes with the server for CPU, which the sim's CPU
column shows: the figure is a floor. Prints a table; writes bench/results/capacity.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from edgefleet.localfleet import EDGEFLEET, ServerProcess  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "capacity.json"
PROFILE = Path(__file__).resolve().parent / "fleet.yaml"
HEARTBEAT_S = 30.0
P99_LIMIT_MS = 250.0
ADMIN_TOKEN = "bench-admin-token-0123456789"


REPORT_ROUTE = 'route="/v1/devices/{device_id}/report"'


def report_buckets(url: str) -> dict[float, float]:
    """The server's cumulative report-duration histogram: upper bound (s) -> count."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    buckets = {}
    for line in text.splitlines():
        if line.startswith("edgefleet_http_request_duration_seconds_bucket") and (
            REPORT_ROUTE in line
        ):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            buckets[float("inf") if bound == "+Inf" else float(bound)] = float(line.split()[-1])
    return buckets


class MetricsSampler(threading.Thread):
    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self._url = url
        self.samples: list[tuple[float, dict[float, float]]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            with contextlib.suppress(httpx.HTTPError):
                self.samples.append((time.time(), report_buckets(self._url)))
            self.halt.wait(5.0)

    def window(self, since: float) -> dict[str, Any]:
        """Server-side report latency in the window starting at `since`."""
        after = [s for s in self.samples if s[0] >= since]
        if len(after) < 2:
            return {}
        first, last = after[0][1], after[-1][1]
        delta = {b: last.get(b, 0) - first.get(b, 0) for b in last}
        total = delta.get(float("inf"), 0)
        if not total:
            return {}
        p99_bucket = min(b for b, n in delta.items() if n >= 0.99 * total)
        return {"server_reports": int(total),
                "server_share_within_250ms": round(delta.get(0.25, 0) / total, 4),
                "server_p99_at_most_s": p99_bucket}


class CpuSampler:
    """CPU seconds (user + system, children included) of some processes, every second. A
    child that exits keeps counting with the last CPU time read from it (the simulator's
    enrollment workers come and go)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self._processes = {name: psutil.Process(pid) for name, pid in pids.items()}
        self._last: dict[str, dict[int, float]] = {name: {} for name in pids}
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _read(self) -> dict[str, float]:
        out = {}
        for name, process in self._processes.items():
            last = self._last[name]
            try:
                family = [process, *process.children(recursive=True)]
            except psutil.Error:
                family = []
            for member in family:
                try:
                    last[member.pid] = sum(member.cpu_times()[:2])
                except psutil.Error:
                    continue
            out[name] = sum(last.values())
        return out

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.time(), self._read()))
            self._stop.wait(1.0)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def used(self, name: str, since: float, until: float) -> float:
        """CPU seconds of `name` between two wall-clock times (nearest samples)."""
        inside = [(t, s[name]) for t, s in self.samples if since <= t <= until]
        if len(inside) < 2:
            return 0.0
        return inside[-1][1] - inside[0][1]


def run_step(server: ServerProcess, token: str, devices: int, workdir: Path, ramp_s: float,
             warmup_s: float, measure_s: float, idle_rate: float) -> dict[str, Any]:  # fmt: skip
    summary = workdir / f"summary-{devices}.json"
    processes = 1 if devices <= 2000 else 2
    args = [*EDGEFLEET, "sim", "run", "--server", server.url, "--enroll-token", token,
            "--devices", str(devices), "--profile", str(PROFILE), "--processes", str(processes),
            "--duration", f"{ramp_s + warmup_s + measure_s:.0f}s",
            "--warmup", f"{ramp_s + warmup_s:.0f}s", "--ramp", f"{ramp_s:.0f}s",
            "--summary", str(summary), "--quiet", "--data-dir", str(workdir / "sim")]
    sim = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
    assert server.proc is not None
    sampler = CpuSampler({"server": server.proc.pid, "sim": sim.pid})
    sampler.start()
    metrics = MetricsSampler(server.url)
    metrics.start()
    _, stderr = sim.communicate(timeout=ramp_s + warmup_s + measure_s + 600)
    ended = time.time()
    sampler.stop()
    metrics.samples.append((ended, report_buckets(server.url)))
    metrics.halt.set()
    if sim.returncode != 0:
        raise RuntimeError(f"sim run failed ({sim.returncode}): {stderr.decode()[-2000:]}")
    report = json.loads(summary.read_text())
    since = report["measured_from_unix"] or ended - measure_s
    window_s = max(ended - since, 1e-9)
    traffic = report["traffic"].get("report", {})
    heartbeats = traffic.get("requests", 0)
    refused = traffic.get("failures", 0) + traffic.get("http_errors", 0)
    server_cpu = sampler.used("server", since, ended)
    sim_cpu = sampler.used("sim", since, ended)
    expected = devices / HEARTBEAT_S * report["measured_s"]
    p99 = traffic.get("server_p99_ms")
    server_side = metrics.window(since)
    within = server_side.get("server_share_within_250ms")
    sustained = (within is not None and within >= 0.99 and heartbeats >= 0.9 * expected
                 and refused <= 0.01 * max(heartbeats, 1))  # fmt: skip
    return {
        "devices": devices,
        "processes": processes,
        "window_s": round(report["measured_s"], 1),
        "heartbeats": heartbeats,
        "heartbeats_expected": round(expected),
        "heartbeats_per_s": report["heartbeats_per_s"],
        "report_failed_or_refused": refused,
        "report_p50_ms": traffic.get("server_p50_ms"),
        "report_p99_ms": p99,
        "server_cpu_s": round(server_cpu, 2),
        "server_cpu_percent": round(100 * server_cpu / window_s, 1),
        "server_cpu_ms_per_heartbeat": round(1000 * server_cpu / max(heartbeats, 1), 2),
        "server_marginal_cpu_ms_per_heartbeat": round(
            1000 * max(0.0, server_cpu - idle_rate * window_s) / max(heartbeats, 1), 2),
        "sim_cpu_percent": round(100 * sim_cpu / window_s, 1),
        "sim_max_rss_mb": report["simulator"]["max_rss_mb"],
        **server_side,
        "all_traffic": report["traffic"],
        "sustained": sustained,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+",
                        default=[100, 200, 300, 500, 1000, 2000, 4000])
    parser.add_argument("--warmup", type=float, default=45.0)
    parser.add_argument("--measure", type=float, default=120.0)
    parser.add_argument("--quick", action="store_true", help="100 and 200 devices, 30 s windows")
    args = parser.parse_args()
    steps, warmup_s, measure_s = args.steps, args.warmup, args.measure
    if args.quick:
        steps, warmup_s, measure_s = [100, 200], 15.0, 30.0
    workdir = Path(tempfile.mkdtemp(prefix="edgefleet-bench-capacity-"))
    server = ServerProcess(workdir / "server", ADMIN_TOKEN, env={"EDGEFLEET_LOG_LEVEL": "warning"})
    server.start()
    rows: list[dict[str, Any]] = []
    idle_rate = 0.0
    try:
        with server.client() as admin:
            token = admin.create_enrollment_token(auto_approve=True)["token"]
        assert server.proc is not None
        idle = psutil.Process(server.proc.pid)
        idle_began, idle_cpu = time.monotonic(), sum(idle.cpu_times()[:2])
        time.sleep(5 if args.quick else 15)
        idle_rate = (sum(idle.cpu_times()[:2]) - idle_cpu) / (time.monotonic() - idle_began)
        print(f"server idle (no device): {100 * idle_rate:.1f}% of a core", flush=True)
        for devices in steps:
            ramp_s = min(60.0, max(5.0, devices / 50))
            row = run_step(server, token, devices, workdir, ramp_s, warmup_s, measure_s,
                           idle_rate)
            rows.append(row)
            print(f"{devices:>6} devices: p99 {row['report_p99_ms']} ms, "
                  f"{row['heartbeats_per_s']} hb/s, server {row['server_cpu_percent']}% "
                  f"({row['server_cpu_ms_per_heartbeat']} ms/hb), sim {row['sim_cpu_percent']}%"
                  f", server-side within 250 ms {row.get('server_share_within_250ms')}"
                  f" -> {'sustained' if row['sustained'] else 'NOT sustained'}", flush=True)
            if not row["sustained"]:
                break
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    sustained = [r["devices"] for r in rows if r["sustained"]]
    report: dict[str, Any] = {
        "benchmark": "capacity",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": psutil.cpu_count(),
        "note": "server and simulator share a 2-core machine (with other work): a floor",
        "heartbeat_interval_s": HEARTBEAT_S,
        "p99_limit_ms": P99_LIMIT_MS,
        "quick": args.quick,
        "server_idle_cpu_percent": round(100 * idle_rate, 1),
        "capacity_devices": max(sustained) if sustained else 0,
        "capacity_bounded_by_steps": bool(rows) and rows[-1]["sustained"],
        "rows": rows,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"capacity: {report['capacity_devices']} devices at a 30 s heartbeat"
          + (" (the largest step tried)" if report["capacity_bounded_by_steps"] else ""))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
