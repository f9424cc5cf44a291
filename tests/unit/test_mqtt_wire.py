"""The MQTT device channel's pure parts: broker URLs, topics, signed messages, and the
agent's sequence numbers across restarts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edgefleet.agent.mqtt_link import SEQUENCE_BLOCK, MessageSequence
from edgefleet.errors import Unauthenticated
from edgefleet.security.keys import DeviceKey, device_id_for
from edgefleet.security.message_signing import METHOD, read_message_signature, sign_message
from edgefleet.security.request_signing import verify_signed_request
from edgefleet.transport.mqtt_client import BrokerUrl
from edgefleet.transport.mqtt_topics import Channel, device_topic, parse_device_topic

NOW = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)


def test_broker_urls_parse_and_errors_never_repeat_the_password() -> None:
    url = BrokerUrl.parse("mqtt://cp:p%40ss@broker")
    assert (url.tls, url.host, url.port, url.username, url.password) == (
        False, "broker", 1883, "cp", "p@ss")  # fmt: skip
    assert BrokerUrl.parse("mqtts://h").port == 8883
    assert url.without_credentials() == "mqtt://broker:1883"
    for bad in ("http://cp:secret@h", "mqtt://cp:secret@h/path", "mqtt://cp:secret@h:99999",
                "mqtt://"):  # fmt: skip
        with pytest.raises(ValueError) as refused:
            BrokerUrl.parse(bad)
        assert "secret" not in str(refused.value)


def test_device_topics_round_trip_and_others_are_not_device_topics() -> None:
    for channel in Channel:
        assert parse_device_topic(device_topic("d-1", channel)) == ("d-1", channel)
    for other in ("edgefleet/v1/devices/d-1", "edgefleet/v1/devices//report",
                  "edgefleet/v1/devices/d-1/report/x", "x/edgefleet/v1/devices/d-1/report",
                  "$CONTROL/dynamic-security/v1/response"):  # fmt: skip
        assert parse_device_topic(other) is None


def _properties(key: DeviceKey, topic: str, payload: bytes, seq: int) -> dict[str, str]:
    return dict(sign_message(key, topic, payload, device_id_for(key.public_key_b64), seq, NOW))


def test_a_signed_message_verifies_only_on_its_topic_with_its_payload() -> None:
    key = DeviceKey.generate()
    device_id = device_id_for(key.public_key_b64)
    topic = device_topic(device_id, Channel.REPORT)
    properties = _properties(key, topic, b"report", 7)
    signed = read_message_signature(device_id, properties.get)
    verify_signed_request(signed, key.public_key_b64, METHOD, topic, b"report", NOW)
    elsewhere = device_topic(device_id, Channel.TELEMETRY)
    for wrong_topic, payload in ((elsewhere, b"report"), (topic, b"altered")):
        with pytest.raises(Unauthenticated):
            verify_signed_request(signed, key.public_key_b64, METHOD, wrong_topic, payload, NOW)
    with pytest.raises(Unauthenticated) as stale:
        verify_signed_request(signed, key.public_key_b64, METHOD, topic, b"report",
                              NOW + timedelta(hours=1))  # fmt: skip
    assert stale.value.code == "stale_request"
    # Another sequence number is another nonce: a replay is recognised by it.
    again = read_message_signature(device_id, _properties(key, topic, b"report", 8).get)
    assert again.nonce != signed.nonce


@pytest.mark.parametrize("properties, code", [
    ({}, "unsigned_request"),
    ({"seq": "x", "ts": "1", "sig": "AAAA"}, "bad_signature"),
    ({"seq": "0", "ts": "1", "sig": "AAAA"}, "bad_signature"),
    ({"seq": "1", "ts": "1", "sig": "not base64!"}, "bad_signature"),
])  # fmt: skip
def test_malformed_signature_properties_are_refused(properties: dict[str, str], code: str) -> None:
    with pytest.raises(Unauthenticated) as refused:
        read_message_signature("d-1", properties.get)
    assert refused.value.code == code


def test_sequence_numbers_grow_across_restarts_without_a_write_per_message(tmp_path: Path) -> None:
    path = tmp_path / "mqtt-sequence"
    first = MessageSequence(path)
    used = [first.next() for _ in range(SEQUENCE_BLOCK + 5)]
    assert used == sorted(set(used))
    assert int(path.read_text()) == 2 * SEQUENCE_BLOCK  # two blocks reserved, not 1029 writes
    # A crash now: the next life starts above everything the reservation covered.
    second = MessageSequence(path)
    assert second.next() > max(used)
