"""The agent's MQTT device channel (`--mqtt mqtt[s]://HOST:PORT`).

Enrollment, the approval check and bulk downloads stay on HTTP. Once approved, the agent
asks the control plane for its broker credentials (a signed GET), connects with MQTT 5
(keep-alive; a clean session: everything it needs is retained or resent), and subscribes
to its desired-state topic: the control plane publishes the signed document there,
retained, so a change arrives at once and a reconnecting device gets the current one on
subscribing, without polling. Reports go out on its report topic at QoS 1, as the typed
protocol's `Report` in its compact binary encoding, and telemetry batches on its telemetry
topic (`TelemetryOverMqtt`: the telemetry pipeline's uploads, taken off the HTTP transport
while the channel is open).

Presence: the connection registers a Last Will on the device's presence topic, `offline`,
which the broker publishes when the connection ends unannounced (a crash, a cut link, a
missed keep-alive) or when the agent closes the channel; once connected the agent publishes
`online` there. Both are signed at connect time, the Will with the larger sequence number
(it fires last; `core/presence.py`). While online and hosting nothing the device is told a
long heartbeat interval: the keep-alive and the Will stand for its heartbeats.

Every message the device publishes is signed by its key over the topic, its payload and a
sequence number (`security/message_signing.py`). The numbers only grow, across restarts
too: `MessageSequence` reserves them on disk in blocks before using them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from edgefleet.agent.link import SEALED_TELEMETRY_CONTENT_TYPE, ControlPlaneLink, SignedDocument
from edgefleet.atomicfile import write_atomically
from edgefleet.clock import Clock
from edgefleet.core.presence import PresenceState
from edgefleet.core.protocol import Report, from_dict, to_binary
from edgefleet.errors import ApiError, Forbidden, SettingsError, Unauthenticated, Unavailable
from edgefleet.security.desired_signature import HEADER as DESIRED_SIGNATURE_PROPERTY
from edgefleet.security.keys import DeviceKey
from edgefleet.security.message_signing import sign_message
from edgefleet.transport.messages import Headers, Transport, TransportResponse, resolve_headers
from edgefleet.transport.mqtt_client import BrokerUrl, MqttConnection, ReceivedMessage, Will
from edgefleet.transport.mqtt_topics import (
    TELEMETRY_DROPPED_THROUGH,
    TELEMETRY_SEALED,
    Channel,
    device_topic,
)

log = logging.getLogger(__name__)

SEQUENCE_FILE = "mqtt-sequence"
_TELEMETRY_UPLOAD = re.compile(r"/v1/devices/[^/]+/telemetry")
SEQUENCE_BLOCK = 1024
KEEPALIVE_S = 60


class MessageSequence:
    """This device's message sequence numbers: each larger than any used before, also
    after a crash (a block of numbers is written to disk before the first is used)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        try:
            self._reserved = int(path.read_text().strip() or "0")
        except FileNotFoundError:
            self._reserved = 0
        except ValueError:
            raise SettingsError(f"agent state: {path} does not hold a sequence number") from None
        self._next = self._reserved + 1

    def next(self) -> int:
        if self._next > self._reserved:
            self._reserved = self._next + SEQUENCE_BLOCK - 1
            write_atomically(self._path, f"{self._reserved}\n".encode(), 0o600)
        number = self._next
        self._next += 1
        return number


@contextlib.contextmanager
def _broker_refusals() -> Iterator[None]:
    """The broker's refusals (credentials, ACLs) as the agent's loop takes a server's: an
    ApiError it logs and backs off from, then connects again."""
    try:
        yield
    except (Unauthenticated, Forbidden) as e:
        status = 401 if isinstance(e, Unauthenticated) else 403
        raise ApiError(status, e.code, e.message) from None


