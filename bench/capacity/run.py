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

Replicas (issue 18):

    .venv/bin/python bench/capacity/run.py --replicas 1 2 3 \
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres --steps 500

runs the same steps against 1, then 2, then 3 `edgefleet server` replicas on PostgreSQL
(a database of its own, created on that server and dropped at the end) and one data dir,
behind HAProxy with deploy/haproxy.cfg (`localfleet.LoadBalancerProcess`); the simulator
reaches them only through HAProxy. The CPU columns add up every replica (and HAProxy's own
CPU is shown apart); the server-side latency merges the replicas' histograms. With two
replicas or more it then SIGKILLs the replica holding the rollouts lease and times how long
until every controller lease is live on another replica (`takeover_s`, polled through
GET /v1/leases every 100 ms). Writes bench/results/capacity-replicas.json and, with the
command that made it, the table as capacity-replicas.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import psutil
from sqlalchemy import create_engine, make_url, text

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from edgefleet.core.lease import LeaseName  # noqa: E402
from edgefleet.localfleet import (  # noqa: E402
    EDGEFLEET,
    LoadBalancerProcess,
    ServerProcess,
    wait_for,
)

RESULTS = ROOT / "bench" / "results" / "capacity.json"
REPLICA_RESULTS = ROOT / "bench" / "results" / "capacity-replicas.json"
REPLICA_TABLE = REPLICA_RESULTS.with_suffix(".md")
REPLICA_NAMES = ("control-plane-1", "control-plane-2", "control-plane-3")
PROFILE = Path(__file__).resolve().parent / "fleet.yaml"
HEARTBEAT_S = 30.0
P99_LIMIT_MS = 250.0
ADMIN_TOKEN = "bench-admin-token-0123456789"


REPORT_ROUTE = 'route="/v1/devices/{device_id}/report"'


def report_buckets(urls: list[str]) -> dict[float, float]:
    """The servers' cumulative report-duration histogram, summed over the replicas at
    `urls`: upper bound (s) -> count."""
    buckets: dict[float, float] = {}
    for url in urls:
        text = httpx.get(f"{url}/metrics", timeout=10).text
        for line in text.splitlines():
            if line.startswith("edgefleet_http_request_duration_seconds_bucket") and (
                REPORT_ROUTE in line
            ):
                bound = line.split('le="', 1)[1].split('"', 1)[0]
                key = float("inf") if bound == "+Inf" else float(bound)
                buckets[key] = buckets.get(key, 0.0) + float(line.split()[-1])
    return buckets


