"""Device keys: Ed25519 identity created on first start, kept in a 0600 file.

A device's id is derived from its public key, so re-enrolling with the same key is
idempotent and an id can never be claimed by a different key.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from edgefleet.atomicfile import write_atomically
from edgefleet.errors import InvalidInput, SettingsError, Unauthenticated


class DeviceKey:
    """A device's private signing key."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private = private_key
        raw = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.public_key_b64 = base64.b64encode(raw).decode()

    @classmethod
    def generate(cls) -> DeviceKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load_or_create(cls, path: Path) -> DeviceKey:
        """Load the key at `path`, creating it (mode 0600) when absent.

        Refuses a key file that other users can read, as ssh does.
        """
        if not path.exists():
            key = cls.generate()
            pem = key._private.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            write_atomically(path, pem, mode=0o600)
            return key
        mode = stat.S_IMODE(os.stat(path).st_mode)
        if mode & 0o077:
            raise SettingsError(
                f"device key {path} is accessible by other users (mode {mode:04o}); "
                f"run: chmod 600 {path}"
            )
        try:
            loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except ValueError as e:
            raise SettingsError(f"device key {path} is not a valid PEM private key: {e}") from e
        if not isinstance(loaded, Ed25519PrivateKey):
            raise SettingsError(f"device key {path} is not an Ed25519 key")
        return cls(loaded)

    def sign(self, data: bytes) -> bytes:
        return self._private.sign(data)


def decode_public_key(public_key_b64: str) -> Ed25519PublicKey:
    """Parse a base64 raw Ed25519 public key; InvalidInput when it is not one."""
    try:
        raw = base64.b64decode(public_key_b64, validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (binascii.Error, ValueError):
        raise InvalidInput("public_key is not a base64-encoded 32-byte Ed25519 key") from None


@functools.lru_cache(maxsize=65536)
def _verifier(public_key_b64: str) -> Ed25519PublicKey:
    """The parsed key, kept: the server verifies every device request with one."""
    return decode_public_key(public_key_b64)


def verify_signature(public_key_b64: str, data: bytes, signature: bytes) -> None:
    """Raise Unauthenticated unless `signature` is the key's signature over `data`."""
    try:
        _verifier(public_key_b64).verify(signature, data)
    except (InvalidSignature, InvalidInput):
        raise Unauthenticated("request signature does not verify", code="bad_signature") from None


def device_id_for(public_key_b64: str) -> str:
    """The device id owned by a public key: `d-` and 20 base32 characters of its hash."""
    digest = hashlib.sha256(base64.b64decode(public_key_b64)).digest()
    return "d-" + base64.b32encode(digest).decode().lower()[:20]
