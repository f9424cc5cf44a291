"""Host metrics: the baseline the agent reads from its own machine every collection tick.

`HostMetricsCollector.collect()` returns plain `MetricPoint`s for whatever the platform
offers: CPU, load, memory, disk of the data directory, the hottest temperature sensor,
battery level and power source, network bytes, and the agent process's own footprint.
psutil is optional: without it the collector still reports load and disk from the standard
library; a sensor that is missing or fails is left out of that tick, never guessed.

Readings are rounded to the precision they mean (0.1 % for percentages, 0.1 degC, 0.01 for
load), which also keeps windows of them small on the wire.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

from edgefleet.core.telemetry.sampling import DeviceCondition
from edgefleet.core.telemetry.windows import MetricKind, MetricPoint

CPU_PERCENT = "host.cpu.percent"
LOAD_1M = "host.load.1m"
MEMORY_USED_BYTES = "host.memory.used_bytes"
MEMORY_PERCENT = "host.memory.percent"
DISK_USED_BYTES = "host.disk.used_bytes"
DISK_PERCENT = "host.disk.percent"
TEMPERATURE_CELSIUS = "host.temperature.celsius"
BATTERY_PERCENT = "host.battery.percent"
POWER_PLUGGED = "host.power.plugged"
NET_RX_BYTES = "host.net.rx_bytes"
NET_TX_BYTES = "host.net.tx_bytes"
AGENT_RSS_BYTES = "agent.memory.rss_bytes"
AGENT_CPU_PERCENT = "agent.cpu.percent"

HOST_METRIC_NAMES = (
    CPU_PERCENT,
    LOAD_1M,
    MEMORY_USED_BYTES,
    MEMORY_PERCENT,
    DISK_USED_BYTES,
    DISK_PERCENT,
    TEMPERATURE_CELSIUS,
    BATTERY_PERCENT,
    POWER_PLUGGED,
    NET_RX_BYTES,
    NET_TX_BYTES,
    AGENT_RSS_BYTES,
    AGENT_CPU_PERCENT,
)


def _load_psutil() -> ModuleType | None:
    try:
        import psutil
    except ImportError:
        return None
    return psutil


def _gauge(name: str, value: float) -> MetricPoint:
    return MetricPoint(name, MetricKind.GAUGE, value)


class HostMetricsCollector:
    """Reads the host. Stateful: CPU shares and network bytes are per interval, so the first
    `collect()` primes them and reports them from the second call on."""

    def __init__(self, data_dir: Path, *, psutil: ModuleType | bool | None = True) -> None:
        """`psutil=True` imports it if installed; pass a module (or a fake), or None for none."""
        self._data_dir = data_dir
        self._psutil = _load_psutil() if psutil is True else (psutil or None)
        errors: tuple[type[BaseException], ...] = (OSError, AttributeError, NotImplementedError)
        if self._psutil is not None:
            errors += (self._psutil.Error,)
        self._errors = errors
        self._previous_net: tuple[int, int] | None = None
        self._process: Any = None
        self._primed = False

    def collect(self) -> list[MetricPoint]:
        """One reading of every available metric."""
        points: list[MetricPoint] = []
        readers: list[Callable[[], Iterable[MetricPoint]]] = [self._load, self._disk]
        if self._psutil is not None:
            readers += [
                self._cpu,
                self._memory,
                self._temperature,
                self._battery,
                self._network,
                self._agent,
            ]
        for read in readers:
            try:
                points.extend(read())
            except self._errors:
                continue  # this sensor is absent or failing on this platform right now
        self._primed = True
        return points

    def _load(self) -> Iterable[MetricPoint]:
        return [_gauge(LOAD_1M, round(os.getloadavg()[0], 2))]

    def _disk(self) -> Iterable[MetricPoint]:
        usage = shutil.disk_usage(self._data_dir)
        return [
            _gauge(DISK_USED_BYTES, float(usage.used)),
            _gauge(DISK_PERCENT, round(100.0 * usage.used / usage.total, 1)),
        ]

    def _cpu(self) -> Iterable[MetricPoint]:
        assert self._psutil is not None
        percent = self._psutil.cpu_percent(interval=None)
        return [_gauge(CPU_PERCENT, round(percent, 1))] if self._primed else []

    def _memory(self) -> Iterable[MetricPoint]:
        assert self._psutil is not None
        memory = self._psutil.virtual_memory()
        return [
            _gauge(MEMORY_USED_BYTES, float(memory.used)),
            _gauge(MEMORY_PERCENT, round(memory.percent, 1)),
        ]

    def _temperature(self) -> Iterable[MetricPoint]:
        assert self._psutil is not None
        read = getattr(self._psutil, "sensors_temperatures", None)
        sensors = read() if read is not None else {}
        currents = [t.current for group in sensors.values() for t in group if t.current]
        return [_gauge(TEMPERATURE_CELSIUS, round(max(currents), 1))] if currents else []

    def _battery(self) -> Iterable[MetricPoint]:
        assert self._psutil is not None
        read = getattr(self._psutil, "sensors_battery", None)
        battery = read() if read is not None else None
        if battery is None:
            return []
        points = [_gauge(BATTERY_PERCENT, round(battery.percent, 1))]
        if battery.power_plugged is not None:
            points.append(_gauge(POWER_PLUGGED, 1.0 if battery.power_plugged else 0.0))
        return points

    def _network(self) -> Iterable[MetricPoint]:
        assert self._psutil is not None
        counters = self._psutil.net_io_counters()
        current = (int(counters.bytes_recv), int(counters.bytes_sent))
        previous, self._previous_net = self._previous_net, current
        if previous is None or current[0] < previous[0] or current[1] < previous[1]:
            return []  # first reading, or the counters were reset: no interval to report
        return [
            MetricPoint(NET_RX_BYTES, MetricKind.COUNTER, float(current[0] - previous[0])),
            MetricPoint(NET_TX_BYTES, MetricKind.COUNTER, float(current[1] - previous[1])),
        ]

    def _agent(self) -> Iterable[MetricPoint]:
        assert self._psutil is not None
        if self._process is None:
            self._process = self._psutil.Process()
        points = [_gauge(AGENT_RSS_BYTES, float(self._process.memory_info().rss))]
        percent = self._process.cpu_percent(interval=None)
        if self._primed:
            points.append(_gauge(AGENT_CPU_PERCENT, round(percent, 1)))
        return points


def condition_from_points(
    points: Iterable[MetricPoint], anomalous_metrics: frozenset[str] = frozenset()
) -> DeviceCondition:
    """What the sampling policy needs to know, from one `collect()` (plus open anomalies)."""
    latest = {p.name: p.value for p in points}
    plugged = latest.get(POWER_PLUGGED)
    return DeviceCondition(
        cpu_percent=latest.get(CPU_PERCENT),
        on_battery=plugged == 0.0,
        battery_percent=latest.get(BATTERY_PERCENT),
        anomalous_metrics=anomalous_metrics,
    )
