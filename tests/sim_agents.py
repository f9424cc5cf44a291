"""A virtual agent with the interface of `localfleet.AgentProcess` (start, stop, state,
device_id), so one test can run against a real agent process and a virtual one: the real
agent code with simulated hardware, processes and network, on its own event loop thread."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

from edgefleet.clock import SystemClock
from edgefleet.sim.blueprint import DeviceBlueprint
from edgefleet.sim.device import FleetSettings, VirtualDevice
from edgefleet.sim.hardware import HardwareSpec
from edgefleet.sim.model_behaviour import ModelBehaviour
from edgefleet.sim.network import NetworkConditions
from edgefleet.sim.profile import DeviceClass, Region, Zone
from edgefleet.sim.runtime import StatsdSender
from edgefleet.sim.traffic import TrafficStats
from edgefleet.transport.http_client import HttpClient

CONFORMANCE_CLASS = DeviceClass(
    "conformance",
    1.0,
    hardware=HardwareSpec(arch="x86_64", cpu_count=2, memory_mb=2048),
    network=NetworkConditions(latency_ms=2.0, jitter_ms=0.5),
    model=ModelBehaviour(requests_per_s=5.0, sandbox_s=0.2, start_s=0.2),
)


class VirtualAgentProcess:
    def __init__(
        self,
        server_url: str,
        data_dir: Path,
        enroll_token: str | None,
        name: str,
        labels: dict[str, str] | None = None,
        heartbeat_interval_s: float = 1.0,
    ) -> None:
        self.data_dir = data_dir
        self.name = name
        self.blueprint = DeviceBlueprint(
            index=0, name=data_dir.name, device_class=CONFORMANCE_CLASS,
            region=Region("lab", 1.0, "Europe/Berlin", (Zone("lab-a", 52.5, 13.4),)),
            zone=Zone("lab-a", 52.5, 13.4), latitude=52.5, longitude=13.4,
            labels=dict(labels or {}), seed=7,
        )  # fmt: skip
        self.settings = FleetSettings(
            server_url=server_url, data_root=data_dir.parent, enroll_token=enroll_token,
            heartbeat_interval_s=heartbeat_interval_s, max_backoff_s=1.0,
            telemetry_sample_interval_s=1.0, telemetry_batch_interval_s=1.0,
        )  # fmt: skip
        self.stats = TrafficStats()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self.error: BaseException | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"virtual-{self.name}")
        self._thread.start()
        self._started.wait(10)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:  # surfaced by stop()
            self.error = e

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        statsd = StatsdSender()
        async with HttpClient() as client:
            device = VirtualDevice(self.blueprint, self.settings, client, SystemClock(),
                                   self.stats, statsd)  # fmt: skip
            device.start()
            self._started.set()
            await self._stop.wait()
            await device.stop()
        statsd.close()

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(30)
        if self.error is not None:
            raise self.error

    def state(self) -> dict[str, Any]:
        path = self.data_dir / "agent-state.json"
        result: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
        return result

    @property
    def device_id(self) -> str | None:
        return self.state().get("device_id")