class MetricsSampler(threading.Thread):
    def __init__(self, urls: list[str]) -> None:
        super().__init__(daemon=True)
        self._urls = urls
        self.samples: list[tuple[float, dict[float, float]]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            with contextlib.suppress(httpx.HTTPError):
                self.samples.append((time.time(), report_buckets(self._urls)))
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
        return {
            "server_reports": int(total),
            "server_share_within_250ms": round(delta.get(0.25, 0) / total, 4),
            "server_p99_at_most_s": p99_bucket,
        }


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


@dataclass
class Target:
    """What the simulator talks to: one server, or replicas behind a load balancer."""

    url: str
    servers: dict[str, ServerProcess]
    balancer_pid: int | None = None

    def pids(self) -> dict[str, int]:
        pids = {name: s.proc.pid for name, s in self.servers.items() if s.proc is not None}
        return {**pids, **({"haproxy": self.balancer_pid} if self.balancer_pid else {})}

    def server_urls(self) -> list[str]:
        return [s.url for s in self.servers.values()]


def run_step(target: Target, token: str, devices: int, workdir: Path, ramp_s: float,
             warmup_s: float, measure_s: float, idle_rate: float) -> dict[str, Any]:  # fmt: skip
    summary = workdir / f"summary-{devices}.json"
    processes = 1 if devices <= 2000 else 2
    args = [
        *EDGEFLEET,
        "sim",
        "run",
        "--server",
        target.url,
        "--enroll-token",
        token,
        "--devices",
        str(devices),
        "--profile",
        str(PROFILE),
        "--processes",
        str(processes),
        "--duration",
        f"{ramp_s + warmup_s + measure_s:.0f}s",
        "--warmup",
        f"{ramp_s + warmup_s:.0f}s",
        "--ramp",
        f"{ramp_s:.0f}s",
        "--summary",
        str(summary),
        "--quiet",
        "--data-dir",
        str(workdir / "sim"),
    ]
    sim = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
    sampler = CpuSampler({**target.pids(), "sim": sim.pid})
    sampler.start()
    metrics = MetricsSampler(target.server_urls())
    metrics.start()
    _, stderr = sim.communicate(timeout=ramp_s + warmup_s + measure_s + 600)
    ended = time.time()
    sampler.stop()
    metrics.samples.append((ended, report_buckets(target.server_urls())))
    metrics.halt.set()
    if sim.returncode != 0:
        raise RuntimeError(f"sim run failed ({sim.returncode}): {stderr.decode()[-2000:]}")
    report = json.loads(summary.read_text())
    since = report["measured_from_unix"] or ended - measure_s
    window_s = max(ended - since, 1e-9)
    traffic = report["traffic"].get("report", {})
    heartbeats = traffic.get("requests", 0)
    refused = traffic.get("failures", 0) + traffic.get("http_errors", 0)
    per_server = {name: sampler.used(name, since, ended) for name in target.servers}
    server_cpu = sum(per_server.values())
    sim_cpu = sampler.used("sim", since, ended)
    balancer_cpu = sampler.used("haproxy", since, ended) if target.balancer_pid else None
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
            1000 * max(0.0, server_cpu - idle_rate * window_s) / max(heartbeats, 1), 2
        ),
        "server_cpu_percent_by_replica": {
            name: round(100 * cpu / window_s, 1) for name, cpu in per_server.items()
        },
        "haproxy_cpu_percent": (
            None if balancer_cpu is None else round(100 * balancer_cpu / window_s, 1)
        ),
        "sim_cpu_percent": round(100 * sim_cpu / window_s, 1),
        "sim_max_rss_mb": report["simulator"]["max_rss_mb"],
        **server_side,
        "all_traffic": report["traffic"],
        "sustained": sustained,
    }


def measure_idle(target: Target, seconds: float) -> float:
    """The servers' CPU with no device, in cores."""
    processes = [psutil.Process(pid) for name, pid in target.pids().items()
                 if name in target.servers]  # fmt: skip
    began, cpu = time.monotonic(), sum(sum(p.cpu_times()[:2]) for p in processes)
    time.sleep(seconds)
    used = sum(sum(p.cpu_times()[:2]) for p in processes) - cpu
    return used / (time.monotonic() - began)


