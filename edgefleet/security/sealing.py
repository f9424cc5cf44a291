"""Sealed payloads: a device encrypts a telemetry batch to the control plane's ingest key,
so the brokers, gateways and proxies it passes see nothing of it.

    sealed = MAGIC | key id (8) | ephemeral X25519 public key (32) | nonce (12) | ciphertext+tag

The device makes an ephemeral X25519 key per payload, agrees a secret with the ingest
public key, derives the ChaCha20-Poly1305 key with HKDF-SHA256 (salt: both public keys;
info: the label and the device id) and encrypts with the header and the device id as
associated data: a payload opens only with the ingest private key, only as the device that
sealed it, and any change to it is detected. A file too large to hold at once is sealed
in chunks instead (`security/sealed_stream.py`), with the same keys.

The agent seals through the host's libcrypto (ctypes, as it signs: `security/libcrypto.py`)
with HKDF from the standard library; the control plane opens with `cryptography`, imported
by `unseal` and `new_ingest_key` only.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import hmac
import os
from collections.abc import Mapping
from ctypes import POINTER, byref, c_char_p, c_int, c_size_t, c_ubyte, c_void_p
from typing import Any

from edgefleet.errors import Conflict, InvalidInput, SettingsError
from edgefleet.security.libcrypto import _candidates

MAGIC = b"EFSEAL1\n"
KEY_ID_BYTES = 8
PUBLIC_KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
HEADER_BYTES = len(MAGIC) + KEY_ID_BYTES + PUBLIC_KEY_BYTES + NONCE_BYTES
_INFO = b"edgefleet sealed payload v1\n"
EVP_PKEY_X25519 = 1034  # NID_X25519
_EVP_CTRL_AEAD_SET_IVLEN = 0x9
_EVP_CTRL_AEAD_GET_TAG = 0x10

_FUNCTIONS: dict[str, tuple[Any, list[Any]]] = {
    "EVP_PKEY_new_raw_private_key": (c_void_p, [c_int, c_void_p, c_char_p, c_size_t]),
    "EVP_PKEY_new_raw_public_key": (c_void_p, [c_int, c_void_p, c_char_p, c_size_t]),
    "EVP_PKEY_get_raw_public_key": (c_int, [c_void_p, POINTER(c_ubyte), POINTER(c_size_t)]),
    "EVP_PKEY_free": (None, [c_void_p]),
    "EVP_PKEY_CTX_new": (c_void_p, [c_void_p, c_void_p]),
    "EVP_PKEY_CTX_free": (None, [c_void_p]),
    "EVP_PKEY_derive_init": (c_int, [c_void_p]),
    "EVP_PKEY_derive_set_peer": (c_int, [c_void_p, c_void_p]),
    "EVP_PKEY_derive": (c_int, [c_void_p, POINTER(c_ubyte), POINTER(c_size_t)]),
    "EVP_chacha20_poly1305": (c_void_p, []),
    "EVP_CIPHER_CTX_new": (c_void_p, []),
    "EVP_CIPHER_CTX_free": (None, [c_void_p]),
    "EVP_EncryptInit_ex": (c_int, [c_void_p, c_void_p, c_void_p, c_char_p, c_char_p]),
    "EVP_EncryptUpdate": (c_int, [c_void_p, c_void_p, POINTER(c_int), c_char_p, c_int]),
    "EVP_EncryptFinal_ex": (c_int, [c_void_p, c_void_p, POINTER(c_int)]),
    "EVP_CIPHER_CTX_ctrl": (c_int, [c_void_p, c_int, c_int, c_void_p]),
    "ERR_clear_error": (None, []),
}


@functools.cache
def _library() -> Any:
    """The host's libcrypto with X25519 and ChaCha20-Poly1305 declared."""
    for path, _source in _candidates():
        try:
            library = ctypes.CDLL(path)
            for name, (restype, argtypes) in _FUNCTIONS.items():
                function = getattr(library, name)
                function.restype, function.argtypes = restype, argtypes
        except (OSError, AttributeError):
            continue
        return library
    raise SettingsError("no libcrypto with X25519 and ChaCha20-Poly1305 (OpenSSL >= 1.1.1) "
                        "found to seal telemetry with")  # fmt: skip


def key_id_of(public_key: bytes) -> bytes:
    """The 8-byte id of an ingest public key: the start of its SHA-256."""
    return hashlib.sha256(public_key).digest()[:KEY_ID_BYTES]


def hkdf_sha256(secret: bytes, salt: bytes, info: bytes, length: int = 32) -> bytes:
    """HKDF-SHA256 (RFC 5869)."""
    prk = hmac.new(salt, secret, hashlib.sha256).digest()
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


def _key(shared: bytes, ephemeral: bytes, recipient: bytes, device_id: str) -> bytes:
    return hkdf_sha256(shared, ephemeral + recipient, _INFO + device_id.encode())


