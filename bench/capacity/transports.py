"""Control-plane capacity over HTTP and over MQTT, side by side in one run: devices
sustained at a 30 s heartbeat, server CPU per heartbeat, broker CPU and RSS, load
generator CPU, the time a desired-state change takes to reach 99 % of the devices online,
and optionally a soak.

    .venv/bin/python bench/capacity/transports.py [--http-steps 1000 2000] \\
        [--mqtt-steps 2000 5000 10000] [--mqtt-idle-steps 10000] [--warmup 30] \\
        [--measure 90] \\
        [--soak 600 --soak-transport mqtt --soak-devices N] [--quick]

Setup: one Mosquitto 2 (dynamic-security plugin, `tests/mqtt_broker.py`), one control
plane (`edgefleet server`, SQLite, started with `--mqtt` so that it serves both
transports) and the light load generator (`edgefleet sim load`: one process per ~9,000
HTTP or ~18,000 MQTT devices, each device on connections of its own from loopback source
addresses 127.0.0.2...) as separate processes on loopback. At each step the generator
runs N devices (identities kept in one file: later steps and runs reuse enrolled devices)
for ramp + warm-up + measurement + a propagation tail; CPU time (children included) and
RSS of the server, the broker and the generator are sampled every second (psutil), the
server's /metrics and the generator's own counts (`--progress`) four times a second.

    heartbeats      reports the server stored in the window (/metrics:
                    edgefleet_reports_ingested_total{transport}), against N / 30 s
    lost            reports the generator sent in the whole step minus those the server
                    stored once its count stopped moving after the run (up to 3 min): must
                    be 0 (failed requests or publishes count as sent: a report whose answer
                    timed out may still be stored)
    report->stored  per report, the time from the generator counting it sent to the
                    server counting it stored: the horizontal distance between the two
                    cumulative curves (sampled every 0.25 s, interpolated); p50 / p99
                    over the window. For HTTP the exchange's own p99 (the answer comes
                    after the commit) is shown beside it
    cpu/hb          server CPU seconds in the window / heartbeats stored in the window
                    (everything the server did: reports, telemetry, long polls or
                    MQTT bridging, controllers)
    propagation     after the window, one change for every device (the fleet telemetry
                    policy's upload interval, one PUT), and the time until 99 % of the
                    devices online had received the new desired state (their own
                    receipt times, from the generator)
    sustained       report->stored p99 < 1 s, nothing lost, no request or publish failed,
                    every device enrolled and online, and at least 90 % of the expected
                    heartbeats stored

Transports: `http`; `mqtt`, every device reporting every 30 s (`sim load --no-presence`:
what a node hosting replicas does); `mqtt-idle`, devices as the agent on MQTT (a signed Will
and `online`, then reports at the interval an idle device is told, 300 s: presence and the
broker's keep-alive stand for the heartbeats). For `mqtt-idle` the warm-up is at least
one told interval, so that the window sees the steady state, and `us/device-30s` (server
CPU per device per 30 s, the heartbeat interval the others report at) is the comparable
figure.

Steps stop at the first one not sustained. `--soak S` then runs one transport at one size:
the ramp, a warm-up in which every device does everything it does periodically at least
once (its telemetry upload comes every 300 s, at a random moment of the first interval:
300 s + 60 s), then S seconds measured: errors, p99 latencies, and the server's RSS growth
over them (RSS when they begin against the largest RSS in their last minute). Everything shares the
machine (2 cores here, with other work): the figures are floors. Prints tables; writes
bench/results/capacity-transports.json and .md (with the command).
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import json
import math
import platform
import shutil
import signal
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

from bench.capacity.run import CpuSampler  # noqa: E402
from edgefleet.client import FleetClient  # noqa: E402
from edgefleet.errors import EdgefleetError  # noqa: E402
from edgefleet.localfleet import EDGEFLEET, ServerProcess, wait_for  # noqa: E402
from tests.mqtt_broker import BrokerProcess  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "capacity-transports.json"
TABLE = RESULTS.with_suffix(".md")
ADMIN_TOKEN = "bench-admin-token-0123456789"
HEARTBEAT_S = 30.0
IDLE_HEARTBEAT_S = 300.0  # what the control plane tells an idle device online on MQTT
IDLE_WARMUP_S = IDLE_HEARTBEAT_S * 1.1 + 10  # past every device's first told interval
P99_LIMIT_S = 1.0
SCRAPE_S = 0.25
PROPAGATION_TAIL_S = 40.0
QUIET_S = 10.0  # after the run, the stored count has not moved for this long: drained
DRAIN_MAX_S = 180.0
POLICY_TIMEOUT_S = 300.0  # re-rendering every device's desired state takes a while
REPORT_ROUTE = 'route="/v1/devices/{device_id}/report"'


def counter(metrics: str, name: str, *labels: str) -> float:
    total = 0.0
    for line in metrics.splitlines():
        sample, _, value = line.rpartition(" ")
        if sample.split("{")[0] == name and all(label in sample for label in labels):
            total += float(value)
    return total


# Only the counters read here: the fleet aggregates read the store, which at four scrapes a
# second would be a noticeable share of the server's CPU (the server skips the store then).
SCRAPED = [("name[]", name) for name in ("edgefleet_reports_ingested_total",
           "edgefleet_http_requests_total", "edgefleet_messages_dropped_total")]  # fmt: skip


def stored_reports(metrics: str, transport: str) -> float:
    """Reports the server stored over `transport` (over HTTP, where the server does not
    count them by transport, the report route's 200 answers: each comes after its commit)."""
    ingested = counter(metrics, "edgefleet_reports_ingested_total", f'transport="{transport}"')
    if transport != "http":
        return ingested
    return max(ingested, counter(metrics, "edgefleet_http_requests_total", REPORT_ROUTE,
                                 'status="200"'))  # fmt: skip


def dropped_messages(metrics: str) -> dict[str, float]:
    """edgefleet_messages_dropped_total by reason."""
    prefix = 'edgefleet_messages_dropped_total{reason="'
    return {line[len(prefix) :].split('"')[0]: float(line.split()[-1])
            for line in metrics.splitlines() if line.startswith(prefix)}  # fmt: skip


class Scraper(threading.Thread):
    """The server's stored-report count over one transport, every SCRAPE_S."""

    def __init__(self, url: str, transport: str) -> None:
        super().__init__(daemon=True)
        self._url, self._transport = url, transport
        self.samples: list[tuple[float, float]] = []
        self.dropped: dict[str, float] = {}
        self.halt = threading.Event()

    def drained(self, quiet_s: float, max_s: float) -> None:
        """Wait until the stored count stops moving (what the broker still held for the
        control plane, or requests still in flight, are stored), at most `max_s`."""
        deadline = time.monotonic() + max_s
        while time.monotonic() < deadline:
            time.sleep(quiet_s)
            recent = [c for t, c in self.samples if t >= time.time() - quiet_s]
            if len(recent) > 1 and recent[-1] == recent[0]:
                return

    def run(self) -> None:
        with httpx.Client(timeout=10) as http:
            while not self.halt.is_set():
                with contextlib.suppress(httpx.HTTPError):
                    text = http.get(f"{self._url}/metrics", params=SCRAPED).text
                    self.samples.append((time.time(), stored_reports(text, self._transport)))
                    self.dropped = dropped_messages(text)
                self.halt.wait(SCRAPE_S)


class ResourceSampler(CpuSampler):
    """CPU seconds (as CpuSampler) and RSS (MB, the process alone) every second."""

    def __init__(self, pids: dict[str, int]) -> None:
        super().__init__(pids)
        self.rss: list[tuple[float, dict[str, float]]] = []

    def _read(self) -> dict[str, float]:
        rss = {}
        for name, process in self._processes.items():
            with contextlib.suppress(psutil.Error):
                rss[name] = process.memory_info().rss / 2**20
        self.rss.append((time.time(), rss))
        return super()._read()

    def rss_between(self, name: str, since: float, until: float) -> list[float]:
        return [s[name] for t, s in self.rss if since <= t <= until and name in s]


def sent_curve(progress: Path) -> list[tuple[float, float]]:
    """(time, reports sent so far, all generator processes) from the --progress lines."""
    latest: dict[int, float] = {}
    curve = []
    for line in progress.read_text().splitlines():
        with contextlib.suppress(ValueError, KeyError):
            row = json.loads(line)
            latest[row["pid"]] = row["reports_sent"]
            curve.append((row["t"], sum(latest.values())))
    return curve


def time_at(curve: list[tuple[float, float]], count: float) -> float | None:
    """When a cumulative curve reached `count` (linear between samples)."""
    counts = [c for _, c in curve]
    i = bisect.bisect_left(counts, count)
    if i >= len(curve):
        return None
    if i == 0:
        return curve[0][0]
    (t0, c0), (t1, c1) = curve[i - 1], curve[i]
    return t0 + (t1 - t0) * (count - c0) / max(c1 - c0, 1e-9)


def report_lags(sent: list[tuple[float, float]], stored: list[tuple[float, float]],
                since: float, until: float) -> list[float]:  # fmt: skip
    """Seconds from sent to stored for the reports sent in [since, until]: the generator's
    count starts at 0, the server's is taken from its first sample, before the step."""
    if not sent or not stored:
        return []
    stored = [(t, c - stored[0][1]) for t, c in stored]  # this step's reports only
    first = next((c for t, c in sent if t >= since), None)
    last = next((c for t, c in reversed(sent) if t <= until), None)
    if first is None or last is None or last <= first:
        return []
    step = max(1.0, (last - first) / 5000)
    lags = []
    k = first
    while k <= last:
        t_sent, t_stored = time_at(sent, k), time_at(stored, k)
        if t_sent is not None and t_stored is not None:
            lags.append(max(0.0, t_stored - t_sent))
        k += step
    return lags


def rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def start_patiently(server: ServerProcess, timeout_s: float = 300.0) -> None:
    """Start the server, waiting longer than `ServerProcess.start` does: on a busy shared
    machine importing the server alone may take it more than 20 s."""
    try:
        server.start()
        return
    except TimeoutError:
        if not server.running:
            raise
    url_file = server.data_dir / "server.url"

    def ready() -> bool:
        url = url_file.read_text().strip() if url_file.exists() else ""
        return bool(url) and httpx.get(f"{url}/healthz", timeout=5).status_code == 200

    wait_for(ready, timeout_s=timeout_s, what="server to start")
    server.url = url_file.read_text().strip()


class Bench:
    def __init__(self, workdir: Path, database_url: str | None) -> None:
        self.workdir = workdir
        self.broker = BrokerProcess(workdir / "broker")
        env = {"EDGEFLEET_LOG_LEVEL": "warning"}
        if database_url:
            env["EDGEFLEET_DATABASE_URL"] = database_url
        env["EDGEFLEET_MQTT_URL"] = self.broker.admin_url
        env["EDGEFLEET_MQTT_IDLE_HEARTBEAT_S"] = f"{IDLE_HEARTBEAT_S:.0f}"
        self.server = ServerProcess(workdir / "server", ADMIN_TOKEN, env=env)
        try:  # stop whatever started if the rest does not
            self.broker.start()
            start_patiently(self.server)
            with self.server.client() as admin:
                self.token = admin.create_enrollment_token(auto_approve=True)["token"]
        except BaseException:
            self.close()
            raise
        self.identities = workdir / "identities.json"
        self.upload_interval_s = 300
        self.idle_rate = self.measure_idle(10.0)

    def measure_idle(self, seconds: float) -> float:
        """The server's CPU with no device (connected to the broker), in cores."""
        process = psutil.Process(self.pids()["server"])
        began, cpu = time.monotonic(), sum(process.cpu_times()[:2])
        time.sleep(seconds)
        return (sum(process.cpu_times()[:2]) - cpu) / (time.monotonic() - began)

    def close(self) -> None:
        self.server.stop()
        self.broker.stop()

    def pids(self) -> dict[str, int]:
        assert self.server.proc is not None and self.broker.process is not None
        return {"server": self.server.proc.pid, "broker": self.broker.process.pid}

    def change_every_device(self) -> float:
        """One desired-state change for every device: the fleet telemetry policy's upload
        interval, toggled. The wall-clock time just before the request."""
        with FleetClient(self.server.url, ADMIN_TOKEN, timeout_s=POLICY_TIMEOUT_S) as admin:
            policy = admin.telemetry_policy()
            manifest = policy["manifest"]
            self.upload_interval_s = 240 if self.upload_interval_s == 300 else 300
            manifest["upload_interval_s"] = self.upload_interval_s
            began = time.time()
            admin.set_telemetry_policy(manifest)
        return began

    def run(self, transport: str, devices: int, ramp_s: float, warmup_s: float,
            measure_s: float, tail_s: float, propagate: bool) -> dict[str, Any]:  # fmt: skip
        """One generator run of `devices` over `transport` (http, mqtt, mqtt-idle), measured."""
        progress = self.workdir / f"progress-{transport}-{devices}-{time.time():.0f}.jsonl"
        duration_s = ramp_s + warmup_s + measure_s + tail_s
        wire = transport.removesuffix("-idle")
        idle = transport == "mqtt-idle"
        interval_s = IDLE_HEARTBEAT_S if idle else HEARTBEAT_S
        args = [*EDGEFLEET, "sim", "load", "--server", self.server.url, "--enroll-token",
                self.token, "--devices", str(devices), "--transport", wire,
                "--duration", f"{duration_s:.0f}s", "--ramp", f"{ramp_s:.0f}s",
                "--warmup", f"{ramp_s + warmup_s:.0f}s", "--heartbeat-interval",
                str(HEARTBEAT_S), "--identities", str(self.identities), "--progress",
                str(progress), "-o", "json"]  # fmt: skip
        if wire == "mqtt":
            args += ["--mqtt", self.broker.url, *([] if idle else ["--no-presence"])]
        scraper = Scraper(self.server.url, wire)
        scraper.start()
        time.sleep(2 * SCRAPE_S)
        began = time.time()
        generator = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     cwd=ROOT)  # fmt: skip
        sampler = ResourceSampler({**self.pids(), "generator": generator.pid})
        sampler.start()
        window = (began + ramp_s + warmup_s, began + ramp_s + warmup_s + measure_s)
        propagation_began = None
        propagation_error = None
        try:
            if propagate:
                time.sleep(max(0.0, window[1] + 5 - time.time()))
                if generator.poll() is None:
                    try:
                        propagation_began = self.change_every_device()
                    except EdgefleetError as e:
                        propagation_error = e.message
            out, err = generator.communicate(timeout=duration_s + 900)
        except BaseException:  # interrupted (Ctrl-C, SIGTERM): the generator stops too
            generator.kill()
            generator.wait()
            raise
        scraper.drained(QUIET_S, DRAIN_MAX_S)
        scraper.halt.set()
        scraper.join()
        sampler.stop()
        if generator.returncode != 0:
            raise RuntimeError(f"sim load failed ({generator.returncode}): {err.decode()[-2000:]}")
        summary = json.loads(out)
        stored = scraper.samples
        lags = report_lags(sent_curve(progress), stored, *window)
        in_window = [c for t, c in stored if window[0] <= t <= window[1]]
        heartbeats = in_window[-1] - in_window[0] if len(in_window) > 1 else 0.0
        window_s = (window[1] - window[0]) if len(in_window) > 1 else 1e-9
        stored_in_step = stored[-1][1] - stored[0][1] if stored else 0.0
        lost = summary["reports_sent"] - stored_in_step
        cpu = {name: sampler.used(name, *window) for name in ("server", "broker", "generator")}
        broker_rss = sampler.rss_between("broker", began, time.time())
        server_rss = sampler.rss_between("server", began, time.time())
        expected = devices / interval_s * window_s
        report = summary["traffic"].get("report", {})
        p99 = quantile(lags, 0.99)
        row: dict[str, Any] = {
            "transport": transport,
            "devices": devices,
            "enrolled": summary["enrolled"],
            "enroll_failed": summary["enroll_failed"],
            "online": summary["online"],
            "window_s": round(window_s, 1),
            "heartbeats": int(heartbeats),
            "heartbeats_expected": round(expected),
            "heartbeats_per_s": round(heartbeats / window_s, 1),
            "reports_sent": summary["reports_sent"],
            "reports_failed": summary["reports_failed"],
            "reports_stored": int(stored_in_step),
            "lost": int(lost),
            "messages_dropped": scraper.dropped,
            "report_to_stored_p50_s": rounded(quantile(lags, 0.5)),
            "report_to_stored_p99_s": rounded(p99),
            "report_exchange_p99_ms": report.get("total_p99_ms"),
            "server_cpu_percent": round(100 * cpu["server"] / window_s, 1),
            "server_cpu_ms_per_heartbeat": round(1000 * cpu["server"] / max(heartbeats, 1), 3),
            "server_marginal_cpu_ms_per_heartbeat": round(
                1000 * max(0.0, cpu["server"] - self.idle_rate * window_s) / max(heartbeats, 1), 3
            ),
            "server_cpu_us_per_device_30s": round(
                1e6 * cpu["server"] / max(devices * window_s / HEARTBEAT_S, 1e-9)
            ),
            "devices_per_server_core": round(devices * window_s / max(cpu["server"], 1e-9)),
            "heartbeat_interval_s": interval_s,
            "broker_cpu_percent": round(100 * cpu["broker"] / window_s, 1),
            "broker_rss_mb_max": round(max(broker_rss), 1) if broker_rss else None,
            "generator_cpu_percent": round(100 * cpu["generator"] / window_s, 1),
            "server_rss_mb_max": round(max(server_rss), 1) if server_rss else None,
            "generator_workers": summary["workers"],
            "generator_errors": summary["errors"],
            "traffic": summary["traffic"],
        }
        row["sustained"] = bool(
            p99 is not None and p99 < P99_LIMIT_S and lost <= 0 and summary["reports_failed"] == 0
            and summary["enroll_failed"] == 0 and summary["online"] == devices
            and heartbeats >= 0.9 * expected
        )  # fmt: skip
        if propagation_began is not None:
            row["propagation"] = propagation(summary, propagation_began)
        elif propagation_error is not None:
            row["propagation"] = {"error": propagation_error}
        row["samples"] = {"rss": sampler.rss, "progress_file": progress.name}
        return row


