from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgefleet.agent.telemetry.statsd import (
    format_line,
    parse_datagram,
    parse_line,
    send_metric,
    start_statsd_server,
)
from edgefleet.core.telemetry.windows import Aggregator, MetricKind, MetricPoint, Window
from edgefleet.errors import InvalidInput, SettingsError
from tests.fake_clock import FakeClock

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("inference.requests:1|c", MetricPoint("inference.requests", MetricKind.COUNTER, 1.0)),
        ("q:-2|c", MetricPoint("q", MetricKind.COUNTER, -2.0)),
        ("q:1|c|@0.1", MetricPoint("q", MetricKind.COUNTER, 10.0)),
        ("fan.rpm:2400|g", MetricPoint("fan.rpm", MetricKind.GAUGE, 2400.0)),
        ("t:-1.5e2|g", MetricPoint("t", MetricKind.GAUGE, -150.0)),
        ("lat:23.7|ms", MetricPoint("lat", MetricKind.TIMING, 23.7)),
        ("lat:23.7|h", MetricPoint("lat", MetricKind.TIMING, 23.7)),
        ("lat:.5|d|@0.25", MetricPoint("lat", MetricKind.TIMING, 0.5, (), weight=4)),
        (
            "lat:23.7|ms|#model:v3,canary,zone:eu-1",
            MetricPoint(
                "lat", MetricKind.TIMING, 23.7, (("canary", ""), ("model", "v3"), ("zone", "eu-1"))
            ),
        ),
        (
            "lat:1|ms|#b:2,a:1|@0.5",
            MetricPoint("lat", MetricKind.TIMING, 1.0, (("a", "1"), ("b", "2")), weight=2),
        ),
    ],
)
def test_lines_parse_into_points(line: str, expected: MetricPoint) -> None:
    assert parse_line(line) == expected


@pytest.mark.parametrize(
    "line",
    [
        "no-colon",
        "name:1",
        "name:1|x",
        "name:|c",
        "name:abc|c",
        "name:nan|g",
        "name:inf|g",
        "name:1e999|g",
        "name:1_000|c",
        "name: 1|c",
        "name:1|c|@0",
        "name:1|c|@1.5",
        "name:1|c|@x",
        "name:1|c|#bad tag",
        "name:1|c|#" + ",".join(f"k{i}:v" for i in range(17)),
        "name:1|c|extra",
        "name:1|c|#a:1|#b:2",
        "9name:1|c",
        "na me:1|c",
        ":1|c",
        "x" * 201 + ":1|c",
    ],
)
def test_malformed_lines_are_refused(line: str) -> None:
    with pytest.raises(InvalidInput) as err:
        parse_line(line)
    assert err.value.code == "bad_statsd_line"


def test_a_datagram_keeps_good_lines_and_counts_bad_ones() -> None:
    points, malformed = parse_datagram(b"a:1|c\nbroken\n\nb:2|g\r\nc:x|ms\n")
    assert [p.name for p in points] == ["a", "b"]
    assert malformed == 2
    assert parse_datagram(b"\xff\xfe:1|c") == ([], 1)


@given(
    st.sampled_from(["inference.latency_ms", "app.q", "x_1.y-z"]),
    st.one_of(
        st.integers(min_value=-(10**12), max_value=10**12),
        st.floats(allow_nan=False, allow_infinity=False),
    ),
    st.sampled_from(list(MetricKind)),
    st.dictionaries(
        st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True),
        st.from_regex(r"[a-z0-9.]{0,8}", fullmatch=True),
        max_size=4,
    ),
)
def test_format_line_and_parse_line_agree(
    name: str, value: float, kind: MetricKind, tags: dict[str, str]
) -> None:
    point = parse_line(format_line(name, value, kind, tags))
    assert (point.name, point.kind, point.value) == (name, kind, float(value))
    assert dict(point.tags) == tags


def test_the_server_feeds_the_aggregator_and_counts_malformed_lines() -> None:
    async def scenario() -> tuple[list[Window], int, int]:
        clock = FakeClock(T0 + timedelta(seconds=5))
        aggregator = Aggregator(lambda _: 60)
        server = await start_statsd_server(aggregator, clock, port=0)
        try:
            for ms in (10.0, 20.0, 30.0):
                send_metric("inference.latency_ms", ms, MetricKind.TIMING, {"model": "v3"},
                            port=server.port)  # fmt: skip
            send_metric("inference.requests", 3, MetricKind.COUNTER, port=server.port)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.sendto(b"garbage\nq:1|c", ("127.0.0.1", server.port))
            for _ in range(500):  # wait for delivery, not for time
                if server.stats.datagrams >= 5:
                    break
                await asyncio.sleep(0.01)
        finally:
            server.close()
        windows = aggregator.close_all(T0 + timedelta(seconds=60))
        return windows, server.stats.points, server.stats.malformed

    windows, points, malformed = asyncio.run(scenario())
    by_name = {w.name: w for w in windows}
    latency = by_name["inference.latency_ms"]
    assert (latency.count, latency.sum, latency.tags) == (3, 60.0, (("model", "v3"),))
    assert by_name["inference.requests"].sum == 3
    assert by_name["q"].sum == 1
    assert (points, malformed) == (5, 1)


def test_send_metric_without_a_listener_does_not_raise() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    send_metric("a", 1.0, port=free_port)
    send_metric("a", 1.0, port=free_port)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "example.com"])
def test_the_endpoint_refuses_to_listen_beyond_loopback(host: str) -> None:
    async def start() -> None:
        await start_statsd_server(Aggregator(), FakeClock(T0), host=host, port=0)

    with pytest.raises(SettingsError):
        asyncio.run(start())
