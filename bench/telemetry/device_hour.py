"""One synthetic device-hour of raw telemetry points: the baseline set at the default policy.

Host metrics are read every `HOST_INTERVAL_S` seconds, as `HostMetricsCollector` reports
them (same names, kinds and precision: 0.1 % for percentages, 0.1 degC, memory and disk in
whole 4 KiB pages, network bytes exact).
Workload KPIs arrive the way an inference service pushes them over StatsD: one latency
timing, one request count, an occasional error and one model-output score per request, with
the decimals a `%.3f` format leaves. Everything is seeded, so runs compare like with like.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass

from edgefleet.core.telemetry.windows import MetricKind, MetricPoint, Tags

HOST_INTERVAL_S = 10
PAGE_BYTES = 4096  # psutil's memory and disk figures are whole pages or blocks
KPI_TAGS: Tags = (("model", "detector-v3"), ("workload", "camera-detector"))


@dataclass(frozen=True)
class TimedPoint:
    at_s: float  # seconds since the start of the hour
    point: MetricPoint


def _gauge(name: str, value: float) -> MetricPoint:
    return MetricPoint(name, MetricKind.GAUGE, value)


def host_points(rng: random.Random, duration_s: int) -> Iterator[TimedPoint]:
    """The host baseline: 13 series read every HOST_INTERVAL_S seconds."""
    cpu = 35.0
    memory_used = 341_797 * PAGE_BYTES
    disk_used = 2_392_578 * PAGE_BYTES
    temperature = 52.0
    battery = 80.0
    rss = 11_719 * PAGE_BYTES
    memory_total = 4_000_000_000
    disk_total = 32_000_000_000
    for tick in range(duration_s // HOST_INTERVAL_S):
        at_s = tick * HOST_INTERVAL_S + rng.uniform(0, 0.05)
        cpu = min(100.0, max(0.0, cpu + rng.gauss(0, 6)))
        memory_used += int(rng.gauss(0, 3_000_000)) // PAGE_BYTES * PAGE_BYTES
        disk_used += rng.randrange(0, 100) * PAGE_BYTES
        temperature += rng.gauss(0, 0.3) + (52.0 + cpu / 10 - temperature) * 0.1
        battery = max(5.0, battery - rng.uniform(0, 0.02))
        rss += int(rng.gauss(0, 10)) * PAGE_BYTES
        agent_cpu = rng.uniform(0.0, 1.5)
        rx = int(rng.lognormvariate(math.log(60_000), 0.6))
        tx = int(rng.lognormvariate(math.log(400_000), 0.5))
        for point in (
            _gauge("host.cpu.percent", round(cpu, 1)),
            _gauge("host.load.1m", round(cpu / 25 + rng.uniform(0, 0.2), 2)),
            _gauge("host.memory.used_bytes", float(memory_used)),
            _gauge("host.memory.percent", round(100 * memory_used / memory_total, 1)),
            _gauge("host.disk.used_bytes", float(disk_used)),
            _gauge("host.disk.percent", round(100 * disk_used / disk_total, 1)),
            _gauge("host.temperature.celsius", round(temperature, 1)),
            _gauge("host.battery.percent", round(battery, 1)),
            _gauge("host.power.plugged", 1.0),
            MetricPoint("host.net.rx_bytes", MetricKind.COUNTER, float(rx)),
            MetricPoint("host.net.tx_bytes", MetricKind.COUNTER, float(tx)),
            _gauge("agent.memory.rss_bytes", float(rss)),
            _gauge("agent.cpu.percent", round(agent_cpu, 1)),
        ):
            yield TimedPoint(at_s, point)


def kpi_points(rng: random.Random, duration_s: int, requests_per_s: float) -> Iterator[TimedPoint]:
    """Workload KPIs for `requests_per_s` inferences a second (Poisson arrivals)."""
    at_s = 0.0
    while True:
        at_s += rng.expovariate(requests_per_s)
        if at_s >= duration_s:
            return
        latency_ms = round(rng.lognormvariate(math.log(24.0), 0.35), 3)
        score = round(rng.betavariate(8, 2), 3)
        yield TimedPoint(
            at_s, MetricPoint("inference.latency_ms", MetricKind.TIMING, latency_ms, KPI_TAGS)
        )
        yield TimedPoint(at_s, MetricPoint("inference.requests", MetricKind.COUNTER, 1.0, KPI_TAGS))
        yield TimedPoint(at_s, MetricPoint("inference.score", MetricKind.TIMING, score, KPI_TAGS))
        if rng.random() < 0.005:
            yield TimedPoint(
                at_s, MetricPoint("inference.errors", MetricKind.COUNTER, 1.0, KPI_TAGS)
            )


def device_hour(seed: int, requests_per_s: float, duration_s: int = 3600) -> list[TimedPoint]:
    """Every raw point of one device over `duration_s`, in time order."""
    rng = random.Random(seed)
    points = list(host_points(rng, duration_s)) + list(kpi_points(rng, duration_s, requests_per_s))
    points.sort(key=lambda p: p.at_s)
    return points
