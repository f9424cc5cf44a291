"""The local KPI endpoint: workloads push counters, gauges and timings to the agent over
StatsD on loopback UDP, and the agent folds them into its `Aggregator`.

One metric per line, several lines per datagram::

    inference.requests:1|c                    counter (negative values decrement)
    inference.requests:1|c|@0.1               sampled 1 in 10: counts as 10
    host.fan.rpm:2400|g                       gauge; values are absolute (DogStatsD style)
    inference.latency_ms:23.7|ms|#model:v3    timing, with tags `key:value` or bare `key`

`h` and `d` (histogram, distribution) are read as timings. A line that does not parse is
counted in `StatsdServer.stats.malformed` and skipped; the rest of the datagram still counts.

>>> parse_line("inference.latency_ms:23.7|ms|#model:v3")
MetricPoint(name='inference.latency_ms', kind=<MetricKind.TIMING: 'timing'>, value=23.7, \
tags=(('model', 'v3'),), weight=1)
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import math
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from edgefleet.clock import Clock
from edgefleet.core.telemetry.windows import Aggregator, MetricKind, MetricPoint, normalize_tags
from edgefleet.core.telemetry.wire import MAX_NAME_CHARS, MAX_TAG_CHARS, MAX_TAGS, NAME_RE
from edgefleet.errors import InvalidInput, SettingsError

DEFAULT_PORT = 8125
MAX_DATAGRAM_BYTES = 8192

_KINDS = {
    "c": MetricKind.COUNTER,
    "g": MetricKind.GAUGE,
    "ms": MetricKind.TIMING,
    "h": MetricKind.TIMING,
    "d": MetricKind.TIMING,
}
_SYMBOLS = {MetricKind.COUNTER: "c", MetricKind.GAUGE: "g", MetricKind.TIMING: "ms"}
_NUMBER_RE = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_TAG_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-/]*")
_TAG_VALUE_RE = re.compile(r"[A-Za-z0-9_.\-/:]*")


def _malformed(line: str, why: str) -> InvalidInput:
    return InvalidInput(f"malformed StatsD line {line[:80]!r}: {why}", code="bad_statsd_line")


def _parse_number(text: str, line: str, what: str) -> float:
    if not _NUMBER_RE.fullmatch(text):
        raise _malformed(line, f"{what} {text!r} is not a number")
    value = float(text)
    if not math.isfinite(value):
        raise _malformed(line, f"{what} is out of range")
    return value


def _parse_tags(text: str, line: str) -> tuple[tuple[str, str], ...]:
    pairs: dict[str, str] = {}
    for item in text.split(","):
        key, _, value = item.partition(":")
        if not _TAG_KEY_RE.fullmatch(key) or not _TAG_VALUE_RE.fullmatch(value):
            raise _malformed(line, f"bad tag {item!r}")
        if len(key) > MAX_TAG_CHARS or len(value) > MAX_TAG_CHARS:
            raise _malformed(line, f"tag {key!r} is longer than {MAX_TAG_CHARS} characters")
        pairs[key] = value
    if len(pairs) > MAX_TAGS:
        raise _malformed(line, f"more than {MAX_TAGS} tags")
    return normalize_tags(pairs)


def parse_line(line: str) -> MetricPoint:
    """One StatsD line as a point; InvalidInput(code="bad_statsd_line") if it is malformed."""
    name, colon, rest = line.partition(":")
    if not colon:
        raise _malformed(line, "expected name:value|type")
    if not NAME_RE.fullmatch(name) or len(name) > MAX_NAME_CHARS:
        raise _malformed(line, f"bad metric name {name!r}")
    fields = rest.split("|")
    if len(fields) < 2:
        raise _malformed(line, "expected name:value|type")
    value = _parse_number(fields[0], line, "value")
    kind = _KINDS.get(fields[1])
    if kind is None:
        raise _malformed(line, f"unknown type {fields[1]!r}")
    rate = 1.0
    tags: tuple[tuple[str, str], ...] = ()
    for field in fields[2:]:
        if field.startswith("@") and rate == 1.0:
            rate = _parse_number(field[1:], line, "sample rate")
            if not 0.0 < rate <= 1.0:
                raise _malformed(line, "sample rate must be in (0, 1]")
        elif field.startswith("#") and not tags:
            tags = _parse_tags(field[1:], line)
        else:
            raise _malformed(line, f"unexpected field {field!r}")
    weight = 1
    if kind is MetricKind.COUNTER:
        value /= rate
    elif kind is MetricKind.TIMING:
        weight = max(1, round(1.0 / rate))
    return MetricPoint(name, kind, value, tags, weight)


def parse_datagram(data: bytes) -> tuple[list[MetricPoint], int]:
    """(points, number of malformed lines) of one datagram; blank lines are ignored."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return [], 1
    points: list[MetricPoint] = []
    malformed = 0
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            points.append(parse_line(line))
        except InvalidInput:
            malformed += 1
    return points, malformed


