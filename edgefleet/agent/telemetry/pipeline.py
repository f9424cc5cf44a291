"""The agent's telemetry pipeline: collector, StatsD endpoint, on-disk queue and uploader.

    StatsD (loopback UDP) ──────┐
    OTLP/HTTP (loopback TCP) ───┤
    host metrics ───────────────┴▶ TelemetryCollector ─▶ TelemetryQueue (data dir, SQLite)
                                                         │
                           control plane ◀── TelemetryUploader (signed POSTs, acks)

Two loops run beside the agent's connection: *collect* (a tick every sample interval: read
the host, close ended windows, cut a batch into the queue when due) and *upload* (every
upload interval of the current sampling decision, or sooner when the policy changes: drain
the queue; exponential backoff with jitter while the server is unreachable). Both go on
while the control plane is away; the queue is bounded and counts what it drops.

The StatsD endpoint listens on `127.0.0.1:<statsd_port>` (0: any free port). If the port is
taken (another agent on the machine), it falls back to a free one with a warning. The bound
address is written to `<data dir>/statsd.address`, and the release service gets it as
EDGEFLEET_STATSD in its environment. The OTLP/HTTP metrics endpoint (`otlp_port`, default
4318, None: off) falls back the same way; its address is in `<data dir>/otlp.address`, and
workloads get it as EDGEFLEET_OTLP and OTEL_EXPORTER_OTLP_METRICS_ENDPOINT, so an
OpenTelemetry SDK exports its metrics to the agent without configuration.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from edgefleet.agent.link import ControlPlaneLink
from edgefleet.agent.settings import AgentSettings
from edgefleet.agent.telemetry.collector import TelemetryCollector
from edgefleet.agent.telemetry.host_metrics import HostMetricsCollector
from edgefleet.agent.telemetry.otlp_receiver import OtlpReceiver, start_otlp_receiver
from edgefleet.agent.telemetry.queue import TelemetryQueue
from edgefleet.agent.telemetry.sealing import SealingTelemetryLink
from edgefleet.agent.telemetry.statsd import StatsdServer, start_statsd_server
from edgefleet.agent.telemetry.uploader import TelemetryUploader
from edgefleet.atomicfile import write_atomically
from edgefleet.clock import Clock
from edgefleet.core.backoff import backoff_delay_s
from edgefleet.core.telemetry.windows import MetricPoint
from edgefleet.errors import EdgefleetError

log = logging.getLogger(__name__)

STATSD_ADDRESS_FILE = "statsd.address"
OTLP_ADDRESS_FILE = "otlp.address"
STATSD_HOST = "127.0.0.1"
# At stop, datagrams still waiting in the StatsD socket are read until none came for this
# long (the event loop reads one datagram per turn).
STATSD_DRAIN_QUIET_S = 0.05


class HostReader(Protocol):
    """Reads the host's baseline metrics (HostMetricsCollector; the simulator's own)."""

    def collect(self) -> list[MetricPoint]: ...


class TelemetryPipeline:
    def __init__(
        self,
        settings: AgentSettings,
        link: ControlPlaneLink,
        clock: Clock,
        ready: Callable[[], bool],
        rng: random.Random | None = None,
        host: HostReader | None = None,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._ready = ready
        self._rng = rng or random.Random()
        self._data_dir = settings.data_dir
        self.queue = TelemetryQueue.in_data_dir(
            settings.data_dir,
            max_bytes=settings.telemetry_queue_max_bytes,
            max_rows=settings.telemetry_queue_max_rows,
        )
        self.collector = TelemetryCollector(
            self.queue,
            sample_interval_s=settings.telemetry_sample_interval_s,
            batch_interval_s=settings.telemetry_batch_interval_s,
        )
        self.sealing = SealingTelemetryLink(link, required=settings.seal_telemetry)
        self.uploader = TelemetryUploader(self.queue, self.sealing)
        self._host: HostReader = host or HostMetricsCollector(settings.data_dir)
        self._statsd: StatsdServer | None = None
        self._otlp: OtlpReceiver | None = None
        self._upload_now = asyncio.Event()

    @property
    def statsd_address(self) -> str | None:
        return None if self._statsd is None else f"{STATSD_HOST}:{self._statsd.port}"

    @property
    def otlp_address(self) -> str | None:
        return None if self._otlp is None else f"{STATSD_HOST}:{self._otlp.port}"

    def apply(self, section: Mapping[str, Any] | None) -> None:
        """Follow the desired state's `telemetry` section (None: the default policy)."""
        if self.sealing.use(section.get("sealing") if section else None):
            self._upload_now.set()  # batches held back for want of an ingest key go now
        if self.collector.apply_section(section, self._clock.now()):
            self._upload_now.set()  # a shorter upload interval takes effect now

    async def start(self) -> None:
        """Bind the StatsD and OTLP endpoints (before any workload starts, so it gets the
        addresses)."""
        port = self._settings.statsd_port
        try:
            self._statsd = await start_statsd_server(
                self.collector.aggregator, self._clock, host=STATSD_HOST, port=port
            )
        except OSError as e:
            log.warning(
                "StatsD port unavailable; using a free one instead",
                extra={"port": port, "error": str(e)},
            )
            self._statsd = await start_statsd_server(
                self.collector.aggregator, self._clock, host=STATSD_HOST, port=0
            )
        address = self.statsd_address or ""
        write_atomically(self._data_dir / STATSD_ADDRESS_FILE, (address + "\n").encode())
        otlp_port = self._settings.otlp_port
        (self._data_dir / OTLP_ADDRESS_FILE).unlink(missing_ok=True)
        if otlp_port is not None:
            aggregator = self.collector.aggregator
            try:
                self._otlp = await start_otlp_receiver(aggregator, self._clock, port=otlp_port)
            except OSError as e:
                log.warning(
                    "OTLP port unavailable; using a free one instead",
                    extra={"port": otlp_port, "error": str(e)},
                )
                self._otlp = await start_otlp_receiver(aggregator, self._clock, port=0)
            write_atomically(self._data_dir / OTLP_ADDRESS_FILE,
                             f"{self.otlp_address}\n".encode())  # fmt: skip
        log.info(
            "telemetry collecting",
            extra={"statsd": address, "otlp": self.otlp_address, "queue": str(self.queue.path)},
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Collect and upload until `stop` is set; then take in the StatsD datagrams already
        sent and cut what is open into the queue (set `stop` after the services measured
        have stopped, and nothing they counted is lost)."""
        uploading = asyncio.create_task(self._upload_loop())
        try:
            await self._collect_loop(stop)
        finally:
            uploading.cancel()
            await asyncio.gather(uploading, return_exceptions=True)
            await self._drain_statsd()
            await self._flush()
            if self._statsd is not None:
                self._statsd.close()
            if self._otlp is not None:
                self._otlp.close()
            self.queue.close()

    async def _collect_loop(self, stop: asyncio.Event) -> None:
        collector = self.collector
        while not stop.is_set():
            try:
                points = await asyncio.to_thread(self._host.collect)
                if collector.observe(points, self._clock.now()):
                    self._upload_now.set()
                collector.close_due(self._clock.now())
                monotonic_s = self._clock.monotonic()
                if collector.cut_due(monotonic_s):
                    await self._append(collector.take_batch(monotonic_s))
            except EdgefleetError as e:
                log.error("telemetry collection failed; carrying on", extra={"error": e.message})
            await self._clock.pause(collector.tick_s, stop)

    async def _append(self, windows: list[Any]) -> None:
        try:
            await asyncio.to_thread(self.collector.append, windows)
        except EdgefleetError as e:
            # The disk is full or failing, or one batch exceeds the whole queue: these
            # windows are lost, the next batch tries again.
            log.error(
                "telemetry batch could not be queued",
                extra={"windows": len(windows), "code": e.code, "error": e.message},
            )

    async def _drain_statsd(self) -> None:
        if self._statsd is None:
            return
        while True:
            seen = self._statsd.stats.datagrams
            # Real time, not the clock: this waits for the event loop to read a socket.
            await asyncio.sleep(STATSD_DRAIN_QUIET_S)
            if self._statsd.stats.datagrams == seen:
                return

    async def _flush(self) -> None:
        self.collector.close_all(self._clock.now())
        while self.collector.pending_windows:
            await self._append(self.collector.take_batch(self._clock.monotonic()))

    async def _upload_loop(self) -> None:
        failures = 0
        settings = self._settings
        while True:
            if failures:
                delay = backoff_delay_s(
                    failures - 1, settings.min_backoff_s, settings.max_backoff_s, self._rng
                )
            else:
                delay = float(self.collector.decision.upload_interval_s)
            await self._clock.pause(delay, self._upload_now)
            self._upload_now.clear()
            if not self._ready():
                continue
            try:
                sent = await self.uploader.upload_pending()
            except EdgefleetError as e:
                failures += 1
                log.log(
                    logging.INFO if failures == 1 else logging.WARNING,
                    "telemetry upload failed; backing off",
                    extra={"code": e.code, "error": e.message, "failures": failures},
                )
                continue
            failures = 0
            if sent:
                log.debug("telemetry uploaded", extra={"batches": sent})