def run_steps(target: Target, token: str, steps: list[int], workdir: Path, warmup_s: float,
              measure_s: float, idle_rate: float, label: str) -> list[dict[str, Any]]:  # fmt: skip
    rows: list[dict[str, Any]] = []
    for devices in steps:
        ramp_s = min(60.0, max(5.0, devices / 50))
        row = run_step(target, token, devices, workdir, ramp_s, warmup_s, measure_s, idle_rate)
        rows.append(row)
        print(
            f"{label}{devices:>6} devices: p99 {row['report_p99_ms']} ms, "
            f"{row['heartbeats_per_s']} hb/s, server {row['server_cpu_percent']}% "
            f"({row['server_cpu_ms_per_heartbeat']} ms/hb), sim {row['sim_cpu_percent']}%"
            f", server-side within 250 ms {row.get('server_share_within_250ms')}"
            f" -> {'sustained' if row['sustained'] else 'NOT sustained'}",
            flush=True,
        )
        if not row["sustained"]:
            break
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--steps", type=int, nargs="+", default=[100, 200, 300, 500, 1000, 2000, 4000]
    )
    parser.add_argument("--warmup", type=float, default=45.0)
    parser.add_argument("--measure", type=float, default=120.0)
    parser.add_argument("--quick", action="store_true", help="100 and 200 devices, 30 s windows")
    parser.add_argument(
        "--replicas",
        type=int,
        nargs="+",
        choices=(1, 2, 3),
        help="replica counts to run on PostgreSQL behind HAProxy, in turn",
    )
    parser.add_argument(
        "--database-url",
        help="a PostgreSQL server (SQLAlchemy URL) where --replicas makes a database of its own",
    )
    args = parser.parse_args()
    steps, warmup_s, measure_s = args.steps, args.warmup, args.measure
    if args.quick:
        steps, warmup_s, measure_s = [100, 200], 15.0, 30.0
    if args.replicas:
        if not args.database_url:
            parser.error("--replicas needs --database-url")
        run_replicas(args.replicas, args.database_url, steps, warmup_s, measure_s, args.quick)
        return
    workdir = Path(tempfile.mkdtemp(prefix="edgefleet-bench-capacity-"))
    server = ServerProcess(workdir / "server", ADMIN_TOKEN, env={"EDGEFLEET_LOG_LEVEL": "warning"})
    server.start()
    rows: list[dict[str, Any]] = []
    idle_rate = 0.0
    try:
        with server.client() as admin:
            token = admin.create_enrollment_token(auto_approve=True)["token"]
        target = Target(server.url, {"server": server})
        idle_rate = measure_idle(target, 5 if args.quick else 15)
        print(f"server idle (no device): {100 * idle_rate:.1f}% of a core", flush=True)
        rows = run_steps(target, token, steps, workdir, warmup_s, measure_s, idle_rate, "")
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
    print(
        f"capacity: {report['capacity_devices']} devices at a 30 s heartbeat"
        + (" (the largest step tried)" if report["capacity_bounded_by_steps"] else "")
    )
    print(f"wrote {RESULTS}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def own_database(server_url: str) -> Iterator[str]:
    """A new database on the PostgreSQL server at `server_url`; dropped afterwards."""
    name = f"edgefleet_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {name}"))
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE {name} WITH (FORCE)"))
        admin.dispose()


def leases(url: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{url}/v1/leases", timeout=5,
                         headers={"authorization": f"Bearer {ADMIN_TOKEN}"})  # fmt: skip
    response.raise_for_status()
    answer: list[dict[str, Any]] = response.json()
    return answer


def measure_takeover(balancer_url: str, servers: dict[str, ServerProcess]) -> dict[str, Any]:
    """SIGKILL the replica holding the rollouts lease; seconds until every lease is live on
    another replica."""
    victim = next(lease["holder"] for lease in leases(balancer_url)
                  if lease["name"] == LeaseName.ROLLOUTS)  # fmt: skip
    servers[victim].kill()
    killed = time.monotonic()

    def taken_over() -> bool:
        with contextlib.suppress(httpx.HTTPError):
            return all(lease["live"] and lease["holder"] != victim
                       for lease in leases(balancer_url))  # fmt: skip
        return False

    wait_for(taken_over, timeout_s=60, interval_s=0.1, what="the leases to be taken over")
    return {"killed": victim, "takeover_s": round(time.monotonic() - killed, 2)}


def answers(url: str) -> bool:
    return httpx.get(f"{url}/readyz", timeout=2).is_success


def start_replica(workdir: Path, name: str, port: int, database_url: str,
                  count: int) -> ServerProcess:  # fmt: skip
    """A replica on the shared data dir and database; its log names the run's size."""
    server = ServerProcess(workdir / "server", ADMIN_TOKEN, port=port, env={
        "EDGEFLEET_LOG_LEVEL": "warning", "EDGEFLEET_DATABASE_URL": database_url,
        "EDGEFLEET_REPLICA_ID": name})  # fmt: skip
    server.log_path = workdir / f"{name}-{count}.log"
    server.start()
    return server


