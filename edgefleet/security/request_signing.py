"""Signed device requests: every request after enrollment carries an Ed25519 signature
over its method, path, body hash, device id, timestamp and a one-time nonce.

The server checks the signature against the device's enrolled key, refuses timestamps
outside the allowed clock skew, and refuses a nonce it has seen (the store remembers nonces
for the skew window), so a captured request cannot be replayed or moved to another device.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from edgefleet.errors import Unauthenticated
from edgefleet.security.keys import DeviceKey, verify_signature

HEADER_DEVICE = "x-edgefleet-device"
HEADER_TIMESTAMP = "x-edgefleet-timestamp"
HEADER_NONCE = "x-edgefleet-nonce"
HEADER_SIGNATURE = "x-edgefleet-signature"
SIGNED_HEADERS = (HEADER_DEVICE, HEADER_TIMESTAMP, HEADER_NONCE, HEADER_SIGNATURE)

_NONCE_RE = re.compile(r"[A-Za-z0-9_-]{16,64}")
DEFAULT_MAX_SKEW_S = 300


def canonical_request(
    method: str, target: str, body: bytes, device_id: str, timestamp: int, nonce: str
) -> bytes:
    """The exact bytes a device signs. `target` is the path with its query string."""
    body_sha256 = hashlib.sha256(body).hexdigest()
    return canonical_request_of_digest(method, target, body_sha256, device_id, timestamp, nonce)


def canonical_request_of_digest(
    method: str, target: str, body_sha256: str, device_id: str, timestamp: int, nonce: str
) -> bytes:
    """`canonical_request` from the body's sha256 (hex), for a body hashed while it streams."""
    return "\n".join(
        ["EDGEFLEET-REQUEST-V1", method.upper(), target, device_id, str(timestamp), nonce,
         body_sha256]
    ).encode()  # fmt: skip


def sign_request(
    key: DeviceKey, method: str, target: str, body: bytes, device_id: str, now: datetime
) -> dict[str, str]:
    """Headers that authenticate one request; a fresh nonce every call."""
    timestamp = int(now.timestamp())
    nonce = secrets.token_urlsafe(18)
    signature = key.sign(canonical_request(method, target, body, device_id, timestamp, nonce))
    return {
        HEADER_DEVICE: device_id,
        HEADER_TIMESTAMP: str(timestamp),
        HEADER_NONCE: nonce,
        HEADER_SIGNATURE: base64.b64encode(signature).decode(),
    }


@dataclass(frozen=True)
class SignedRequest:
    device_id: str
    timestamp: int
    nonce: str
    signature: bytes


def read_signed_headers(headers: Mapping[str, str]) -> SignedRequest:
    """Parse the signature headers; Unauthenticated naming what is missing or malformed."""
    missing = [h for h in SIGNED_HEADERS if h not in headers]
    if missing:
        raise Unauthenticated(
            f"device request is not signed: missing header {missing[0]}", code="unsigned_request"
        )
    try:
        timestamp = int(headers[HEADER_TIMESTAMP])
    except ValueError:
        raise Unauthenticated(f"{HEADER_TIMESTAMP} is not an integer") from None
    nonce = headers[HEADER_NONCE]
    if not _NONCE_RE.fullmatch(nonce):
        raise Unauthenticated(f"{HEADER_NONCE} must be 16-64 URL-safe characters")
    try:
        signature = base64.b64decode(headers[HEADER_SIGNATURE], validate=True)
    except binascii.Error:
        raise Unauthenticated(f"{HEADER_SIGNATURE} is not base64") from None
    return SignedRequest(headers[HEADER_DEVICE], timestamp, nonce, signature)


def verify_signed_request(
    signed: SignedRequest,
    public_key_b64: str,
    method: str,
    target: str,
    body: bytes,
    now: datetime,
    max_skew_s: int = DEFAULT_MAX_SKEW_S,
) -> None:
    """Check freshness and signature (the caller checks nonce reuse against its store)."""
    body_sha256 = hashlib.sha256(body).hexdigest()
    verify_signed_digest(signed, public_key_b64, method, target, body_sha256, now, max_skew_s)


def verify_signed_digest(
    signed: SignedRequest,
    public_key_b64: str,
    method: str,
    target: str,
    body_sha256: str,
    now: datetime,
    max_skew_s: int = DEFAULT_MAX_SKEW_S,
) -> None:
    """`verify_signed_request` for a body known by its sha256 (hex)."""
    check_fresh(signed, now, max_skew_s)
    data = canonical_request_of_digest(method, target, body_sha256, signed.device_id,
                                       signed.timestamp, signed.nonce)  # fmt: skip
    verify_signature(public_key_b64, data, signed.signature)


def check_fresh(signed: SignedRequest, now: datetime, max_skew_s: int = DEFAULT_MAX_SKEW_S) -> None:
    """Unauthenticated `stale_request` unless the timestamp is within `max_skew_s` of now."""
    skew = abs(now.timestamp() - signed.timestamp)
    if skew > max_skew_s:
        raise Unauthenticated(
            f"request timestamp is {skew:.0f}s from server time (allowed {max_skew_s}s); "
            "check the device clock",
            code="stale_request",
        )
