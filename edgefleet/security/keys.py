"""Device keys: Ed25519 identity created on first start, kept in a 0600 file.

A device's id is derived from its public key, so re-enrolling with the same key is
idempotent and an id can never be claimed by a different key.

The agent signs with the host's libcrypto (`security/libcrypto.py`), not with the
`cryptography` package, which would add about 10 MB to its resident memory. The key file
is the unencrypted PKCS#8 PEM that `cryptography` and `openssl genpkey -algorithm ed25519`
write; its DER is fixed (a 16-byte prefix, then the 32-byte seed), so it is read and
written here (`decode_private_key_pem`, `encode_private_key_pem`). Verifying signatures is
the control plane's job and uses `cryptography`, imported by `decode_public_key` on first
use: a process that only signs never loads it.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import os
import re
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from edgefleet.atomicfile import write_atomically
from edgefleet.errors import InvalidInput, SettingsError, Unauthenticated
from edgefleet.security.libcrypto import SEED_BYTES, Ed25519SigningKey

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

# PrivateKeyInfo { version 0, AlgorithmIdentifier { id-Ed25519 }, OCTET STRING { OCTET
# STRING seed } } (RFC 8410): everything before the seed.
_PKCS8_ED25519_PREFIX = bytes.fromhex("302e020100300506032b657004220420")
_PEM_RE = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END \1-----", re.DOTALL)
_ALGORITHMS = {
    "1.3.101.112": "Ed25519",
    "1.3.101.113": "Ed448",
    "1.2.840.113549.1.1.1": "RSA",
    "1.2.840.10045.2.1": "EC",
    "1.2.840.10040.4.1": "DSA",
}


class DeviceKey:
    """A device's private signing key."""

    def __init__(self, seed: bytes) -> None:
        self._signer = Ed25519SigningKey(seed)
        self.public_key_b64 = base64.b64encode(self._signer.public_key).decode()

    @classmethod
    def generate(cls) -> DeviceKey:
        return cls(os.urandom(SEED_BYTES))

    @classmethod
    def load_or_create(cls, path: Path) -> DeviceKey:
        """Load the key at `path`, creating it (mode 0600) when absent.

        Refuses a key file that other users can read, as ssh does.
        """
        if not path.exists():
            seed = os.urandom(SEED_BYTES)
            key = cls(seed)  # first: a libcrypto that cannot sign leaves no key file behind
            write_atomically(path, encode_private_key_pem(seed), mode=0o600)
            return key
        mode = stat.S_IMODE(os.stat(path).st_mode)
        if mode & 0o077:
            raise SettingsError(
                f"device key {path} is accessible by other users (mode {mode:04o}); "
                f"run: chmod 600 {path}"
            )
        try:
            seed = decode_private_key_pem(path.read_bytes())
        except InvalidInput as e:
            raise SettingsError(f"device key {path} {e.message}") from None
        return cls(seed)

    def sign(self, data: bytes) -> bytes:
        return self._signer.sign(data)


def encode_private_key_pem(seed: bytes) -> bytes:
    """The unencrypted PKCS#8 PEM of the Ed25519 key with this 32-byte seed, byte for byte
    what `cryptography` writes."""
    if len(seed) != SEED_BYTES:
        raise InvalidInput(f"an Ed25519 seed is {SEED_BYTES} bytes, not {len(seed)}")
    body = base64.b64encode(_PKCS8_ED25519_PREFIX + seed)  # 64 characters: one PEM line
    return b"-----BEGIN PRIVATE KEY-----\n" + body + b"\n-----END PRIVATE KEY-----\n"


def decode_private_key_pem(pem: bytes) -> bytes:
    """The seed of an unencrypted PKCS#8 Ed25519 key in PEM; InvalidInput saying what the
    data is instead (its message reads after the file's name).

        >>> seed = bytes(range(32))
        >>> decode_private_key_pem(encode_private_key_pem(seed)) == seed
        True
    """
    match = _PEM_RE.search(pem)
    if match is None:
        raise InvalidInput("is not a PEM private key", code="invalid_key")
    label = match[1].decode()
    if label == "ENCRYPTED PRIVATE KEY":
        raise InvalidInput("is encrypted; the agent needs an unencrypted key", code="invalid_key")
    if label != "PRIVATE KEY":
        raise InvalidInput(
            f"holds a PEM {label!r}, not a PKCS#8 Ed25519 private key", code="invalid_key"
        )
    try:
        der = base64.b64decode(b"".join(match[2].split()), validate=True)
    except binascii.Error:
        raise InvalidInput(
            "is not a valid PEM private key (bad base64)", code="invalid_key"
        ) from None
    if len(der) == len(_PKCS8_ED25519_PREFIX) + SEED_BYTES and der.startswith(
        _PKCS8_ED25519_PREFIX
    ):
        return der[len(_PKCS8_ED25519_PREFIX) :]
    algorithm = _algorithm_of(der)
    if algorithm == "Ed25519":
        raise InvalidInput(
            "is an Ed25519 key in a PKCS#8 form the agent does not read (with attributes or "
            "a public key); rewrite it with: openssl pkey -in KEY -out KEY",
            code="invalid_key",
        )
    raise InvalidInput(
        f"is not an Ed25519 key ({algorithm or 'unrecognised PKCS#8 data'})", code="invalid_key"
    )


def _algorithm_of(der: bytes) -> str | None:
    """The algorithm a PKCS#8 PrivateKeyInfo names, or None when it is not one."""

    def header(at: int) -> tuple[int, int, int]:  # (tag, start of content, length)
        tag, first = der[at], der[at + 1]
        if first < 0x80:
            return tag, at + 2, first
        count = first & 0x7F
        return tag, at + 2 + count, int.from_bytes(der[at + 2 : at + 2 + count], "big")

    try:
        tag, at, _ = header(0)  # PrivateKeyInfo
        if tag != 0x30:
            return None
        tag, start, length = header(at)  # version
        if tag != 0x02:
            return None
        tag, at, _ = header(start + length)  # AlgorithmIdentifier
        if tag != 0x30:
            return None
        tag, start, length = header(at)  # its OID
        if tag != 0x06 or length == 0:
            return None
        oid = der[start : start + length]
    except IndexError:
        return None
    arcs, value = [], 0
    for byte in oid:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    if not arcs:
        return None
    first = min(arcs[0] // 40, 2)
    dotted = ".".join(map(str, [first, arcs[0] - 40 * first, *arcs[1:]]))
    return _ALGORITHMS.get(dotted, f"algorithm {dotted}")


def decode_public_key(public_key_b64: str) -> Ed25519PublicKey:
    """Parse a base64 raw Ed25519 public key; InvalidInput when it is not one."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

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
    from cryptography.exceptions import InvalidSignature

    try:
        _verifier(public_key_b64).verify(signature, data)
    except (InvalidSignature, InvalidInput):
        raise Unauthenticated("request signature does not verify", code="bad_signature") from None


def device_id_for(public_key_b64: str) -> str:
    """The device id owned by a public key: `d-` and 20 base32 characters of its hash."""
    digest = hashlib.sha256(base64.b64decode(public_key_b64)).digest()
    return "d-" + base64.b32encode(digest).decode().lower()[:20]