def replica_table(report: dict[str, Any]) -> str:
    """The replicas run as a Markdown table, with the command that produced it."""
    lines = [f"# Capacity with replicas ({report['python']}, {report['cpus']} CPUs)", "",
             f"`{report['command']}`", "", report["note"], "",
             "| replicas | devices | sustained | heartbeats/s | server CPU % | per replica % "
             "| ms per heartbeat | server within 250 ms | sim p99 ms | HAProxy CPU % "
             "| takeover s |", "|---" * 11 + "|"]  # fmt: skip
    for run in report["runs"]:
        takeover = run["takeover"]["takeover_s"] if run["takeover"] else ""
        for row in run["rows"]:
            shares = " / ".join(str(v) for v in row["server_cpu_percent_by_replica"].values())
            lines.append(
                f"| {run['replicas']} | {row['devices']} | {row['sustained']} "
                f"| {row['heartbeats_per_s']} | {row['server_cpu_percent']} | {shares} "
                f"| {row['server_cpu_ms_per_heartbeat']} "
                f"| {row.get('server_share_within_250ms')} | {row['report_p99_ms']} "
                f"| {row['haproxy_cpu_percent']} | {takeover} |"
            )
    return "\n".join(lines) + "\n"


def run_replicas(counts: list[int], database_url: str, steps: list[int], warmup_s: float,
                 measure_s: float, quick: bool) -> None:  # fmt: skip
    workdir = Path(tempfile.mkdtemp(prefix="edgefleet-bench-replicas-"))
    runs: list[dict[str, Any]] = []
    token = ""
    try:
        with own_database(database_url) as url:
            for count in counts:
                names = REPLICA_NAMES[:count]
                ports = {name: free_port() for name in names}
                servers: dict[str, ServerProcess] = {}
                balancer = LoadBalancerProcess(workdir / f"haproxy-{count}", free_port(), ports)
                try:
                    for name in names:
                        servers[name] = start_replica(workdir, name, ports[name], url, count)
                    balancer.start()
                    wait_for(partial(answers, balancer.url), timeout_s=60,
                             what="HAProxy to find a replica")  # fmt: skip
                    if not token:
                        with httpx.Client(base_url=balancer.url, timeout=10, headers={
                                "authorization": f"Bearer {ADMIN_TOKEN}"}) as http:  # fmt: skip
                            created = http.post("/v1/enrollment-tokens",
                                                json={"auto_approve": True})  # fmt: skip
                            created.raise_for_status()
                            token = created.json()["token"]
                    assert balancer.proc is not None
                    target = Target(balancer.url, servers, balancer.proc.pid)
                    idle_rate = measure_idle(target, 5 if quick else 10)
                    print(f"{count} replica(s) idle: {100 * idle_rate:.1f}% of a core",
                          flush=True)  # fmt: skip
                    rows = run_steps(target, token, steps, workdir, warmup_s, measure_s,
                                     idle_rate, f"{count} replica(s): ")  # fmt: skip
                    takeover = measure_takeover(balancer.url, servers) if count > 1 else None
                    if takeover:
                        print(f"{count} replicas: {takeover['killed']} killed, leases taken "
                              f"over in {takeover['takeover_s']} s", flush=True)  # fmt: skip
                    sustained = [r["devices"] for r in rows if r["sustained"]]
                    runs.append({"replicas": count, "idle_cpu_percent": round(100 * idle_rate, 1),
                                 "capacity_devices": max(sustained) if sustained else 0,
                                 "takeover": takeover, "rows": rows})  # fmt: skip
                finally:
                    balancer.stop()
                    for server in servers.values():
                        server.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report = {
        "benchmark": "capacity-replicas",
        "command": " ".join(["bench/capacity/run.py", *sys.argv[1:]]),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": psutil.cpu_count(),
        "note": "replicas, HAProxy, PostgreSQL and the simulator share a 2-core machine "
        "(with other work): a floor, and more replicas split the same two cores",
        "heartbeat_interval_s": HEARTBEAT_S,
        "p99_limit_ms": P99_LIMIT_MS,
        "quick": quick,
        "runs": runs,
    }
    REPLICA_RESULTS.parent.mkdir(parents=True, exist_ok=True)
    REPLICA_RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    table = replica_table(report)
    REPLICA_TABLE.write_text(table)
    print(table, end="")
    print(f"wrote {REPLICA_RESULTS} and {REPLICA_TABLE}")


if __name__ == "__main__":
    main()
