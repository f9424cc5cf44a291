"""The simulated network applied to real HTTP: a `Transport` wrapper for a virtual device.

Each exchange goes through the device's `NetworkModel` before and after the real request:

    offline (outage or partition) ─▶ Unavailable after the one-way latency
    lost (loss_percent)           ─▶ Unavailable after the one-way latency
    otherwise                     ─▶ uplink delay (latency + body / bandwidth)
                                     real request to the control plane
                                     downlink delay (latency + response / bandwidth)

Downloads are delayed by their size over the link's bandwidth once the bytes are in. Every
exchange is counted in the shared `TrafficStats`, with the time the agent waited and the time
the real request took.
"""

from __future__ import annotations

import time
from pathlib import Path

from edgefleet.clock import Clock
from edgefleet.errors import Unavailable
from edgefleet.sim.network import NetworkModel
from edgefleet.sim.traffic import TrafficStats, request_kind
from edgefleet.transport.messages import Headers, Transport, TransportResponse


class SimTransport:
    def __init__(
        self, inner: Transport, network: NetworkModel, clock: Clock, stats: TrafficStats
    ) -> None:
        self._inner = inner
        self._network = network
        self._clock = clock
        self._stats = stats

    async def _reach(self, kind: str, started: float, up_bytes: int) -> None:
        """Wait out the uplink, or fail like an unreachable server."""
        network = self._network
        if network.offline(self._clock.monotonic()) or network.lost():
            await self._clock.sleep(network.one_way_s())
            self._stats.record(kind, time.perf_counter() - started, None, None)
            raise Unavailable("control plane unreachable (simulated network)")
        await self._clock.sleep(network.one_way_s(up_bytes))

    async def request(
        self,
        method: str,
        target: str,
        body: bytes,
        headers: Headers,
        timeout_s: float,
    ) -> TransportResponse:
        kind = request_kind(target)
        started = time.perf_counter()
        await self._reach(kind, started, len(body))
        sent = time.perf_counter()
        try:
            response = await self._inner.request(method, target, body, headers, timeout_s)
        except Unavailable:
            self._stats.record(kind, time.perf_counter() - started, None, None)
            raise
        server_s = time.perf_counter() - sent
        await self._clock.sleep(self._network.one_way_s(len(response.body)))
        self._stats.record(kind, time.perf_counter() - started, server_s, response.status)
        return response

    async def download(
        self,
        target: str,
        headers: Headers,
        destination: Path,
        timeout_s: float,
    ) -> TransportResponse:
        kind = request_kind(target)
        started = time.perf_counter()
        await self._reach(kind, started, 0)
        before = destination.stat().st_size if destination.exists() else 0
        sent = time.perf_counter()
        try:
            response = await self._inner.download(target, headers, destination, timeout_s)
        except Unavailable:
            self._stats.record(kind, time.perf_counter() - started, None, None)
            raise
        server_s = time.perf_counter() - sent
        after = destination.stat().st_size if destination.exists() else 0
        received = max(0, after - before) if response.status in (200, 206) else len(response.body)
        await self._clock.sleep(self._network.one_way_s(received))
        self._stats.record(kind, time.perf_counter() - started, server_s, response.status)
        return response

    async def close(self) -> None:
        await self._inner.close()
