"""The control plane's end of the MQTT device channel (`--mqtt` / EDGEFLEET_MQTT_URL).

    devices ──report/telemetry (QoS 1, signed)──▶ broker ──$share/edgefleet/...──▶ replicas
    devices ◀──desired (QoS 1, retained, signed)── broker ◀──────────────────────── replicas

One persistent MQTT 5 session per replica (client id `mqtt_client_id`, clean start off,
`mqtt_session_expiry_s`): the broker keeps the replica's share of QoS 1 messages while it
restarts. Messages are acknowledged only once their work is done (manual acks), so a
replica killed in the middle gets them again. Messages are taken concurrently (at most the
session's receive maximum unacknowledged), a device's one after the other in the order the
broker delivered them. Reports are the typed protocol's `Report` in its binary encoding.
What cannot be taken is dropped and counted (`edgefleet_messages_dropped_total{reason}`),
never retried forever: malformed, oversized, unsigned, forged, stale, replayed, from a
device not approved; a store that is down is waited for (the message stays unacknowledged).

Presence: a device publishes `online` when it connects and registers a signed Will,
`offline`, which the broker publishes when the connection ends unannounced
(`services/presence.py`): the device shows offline and, hosting nothing, dead at once; while
online and hosting nothing it is told the long idle heartbeat interval.

Desired state: every change a service signals (`DesiredStateWatch.notify`, where long
polls are woken) marks the device; a publisher task renders the marked devices' documents,
signs them like the HTTP route, and publishes each retained on the device's desired topic,
so a connected device gets it at once and a reconnecting one on subscribing; a device no
longer approved has its retained document cleared. A report that shows a device behind its
desired generation marks it again (at most every REPUBLISH_AFTER_S), so a publish lost to a
broker restart heals.

Broker accounts (`services/broker_accounts.py`) follow enrollment changes
(`DeviceService.on_enrollment_change`): an approved device gets its client, a revoked,
rejected or deleted one loses it (the broker disconnects it at once). A device approved at
enrollment (an auto-approving token) gets its client when it asks for its credentials. The
changes wait, in order per device, while the broker is unreachable.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from edgefleet.core.desired import desired_document
from edgefleet.core.device import Device
from edgefleet.core.enrollment import EnrollmentState
from edgefleet.core.presence import PresenceState, parse_presence
from edgefleet.core.protocol import Report, TelemetryBatchHeader, from_binary, from_dict
from edgefleet.errors import (
    EdgefleetError,
    InvalidInput,
    PayloadTooLarge,
    StoreError,
    Unavailable,
)
from edgefleet.security.desired_signature import HEADER as DESIRED_SIGNATURE_PROPERTY
from edgefleet.security.message_signing import read_message_signature, seq_of
from edgefleet.security.request_signing import SignedRequest
from edgefleet.server.services.broker_accounts import (
    RESPONSE_TOPIC,
    BrokerAccounts,
    load_or_create_secret,
)
from edgefleet.server.services.device_messages import (
    ArrivedMessage,
    Batcher,
    DeviceMessageService,
)
from edgefleet.server.services.ingest import DeviceIngest, TelemetryUpload
from edgefleet.server.services.presence import PresenceService
from edgefleet.transport.mqtt_client import BrokerUrl, MqttConnection, ReceivedMessage
from edgefleet.transport.mqtt_topics import (
    FROM_DEVICES,
    TELEMETRY_DROPPED_THROUGH,
    TELEMETRY_SEALED,
    Channel,
    device_topic,
    parse_device_topic,
    shared_subscription,
)

if TYPE_CHECKING:
    from edgefleet.clock import Clock
    from edgefleet.server.composition import Services

log = logging.getLogger(__name__)

RECEIVE_MAXIMUM = 256
PUBLISH_CHUNK = 256
REPUBLISH_AFTER_S = 30.0
RETRY_PAUSE_S = 1.0
_GONE = (EnrollmentState.REVOKED, EnrollmentState.REJECTED)


class MqttBridge:
    def __init__(self, svc: Services, clock: Clock, ingest: DeviceIngest) -> None:
        settings = svc.settings
        if settings.mqtt_url is None:
            raise ValueError("MqttBridge needs settings.mqtt_url")
        self._svc = svc
        self._ingest = ingest
        self.url = BrokerUrl.parse(settings.mqtt_url.get_secret_value())
        self._messages = DeviceMessageService(svc.db, clock, settings)
        self._presence = PresenceService(svc.db, clock, settings, svc.watch)
        self.accounts = BrokerAccounts(load_or_create_secret(settings.data_dir), self._publish)
        self.connection = MqttConnection(
            self.url,
            client_id=settings.resolved_mqtt_client_id(),
            ca_file=settings.mqtt_ca_file,
            clean_start=False,
            session_expiry_s=settings.mqtt_session_expiry_s,
            receive_maximum=RECEIVE_MAXIMUM,
            manual_ack=True,
            reconnect=True,
            on_message=self._received,
            on_connected=self._connected,
        )
        self._metrics = svc.metrics
        self._authenticator: Batcher[ArrivedMessage, Device] = Batcher(self._messages.authenticate)
        self._settler: Batcher[SignedRequest, None] = Batcher(self._messages.settle)
        self._in_flight: set[asyncio.Task[None]] = set()
        self._device_locks: dict[str, asyncio.Lock] = {}
        self._marked: set[str] = set()
        self._marked_event: asyncio.Event | None = None
        self._republished: dict[str, float] = {}
        self._accounts_due: dict[str, bool] = {}  # device -> keep (True) or remove its client
        self._accounts_event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Connect in the background (paho retries while the broker is down) and run the
        workers and the desired-state publisher."""
        self._loop = asyncio.get_running_loop()
        self._marked_event = asyncio.Event()
        self._accounts_event = asyncio.Event()
        self._tasks = [
            asyncio.create_task(self._publish_marked_forever()),
            asyncio.create_task(self._keep_accounts_forever()),
            asyncio.create_task(self._authenticator.run_forever()),
            asyncio.create_task(self._settler.run_forever()),
        ]
        self.connection.start()
        log.info("MQTT device channel starting", extra={
            "broker": self.url.without_credentials(),
            "client_id": self._svc.settings.resolved_mqtt_client_id()})  # fmt: skip

    async def stop(self) -> None:
        for task in [*self._tasks, *self._in_flight]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._in_flight, return_exceptions=True)
        await self.connection.close()

    def desired_changed(self, device_id: str) -> None:
        """Mark a device whose desired state (or enrollment) changed; any thread."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._mark, device_id)

    def enrollment_changed(self, device_id: str, enrollment: EnrollmentState | None) -> None:
        """Keep (approved) or remove (revoked, rejected, deleted: None) the device's broker
        client; any thread."""
        if enrollment is EnrollmentState.PENDING:
            return
        loop = self._loop
        if loop is not None and not loop.is_closed():
            keep = enrollment is EnrollmentState.APPROVED
            loop.call_soon_threadsafe(self._account_due, device_id, keep)

    def _account_due(self, device_id: str, keep: bool) -> None:
        self._accounts_due[device_id] = keep
        if self._accounts_event is not None:
            self._accounts_event.set()

    async def _keep_accounts_forever(self) -> None:
        assert self._accounts_event is not None
        while True:
            await self._accounts_event.wait()
            self._accounts_event.clear()
            await self.connection.wait_connected()
            due, self._accounts_due = self._accounts_due, {}
            for device_id, keep in due.items():
                try:
                    if keep:
                        await self.accounts.ensure_device(device_id)
                    else:
                        await self.accounts.remove_device(device_id)
                except EdgefleetError as e:
                    log.warning("broker account not updated; retrying", extra={
                        "device_id": device_id, "error": e.message})  # fmt: skip
                    self._accounts_due.setdefault(device_id, keep)  # unless changed since
                    self._accounts_event.set()
            if self._accounts_due:
                await asyncio.sleep(RETRY_PAUSE_S)

    def _mark(self, device_id: str) -> None:
        self._marked.add(device_id)
        if self._marked_event is not None:
            self._marked_event.set()

    # Connection and intake (on the event loop).

    def _connected(self, session_present: bool) -> None:
        log.info("MQTT device channel connected", extra={"session_present": session_present})
        self._tasks.append(asyncio.create_task(self._set_up_session()))

    async def _set_up_session(self) -> None:
        """Subscribe (again: idempotent) and make sure this client may publish desired
        states; retried while it fails, the connection staying up."""
        while self.connection.connected:
            try:
                await self.connection.subscribe([RESPONSE_TOPIC])
                username = self.url.username
                if username is not None:
                    await self.accounts.ensure_control_plane(username)
                await self.connection.subscribe([shared_subscription(c) for c in FROM_DEVICES])
                return
            except EdgefleetError as e:
                log.warning("MQTT session set-up failed; retrying", extra={"error": e.message})
                await asyncio.sleep(RETRY_PAUSE_S)

    def _received(self, message: ReceivedMessage) -> None:
        if message.topic == RESPONSE_TOPIC:
            self.accounts.answered(message)
            self.connection.ack(message)
            return
        parsed = parse_device_topic(message.topic)
        if parsed is None or parsed[1] not in FROM_DEVICES:
            self._metrics.messages_dropped.inc("unknown_topic")
            self.connection.ack(message)
            return
        # At most RECEIVE_MAXIMUM unacknowledged messages come at once: that bounds these.
        task = asyncio.create_task(self._process(parsed[0], parsed[1], message))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _process(self, device_id: str, channel: Channel, message: ReceivedMessage) -> None:
        """Take one message (a device's messages one after the other, in the order the
        broker delivered them), then acknowledge it: taken or dropped for good."""
        lock = self._device_locks.setdefault(device_id, asyncio.Lock())
        try:
            async with lock:
                while True:
                    try:
                        await self._take(device_id, channel, message)
                    except (StoreError, Unavailable) as e:
                        # Not stored (the store is down, the ingest full): keep the message,
                        # unacknowledged, and try again.
                        log.warning("device message not stored yet; retrying",
                                    extra={"topic": message.topic, "error": e.message})  # fmt: skip
                        await asyncio.sleep(RETRY_PAUSE_S)
                        continue
                    except EdgefleetError as e:
                        self._metrics.messages_dropped.inc(e.code)
                        reason = {"topic": message.topic, "reason": e.code, "error": e.message}
                        log.info("device message dropped", extra=reason)
                    except Exception:
                        self._metrics.messages_dropped.inc("error")
                        log.exception("device message failed", extra={"topic": message.topic})
                    break
            self.connection.ack(message)
        finally:
            if not lock.locked() and self._device_locks.get(device_id) is lock:
                del self._device_locks[device_id]

    async def _take(self, device_id: str, channel: Channel, message: ReceivedMessage) -> None:
        if len(message.payload) > self._svc.settings.max_body_bytes:
            raise PayloadTooLarge(f"{len(message.payload)} bytes", code="oversized")
        signed = read_message_signature(device_id, message.user_property)
        if channel is Channel.PRESENCE:
            await self._take_presence(message, signed)
            return
        device = await self._authenticator.submit(
            ArrivedMessage(signed, message.topic, message.payload)
        )
        try:
            if channel is Channel.REPORT:
                report = from_binary(Report, message.payload)
                answer = await self._ingest.submit(report, device)
                if report.applied_generation < answer.desired_generation:
                    self._republish_soon(device.id)
            else:
                upload = await asyncio.to_thread(self._telemetry_upload, device, message,
                                                 signed.timestamp)  # fmt: skip
                await self._ingest.submit(upload, device)
        except (StoreError, Unavailable):
            raise  # not taken: the message is tried again
        except EdgefleetError:
            await self._settler.submit(signed)  # refused for good
            raise
        await self._settler.submit(signed)
        if channel is Channel.REPORT:
            self._metrics.reports_ingested.inc("mqtt")

    async def _take_presence(self, message: ReceivedMessage, signed: SignedRequest) -> None:
        """A device's `online` (checked like any message) or its Will, `offline` (checked by
        its signature, not its age: it was signed at connect time), then ordered by its
        sequence number against the last presence taken (`services/presence.py`)."""
        state = parse_presence(message.payload)
        if state is None:
            raise InvalidInput("a presence message says online or offline", code="malformed")
        if state is PresenceState.OFFLINE:
            device = await asyncio.to_thread(self._messages.authenticate_will, signed,
                                             message.topic, message.payload)  # fmt: skip
        else:
            device = await self._authenticator.submit(
                ArrivedMessage(signed, message.topic, message.payload)
            )
        settles = state is PresenceState.ONLINE  # a Will is ordered by its number instead
        try:
            await asyncio.to_thread(self._presence.take, device.id, state, seq_of(signed))
        except (StoreError, Unavailable):
            raise  # not taken: the message is tried again, its number still unused
        except EdgefleetError:
            if settles:
                await self._settler.submit(signed)  # refused for good
            raise
        if settles:
            await self._settler.submit(signed)
        self._metrics.presence_taken.inc(state.value)

    def _telemetry_upload(
        self, device: Device, message: ReceivedMessage, signed_at_s: int
    ) -> TelemetryUpload:
        """The batch of a telemetry message: its header from the message's properties, its
        bytes unsealed if sealed."""
        try:
            dropped_through = int(message.user_property(TELEMETRY_DROPPED_THROUGH) or "0")
        except ValueError:
            raise InvalidInput("bad dropped property", code="malformed") from None
        sealed = message.user_property(TELEMETRY_SEALED) == "1"
        header = from_dict(TelemetryBatchHeader,
                           {"dropped_through_seq": dropped_through, "sealed": sealed})  # fmt: skip
        body = self._svc.sealing.unseal(device.id, message.payload) if sealed else message.payload
        return TelemetryUpload(header, body, signed_at_s)

    def _republish_soon(self, device_id: str) -> None:
        now_s = time.monotonic()
        if now_s - self._republished.get(device_id, -REPUBLISH_AFTER_S) >= REPUBLISH_AFTER_S:
            self._republished[device_id] = now_s
            self.desired_changed(device_id)

    # Desired state out.

    async def _publish_marked_forever(self) -> None:
        assert self._marked_event is not None
        while True:
            await self._marked_event.wait()
            self._marked_event.clear()
            if not self.connection.connected:
                await self.connection.wait_connected()
            marked, self._marked = sorted(self._marked), set()
            for start in range(0, len(marked), PUBLISH_CHUNK):
                chunk = marked[start : start + PUBLISH_CHUNK]
                try:
                    await self._publish_desired(chunk)
                except EdgefleetError as e:
                    log.warning("desired state not published; retrying",
                                extra={"devices": len(chunk), "error": e.message})  # fmt: skip
                    for device_id in chunk:
                        self._mark(device_id)
                    await asyncio.sleep(RETRY_PAUSE_S)

    async def _publish_desired(self, device_ids: list[str]) -> None:
        devices = await asyncio.to_thread(self._read_devices, device_ids)
        work = []
        for device_id in device_ids:
            device = devices.get(device_id)
            if device is None or device.enrollment in _GONE:
                work.append(self._publish(device_topic(device_id, Channel.DESIRED), b"",
                                          retain=True))  # fmt: skip
            elif device.enrollment is EnrollmentState.APPROVED:
                work.append(self._publish_document(device))
        results = await asyncio.gather(*work, return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        for failure in failed:
            if not isinstance(failure, EdgefleetError):
                raise failure
        if failed:
            raise failed[0]

    def _read_devices(self, device_ids: Sequence[str]) -> dict[str, Device]:
        with self._svc.db.read() as tx:
            return tx.devices.find_many(device_ids)

    async def _publish_document(self, device: Device) -> None:
        body = render_document(desired_document(device))
        signature = self._svc.trust.sign_desired(body)
        properties = [] if signature is None else [(DESIRED_SIGNATURE_PROPERTY, signature)]
        await self._publish(device_topic(device.id, Channel.DESIRED), body, retain=True,
                            user_properties=properties)  # fmt: skip

    async def _publish(
        self,
        topic: str,
        payload: bytes,
        *,
        retain: bool = False,
        user_properties: list[tuple[str, str]] | None = None,
    ) -> None:
        await self.connection.publish(topic, payload, retain=retain,
                                      user_properties=user_properties or ())  # fmt: skip


def render_document(document: dict[str, Any]) -> bytes:
    """A desired-state document's bytes, as the HTTP route sends (and signs) them."""
    return json.dumps(document, ensure_ascii=False, allow_nan=False,
                      separators=(",", ":")).encode()  # fmt: skip
