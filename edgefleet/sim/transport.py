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

import random
import time
from pathlib import Path

from edgefleet.clock import Clock
from edgefleet.core.protocol import Report, from_json
from edgefleet.errors import InvalidInput, Unavailable
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


class LossyHeartbeats:
    """A link that loses this share of the periodic heartbeats on their way to the control
    plane (the agent hears the previous answer, as if this one had gone out): a lossy link
    for the failure detector, without the agent knowing (sim/faulty_agent.py)."""

    def __init__(self, inner: Transport, loss: float, rng: random.Random) -> None:
        self._inner = inner
        self._loss = loss
        self._rng = rng
        self._last_answer: TransportResponse | None = None

    async def request(
        self, method: str, target: str, body: bytes, headers: Headers, timeout_s: float
    ) -> TransportResponse:
        heartbeat = method == "POST" and target.endswith("/report") and _scheduled(body)
        if heartbeat and self._last_answer is not None and self._rng.random() < self._loss:
            return self._last_answer
        response = await self._inner.request(method, target, body, headers, timeout_s)
        if heartbeat and response.status == 200:
            self._last_answer = response
        return response

    async def download(
        self, target: str, headers: Headers, destination: Path, timeout_s: float
    ) -> TransportResponse:
        return await self._inner.download(target, headers, destination, timeout_s)

    async def close(self) -> None:
        await self._inner.close()


def _scheduled(body: bytes) -> bool:
    """Whether a report is a periodic heartbeat (an extra report on a change is never lost:
    the agent sends it at once and the control plane learns no interval from it)."""
    try:
        report = from_json(Report, body)
    except InvalidInput:
        return False
    return report.node is not None and report.node.scheduled