def x25519_ephemeral(recipient: bytes) -> tuple[bytes, bytes]:
    """(ephemeral public key, shared secret) with `recipient`, through libcrypto."""
    lib = _library()
    private = lib.EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, None, os.urandom(32), 32)
    peer = lib.EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, None, recipient, len(recipient))
    ctx = lib.EVP_PKEY_CTX_new(private, None) if private else None
    try:
        public = (c_ubyte * PUBLIC_KEY_BYTES)()
        public_length = c_size_t(PUBLIC_KEY_BYTES)
        shared = (c_ubyte * 32)()
        shared_length = c_size_t(32)
        if not (
            private and peer and ctx
            and lib.EVP_PKEY_get_raw_public_key(private, public, byref(public_length)) == 1
            and lib.EVP_PKEY_derive_init(ctx) == 1
            and lib.EVP_PKEY_derive_set_peer(ctx, peer) == 1
            and lib.EVP_PKEY_derive(ctx, shared, byref(shared_length)) == 1
        ):  # fmt: skip
            lib.ERR_clear_error()
            raise InvalidInput("the ingest public key is not an X25519 key", code="bad_ingest_key")
        return bytes(public[: public_length.value]), bytes(shared[: shared_length.value])
    finally:
        if ctx:
            lib.EVP_PKEY_CTX_free(ctx)
        for key in (private, peer):
            if key:
                lib.EVP_PKEY_free(key)


def chacha20_poly1305_seal(key: bytes, nonce: bytes, aad: bytes, plaintext: bytes) -> bytes:
    """Ciphertext and tag, through libcrypto."""
    lib = _library()
    ctx = lib.EVP_CIPHER_CTX_new()
    if not ctx:
        raise MemoryError("libcrypto could not allocate a cipher context")
    try:
        out = ctypes.create_string_buffer(len(plaintext) + TAG_BYTES)
        tag = ctypes.create_string_buffer(TAG_BYTES)
        written, final = c_int(0), c_int(0)
        ok = (
            lib.EVP_EncryptInit_ex(ctx, lib.EVP_chacha20_poly1305(), None, None, None) == 1
            and lib.EVP_CIPHER_CTX_ctrl(ctx, _EVP_CTRL_AEAD_SET_IVLEN, NONCE_BYTES, None) == 1
            and lib.EVP_EncryptInit_ex(ctx, None, None, key, nonce) == 1
            and lib.EVP_EncryptUpdate(ctx, None, byref(c_int(0)), aad, len(aad)) == 1
            and lib.EVP_EncryptUpdate(ctx, out, byref(written), plaintext, len(plaintext)) == 1
            and lib.EVP_EncryptFinal_ex(ctx, ctypes.byref(out, written.value), byref(final)) == 1
            and lib.EVP_CIPHER_CTX_ctrl(ctx, _EVP_CTRL_AEAD_GET_TAG, TAG_BYTES, tag) == 1
        )
        if not ok:
            lib.ERR_clear_error()
            raise SettingsError("libcrypto failed to encrypt with ChaCha20-Poly1305")
        return out.raw[: written.value + final.value] + tag.raw
    finally:
        lib.EVP_CIPHER_CTX_free(ctx)


def seal(recipient: bytes, device_id: str, plaintext: bytes) -> bytes:
    """`plaintext` sealed to the X25519 public key `recipient`, for `device_id`."""
    ephemeral, shared = x25519_ephemeral(recipient)
    nonce = os.urandom(NONCE_BYTES)
    header = MAGIC + key_id_of(recipient) + ephemeral + nonce
    key = _key(shared, ephemeral, recipient, device_id)
    return header + chacha20_poly1305_seal(key, nonce, header + device_id.encode(), plaintext)


def unseal(private_keys: Mapping[bytes, bytes], device_id: str, sealed: bytes) -> bytes:
    """The plaintext of a payload `device_id` sealed to one of `private_keys` (raw X25519
    private keys by key id); InvalidInput when it is malformed, from another device or
    altered, Conflict when it is sealed to a key not among them."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.asymmetric.x25519 import (
        X25519PrivateKey,
        X25519PublicKey,
    )
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    if len(sealed) < HEADER_BYTES + TAG_BYTES or not sealed.startswith(MAGIC):
        raise InvalidInput("the sealed payload is malformed", code="bad_sealed_payload")
    at = len(MAGIC)
    key_id = sealed[at : at + KEY_ID_BYTES]
    ephemeral = sealed[at + KEY_ID_BYTES : at + KEY_ID_BYTES + PUBLIC_KEY_BYTES]
    nonce = sealed[HEADER_BYTES - NONCE_BYTES : HEADER_BYTES]
    raw = private_keys.get(key_id)
    if raw is None:
        # A conflict, not bad input: the device seals to the key of a desired state it has
        # not refreshed yet; it keeps the batch and seals it again to the current key.
        raise Conflict(f"the payload is sealed to an unknown ingest key {key_id.hex()}; "
                       "seal to the key of the current desired state",
                       code="unknown_ingest_key")  # fmt: skip
    private = X25519PrivateKey.from_private_bytes(raw)
    recipient = public_key_of(raw)
    shared = private.exchange(X25519PublicKey.from_public_bytes(ephemeral))
    key = _key(shared, ephemeral, recipient, device_id)
    header = sealed[:HEADER_BYTES]
    try:
        return ChaCha20Poly1305(key).decrypt(nonce, sealed[HEADER_BYTES:],
                                             header + device_id.encode())  # fmt: skip
    except InvalidTag:
        raise InvalidInput("the sealed payload does not open: altered, or sealed by "
                           "another device", code="bad_sealed_payload") from None  # fmt: skip


def new_ingest_key() -> bytes:
    """A fresh raw X25519 private key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    return X25519PrivateKey.generate().private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )  # fmt: skip


def public_key_of(private_key: bytes) -> bytes:
    """The raw X25519 public key of a raw private key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    return (
        X25519PrivateKey.from_private_bytes(private_key)
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
