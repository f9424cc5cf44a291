"""Export stored telemetry windows as OTLP metrics to a collector (EDGEFLEET_OTLP_ENDPOINT).

    ingest (a request thread) ── offer() ──▶ bounded queue ──▶ run_forever() (event loop)
                                   │ full: drop, count            │ batches of at most
                                   ▼                              ▼ otlp_batch_max_windows
                 edgefleet_otlp_dropped_windows_total   POST {endpoint}/v1/metrics

Ingest never waits for the collector: `offer` only appends to a queue bounded by
`otlp_queue_max_windows` and returns; a batch of windows that does not fit is dropped whole
and counted (`reason="queue_full"`). The loop sends the oldest windows first, one request
at a time, each device's windows under a resource naming it (`device.id`,
`edgefleet.device.name`, `edgefleet.label.<key>`, `edgefleet.release.name` and
`.version` of the release it runs, `service.name` = edgefleet-device). A request the
collector could not take now (connection error, timeout, 408, 429, 5xx) is sent again
after an exponential backoff with jitter, for as long as it takes: meanwhile the queue
fills and what overflows it is counted. A request refused for good (another 4xx) and the
points a collector reports as rejected (`partial_success`) are dropped and counted
(`reason="rejected"`). Each replica exports the windows it stored itself.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import httpx

from edgefleet import __version__
from edgefleet.core.backoff import backoff_delay_s
from edgefleet.core.device import Device
from edgefleet.core.telemetry.windows import Window
from edgefleet.errors import EdgefleetError
from edgefleet.server.metrics import ServerMetrics
from edgefleet.transport.otlp import PROTOBUF_CONTENT_TYPE, decode_response, encode_windows

log = logging.getLogger(__name__)

METRICS_PATH = "/v1/metrics"
MIN_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
RETRYABLE_STATUSES = frozenset({408, 429, 502, 503, 504})


@dataclass(frozen=True)
class _Queued:
    resource: Mapping[str, str]
    windows: Sequence[Window]


def resource_attributes(device: Device) -> dict[str, str]:
    """The OTLP resource of a device's windows."""
    attributes = {
        "service.name": "edgefleet-device",
        "device.id": device.id,
        "edgefleet.device.name": device.name,
    }
    for key, value in device.labels.items():
        attributes[f"edgefleet.label.{key}"] = value
    active = (device.release_status or {}).get("active")
    if isinstance(active, Mapping):
        attributes["edgefleet.release.name"] = str(active.get("name", ""))
        attributes["edgefleet.release.version"] = str(active.get("version", ""))
    return attributes


def parse_headers(text: str) -> dict[str, str]:
    """`key=value,key2=value2` (as OTEL_EXPORTER_OTLP_HEADERS) as a mapping.

    >>> parse_headers("authorization=Bearer abc, x-tenant=edge")
    {'authorization': 'Bearer abc', 'x-tenant': 'edge'}
    """
    headers: dict[str, str] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        key, equals, value = item.partition("=")
        if not equals or not key.strip():
            raise ValueError(f"expected key=value, got {item.strip()[:40]!r}")
        headers[key.strip()] = value.strip()
    return headers


class OtlpExporter:
    def __init__(
        self,
        endpoint: str,
        headers: Mapping[str, str],
        metrics: ServerMetrics,
        *,
        queue_max_windows: int,
        batch_max_windows: int,
        timeout_s: float,
        transport: httpx.AsyncBaseTransport | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._url = endpoint.rstrip("/") + METRICS_PATH
        self._headers = {**headers, "content-type": PROTOBUF_CONTENT_TYPE}
        self._metrics = metrics
        self._queue_max = queue_max_windows
        self._batch_max = batch_max_windows
        self._timeout_s = timeout_s
        self._transport = transport
        self._rng = rng or random.Random()
        self._queue: deque[_Queued] = deque()
        self._queued_windows = 0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()

    @property
    def queued_windows(self) -> int:
        return self._queued_windows

    def offer(self, device: Device, windows: Sequence[Window]) -> None:
        """Queue a device's stored windows for export; never blocks (drops when full)."""
        if not windows:
            return
        with self._lock:
            if self._queued_windows + len(windows) > self._queue_max:
                self._metrics.otlp_dropped_windows.inc("queue_full", amount=len(windows))
                return
            self._queue.append(_Queued(resource_attributes(device), windows))
            self._queued_windows += len(windows)
            self._metrics.otlp_queued_windows.set(self._queued_windows)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    def _take(self) -> list[_Queued]:
        """The oldest queued windows, at most one batch's worth (a device's windows may be
        split across batches)."""
        taken: list[_Queued] = []
        room = self._batch_max
        with self._lock:
            while self._queue and room > 0:
                head = self._queue.popleft()
                if len(head.windows) > room:
                    self._queue.appendleft(_Queued(head.resource, head.windows[room:]))
                    head = _Queued(head.resource, head.windows[:room])
                taken.append(head)
                room -= len(head.windows)
            self._queued_windows -= self._batch_max - room
            self._metrics.otlp_queued_windows.set(self._queued_windows)
        return taken

    async def run_forever(self) -> None:
        """Send queued windows until cancelled."""
        self._loop = asyncio.get_running_loop()
        async with httpx.AsyncClient(transport=self._transport, timeout=self._timeout_s) as client:
            while True:
                batch = self._take()
                if not batch:
                    self._wake.clear()
                    if not self._queued_windows:
                        await self._wake.wait()
                    continue
                await self._send(client, batch)

    async def _send(self, client: httpx.AsyncClient, batch: list[_Queued]) -> None:
        windows = sum(len(q.windows) for q in batch)
        body = encode_windows([(q.resource, q.windows) for q in batch], "edgefleet", __version__)
        failures = 0
        while True:
            try:
                response = await client.post(self._url, content=body, headers=self._headers)
            except httpx.HTTPError as e:
                outcome, detail = "retry", f"{type(e).__name__}: {e}"
            else:
                outcome, detail = self._judge(response, windows)
            self._metrics.otlp_export_requests.inc(outcome)
            if outcome != "retry":
                return
            failures += 1
            delay_s = backoff_delay_s(failures - 1, MIN_BACKOFF_S, MAX_BACKOFF_S, self._rng)
            log.log(logging.INFO if failures == 1 else logging.WARNING,
                    "OTLP export failed; retrying", extra={
                        "url": self._url, "error": detail, "failures": failures,
                        "windows": windows, "retry_in_s": round(delay_s, 2)})  # fmt: skip
            await asyncio.sleep(delay_s)

    def _judge(self, response: httpx.Response, windows: int) -> tuple[str, str]:
        status = response.status_code
        if status in RETRYABLE_STATUSES or status >= 500:
            return "retry", f"status {status}"
        if status >= 300:
            self._metrics.otlp_dropped_windows.inc("rejected", amount=windows)
            log.error("OTLP export refused; windows dropped", extra={
                "url": self._url, "status": status, "windows": windows,
                "body": response.text[:200]})  # fmt: skip
            return "rejected", ""
        rejected, message = 0, ""
        try:
            rejected, message = decode_response(response.content)
        except EdgefleetError:
            log.warning("OTLP collector answered with an unreadable body",
                        extra={"url": self._url})  # fmt: skip
        # The collector counts data points, and each window is one.
        self._metrics.otlp_exported_windows.inc(amount=windows - min(rejected, windows))
        if rejected:
            self._metrics.otlp_dropped_windows.inc("rejected", amount=min(rejected, windows))
            log.warning("OTLP collector rejected points", extra={
                "url": self._url, "rejected": rejected, "error": message[:200]})  # fmt: skip
        return "ok", ""
