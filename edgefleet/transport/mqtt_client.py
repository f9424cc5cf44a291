"""One MQTT 5 connection for asyncio code: the device channel's agent and control-plane ends.

paho-mqtt runs the socket on a thread of its own; every callback is handed to the event
loop (`call_soon_threadsafe`), so the rest of edgefleet sees coroutines and loop callbacks
only. `publish` waits for the broker's PUBACK (QoS 1) and raises from the error tree:
`Unavailable` when the connection is down or the acknowledgement does not come in time,
`Forbidden` (`broker_refused`) when the broker's ACL refuses the topic. A refused connect
(bad credentials, a deleted client) is `Unauthenticated` (`broker_refused`).

With `manual_ack` the caller acknowledges each received QoS 1 message itself (`ack`) once
it has done its work, so a consumer killed in the middle loses nothing: the broker sends
the message again to the session. MQTT 5's receive maximum bounds what is unacknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edgefleet.errors import Forbidden, Unauthenticated, Unavailable

log = logging.getLogger(__name__)

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
PUBACK_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class BrokerUrl:
    """`mqtt[s]://[USER:PASSWORD@]HOST[:PORT]`.

    >>> BrokerUrl.parse("mqtts://cp:s3cret@broker.example:8884")
    BrokerUrl(tls=True, host='broker.example', port=8884, username='cp', password='s3cret')
    """

    tls: bool
    host: str
    port: int
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, text: str) -> BrokerUrl:
        """ValueError naming what is wrong."""
        parsed = urlparse(text)
        if parsed.scheme not in DEFAULT_PORTS or not parsed.hostname:
            # The URL is not repeated: it may hold a password.
            raise ValueError("not an mqtt:// or mqtts:// URL with a host")
        if parsed.path not in ("", "/") or parsed.query or parsed.fragment:
            raise ValueError("a broker URL has no path, query or fragment")
        try:
            port = parsed.port or DEFAULT_PORTS[parsed.scheme]
        except ValueError:
            raise ValueError("the broker URL's port is not a number in 0..65535") from None
        return cls(
            tls=parsed.scheme == "mqtts",
            host=parsed.hostname,
            port=port,
            username=unquote(parsed.username) if parsed.username is not None else None,
            password=unquote(parsed.password) if parsed.password is not None else None,
        )

    def without_credentials(self) -> str:
        """The URL to log and show: no user or password."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