class MqttChannel:
    def __init__(
        self,
        url: BrokerUrl,
        link: ControlPlaneLink,
        key: DeviceKey,
        clock: Clock,
        sequence: MessageSequence,
        ca_file: Path | None = None,
    ) -> None:
        self._url = url
        self._link = link
        self._key = key
        self._clock = clock
        self._sequence = sequence
        self._ca_file = ca_file
        self._desired: asyncio.Queue[SignedDocument] = asyncio.Queue()
        self._connection: MqttConnection | None = None

    @property
    def device_id(self) -> str:
        return self._link.device_id

    async def open(self) -> None:
        """Fetch the broker credentials, connect with a signed Will, subscribe to the
        desired state, say `online`."""
        credentials = json.loads(await self._link.fetch(f"/v1/devices/{self.device_id}/broker"))
        presence = device_topic(self.device_id, Channel.PRESENCE)
        online_seq, will_seq = self._sequence.next(), self._sequence.next()
        offline = PresenceState.OFFLINE.value.encode()
        will = Will(presence, offline, user_properties=tuple(self._signature(
            presence, offline, will_seq)))  # fmt: skip
        connection = MqttConnection(
            self._url,
            client_id=str(credentials["client_id"]),
            username=str(credentials["username"]),
            password=str(credentials["password"]),
            ca_file=self._ca_file,
            clean_start=True,
            keepalive_s=KEEPALIVE_S,
            will=will,
            on_message=self._received,
        )
        self._connection = connection
        with _broker_refusals():
            await connection.connect()
            await connection.subscribe([device_topic(self.device_id, Channel.DESIRED)])
            online = PresenceState.ONLINE.value.encode()
            signature = self._signature(presence, online, online_seq)
            await connection.publish(presence, online, user_properties=signature)
        broker = self._url.without_credentials()
        log.info("MQTT device channel open", extra={"device_id": self.device_id, "broker": broker})

    async def lost(self) -> str:
        """Wait until the connection is lost; why."""
        assert self._connection is not None
        await self._connection.lost.wait()
        return self._connection.lost_reason

    async def close(self) -> None:
        """Disconnect; the broker publishes the Will (`offline`) for it."""
        if self._connection is not None:
            await self._connection.close(send_will=True)

    async def desired(self) -> SignedDocument:
        """The next desired-state document pushed by the control plane."""
        return await self._desired.get()

    async def publish(
        self, channel: Channel, payload: bytes, properties: list[tuple[str, str]] | None = None
    ) -> None:
        """Publish a signed message on this device's `channel` and wait for the broker."""
        if self._connection is None:
            raise Unavailable("the MQTT device channel is not open")
        topic = device_topic(self.device_id, channel)
        signature = self._signature(topic, payload, self._sequence.next())
        properties = [*signature, *(properties or [])]
        with _broker_refusals():
            await self._connection.publish(topic, payload, user_properties=properties)

    def _signature(self, topic: str, payload: bytes, seq: int) -> list[tuple[str, str]]:
        return sign_message(self._key, topic, payload, self.device_id, seq, self._clock.now())

    async def report(self, payload: dict[str, Any]) -> None:
        """Publish a report (the HTTP report's fields) as the protocol's binary `Report`."""
        await self.publish(Channel.REPORT, to_binary(from_dict(Report, payload)))

    def _received(self, message: ReceivedMessage) -> None:
        if message.topic != device_topic(self.device_id, Channel.DESIRED) or not message.payload:
            return  # an empty retained message: the document was withdrawn
        signature = message.user_property(DESIRED_SIGNATURE_PROPERTY)
        self._desired.put_nowait(SignedDocument(message.payload, signature))


class TelemetryOverMqtt:
    """The agent's Transport: the HTTP one, except that a telemetry batch upload goes out on
    the MQTT channel while one is open (`channel`).

    The broker's acknowledgement stands for the control plane's: the batch is then held for
    the control plane's persistent session, which stores it exactly once by its sequence
    number (or drops and counts it). The acknowledgement names the batch being sent as
    `dropped_through_seq + 1`: the uploader sends the queue's oldest pending batch and
    declares everything before it acknowledged or dropped, and the queue numbers batches
    without gaps.
    """

    def __init__(self, http: Transport) -> None:
        self._http = http
        self.channel: MqttChannel | None = None

    async def request(
        self, method: str, target: str, body: bytes, headers: Headers, timeout_s: float
    ) -> TransportResponse:
        channel = self.channel
        parts = urlsplit(target)
        if channel is None or method != "POST" or not _TELEMETRY_UPLOAD.fullmatch(parts.path):
            return await self._http.request(method, target, body, headers, timeout_s)
        try:
            dropped_through = int(parse_qs(parts.query).get("dropped_through_seq", ["0"])[0])
        except ValueError:
            dropped_through = 0
        properties = [(TELEMETRY_DROPPED_THROUGH, str(dropped_through))]
        if resolve_headers(headers).get("content-type") == SEALED_TELEMETRY_CONTENT_TYPE:
            properties.append((TELEMETRY_SEALED, "1"))
        await channel.publish(Channel.TELEMETRY, body, properties)
        ack = {"acked_through_seq": dropped_through + 1, "stored_windows": 0}
        return TransportResponse(200, json.dumps(ack).encode(),
                                 {"content-type": "application/json"})  # fmt: skip

    async def download(
        self, target: str, headers: Headers, destination: Path, timeout_s: float
    ) -> TransportResponse:
        return await self._http.download(target, headers, destination, timeout_s)

    async def close(self) -> None:
        await self._http.close()
