from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from edgefleet.agent.telemetry import host_metrics as hm
from edgefleet.agent.telemetry.host_metrics import (
    HOST_METRIC_NAMES,
    HostMetricsCollector,
    condition_from_points,
)
from edgefleet.core.telemetry.windows import MetricKind
from edgefleet.core.telemetry.wire import STATIC_NAMES


class BarePsutil:
    """Stands in for psutil on a mains-powered box where psutil lacks sensors_temperatures."""

    Error = type("Error", (Exception,), {})

    def __init__(self) -> None:
        self.net = [(1000, 500), (1600, 900), (100, 50)]  # the third reading is a reset

    def cpu_percent(self, interval: float | None = None) -> float:
        return 37.25

    def virtual_memory(self) -> Any:
        return SimpleNamespace(used=1_400_000_512, percent=35.04)

    def sensors_battery(self) -> Any:
        return None

    def net_io_counters(self) -> Any:
        recv, sent = self.net.pop(0)
        return SimpleNamespace(bytes_recv=recv, bytes_sent=sent)

    def Process(self) -> Any:  # psutil spells it so
        raise self.Error("no such process")


class FakePsutil(BarePsutil):
    """Stands in for psutil: a battery-powered board with one thermal zone."""

    def sensors_temperatures(self) -> dict[str, list[Any]]:
        return {"cpu_thermal": [SimpleNamespace(current=51.234)], "x": [SimpleNamespace(current=0)]}

    def sensors_battery(self) -> Any:
        return SimpleNamespace(percent=64.4444, power_plugged=False)


def by_name(points: list[Any]) -> dict[str, Any]:
    return {p.name: p for p in points}


def test_the_real_host_reports_known_finite_metrics(tmp_path: Path) -> None:
    collector = HostMetricsCollector(tmp_path)
    collector.collect()
    points = collector.collect()
    names = {p.name for p in points}
    assert {hm.DISK_USED_BYTES, hm.DISK_PERCENT} <= names
    assert names <= set(HOST_METRIC_NAMES)
    assert all(math.isfinite(p.value) for p in points)


def test_without_psutil_the_standard_library_still_gives_load_and_disk(tmp_path: Path) -> None:
    points = by_name(HostMetricsCollector(tmp_path, psutil=None).collect())
    assert set(points) == {hm.LOAD_1M, hm.DISK_USED_BYTES, hm.DISK_PERCENT}


def test_readings_are_rounded_and_interval_metrics_start_on_the_second_call(
    tmp_path: Path,
) -> None:
    collector = HostMetricsCollector(tmp_path, psutil=FakePsutil())  # type: ignore[arg-type]
    first = by_name(collector.collect())
    assert hm.CPU_PERCENT not in first and hm.NET_RX_BYTES not in first
    assert first[hm.TEMPERATURE_CELSIUS].value == 51.2
    assert first[hm.BATTERY_PERCENT].value == 64.4
    assert first[hm.POWER_PLUGGED].value == 0.0
    assert first[hm.MEMORY_PERCENT].value == 35.0
    assert hm.AGENT_RSS_BYTES not in first  # the failing sensor is skipped, not fatal
    second = by_name(collector.collect())
    assert second[hm.CPU_PERCENT].value == 37.2
    assert (second[hm.NET_RX_BYTES].value, second[hm.NET_TX_BYTES].value) == (600, 400)
    assert second[hm.NET_RX_BYTES].kind is MetricKind.COUNTER
    third = by_name(collector.collect())
    assert hm.NET_RX_BYTES not in third  # counters went backwards: no made-up interval


def test_a_platform_without_sensors_is_fine(tmp_path: Path) -> None:
    collector = HostMetricsCollector(tmp_path, psutil=BarePsutil())  # type: ignore[arg-type]
    points = by_name(collector.collect())
    assert hm.TEMPERATURE_CELSIUS not in points and hm.BATTERY_PERCENT not in points
    assert hm.MEMORY_USED_BYTES in points
    assert not condition_from_points(points.values()).on_battery


def test_the_condition_for_the_sampling_policy_comes_from_the_points(tmp_path: Path) -> None:
    collector = HostMetricsCollector(tmp_path, psutil=FakePsutil())  # type: ignore[arg-type]
    collector.collect()
    condition = condition_from_points(collector.collect(), frozenset({"inference.latency_ms"}))
    assert condition.on_battery and condition.battery_percent == 64.4
    assert condition.cpu_percent == 37.2
    assert condition.anomalous_metrics == {"inference.latency_ms"}


@pytest.mark.parametrize("name", HOST_METRIC_NAMES)
def test_every_host_metric_name_is_in_the_static_wire_table(name: str) -> None:
    assert name in STATIC_NAMES
