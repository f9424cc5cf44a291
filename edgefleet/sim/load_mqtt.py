"""A light virtual device over MQTT: the idle agent's traffic on the MQTT device channel.

    MqttDeviceLoop.run()
      enroll over HTTP (signed, idempotent) ─▶ GET /v1/devices/{id}/broker (its broker
      credentials, signed) ─▶ the HTTP connection closes (bulk downloads only use it)
      ─▶ MQTT 5 CONNECT (clean start, keep-alive 60 s, a signed Will `offline` on its
      presence topic) ─▶ SUBSCRIBE to its desired topic ─▶ a signed `online`
      ├─ heartbeats   the protocol's binary Report, QoS 1, every heartbeat interval (±10 %)
      │               — the one its desired state tells it (an idle device on MQTT: the
      │               long idle interval) — and at once after a new desired state arrived
      ├─ desired      the retained document on subscribing, then every change, pushed
      └─ telemetry    every upload interval, one QoS 1 message per minute's batch

With `--no-presence` a device neither says `online` nor leaves a Will, and reports every
`--heartbeat-interval` whatever it is told: the traffic of a node hosting replicas.

Every message is signed as the agent signs it (`security/message_signing.py`: the topic,
the payload, a timestamp and a sequence number that only grows; the run starts its
numbers at the current time in microseconds, so they grow across runs too).

`MqttLine` is a minimal MQTT 5 client on asyncio streams (CONNECT, PUBLISH QoS 1 with
user properties, SUBSCRIBE, PUBACK, PINGREQ): paho-mqtt, which the agent uses, runs a
thread per connection, which thousands of devices in one process cannot afford.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Sequence

from edgefleet.clock import SystemClock
from edgefleet.core.backoff import jittered_interval_s
from edgefleet.core.presence import PresenceState
from edgefleet.core.protocol import to_binary
from edgefleet.errors import Unavailable
from edgefleet.security.message_signing import sign_message
from edgefleet.sim.load_device import TELEMETRY_WINDOW_S, LoadDevice
from edgefleet.sim.load_http import HEARTBEAT_JITTER, HttpLine, enroll, pause, signed_exchange
from edgefleet.sim.load_stats import LoadSettings, LoadStats
from edgefleet.transport.http_wire import Origin
from edgefleet.transport.mqtt_client import BrokerUrl
from edgefleet.transport.mqtt_topics import Channel, device_topic

KEEPALIVE_S = 60  # as the agent's
PUBACK_TIMEOUT_S = 15.0
CONNECT_TIMEOUT_S = 30.0
RECONNECT_S = (1.0, 10.0)
BROKER_CREDENTIALS_TIMEOUT_S = 60.0
DROPPED_THROUGH = "dropped"  # the telemetry message's property (as the control plane reads it)

_CONNECT, _CONNACK, _PUBLISH, _PUBACK = 0x10, 0x20, 0x30, 0x40
_SUBSCRIBE, _SUBACK, _PINGREQ, _PINGRESP, _DISCONNECT = 0x82, 0x90, 0xC0, 0xD0, 0xE0
_USER_PROPERTY = 0x26
_CLOCK = SystemClock()
Message = tuple[str, bytes, Sequence[tuple[str, str]]]  # topic, payload, user properties


def _varint(value: int) -> bytes:
    """MQTT's variable byte integer.

    >>> _varint(321).hex()
    'c102'
    """
    out = bytearray()
    while True:
        byte, value = value % 128, value // 128
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _decode_varint(data: bytes, at: int) -> tuple[int, int]:
    """(value, offset after it)."""
    value, shift = 0, 0
    while True:
        byte = data[at]
        value += (byte & 0x7F) << shift
        at += 1
        if not byte & 0x80:
            return value, at
        shift += 7


def _string(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return len(raw).to_bytes(2, "big") + raw


def _packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + _varint(len(body)) + body


def _properties(user: Sequence[tuple[str, str]]) -> bytes:
    encoded = b"".join(bytes([_USER_PROPERTY]) + _string(k) + _string(v) for k, v in user)
    return _varint(len(encoded)) + encoded


class MqttLine:
    """One MQTT 5 connection of one device. `on_message(topic, payload)` gets what the
    broker delivers (QoS 1 acknowledged after the call)."""

    def __init__(self, url: BrokerUrl, source_address: str | None) -> None:
        self._url = url
        self._source = source_address
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._acks: dict[int, asyncio.Future[int]] = {}
        self._next_id = 0
        self._last_sent_s = 0.0
        self._will = False
        self.messages: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self.lost = asyncio.Event()

    async def connect(self, client_id: str, username: str, password: str,
                      will: Message | None = None) -> None:  # fmt: skip
        """Connect (with a Last Will, QoS 1, when given) and wait for the CONNACK;
        Unavailable when refused or unreachable."""
        self.lost.clear()
        self._will = will is not None
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                reader, writer = await asyncio.open_connection(
                    self._url.host, self._url.port,
                    local_addr=(self._source, 0) if self._source else None,
                )  # fmt: skip
                self._writer = writer
                flags = 0x80 | 0x40 | 0x02  # username, password, clean start
                last_will = b""
                if will is not None:
                    flags |= 0x04 | 0x08  # a Will, at QoS 1
                    topic, payload, properties = will
                    last_will = _properties(properties) + _string(topic) + _string(payload)
                header = _string("MQTT") + bytes([5, flags]) + KEEPALIVE_S.to_bytes(2, "big")
                body = header + _varint(0) + _string(client_id) + last_will + _string(username)
                writer.write(_packet(_CONNECT, body + _string(password)))
                await writer.drain()
                first, data = await self._read_packet(reader)
        except (OSError, EOFError, TimeoutError, asyncio.IncompleteReadError) as e:
            self.close()
            raise Unavailable(f"MQTT connect: {type(e).__name__}: {e}") from None
        if first & 0xF0 != _CONNACK or len(data) < 2 or data[1] != 0:
            self.close()
            raise Unavailable(f"MQTT connect refused: reason {data[1] if len(data) > 1 else '?'}")
        self._last_sent_s = time.monotonic()
        self._reader_task = asyncio.create_task(self._read_forever(reader))

    async def subscribe(self, topic: str) -> None:
        packet_id = self._packet_id()
        body = packet_id.to_bytes(2, "big") + _varint(0) + _string(topic) + bytes([1])
        await self._exchange(packet_id, _packet(_SUBSCRIBE, body))

    async def publish(
        self, topic: str, payload: bytes, properties: Sequence[tuple[str, str]]
    ) -> None:
        """Publish at QoS 1 and wait for the PUBACK; Unavailable when it does not come or
        says the message was refused."""
        packet_id = self._packet_id()
        head = _string(topic) + packet_id.to_bytes(2, "big") + _properties(properties)
        reason = await self._exchange(packet_id, _packet(_PUBLISH | 0x02, head + payload))
        if reason >= 0x80:
            raise Unavailable(f"MQTT publish refused: reason {reason:#x}")

    async def keep_alive(self) -> None:
        """Send a PINGREQ whenever nothing was sent for most of the keep-alive."""
        while not self.lost.is_set():
            due = self._last_sent_s + KEEPALIVE_S * 0.75 - time.monotonic()
            if due <= 0:
                self._send(_packet(_PINGREQ, b""))
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.lost.wait(), due)

    def _packet_id(self) -> int:
        self._next_id = self._next_id % 65535 + 1
        return self._next_id

    def _send(self, packet: bytes) -> None:
        if self._writer is None or self.lost.is_set():
            raise Unavailable("MQTT connection lost")
        self._writer.write(packet)
        self._last_sent_s = time.monotonic()

    async def _exchange(self, packet_id: int, packet: bytes) -> int:
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._acks[packet_id] = done
        try:
            self._send(packet)
            async with asyncio.timeout(PUBACK_TIMEOUT_S):
                lost: asyncio.Future[bool] = asyncio.ensure_future(self.lost.wait())
                try:
                    await asyncio.wait((done, lost), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    lost.cancel()
        except TimeoutError:
            raise Unavailable("MQTT: no acknowledgement in time") from None
        finally:
            self._acks.pop(packet_id, None)
        if not done.done():
            raise Unavailable("MQTT connection lost before the acknowledgement")
        return done.result()

    @staticmethod
    async def _read_packet(reader: asyncio.StreamReader) -> tuple[int, bytes]:
        first = (await reader.readexactly(1))[0]
        length, shift = 0, 0
        while True:
            byte = (await reader.readexactly(1))[0]
            length += (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        return first, await reader.readexactly(length)

    async def _read_forever(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                first, data = await self._read_packet(reader)
                kind = first & 0xF0
                if kind in (_PUBACK, _SUBACK & 0xF0):
                    packet_id = int.from_bytes(data[:2], "big")
                    reason = data[2] if kind == _PUBACK and len(data) > 2 else 0
                    if kind != _PUBACK:  # SUBACK: the granted QoS after the properties
                        _, at = _decode_varint(data, 2)
                        reason = data[at] if at < len(data) else 0x80
                    waiter = self._acks.get(packet_id)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(reason)
                elif kind == _PUBLISH:
                    self._received(first, data)
                elif kind == _DISCONNECT:
                    return
        except (OSError, EOFError, asyncio.IncompleteReadError, IndexError):
            return
        finally:
            self.close()

    def _received(self, first: int, data: bytes) -> None:
        qos = (first >> 1) & 0x03
        topic_length = int.from_bytes(data[:2], "big")
        topic = data[2 : 2 + topic_length].decode()
        at = 2 + topic_length
        packet_id = None
        if qos:
            packet_id = int.from_bytes(data[at : at + 2], "big")
            at += 2
        properties_length, at = _decode_varint(data, at)
        self.messages.put_nowait((topic, data[at + properties_length :]))
        if packet_id is not None:
            self._send(_packet(_PUBACK, packet_id.to_bytes(2, "big")))

    def close(self) -> None:
        self.lost.set()
        if self._writer is not None:
            with contextlib.suppress(OSError, RuntimeError):
                # As the agent closes: a clean disconnect, the Will published (reason 4).
                self._writer.write(_packet(_DISCONNECT, b"\x04" if self._will else b""))
                self._writer.close()  # after what is buffered
            self._writer = None
        for waiter in self._acks.values():
            if not waiter.done():
                waiter.cancel()


class MqttDeviceLoop:
    """One virtual device's life on the MQTT device channel until `stop` is set."""

    def __init__(
        self,
        device: LoadDevice,
        origin: Origin,
        broker: BrokerUrl,
        source_address: str | None,
        settings: LoadSettings,
        stats: LoadStats,
        stop: asyncio.Event,
    ) -> None:
        self._device = device
        self._settings = settings
        self._stats = stats
        self._stop = stop
        self._http = HttpLine(origin, source_address)
        self._mqtt = MqttLine(broker, source_address)
        self._report_now = asyncio.Event()
        self._heartbeat_s = settings.heartbeat_interval_s
        self._seq = time.time_ns() // 1000

    async def run(self) -> None:
        try:
            credentials = await self._enroll()
            if credentials is None:
                return
            while not self._stop.is_set():
                if not await self._connect(credentials):
                    if await pause(self._stop, self._device.rng.uniform(*RECONNECT_S)):
                        return
                    continue
                works = (
                    self._heartbeat_loop(),
                    self._desired_loop(),
                    self._telemetry_loop(),
                    self._mqtt.keep_alive(),
                    self._stop.wait(),
                    self._mqtt.lost.wait(),
                )
                tasks = [asyncio.create_task(work) for work in works]  # fmt: skip
                try:
                    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for task in tasks:
                        task.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
                self._mqtt.close()
        finally:
            self._http.close()
            self._mqtt.close()

    async def _enroll(self) -> dict[str, str] | None:
        """Enroll, then get the broker credentials (asking again until the run stops: the
        control plane creates the broker client first); None when enrollment failed."""
        device = self._device
        heartbeat_s = await enroll(self._http, device, self._settings, self._stats, self._stop)
        if heartbeat_s is None:
            return None
        self._heartbeat_s = heartbeat_s
        target = f"/v1/devices/{device.device_id}/broker"
        while True:
            async with self._stats.enrolling:
                if self._stop.is_set():  # waited for a slot past the end of the run
                    return None
                answer = await signed_exchange(
                    self._http, device, self._stats, "other", "GET", target,
                    timeout_s=BROKER_CREDENTIALS_TIMEOUT_S,
                )  # fmt: skip
            if answer is not None and answer[0] < 300:
                self._http.close()  # idle from now on, as the agent's pool closes it
                credentials: dict[str, str] = json.loads(answer[1])
                return credentials
            if answer is not None and 400 <= answer[0] < 500 and answer[0] != 429:
                return None  # no MQTT channel there, or the device is refused
            if await pause(self._stop, device.rng.uniform(*RECONNECT_S)):
                return None

    async def _connect(self, credentials: dict[str, str]) -> bool:
        """Connect and subscribe to the desired state; with presence (as the agent), with a
        signed Will (`offline`) and then a signed `online`, the Will numbered after it."""
        device = self._device
        started = time.perf_counter()
        will: Message | None = None
        if self._settings.presence:
            online_seq, will_seq = self._next_seq(), self._next_seq()
            will = self._signed(Channel.PRESENCE, PresenceState.OFFLINE.value.encode(), will_seq)
        try:
            await self._mqtt.connect(credentials["client_id"], credentials["username"],
                                     credentials["password"], will)  # fmt: skip
            await self._mqtt.subscribe(device_topic(device.device_id, Channel.DESIRED))
            if self._settings.presence:
                await self._mqtt.publish(*self._signed(
                    Channel.PRESENCE, PresenceState.ONLINE.value.encode(), online_seq))  # fmt: skip
        except Unavailable as e:
            self._stats.answered("other", time.perf_counter() - started, None, str(e))
            self._mqtt.close()
            return False
        self._stats.answered("other", time.perf_counter() - started, 200, None)
        return True

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _signed(self, channel: Channel, payload: bytes, seq: int,
                extra: Sequence[tuple[str, str]] = ()) -> Message:  # fmt: skip
        """A message on this device's `channel`, signed as the agent signs it."""
        device = self._device
        topic = device_topic(device.device_id, channel)
        properties = sign_message(device.key, topic, payload, device.device_id, seq,
                                  _CLOCK.now())  # fmt: skip
        return topic, payload, [*properties, *extra]

    async def _publish(self, kind: str, channel: Channel, payload: bytes,
                       extra: Sequence[tuple[str, str]] = ()) -> bool:  # fmt: skip
        message = self._signed(channel, payload, self._next_seq(), extra)
        started = time.perf_counter()
        try:
            await self._mqtt.publish(*message)
        except Unavailable as e:
            self._stats.answered(kind, time.perf_counter() - started, None, str(e))
            return False
        self._stats.answered(kind, time.perf_counter() - started, 200, None)
        return True

    async def _report(self, *, scheduled: bool) -> None:
        report = self._device.report(time.monotonic(), scheduled=scheduled)
        self._stats.reports_sent += 1
        if not await self._publish("report", Channel.REPORT, to_binary(report)):
            self._stats.reports_failed += 1

    async def _heartbeat_loop(self) -> None:
        await self._report(scheduled=False)
        while True:
            delay = jittered_interval_s(self._heartbeat_s, HEARTBEAT_JITTER, self._device.rng)
            if await pause(self._stop, delay, self._report_now):
                return
            asked = self._report_now.is_set()
            self._report_now.clear()
            await self._report(scheduled=not asked)

    async def _desired_loop(self) -> None:
        device = self._device
        while True:
            _, payload = await self._mqtt.messages.get()
            if not payload:
                continue  # withdrawn
            document = json.loads(payload)
            generation = int(document["generation"])
            told = document.get("agent", {}).get("heartbeat_interval_s")
            if self._settings.presence and told:  # as the agent: the interval it is told
                self._heartbeat_s = float(told)
            self._stats.answered("desired", 0.0, 200, None)
            if device.desired_seen and generation != device.applied_generation:
                self._stats.desired_update(time.time())
            if not device.desired_seen:
                self._stats.online += 1
            device.desired_seen = True
            if generation != device.applied_generation:
                device.applied_generation = generation
                self._report_now.set()

    async def _telemetry_loop(self) -> None:
        device = self._device
        interval_s = self._settings.telemetry_upload_interval_s
        if interval_s <= 0:
            await self._stop.wait()
            return
        if await pause(self._stop, device.rng.uniform(0, interval_s)):
            return
        while True:
            for _ in range(max(1, round(interval_s / TELEMETRY_WINDOW_S))):
                seq, payload = device.telemetry_batch(time.time())
                self._stats.telemetry_sent += 1
                declared = [(DROPPED_THROUGH, str(seq - 1))]
                if not await self._publish("telemetry", Channel.TELEMETRY, payload, declared):
                    self._stats.telemetry_failed += 1
            if await pause(self._stop, interval_s):
                return
