"""A light virtual device over HTTP: the idle agent's traffic on connections of its own.

    HttpDeviceLoop.run()
      enroll (signed POST /v1/enroll, idempotent) ─▶ first report, with the inventory
      ├─ heartbeats   a signed report every heartbeat interval (±10 %, as the agent), and
      │               one at once after a new desired state was taken
      ├─ long poll    GET /v1/devices/{id}/desired?wait=30 with the generation it holds
      │               (If-None-Match), on a second connection as the agent's pool does
      └─ telemetry    every upload interval, the batches cut each minute since, one signed
                      POST each, in sequence order

Each device keeps its two keep-alive connections (`HttpLine`, bound to the device's own
loopback source address so that many devices do not run out of ephemeral ports), signs
every request with its own key, and counts what it sent and what came back in the shared
`LoadStats`. A failed exchange closes the connection; the next one opens a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Mapping

from edgefleet.clock import SystemClock
from edgefleet.core.backoff import jittered_interval_s
from edgefleet.core.protocol import to_json
from edgefleet.errors import Unavailable
from edgefleet.security.request_signing import sign_request
from edgefleet.sim.load_device import TELEMETRY_WINDOW_S, LoadDevice
from edgefleet.sim.load_stats import LoadSettings, LoadStats
from edgefleet.transport.http_connection import STREAM_LIMIT_BYTES, Connection
from edgefleet.transport.http_wire import (
    Origin,
    ProtocolError,
    decode_gzip,
    encode_request_head,
    merge_headers,
)

HEARTBEAT_JITTER = 0.1  # as the agent's
TELEMETRY_CONTENT_TYPE = "application/x-edgefleet-telemetry"
MAX_BODY_BYTES = 4 << 20
RETRY_S = (1.0, 5.0)  # after a failed exchange, wait a random time in this range
_CLOCK = SystemClock()


class HttpLine:
    """One keep-alive HTTP/1.1 connection of one device, from its own source address;
    exchanges on it take turns."""

    def __init__(self, origin: Origin, source_address: str | None) -> None:
        self._origin = origin
        self._source = source_address
        self._connection: Connection | None = None
        self._turn = asyncio.Lock()

    async def exchange(
        self,
        method: str,
        target: str,
        body: bytes,
        headers: Callable[[], Mapping[str, str]],
        timeout_s: float,
    ) -> tuple[int, bytes]:
        """(status, body) of one request; Unavailable when no answer came (the connection
        is then dropped). `headers` are made anew for a second attempt on a fresh
        connection, made, as the agent's client does, when a reused one turns out closed
        before anything was sent (or the request is a GET) and nothing came back."""
        try:
            async with asyncio.timeout(timeout_s), self._turn:
                try:
                    return await self._attempt(method, target, body, headers())
                except (OSError, EOFError):
                    connection = self._connection
                    self.close()
                    if connection is None or not connection.reused or connection.received_any:
                        raise
                    if connection.sent_any and method != "GET":
                        raise
                    return await self._attempt(method, target, body, headers())
        except (OSError, EOFError, ProtocolError, TimeoutError) as e:
            self.close()
            raise Unavailable(f"{method} {target}: {type(e).__name__}: {e}") from None
        except BaseException:
            self.close()  # cancelled in the middle of an exchange: the connection is unusable
            raise

    async def _attempt(
        self, method: str, target: str, body: bytes, headers: Mapping[str, str]
    ) -> tuple[int, bytes]:
        fields = merge_headers({"user-agent": "edgefleet-load", "accept-encoding": "gzip"},
                               headers)  # fmt: skip
        head = encode_request_head(method, target, self._origin, fields, len(body))
        connection = await self._connect()
        await connection.send(head, body)
        response = await connection.read_head(method)
        content = b"".join([piece async for piece in connection.iter_body(response)])
        connection.park()
        if not response.keep_alive:
            self.close()
        if response.headers.get("content-encoding", "").strip().lower() == "gzip":
            content = decode_gzip(content, MAX_BODY_BYTES)
        return response.status, content

    async def _connect(self) -> Connection:
        if self._connection is None:
            reader, writer = await asyncio.open_connection(
                self._origin.host, self._origin.port, limit=STREAM_LIMIT_BYTES,
                local_addr=(self._source, 0) if self._source else None,
            )  # fmt: skip
            self._connection = Connection(self._origin, reader, writer)
        return self._connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


async def signed_exchange(
    line: HttpLine, device: LoadDevice, stats: LoadStats, kind: str, method: str, target: str,
    body: bytes = b"", extra: Mapping[str, str] | None = None, timeout_s: float = 15.0,
) -> tuple[int, bytes] | None:  # fmt: skip
    """One request signed by `device`, counted under `kind`; None when no answer came."""

    def headers() -> dict[str, str]:
        signed = sign_request(device.key, method, target, body, device.device_id,
                              _CLOCK.now())  # fmt: skip
        return {"content-type": "application/json", **(extra or {}), **signed}

    started = time.perf_counter()
    try:
        status, content = await line.exchange(method, target, body, headers, timeout_s)
    except Unavailable as e:
        stats.answered(kind, time.perf_counter() - started, None, str(e))
        return None
    detail = None if status < 400 else f"{kind} {status}: {content[:200]!r}"
    stats.answered(kind, time.perf_counter() - started, status, detail)
    return status, content


async def enroll(
    line: HttpLine, device: LoadDevice, settings: LoadSettings, stats: LoadStats,
    stop: asyncio.Event,
) -> float | None:  # fmt: skip
    """Enroll `device` (idempotent): the heartbeat interval it is to keep, or None when it
    was refused, not approved, or the run stopped first."""
    request = device.enroll_request(settings.enroll_token, settings.heartbeat_interval_s)
    for _ in range(settings.enroll_attempts):
        async with stats.enrolling:
            if stop.is_set():  # waited for a slot past the end of the run
                return None
            answer = await signed_exchange(line, device, stats, "enroll", "POST", "/v1/enroll",
                                           to_json(request), timeout_s=60.0)  # fmt: skip
        if answer is not None and answer[0] < 300:
            enrolled = json.loads(answer[1])
            if enrolled.get("enrollment") == "approved":
                stats.enrolled += 1
                return float(enrolled["heartbeat_interval_s"])
        if answer is not None and 400 <= answer[0] < 500 and answer[0] != 429:
            break  # refused for good (a bad token, a taken name)
        if await pause(stop, device.rng.uniform(*RETRY_S)):
            break
    stats.enroll_failed += 1
    return None


async def pause(stop: asyncio.Event, seconds: float, wake: asyncio.Event | None = None) -> bool:
    """Sleep `seconds` (or until `wake` is set); True when the run is stopping."""
    waits = [asyncio.ensure_future(stop.wait())]
    if wake is not None:
        waits.append(asyncio.ensure_future(wake.wait()))
    try:
        await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waits:
            waiter.cancel()
    return stop.is_set()


class HttpDeviceLoop:
    """One virtual device's life over HTTP until `stop` is set."""

    def __init__(
        self,
        device: LoadDevice,
        origin: Origin,
        source_address: str | None,
        settings: LoadSettings,
        stats: LoadStats,
        stop: asyncio.Event,
    ) -> None:
        self._device = device
        self._settings = settings
        self._stats = stats
        self._stop = stop
        self._main = HttpLine(origin, source_address)
        self._poll = HttpLine(origin, source_address)
        self._report_now = asyncio.Event()
        self._heartbeat_s = settings.heartbeat_interval_s

    async def run(self) -> None:
        try:
            heartbeat_s = await enroll(self._main, self._device, self._settings, self._stats,
                                       self._stop)  # fmt: skip
            if heartbeat_s is None:
                return
            self._heartbeat_s = heartbeat_s
            await self._report(scheduled=False)
            poll = asyncio.create_task(self._poll_loop())
            try:
                await asyncio.gather(self._heartbeat_loop(), self._telemetry_loop())
            finally:
                poll.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await poll
        finally:
            self._main.close()
            self._poll.close()

    async def _report(self, *, scheduled: bool) -> None:
        device = self._device
        body = to_json(device.report(time.monotonic(), scheduled=scheduled))
        target = f"/v1/devices/{device.device_id}/report"
        self._stats.reports_sent += 1
        answer = await signed_exchange(
            self._main, self._device, self._stats, "report", "POST", target, body
        )
        if answer is None or answer[0] >= 300:
            self._stats.reports_failed += 1
            return
        parsed = json.loads(answer[1])
        device.answered(parsed)
        self._heartbeat_s = float(parsed.get("heartbeat_interval_s", self._heartbeat_s))

    async def _heartbeat_loop(self) -> None:
        while True:
            delay = jittered_interval_s(self._heartbeat_s, HEARTBEAT_JITTER, self._device.rng)
            if await self._pause(delay, self._report_now):
                return
            asked = self._report_now.is_set()
            self._report_now.clear()
            await self._report(scheduled=not asked)

    async def _poll_loop(self) -> None:
        device = self._device
        wait_s = self._settings.long_poll_s
        target = f"/v1/devices/{device.device_id}/desired?wait={wait_s:g}"
        while True:
            held = device.applied_generation
            extra = {"if-none-match": f'"{held}"'} if device.desired_seen else {}
            answer = await signed_exchange(self._poll, device, self._stats, "desired", "GET",
                                           target, b"", extra, timeout_s=wait_s + 10)  # fmt: skip
            if answer is None or answer[0] >= 400:
                await asyncio.sleep(self._retry_s())
                continue
            if answer[0] == 304:
                continue
            generation = int(json.loads(answer[1])["generation"])
            if device.desired_seen and generation != device.applied_generation:
                self._stats.desired_update(time.time())
            if not device.desired_seen:
                self._stats.online += 1
            device.desired_seen = True
            if generation != device.applied_generation:
                device.applied_generation = generation
                self._report_now.set()  # as the agent: report what it applied at once

    async def _telemetry_loop(self) -> None:
        device = self._device
        interval_s = self._settings.telemetry_upload_interval_s
        if interval_s <= 0:
            return
        # Devices start uploading at random points of the interval, as a fleet does.
        if await self._pause(device.rng.uniform(0, interval_s)):
            return
        while True:
            for _ in range(max(1, round(interval_s / TELEMETRY_WINDOW_S))):
                await self._upload(*device.telemetry_batch(time.time()))
            if await self._pause(interval_s):
                return

    async def _upload(self, seq: int, payload: bytes) -> None:
        device = self._device
        dropped = device.telemetry_acked_through
        target = f"/v1/devices/{device.device_id}/telemetry?dropped_through_seq={dropped}"
        self._stats.telemetry_sent += 1
        kind = {"content-type": TELEMETRY_CONTENT_TYPE}
        answer = await signed_exchange(self._main, device, self._stats, "telemetry", "POST",
                                       target, payload, kind)  # fmt: skip
        if answer is None or answer[0] >= 300:
            self._stats.telemetry_failed += 1
            # Declared gone next time: a load run does not resend (the server says a gap).
            device.telemetry_acked_through = seq
            return
        device.telemetry_acked_through = int(json.loads(answer[1])["acked_through_seq"])

    def _retry_s(self) -> float:
        return self._device.rng.uniform(*RETRY_S)

    async def _pause(self, seconds: float, wake: asyncio.Event | None = None) -> bool:
        return await pause(self._stop, seconds, wake)
