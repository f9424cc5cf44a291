"""A virtual device: the real agent (`edgefleet.agent.agent.Agent`) with a simulated machine,
simulated processes and a simulated network in front of real HTTP.

    VirtualDevice ── Agent(settings, clock, transport=SimTransport(HttpTransport(shared
                     │      HttpClient)), hardware=SimHardware, runtime=SimRuntime,
                     │      host_metrics=SimHardware, probe_client=SimRuntime's SimProbes)
                     ├─ crash()     cancel the agent's task; `start()` again builds a new
                     │              Agent from the same data directory (key, state, journal)
                     ├─ kill()      node death: the agent and its processes are gone
                     └─ status()    phase, enrollment, install state — read from the agent

Everything the agent keeps lives in `<data root>/<device name>/`, exactly as on a device.
The battery charge the agent reports for placement is the simulated one: the agent's
`--simulated-battery file:PATH` reads it from `<data dir>/sim-battery`, which
`write_battery()` keeps current.
A crash is a cancellation: Python runs the agent's `finally` blocks, as it would on SIGTERM,
so it is a little kinder than SIGKILL; what the restart reads is what was on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from edgefleet.agent.agent import Agent
from edgefleet.agent.install_helper import InProcessHelper
from edgefleet.agent.settings import AgentSettings
from edgefleet.clock import Clock
from edgefleet.sim.blueprint import DeviceBlueprint
from edgefleet.sim.hardware import SimHardware
from edgefleet.sim.model_behaviour import BadModel
from edgefleet.sim.network import NetworkModel
from edgefleet.sim.runtime import SimProbes, SimRuntime, StatsdSender
from edgefleet.sim.traffic import TrafficStats
from edgefleet.sim.transport import SimTransport
from edgefleet.transport.http import HttpTransport
from edgefleet.transport.http_client import HttpClient

BATTERY_FILE = "sim-battery"
BATTERY_STEP_PERCENT = 0.1


class DevicePhase(StrEnum):
    IDLE = "idle"  # not started yet
    RUNNING = "running"
    CRASHED = "crashed"  # the agent is down, it will be restarted
    DEAD = "dead"  # the node is gone (until a scheduled return)


@dataclass(frozen=True)
class FleetSettings:
    """What every virtual device of one run shares."""

    server_url: str
    data_root: Path
    enroll_token: str | None
    heartbeat_interval_s: float = 30.0
    long_poll_s: float = 30.0
    min_backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    telemetry_sample_interval_s: float = 30.0
    telemetry_batch_interval_s: float = 60.0
    bad_model: BadModel = field(default_factory=BadModel)
    bad_releases: tuple[str, ...] = ()


@dataclass(frozen=True)
class DeviceStatus:
    name: str
    device_class: str
    phase: DevicePhase
    enrollment: str | None
    install: str | None  # "name@version state" of the last assignment, if any
    last_error: str | None


class VirtualDevice:
    def __init__(
        self,
        blueprint: DeviceBlueprint,
        settings: FleetSettings,
        client: HttpClient,
        clock: Clock,
        stats: TrafficStats,
        statsd: StatsdSender,
    ) -> None:
        self.blueprint = blueprint
        self._settings = settings
        self._client = client
        self._clock = clock
        self._stats = stats
        self._statsd = statsd
        seeds = random.Random(blueprint.seed)
        conditions = blueprint.device_class.network
        phase_s = seeds.uniform(0, conditions.outage.every_s) if conditions.outage else 0.0
        self.network = NetworkModel(conditions, random.Random(seeds.getrandbits(63)), phase_s)
        self._runtime_seed = seeds.getrandbits(63)
        self._agent_seed = seeds.getrandbits(63)
        self.runtime: SimRuntime | None = None
        self.hardware = SimHardware(
            blueprint.device_class.hardware,
            clock.monotonic,
            random.Random(seeds.getrandbits(63)),
            workload_cpu_percent=self._workload_cpu_percent,
        )
        self.phase = DevicePhase.IDLE
        self.agent: Agent | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop: asyncio.Event | None = None
        self._probe_client: SimProbes | None = None
        self.starts = 0
        self.crashes = 0
        self._battery_written = -1.0

    @property
    def data_dir(self) -> Path:
        return self._settings.data_root / self.blueprint.name

    @property
    def battery_file(self) -> Path:
        return self.data_dir / BATTERY_FILE

    def write_battery(self) -> None:
        """Publish the simulated charge where the agent's node status reads it (when it
        moved by 0.1 point: a battery fleet would otherwise write thousands of files)."""
        level = self.hardware.battery_percent()
        if level is None or abs(level - self._battery_written) < BATTERY_STEP_PERCENT:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        scratch = self.battery_file.with_suffix(".tmp")
        scratch.write_text(f"{level:.2f}\n")
        os.replace(scratch, self.battery_file)  # a reader never sees half a number
        self._battery_written = level

    def _workload_cpu_percent(self) -> float:
        return 0.0 if self.runtime is None else self.runtime.workload_cpu_percent()

    def agent_settings(self) -> AgentSettings:
        b, s = self.blueprint, self._settings
        return AgentSettings(
            server_url=s.server_url,
            data_dir=self.data_dir,
            enroll_token=s.enroll_token,
            name=b.name,
            labels=dict(b.labels),
            heartbeat_interval_s=s.heartbeat_interval_s,
            long_poll_s=s.long_poll_s,
            min_backoff_s=s.min_backoff_s,
            max_backoff_s=s.max_backoff_s,
            region=b.region.name,
            zone=b.zone.name,
            timezone=b.time_zone,
            latitude=round(b.latitude, 5),
            longitude=round(b.longitude, 5),
            accelerators=b.device_class.hardware.accelerators,
            statsd_port=0,
            otlp_port=None,  # simulated workloads send StatsD; no socket per device
            # Every virtual device runs the same code in one process: measuring it once per
            # device would read the package a thousand times and tell nothing.
            attestation_interval_s=0,
            telemetry_sample_interval_s=s.telemetry_sample_interval_s,
            telemetry_batch_interval_s=s.telemetry_batch_interval_s,
            simulated_battery=None
            if self.hardware.battery_percent() is None
            else f"file:{self.battery_file}",
        )

    def start(self) -> None:
        """Start (or restart) the agent from its data directory."""
        if self._task is not None and not self._task.done():
            return
        self.starts += 1
        self.write_battery()
        rng = random.Random(self._runtime_seed + self.starts)
        self.runtime = SimRuntime(
            self.blueprint.device_class.model,
            self._clock,
            rng,
            self._statsd,
            bad_model=self._settings.bad_model,
            bad_releases=self._settings.bad_releases,
        )
        self._probe_client = self.runtime.probe_client()
        transport = SimTransport(
            HttpTransport(self._settings.server_url, client=self._client),
            self.network,
            self._clock,
            self._stats,
        )
        self.agent = Agent(
            self.agent_settings(),
            clock=self._clock,
            transport=transport,
            hardware=self.hardware,
            runtime=self.runtime,
            rng=random.Random(self._agent_seed + self.starts),
            host_metrics=self.hardware,
            probe_client=self._probe_client,
            install_helper=InProcessHelper(),
        )
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self.agent.run(self._stop), name=self.blueprint.name)
        self.phase = DevicePhase.RUNNING

    async def _halt(self, graceful: bool) -> None:
        task, self._task = self._task, None
        if task is not None:
            if graceful and self._stop is not None:
                self._stop.set()
            else:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(task, return_exceptions=True)
        if self.runtime is not None:
            await self.runtime.close()
        if self._probe_client is not None:
            await self._probe_client.aclose()
            self._probe_client = None

    async def crash(self) -> None:
        """The agent dies; `start()` brings it back."""
        if self.phase is DevicePhase.RUNNING:
            self.crashes += 1
            await self._halt(graceful=False)
            self.phase = DevicePhase.CRASHED

    async def kill(self) -> None:
        """The node dies: agent and workloads gone."""
        if self.phase is not DevicePhase.DEAD:
            await self._halt(graceful=False)
            self.phase = DevicePhase.DEAD

    async def stop(self) -> None:
        """A clean shutdown at the end of a run."""
        await self._halt(graceful=True)
        if self.phase is DevicePhase.RUNNING:
            self.phase = DevicePhase.IDLE

    def failed(self) -> BaseException | None:
        """The agent's exception if its task ended by a bug (never expected)."""
        task = self._task
        if task is None or not task.done() or task.cancelled():
            return None
        return task.exception()

    def status(self) -> DeviceStatus:
        agent = self.agent
        install = None
        if agent is not None and agent.installer.record is not None:
            record = agent.installer.record
            install = f"{record.name}@{record.version} {record.state.value}"
        return DeviceStatus(
            self.blueprint.name,
            self.blueprint.device_class.name,
            self.phase,
            None if agent is None else agent.state.enrollment,
            install,
            None if agent is None else agent.last_error,
        )