def propagation(summary: dict[str, Any], began: float) -> dict[str, Any]:
    online = summary["online"]
    arrivals = sorted(t - began for t in summary["desired_update_times_unix"] if t >= began)
    needed = math.ceil(0.99 * online)
    reached = arrivals[needed - 1] if len(arrivals) >= needed and needed else None
    return {
        "devices_online": online,
        "updates_received": len(arrivals),
        "time_to_99_percent_s": None if reached is None else round(reached, 3),
        "time_to_50_percent_s": round(arrivals[len(arrivals) // 2], 3) if arrivals else None,
        "time_to_all_s": round(arrivals[-1], 3) if len(arrivals) >= online else None,
    }


# Every device has uploaded telemetry (every 300 s, `sim load`'s default) once, plus a minute.
SOAK_WARMUP_S = 360.0


def ramp_for(devices: int) -> float:
    return min(240.0, max(10.0, devices / 60))


def run_steps(bench: Bench, transport: str, steps: list[int], warmup_s: float,
              measure_s: float) -> list[dict[str, Any]]:  # fmt: skip
    rows = []
    for devices in steps:
        if transport == "mqtt-idle":
            warmup_s = max(warmup_s, IDLE_WARMUP_S)
        row = bench.run(transport, devices, ramp_for(devices), warmup_s, measure_s,
                        PROPAGATION_TAIL_S, propagate=True)  # fmt: skip
        rows.append(row)
        prop = row.get("propagation", {})
        print(f"{transport} {devices:>6}: stored {row['heartbeats_per_s']}/s "
              f"(expected {devices / row['heartbeat_interval_s']:.0f}/s), lost {row['lost']}, "
              f"report->stored p99 {row['report_to_stored_p99_s']} s, server "
              f"{row['server_cpu_percent']}% ({row['server_cpu_ms_per_heartbeat']} ms/hb, "
              f"{row['server_cpu_us_per_device_30s']} us/device-30s), "
              f"broker {row['broker_cpu_percent']}% {row['broker_rss_mb_max']} MB, generator "
              f"{row['generator_cpu_percent']}%, change to 99%: "
              f"{prop.get('time_to_99_percent_s')} s -> "
              f"{'sustained' if row['sustained'] else 'NOT sustained'}", flush=True)  # fmt: skip
        if not row["sustained"]:
            break
    return rows


def soak(bench: Bench, transport: str, devices: int, seconds: float) -> dict[str, Any]:
    ramp_s = ramp_for(devices)
    warm_s = SOAK_WARMUP_S
    row = bench.run(transport, devices, ramp_s, warm_s, seconds, 0.0, propagate=False)
    rss = [(t, s["server"]) for t, s in row["samples"]["rss"] if "server" in s]
    start = rss[0][0]
    after_warmup = next((r for t, r in rss if t >= start + ramp_s + warm_s), None)
    last_minute = [r for t, r in rss if t >= rss[-1][0] - 60]
    growth = None
    if after_warmup and last_minute:
        growth = round(100 * (max(last_minute) - after_warmup) / after_warmup, 1)
    row["soak_s"] = seconds
    row["warmup_s"] = round(ramp_s + warm_s)
    row["server_rss_mb_after_warmup"] = after_warmup
    row["server_rss_mb_last_minute_max"] = max(last_minute) if last_minute else None
    row["server_rss_growth_percent"] = growth
    row["server_rss_mb_timeline"] = [(round(t - start), round(r, 1)) for t, r in rss[::30]]
    return row


def table(report: dict[str, Any]) -> str:
    lines = [f"# Capacity over HTTP and MQTT ({report['when']})", "",
             f"`{report['command']}`", "", report["note"],
             f"Server idle (no device): {report['server_idle_cpu_percent']} % of a core.", "",
             "| transport | devices | sustained | stored/s (expected) | lost | report->stored "
             "p50 / p99 s | HTTP exchange p99 ms (after warm-up, change included) | server CPU % "
             "| server ms/heartbeat (marginal) | server us/device-30s | devices per server core "
             "| broker CPU % | broker RSS MB | generator CPU % | change to 99 % of online, s |",
             "|---" * 15 + "|"]  # fmt: skip
    for row in report["steps"]:
        prop = row.get("propagation") or {}
        exchange = row["report_exchange_p99_ms"] if row["transport"] == "http" else "-"
        lines.append(
            f"| {row['transport']} | {row['devices']} | {row['sustained']} "
            f"| {row['heartbeats_per_s']} ({row['devices'] / row['heartbeat_interval_s']:.0f}) "
            f"| {row['lost']} "
            f"| {row['report_to_stored_p50_s']} / {row['report_to_stored_p99_s']} | {exchange} "
            f"| {row['server_cpu_percent']} | {row['server_cpu_ms_per_heartbeat']} "
            f"({row['server_marginal_cpu_ms_per_heartbeat']}) "
            f"| {row['server_cpu_us_per_device_30s']} | {row['devices_per_server_core']} "
            f"| {row['broker_cpu_percent']} | {row['broker_rss_mb_max']} "
            f"| {row['generator_cpu_percent']} "
            f"| {prop.get('time_to_99_percent_s')} (of {prop.get('devices_online')}) |"
        )
    soaked = report.get("soak")
    if soaked:
        lines += ["", f"Soak: {soaked['transport']}, {soaked['devices']} devices, "
                  f"{soaked['soak_s']:.0f} s after {soaked['warmup_s']} s of ramp and warm-up: "
                  f"reports sent {soaked['reports_sent']}, failed "
                  f"{soaked['reports_failed']}, lost {soaked['lost']}, report->stored p99 "
                  f"{soaked['report_to_stored_p99_s']} s, telemetry p99 "
                  f"{soaked['traffic'].get('telemetry', {}).get('total_p99_ms')} ms, server RSS "
                  f"{soaked['server_rss_mb_after_warmup']} MB after warm-up -> "
                  f"{soaked['server_rss_mb_last_minute_max']} MB in the last minute "
                  f"({soaked['server_rss_growth_percent']} %), errors "
                  f"{soaked['generator_errors'] or 'none'}."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--http-steps", type=int, nargs="*", default=[1000, 2000, 3000])
    parser.add_argument("--mqtt-steps", type=int, nargs="*", default=[2000, 5000, 10000])
    parser.add_argument("--mqtt-idle-steps", type=int, nargs="*", default=[10000])
    parser.add_argument("--warmup", type=float, default=30.0)
    parser.add_argument("--measure", type=float, default=90.0)
    parser.add_argument("--soak", type=float, default=0.0,
                        help="seconds measured after the warm-up (0: none)")  # fmt: skip
    parser.add_argument("--soak-transport", choices=("http", "mqtt", "mqtt-idle"),
                        default="mqtt")  # fmt: skip
    parser.add_argument("--soak-devices", type=int,
                        help="default: the largest sustained step of --soak-transport")  # fmt: skip
    parser.add_argument("--database-url", help="PostgreSQL (SQLAlchemy URL) instead of SQLite")
    parser.add_argument("--quick", action="store_true", help="100 devices each, short windows")
    args = parser.parse_args()
    # Stopped with SIGTERM (kill, a timeout), unwind as Ctrl-C does: `bench.close()` stops
    # the server, the broker and the generator instead of leaving them running.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    http_steps, mqtt_steps, idle_steps = args.http_steps, args.mqtt_steps, args.mqtt_idle_steps
    warmup_s, measure_s = args.warmup, args.measure
    if args.quick:
        http_steps, mqtt_steps, idle_steps, warmup_s, measure_s = [100], [100], [], 10.0, 30.0
    workdir = Path(tempfile.mkdtemp(prefix="edgefleet-bench-transports-"))
    bench = Bench(workdir, args.database_url)
    steps: list[dict[str, Any]] = []
    soaked = None
    try:
        steps += run_steps(bench, "http", http_steps, warmup_s, measure_s)
        steps += run_steps(bench, "mqtt", mqtt_steps, warmup_s, measure_s)
        steps += run_steps(bench, "mqtt-idle", idle_steps, warmup_s, measure_s)
        if args.soak:
            sustained = [r["devices"] for r in steps
                         if r["transport"] == args.soak_transport and r["sustained"]]  # fmt: skip
            devices = args.soak_devices or (max(sustained) if sustained else 100)
            soaked = soak(bench, args.soak_transport, devices, args.soak)
            print(f"soak {args.soak_transport} {devices}: lost {soaked['lost']}, p99 "
                  f"{soaked['report_to_stored_p99_s']} s, server RSS growth "
                  f"{soaked['server_rss_growth_percent']} %", flush=True)  # fmt: skip
    finally:
        bench.close()
        shutil.rmtree(workdir, ignore_errors=True)
    for row in [*steps, *([soaked] if soaked else [])]:
        row.pop("samples", None)
    load = psutil.getloadavg()
    command = " ".join(["bench/capacity/transports.py", *sys.argv[1:]])
    earlier = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if not steps and earlier.get("steps"):
        # A soak alone: keep the steps of the run before, and say which command made what.
        steps = earlier["steps"]
        command = f"{earlier['command']}` then `{command}"
    report = {
        "benchmark": "capacity-transports",
        "when": time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime()),
        "command": command,
        "python": platform.python_version(),
        "cpus": psutil.cpu_count(),
        "load_average_at_end": [round(x, 2) for x in load],
        "note": "server, Mosquitto and the load generator share one 2-core machine with "
        "other work (load average at the end: "
        + " / ".join(f"{x:.1f}" for x in load)
        + "): the figures are floors. Server: SQLite"
        + (" -> PostgreSQL" if args.database_url else "")
        + ", one process.",
        "heartbeat_interval_s": HEARTBEAT_S,
        "server_idle_cpu_percent": round(100 * bench.idle_rate, 1),
        "steps": steps,
        "capacity": {
            t: max(
                [r["devices"] for r in steps if r["transport"] == t and r["sustained"]], default=0
            )
            for t in ("http", "mqtt", "mqtt-idle")
        },
        "soak": soaked,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=1) + "\n")
    TABLE.write_text(table(report))
    print(table(report), end="")
    print(f"wrote {RESULTS} and {TABLE}")


if __name__ == "__main__":
    main()
