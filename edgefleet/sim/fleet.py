"""A virtual fleet in one process: many `VirtualDevice`s on one event loop, one shared HTTP
connection pool to the real control plane, the profile's faults played on schedule.

    run(duration) ─┬─ start devices, ramped (so enrollment is not one thundering herd)
                   ├─ play the fault schedule: crash → restart after a delay; node death
                   │  (→ return, when scheduled); partition; battery drain
                   ├─ watch batteries: a depleted node dies
                   ├─ approve pending devices through the operator API (approve="api")
                   └─ every second: a snapshot for the live progress view
               ─▶ FleetReport (traffic, phases, enrollment, install states, faults played)

A multi-process run (`shards.py`) gives each process a slice of the same blueprint list.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from edgefleet.client import FleetClient
from edgefleet.clock import Clock, SystemClock
from edgefleet.errors import EdgefleetError
from edgefleet.sim.blueprint import DeviceBlueprint
from edgefleet.sim.device import DevicePhase, FleetSettings, VirtualDevice
from edgefleet.sim.faults import FaultEvent, FaultKind
from edgefleet.sim.runtime import StatsdSender
from edgefleet.sim.traffic import TrafficStats
from edgefleet.transport.http_client import HttpClient

log = logging.getLogger(__name__)

APPROVE_INTERVAL_S = 2.0
BATTERY_CHECK_S = 5.0
SNAPSHOT_INTERVAL_S = 1.0
MAX_EXECUTOR_THREADS = 128


@dataclass(frozen=True)
class Approval:
    """How pending devices get approved: by the enrollment token (`auto`), by this run
    through the operator API (`api`, needs an operator token), or not at all (`none`)."""

    mode: str = "auto"
    server_url: str = ""
    token: str | None = None


@dataclass
class FleetSnapshot:
    """Where a fleet (or one shard of it) stands; plain data, merged across shards."""

    devices: int = 0
    phases: Counter[str] = field(default_factory=Counter)
    enrollment: Counter[str] = field(default_factory=Counter)
    installs: Counter[str] = field(default_factory=Counter)
    faults_played: int = 0
    crashes: int = 0
    traffic: TrafficStats = field(default_factory=TrafficStats)
    elapsed_s: float = 0.0
    cpu_s: float = 0.0
    max_rss_mb: float = 0.0
    errors: list[str] = field(default_factory=list)
    measured_from_unix: float | None = None  # when traffic statistics start (after warm-up)

    def merge(self, other: FleetSnapshot) -> None:
        self.devices += other.devices
        self.phases.update(other.phases)
        self.enrollment.update(other.enrollment)
        self.installs.update(other.installs)
        self.faults_played = max(self.faults_played, other.faults_played)
        self.crashes += other.crashes
        self.traffic.merge(other.traffic)
        self.elapsed_s = max(self.elapsed_s, other.elapsed_s)
        self.cpu_s += other.cpu_s
        self.max_rss_mb = max(self.max_rss_mb, other.max_rss_mb)
        self.errors += other.errors
        if other.measured_from_unix is not None:
            self.measured_from_unix = max(self.measured_from_unix or 0.0, other.measured_from_unix)

    def to_wire(self) -> dict[str, Any]:
        return {
            "devices": self.devices, "phases": dict(self.phases),
            "enrollment": dict(self.enrollment), "installs": dict(self.installs),
            "faults_played": self.faults_played, "crashes": self.crashes,
            "traffic": self.traffic.to_wire(), "elapsed_s": self.elapsed_s,
            "cpu_s": self.cpu_s, "max_rss_mb": self.max_rss_mb, "errors": self.errors,
            "measured_from_unix": self.measured_from_unix,
        }  # fmt: skip

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> FleetSnapshot:
        return cls(
            data["devices"], Counter(data["phases"]), Counter(data["enrollment"]),
            Counter(data["installs"]), data["faults_played"], data["crashes"],
            TrafficStats.from_wire(data["traffic"]), data["elapsed_s"], data["cpu_s"],
            data["max_rss_mb"], list(data["errors"]), data.get("measured_from_unix"),
        )  # fmt: skip


def process_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def process_max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class VirtualFleet:
    def __init__(
        self,
        blueprints: Sequence[DeviceBlueprint],
        settings: FleetSettings,
        faults: Sequence[FaultEvent] = (),
        *,
        approval: Approval = Approval(),
        ramp_s: float = 0.0,
        warmup_s: float = 0.0,
        clock: Clock | None = None,
    ) -> None:
        """`warmup_s`: traffic statistics count from then on (enrollment left out)."""
        self._blueprints = list(blueprints)
        self._settings = settings
        mine = {b.index for b in self._blueprints}
        self._faults = [f for f in faults if any(i in mine for i in f.device_indices)]
        self._approval = approval
        self._ramp_s = ramp_s
        self._warmup_s = warmup_s
        self.measured_from_unix: float | None = None
        self._clock = clock or SystemClock()
        self.stats = TrafficStats()
        self.devices: dict[int, VirtualDevice] = {}
        self.faults_played = 0
        self.played: list[FaultEvent] = []
        self._started_s = 0.0
        self._cpu_at_start = 0.0

    async def run(
        self,
        duration_s: float,
        stop: asyncio.Event | None = None,
        on_snapshot: Callable[[FleetSnapshot], None] | None = None,
    ) -> FleetSnapshot:
        """Run every device for `duration_s` (or until `stop`); the final snapshot."""
        stop = stop or asyncio.Event()
        count = max(1, len(self._blueprints))
        # Every agent of the process shares the loop's executor (host readings, queue writes,
        # TUF verification, which waits on fetches): a device's default of a few threads
        # would make the devices queue behind each other.
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(max_workers=min(MAX_EXECUTOR_THREADS, max(8, count // 4)),
                               thread_name_prefix="sim-executor")
        )  # fmt: skip
        # No limit on open connections: every device holds a long poll.
        client = HttpClient(
            max_connections=None,
            max_idle_connections=count + 16,
            user_agent="edgefleet-agent (simulated)",
        )
        statsd = StatsdSender()
        self.devices = {
            b.index: VirtualDevice(b, self._settings, client, self._clock, self.stats, statsd)
            for b in self._blueprints
        }
        self._started_s = self._clock.monotonic()
        self._cpu_at_start = process_cpu_s()
        background = [
            asyncio.create_task(self._measure_after_warmup()),
            asyncio.create_task(self._start_all()),
            asyncio.create_task(self._play_faults()),
            asyncio.create_task(self._watch_batteries()),
        ]
        if self._approval.mode == "api":
            background.append(asyncio.create_task(self._approve_pending()))
        try:
            deadline = self._started_s + duration_s
            while not stop.is_set() and self._clock.monotonic() < deadline:
                wait_s = min(SNAPSHOT_INTERVAL_S, deadline - self._clock.monotonic())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=max(0.0, wait_s))
                if on_snapshot is not None:
                    on_snapshot(self.snapshot())
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            final = self.snapshot()
            await asyncio.gather(*(d.stop() for d in self.devices.values()))
            await client.aclose()
            statsd.close()
        return final

    async def _measure_after_warmup(self) -> None:
        if self._warmup_s > 0:
            await self._clock.sleep(self._warmup_s)
            self.stats.reset()
        self.measured_from_unix = time.time()

    async def _start_all(self) -> None:
        devices = list(self.devices.values())
        gap_s = self._ramp_s / len(devices) if devices else 0.0
        for device in devices:
            device.start()
            if gap_s:
                await self._clock.sleep(gap_s)
            else:
                await asyncio.sleep(0)

    async def _play_faults(self) -> None:
        for event in self._faults:
            delay = self._started_s + event.at_s - self._clock.monotonic()
            if delay > 0:
                await self._clock.sleep(delay)
            await self._apply(event)
            self.faults_played += 1
            self.played.append(event)

    async def _apply(self, event: FaultEvent) -> None:
        mine = [self.devices[i] for i in event.device_indices if i in self.devices]
        log.info("fault", extra={"kind": event.kind.value, "devices": len(mine)})
        match event.kind:
            case FaultKind.AGENT_CRASH:
                await asyncio.gather(*(d.crash() for d in mine))
                asyncio.get_running_loop().call_later(event.restart_after_s, self._restart, mine)
            case FaultKind.NODE_DEATH:
                await asyncio.gather(*(d.kill() for d in mine))
                if event.return_after_s is not None:
                    asyncio.get_running_loop().call_later(event.return_after_s, self._restart, mine)
            case FaultKind.PARTITION:
                now = self._clock.monotonic()
                for device in mine:
                    device.network.partition_until(now + event.duration_s)
            case FaultKind.BATTERY_DRAIN:
                for device in mine:
                    device.hardware.set_drain(event.drain_percent_per_hour)

    def _restart(self, devices: list[VirtualDevice]) -> None:
        for device in devices:
            if device.phase in (DevicePhase.CRASHED, DevicePhase.DEAD):
                device.start()

    async def _watch_batteries(self) -> None:
        while True:
            await self._clock.sleep(BATTERY_CHECK_S)
            for device in self.devices.values():
                if device.phase is not DevicePhase.RUNNING:
                    continue
                if device.hardware.depleted():
                    log.info("battery empty; node dies", extra={"device": device.blueprint.name})
                    await device.kill()
                else:
                    device.write_battery()

    async def _approve_pending(self) -> None:
        names = {b.name for b in self._blueprints}
        approval = self._approval
        with FleetClient(approval.server_url, approval.token) as client:
            while True:
                await self._clock.sleep(APPROVE_INTERVAL_S)
                try:
                    pending = await asyncio.to_thread(
                        client.list_devices, None, None, None, "pending"
                    )
                    for device in pending:
                        if device.get("name") in names:
                            await asyncio.to_thread(
                                client.change_enrollment, device["id"], "approve"
                            )
                except EdgefleetError as e:
                    log.warning("approving pending devices failed", extra={"error": e.message})

    def snapshot(self) -> FleetSnapshot:
        snapshot = FleetSnapshot(devices=len(self.devices), traffic=self.stats)
        for device in self.devices.values():
            status = device.status()
            snapshot.phases[status.phase.value] += 1
            snapshot.enrollment[status.enrollment or "not enrolled"] += 1
            if status.install is not None:
                snapshot.installs[status.install] += 1
            snapshot.crashes += device.crashes
            failure = device.failed()
            if failure is not None:
                snapshot.errors.append(f"{status.name}: {failure!r}")
        snapshot.faults_played = self.faults_played
        snapshot.elapsed_s = self._clock.monotonic() - self._started_s
        snapshot.cpu_s = process_cpu_s() - self._cpu_at_start
        snapshot.measured_from_unix = self.measured_from_unix
        snapshot.max_rss_mb = process_max_rss_mb()
        return snapshot