@dataclass(frozen=True)
class Will:
    """The message the broker publishes for a client that vanishes (MQTT's Last Will)."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False
    user_properties: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ReceivedMessage:
    topic: str
    payload: bytes
    qos: int
    mid: int
    retain: bool
    user_properties: tuple[tuple[str, str], ...]

    def user_property(self, name: str) -> str | None:
        """The first user property named `name`."""
        return next((value for key, value in self.user_properties if key == name), None)


class MqttConnection:
    def __init__(
        self,
        url: BrokerUrl,
        *,
        client_id: str,
        username: str | None = None,
        password: str | None = None,
        ca_file: Path | None = None,
        clean_start: bool = True,
        session_expiry_s: int = 0,
        keepalive_s: int = 60,
        receive_maximum: int = 64,
        will: Will | None = None,
        manual_ack: bool = False,
        reconnect: bool = False,
        on_message: Callable[[ReceivedMessage], None] | None = None,
        on_connected: Callable[[bool], None] | None = None,
    ) -> None:
        """`on_message` and `on_connected(session_present)` run on the event loop.
        `reconnect`: paho reconnects by itself (1 s .. 60 s) after a lost connection;
        otherwise `lost` is set and the owner decides."""
        self.url = url
        self._client_id = client_id
        self._clean_start = clean_start
        self._session_expiry_s = session_expiry_s
        self._keepalive_s = keepalive_s
        self._receive_maximum = receive_maximum
        self._on_message = on_message
        self._on_connected = on_connected
        self._loop: asyncio.AbstractEventLoop | None = None
        # Callbacks handed from paho's thread to the loop, run in order by one wake-up.
        self._handed: deque[tuple[Callable[..., None], tuple[object, ...]]] = deque()
        self._wake_pending = False
        self._pending: dict[int, asyncio.Future[None]] = {}
        self._subscribing: dict[int, asyncio.Future[list[ReasonCode]]] = {}
        self._connecting: asyncio.Future[bool] | None = None
        self.connected = False
        self.lost = asyncio.Event()
        self._reconnected = asyncio.Event()
        self._reconnect = reconnect
        self.lost_reason = ""
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=paho.MQTTv5, reconnect_on_failure=reconnect,
                             manual_ack=manual_ack)  # fmt: skip
        user = username if username is not None else url.username
        if user is not None:
            client.username_pw_set(user, password if password is not None else url.password)
        if url.tls:
            context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
            client.tls_set_context(context)
        if will is not None:
            will_properties = None
            if will.user_properties:
                will_properties = Properties(PacketTypes.WILLMESSAGE)
                will_properties.UserProperty = list(will.user_properties)
            client.will_set(will.topic, will.payload, will.qos, will.retain, will_properties)
        client.reconnect_delay_set(1, 60)
        client.on_connect = self._connected_cb
        client.on_disconnect = self._disconnected_cb
        client.on_message = self._message_cb
        client.on_publish = self._published_cb
        client.on_subscribe = self._subscribed_cb
        self._client = client

    def _connect_properties(self) -> Properties:
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = self._session_expiry_s
        properties.ReceiveMaximum = self._receive_maximum
        return properties

    def start(self) -> None:
        """Start connecting on the network thread, without waiting (call on the loop); with
        `reconnect`, paho keeps trying while the broker is down."""
        self._loop = asyncio.get_running_loop()
        self._connecting = self._loop.create_future()
        self._connecting.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._client.connect_async(self.url.host, self.url.port, self._keepalive_s,
                                   clean_start=self._clean_start,
                                   properties=self._connect_properties())  # fmt: skip
        self._client.loop_start()

    async def wait_connected(self) -> None:
        """Return once connected (again)."""
        while not self.connected:
            self._reconnected.clear()
            await self._reconnected.wait()

    async def connect(self, timeout_s: float = 15.0) -> bool:
        """Connect now (TCP and TLS failures raise Unavailable naming them); True when the
        broker resumed a stored session."""
        self._loop = asyncio.get_running_loop()
        self._connecting = self._loop.create_future()
        self._connecting.add_done_callback(lambda f: f.cancelled() or f.exception())
        try:
            await asyncio.to_thread(self._client.connect, self.url.host, self.url.port,
                                    self._keepalive_s, clean_start=self._clean_start,
                                    properties=self._connect_properties())  # fmt: skip
        except (OSError, ValueError) as e:  # ssl.SSLError is an OSError
            raise Unavailable(f"MQTT broker {self.url.without_credentials()}: {e}") from None
        self._client.loop_start()
        try:
            return await asyncio.wait_for(asyncio.shield(self._connecting), timeout_s)
        except TimeoutError:
            await self.close()
            raise Unavailable(
                f"MQTT broker {self.url.without_credentials()} did not accept the connection "
                f"within {timeout_s:g} s"
            ) from None
        except Unauthenticated:
            await self.close()
            raise

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        retain: bool = False,
        user_properties: Sequence[tuple[str, str]] = (),
        timeout_s: float = PUBACK_TIMEOUT_S,
    ) -> None:
        """Publish at QoS 1 and wait for the broker's acknowledgement. A connection that
        reconnects by itself is waited for, within `timeout_s` (the broker may have dropped
        it a moment ago: the dynamic-security plugin disconnects a client whose roles
        change)."""
        loop = self._running_loop()
        if not self.connected and self._reconnect:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wait_connected(), timeout_s)
        if not self.connected:
            raise Unavailable(f"not connected to the MQTT broker ({self.lost_reason or 'yet'})")
        properties = None
        if user_properties:
            properties = Properties(PacketTypes.PUBLISH)
            properties.UserProperty = list(user_properties)
        acked: asyncio.Future[None] = loop.create_future()
        info = self._client.publish(topic, payload, qos=1, retain=retain, properties=properties)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise Unavailable(f"MQTT publish to {topic} failed: {paho.error_string(info.rc)}")
        self._pending[info.mid] = acked
        try:
            await asyncio.wait_for(acked, timeout_s)
        except TimeoutError:
            raise Unavailable(f"no acknowledgement from the MQTT broker for {topic}") from None
        finally:
            self._pending.pop(info.mid, None)

    async def subscribe(self, topics: Sequence[str], timeout_s: float = 15.0) -> None:
        """Subscribe at QoS 1; Forbidden when the broker refuses any of them."""
        loop = self._running_loop()
        granted: asyncio.Future[list[ReasonCode]] = loop.create_future()
        result, mid = self._client.subscribe([(topic, 1) for topic in topics])
        if result != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise Unavailable(f"MQTT subscribe failed: {paho.error_string(result)}")
        self._subscribing[mid] = granted
        try:
            codes = await asyncio.wait_for(granted, timeout_s)
        except TimeoutError:
            raise Unavailable("no acknowledgement from the MQTT broker for a subscribe") from None
        finally:
            self._subscribing.pop(mid, None)
        refused = [t for t, code in zip(topics, codes, strict=False) if code.is_failure]
        if refused:
            raise Forbidden(f"the MQTT broker refused the subscription to {refused[0]}",
                            code="broker_refused")  # fmt: skip

    def ack(self, message: ReceivedMessage) -> None:
        """Acknowledge a received message (with `manual_ack`), once its work is done."""
        if message.qos > 0:
            self._client.ack(message.mid, message.qos)

    async def close(self, *, send_will: bool = False) -> None:
        """Disconnect and stop the network thread: a clean DISCONNECT, after which the
        broker drops the Will, unless `send_will` (MQTT 5's "disconnect with Will
        message": the broker publishes it, as for a lost connection)."""
        if send_will and self.connected:
            self._client.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, identifier=4))
        else:
            self._client.disconnect()
        await asyncio.to_thread(self._client.loop_stop)
        self.connected = False
        self._fail_pending("connection closed")

    # paho's callbacks: on its network thread; everything moves to the event loop.

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise Unavailable("not connected to the MQTT broker yet")
        return self._loop

    def _later(self, callback: Callable[..., None], *args: object) -> None:
        """Run `callback(*args)` on the event loop, after those handed over before it. A
        burst of messages wakes the loop once, not once each (every wake-up is a write to
        the loop's self-pipe). The flag is cleared before the queue is drained, so an item
        appended meanwhile is either drained now or schedules a drain of its own."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        self._handed.append((callback, args))
        if not self._wake_pending:
            self._wake_pending = True
            loop.call_soon_threadsafe(self._run_handed)

    def _run_handed(self) -> None:
        self._wake_pending = False
        while self._handed:
            callback, args = self._handed.popleft()
            try:
                callback(*args)
            except Exception:  # as the loop itself would: logged, the others still run
                log.exception("MQTT callback failed")

    def _connected_cb(self, _client: paho.Client, _userdata: object, flags: paho.ConnectFlags,
                      reason: ReasonCode, _properties: Properties | None) -> None:  # fmt: skip
        self._later(self._on_connect, not reason.is_failure, str(reason), flags.session_present)

    def _on_connect(self, ok: bool, reason: str, session_present: bool) -> None:
        connecting = self._connecting
        if not ok:
            self.lost_reason = f"broker refused the connection: {reason}"
            log.warning("MQTT connection refused", extra={"broker": self.url.without_credentials(),
                                                          "reason": reason})  # fmt: skip
            if connecting is not None and not connecting.done():
                connecting.set_exception(Unauthenticated(
                    f"MQTT broker {self.url.without_credentials()} refused the connection: "
                    f"{reason}", code="broker_refused"))  # fmt: skip
            self.lost.set()
            return
        self.connected = True
        self.lost.clear()
        self._reconnected.set()
        if connecting is not None and not connecting.done():
            connecting.set_result(session_present)
        if self._on_connected is not None:
            self._on_connected(session_present)

    def _disconnected_cb(self, _client: paho.Client, _userdata: object,
                         _flags: paho.DisconnectFlags, reason: ReasonCode,
                         _properties: Properties | None) -> None:  # fmt: skip
        self._later(self._on_disconnect, str(reason))

    def _on_disconnect(self, reason: str) -> None:
        was = self.connected
        self.connected = False
        self.lost_reason = f"disconnected: {reason}"
        if was:
            log.info("MQTT connection lost", extra={"broker": self.url.without_credentials(),
                                                    "reason": reason})  # fmt: skip
        self._fail_pending(self.lost_reason)
        self.lost.set()

    def _fail_pending(self, reason: str) -> None:
        futures: list[asyncio.Future[Any]] = [*self._pending.values(), *self._subscribing.values()]
        for future in futures:
            if not future.done():
                future.set_exception(Unavailable(f"MQTT broker connection {reason}"))

    def _message_cb(self, _client: paho.Client, _userdata: object,
                    message: paho.MQTTMessage) -> None:  # fmt: skip
        properties = getattr(message, "properties", None)
        user = tuple(getattr(properties, "UserProperty", None) or ())
        received = ReceivedMessage(message.topic, bytes(message.payload), message.qos,
                                   message.mid, bool(message.retain), user)  # fmt: skip
        if self._on_message is not None:
            self._later(self._on_message, received)

    def _published_cb(self, _client: paho.Client, _userdata: object, mid: int,
                      reason: ReasonCode, _properties: Properties | None) -> None:  # fmt: skip
        self._later(self._on_published, mid, reason.is_failure, str(reason))

    def _on_published(self, mid: int, failed: bool, reason: str) -> None:
        future = self._pending.get(mid)
        if future is None or future.done():
            return
        if failed:
            future.set_exception(Forbidden(f"the MQTT broker refused the message: {reason}",
                                           code="broker_refused"))  # fmt: skip
        else:
            future.set_result(None)

    def _subscribed_cb(
        self, _client: paho.Client, _userdata: object, mid: int, codes: list[ReasonCode],
        _properties: Properties | None,
    ) -> None:  # fmt: skip
        self._later(self._on_subscribed, mid, codes)

    def _on_subscribed(self, mid: int, codes: list[ReasonCode]) -> None:
        future = self._subscribing.get(mid)
        if future is not None and not future.done():
            future.set_result(codes)