@dataclass
class StatsdStats:
    datagrams: int = 0
    points: int = 0
    malformed: int = 0
    oversize: int = 0


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, aggregator: Aggregator, clock: Clock, stats: StatsdStats) -> None:
        self._aggregator = aggregator
        self._clock = clock
        self._stats = stats

    def datagram_received(self, data: bytes, addr: object) -> None:
        self._stats.datagrams += 1
        if len(data) > MAX_DATAGRAM_BYTES:
            self._stats.oversize += 1
            return
        points, malformed = parse_datagram(data)
        self._stats.malformed += malformed
        now = self._clock.now()
        for point in points:
            self._aggregator.add(point, now)
        self._stats.points += len(points)


class StatsdServer:
    """A running endpoint; `close()` stops it."""

    def __init__(self, transport: asyncio.DatagramTransport, stats: StatsdStats) -> None:
        self._transport = transport
        self.stats = stats

    @property
    def port(self) -> int:
        return int(self._transport.get_extra_info("sockname")[1])

    def close(self) -> None:
        self._transport.close()


def check_loopback(host: str, key: str) -> None:
    """Refuse (SettingsError naming `key`) an address that is not loopback."""
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise SettingsError(
            f"bad setting {key}: {host!r} is not a loopback address; the KPI endpoint "
            "only listens to workloads on this device"
        )


async def start_statsd_server(
    aggregator: Aggregator, clock: Clock, *, host: str = "127.0.0.1", port: int = DEFAULT_PORT
) -> StatsdServer:
    """Listen for StatsD datagrams on loopback `host:port` (port 0: any free port)."""
    check_loopback(host, "statsd_host")
    stats = StatsdStats()
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: _Protocol(aggregator, clock, stats), local_addr=(host, port)
    )
    return StatsdServer(transport, stats)


def format_line(
    name: str,
    value: float,
    kind: MetricKind = MetricKind.GAUGE,
    tags: Mapping[str, str] | None = None,
) -> str:
    """The StatsD line for one observation: `format_line("q", 3, MetricKind.COUNTER)`."""
    if not math.isfinite(value):
        raise InvalidInput(f"cannot send {value} for {name}", code="bad_value")
    text = str(value) if isinstance(value, int) else repr(float(value))
    line = f"{name}:{text}|{_SYMBOLS[kind]}"
    if tags:
        line += "|#" + ",".join(f"{k}:{v}" if v else k for k, v in sorted(tags.items()))
    return line


def send_metric(
    name: str,
    value: float,
    kind: MetricKind = MetricKind.GAUGE,
    tags: Mapping[str, str] | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
) -> None:
    """Send one observation to the agent. Best effort, as StatsD is: if nothing listens,
    the datagram is lost and the workload carries on."""
    data = format_line(name, value, kind, tags).encode()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock, contextlib.suppress(OSError):
        sock.sendto(data, (host, port))
