"""The simulated network: its statistics match the declared conditions (seeded draws, within
tolerance), outages and partitions, and the Transport wrapper that applies them to HTTP."""

from __future__ import annotations

import asyncio
import math
import random
import statistics
from collections.abc import Mapping
from pathlib import Path

import pytest

from edgefleet.errors import Unavailable
from edgefleet.sim.lab.link import LinkSchedule
from edgefleet.sim.network import NetworkConditions, NetworkModel, Outage, parse_network
from edgefleet.sim.traffic import TrafficStats, request_kind
from edgefleet.sim.transport import SimTransport
from edgefleet.transport.messages import TransportResponse
from tests.fake_clock import FakeClock

DRAWS = 20_000


def model(seed: int = 1, phase_s: float = 0.0, **conditions: object) -> NetworkModel:
    return NetworkModel(NetworkConditions(**conditions), random.Random(seed), phase_s)  # type: ignore[arg-type]


def test_loss_rate_matches_the_declared_percentage() -> None:
    network = model(loss_percent=10.0)
    lost = sum(network.lost() for _ in range(DRAWS)) / DRAWS
    assert abs(lost - 0.10) < 0.01
    assert not any(model(loss_percent=0.0).lost() for _ in range(1000))


def test_latency_mean_and_jitter_match_the_conditions() -> None:
    network = model(latency_ms=80.0, jitter_ms=10.0)
    draws_ms = [network.one_way_s() * 1000 for _ in range(DRAWS)]
    assert abs(statistics.fmean(draws_ms) - 80.0) < 1.0
    assert abs(statistics.stdev(draws_ms) - 10.0) < 0.5
    assert min(draws_ms) >= 0.0


def test_bandwidth_adds_the_payload_time() -> None:
    network = model(latency_ms=20.0, jitter_ms=0.0, bandwidth_kbps=800.0)
    # 100 kB at 800 kbit/s is one second, plus the 20 ms latency.
    assert network.one_way_s(100_000) == pytest.approx(1.02)


def test_the_same_seed_gives_the_same_network() -> None:
    a, b = (
        model(seed=7, latency_ms=50, jitter_ms=20, loss_percent=5),
        model(seed=7, latency_ms=50, jitter_ms=20, loss_percent=5),
    )
    assert [(a.one_way_s(), a.lost()) for _ in range(100)] == [
        (b.one_way_s(), b.lost()) for _ in range(100)
    ]


def test_outages_take_their_share_of_time_and_partitions_cut_the_link() -> None:
    network = model(phase_s=1234.0, outage=Outage(every_s=3600.0, duration_s=360.0))
    offline = sum(network.offline(t) for t in range(0, 24 * 3600, 10)) / (24 * 360)
    assert abs(offline - 0.10) < 0.005
    plain = model()
    assert not plain.offline(50.0)
    plain.partition_until(100.0)
    assert plain.offline(50.0) and not plain.offline(100.0)


def test_network_section_errors_name_the_field() -> None:
    with pytest.raises(Exception, match=r"net\.jitter_ms: expected a number"):
        parse_network({"jitter_ms": "lots"}, "net")
    parsed = parse_network({"outages": {"every": "2h", "duration": "5m"}}, "net")
    assert parsed.outage == Outage(7200.0, 300.0)


def test_a_transfer_pauses_while_the_link_is_down() -> None:
    link = LinkSchedule(model(outage=Outage(every_s=100.0, duration_s=10.0)), phase_s=0.0)
    # Offline over [0, 10), [100, 110), ...: a 95 s transfer started at 0 begins at 10,
    # runs 90 s until 100, waits out the outage, and finishes 5 s after 110.
    assert link.next_online(0.0) == 10.0
    assert link.advance_online(0.0, 95.0) == pytest.approx(115.0)
    link.add_downtime(200.0, 300.0)
    assert link.next_online(250.0) == 310.0  # the downtime ends in a periodic outage
    link.add_downtime(400.0, math.inf)
    assert math.isinf(link.advance_online(350.0, 100.0))


class EchoTransport:
    def __init__(self) -> None:
        self.requests = 0

    async def request(
        self, method: str, target: str, body: bytes, headers: Mapping[str, str], timeout_s: float
    ) -> TransportResponse:
        self.requests += 1
        return TransportResponse(200, b"x" * 1000)

    async def download(
        self, target: str, headers: Mapping[str, str], destination: Path, timeout_s: float
    ) -> TransportResponse:
        destination.write_bytes(b"y" * 10_000)
        return TransportResponse(200, b"")

    async def close(self) -> None:
        pass


def test_the_transport_delays_drops_and_counts(tmp_path: Path) -> None:
    async def scenario() -> None:
        clock, inner, stats = FakeClock(), EchoTransport(), TrafficStats()
        network = model(latency_ms=50.0, jitter_ms=0.0, bandwidth_kbps=80.0, loss_percent=20.0)
        transport = SimTransport(inner, network, clock, stats)  # type: ignore[arg-type]
        failures = 0
        for _ in range(500):
            try:
                await transport.request("POST", "/v1/devices/d/report", b"z" * 1000, {}, 5.0)
            except Unavailable:
                failures += 1
        assert abs(failures / 500 - 0.2) < 0.06
        assert inner.requests == 500 - failures
        # A delivered exchange waits 50 ms + 1000 B at 80 kbit/s (0.1 s) each way.
        assert pytest.approx(0.15) in clock.slept
        report = stats.kinds["report"]
        assert (report.requests, report.failures) == (500, failures)
        network.partition_until(clock.monotonic() + 1000)
        with pytest.raises(Unavailable):
            await transport.download("/v1/blobs/abc", {}, tmp_path / "blob", 5.0)
        assert stats.kinds["blob"].failures == 1

    asyncio.run(scenario())


def test_request_kinds() -> None:
    assert request_kind("/v1/enroll") == "enroll"
    assert request_kind("/v1/devices/d-x/desired?wait=30") == "desired"
    assert request_kind("/v1/devices/d-x/telemetry?dropped_through_seq=0") == "telemetry"
    assert request_kind("/v1/tuf/timestamp.json") == "tuf"
    assert request_kind("/v1/blobs/ab/delta/cd") == "blob"
