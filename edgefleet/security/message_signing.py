"""Signed device messages on a bus (MQTT): the request-signing scheme, bound to a topic.

A device signs each message it publishes with the key it signs HTTP requests with, over
the same canonical form (`request_signing.canonical_request`): method `PUBLISH`, the topic
as the target, the payload, its device id, a timestamp, and as the nonce its per-device
sequence number (`seq-` and 20 digits), which only ever grows, across restarts too. The
three travel as MQTT 5 user properties (`seq`, `ts`, `sig`), so the payload stays the bare
message.

The control plane checks the signature by the device's enrolled key and the sequence
number, not the clock: a bus holds messages for a consumer that is down (a control plane
restarting, an outage of an hour), and a message is as good when it arrives late as when it
was sent. Replay protection is a sliding window of sequence numbers per device, as in
IPsec's and DTLS's (RFC 4303 §3.4.3): a number taken is remembered, crash-safe in the
store, for `max_clock_skew_s` after it was taken; when that memory is let go, the device's
floor rises to it, and every number at or below the floor is refused (`stale_sequence`).
Numbers are remembered rather than compared with the highest seen: replicas of the control
plane sharing a subscription may take a device's messages in another order than it sent
them, so a number above the floor that was never taken is accepted. A message replayed,
moved to another device's topic, or altered by the broker is refused. The timestamp is
signed and kept for the record, but a device's clock may be wrong by any amount.

The one exception is the device's Last Will (its presence `offline`), signed when it
connects and published by the broker when the connection ends, maybe days later: its
signature is checked without the clock (`verify_message`), and its sequence number is
compared with that of the last presence message taken (`core/presence.py`).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from datetime import datetime

from edgefleet.errors import Unauthenticated
from edgefleet.security.keys import DeviceKey, verify_signature
from edgefleet.security.request_signing import SignedRequest, canonical_request

METHOD = "PUBLISH"
SEQ_NONCE_PREFIX = "seq-"
SEQ = "seq"
TIMESTAMP = "ts"
SIGNATURE = "sig"


def nonce_of(seq: int) -> str:
    """The nonce a sequence number signs as.

    >>> nonce_of(42)
    'seq-00000000000000000042'
    """
    return f"{SEQ_NONCE_PREFIX}{seq:020d}"


def sign_message(
    key: DeviceKey, topic: str, payload: bytes, device_id: str, seq: int, now: datetime
) -> list[tuple[str, str]]:
    """The user properties that authenticate one message."""
    timestamp = int(now.timestamp())
    data = canonical_request(METHOD, topic, payload, device_id, timestamp, nonce_of(seq))
    signature = base64.b64encode(key.sign(data)).decode()
    return [(SEQ, str(seq)), (TIMESTAMP, str(timestamp)), (SIGNATURE, signature)]


def read_message_signature(device_id: str, prop: Callable[[str], str | None]) -> SignedRequest:
    """The signature of a message on `device_id`'s topic, from its user properties (`prop`
    looks one up), as a SignedRequest to check like a request's; Unauthenticated when it is
    missing or malformed."""
    values = {name: prop(name) for name in (SEQ, TIMESTAMP, SIGNATURE)}
    missing = [name for name, value in values.items() if value is None]
    if missing:
        raise Unauthenticated(f"message is not signed: no {missing[0]} property",
                              code="unsigned_request")  # fmt: skip
    try:
        seq = int(values[SEQ] or "")
        timestamp = int(values[TIMESTAMP] or "")
        signature = base64.b64decode(values[SIGNATURE] or "", validate=True)
    except (ValueError, binascii.Error):
        raise Unauthenticated("message signature properties are malformed",
                              code="bad_signature") from None  # fmt: skip
    if not 0 < seq < 10**20:
        raise Unauthenticated("message sequence number out of range", code="bad_signature")
    return SignedRequest(device_id, timestamp, nonce_of(seq), signature)


def seq_of(signed: SignedRequest) -> int:
    """The sequence number a message's nonce carries.

    >>> seq_of(SignedRequest("d-1", 0, nonce_of(42), b""))
    42
    """
    seq = sequence_in(signed.nonce)
    if seq is None:
        raise Unauthenticated("message nonce carries no sequence number", code="bad_signature")
    return seq


def sequence_in(nonce: str) -> int | None:
    """The sequence number a nonce carries, None for an HTTP request's random nonce.

    >>> sequence_in(nonce_of(42)), sequence_in("seq-x1"), sequence_in("Zq3-rT")
    (42, None, None)
    """
    if not nonce.startswith(SEQ_NONCE_PREFIX):
        return None
    digits = nonce.removeprefix(SEQ_NONCE_PREFIX)
    return int(digits) if digits.isascii() and digits.isdigit() else None


def verify_message(signed: SignedRequest, public_key_b64: str, topic: str, payload: bytes) -> None:
    """The signature alone, whatever its timestamp (a Will's); Unauthenticated
    (bad_signature) unless the key signed this topic and payload."""
    data = canonical_request(METHOD, topic, payload, signed.device_id, signed.timestamp,
                             signed.nonce)  # fmt: skip
    verify_signature(public_key_b64, data, signed.signature)
