"""Sealed streams: a file sealed to the control plane's ingest key in fixed-size chunks, so
it is sealed and opened with bounded memory however large it is (a migration's state
archive).

    stream = MAGIC | key id (8) | ephemeral X25519 public key (32) | nonce prefix (7)
             | chunk 0 | chunk 1 | ... | last chunk
    chunk  = ChaCha20-Poly1305(plaintext of CHUNK_BYTES, or fewer in the last) + tag (16)
    nonce  = nonce prefix (7) | chunk counter (4, big endian) | 1 for the last chunk, else 0

The key is derived as for a sealed payload (`security/sealing.py`: X25519 with an ephemeral
key, HKDF-SHA256 over both public keys, this format's label and the device id), and every
chunk is authenticated with the header and the device id. The counter in the nonce detects
chunks reordered, dropped or repeated; the last-chunk flag detects a stream cut at a chunk
boundary (the STREAM construction of Hoang, Reyhanitabar, Rogaway and Vizár). A device seals
through the host's libcrypto; the control plane opens with `cryptography`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING

from edgefleet.errors import Conflict, InvalidInput
from edgefleet.security.sealing import (
    KEY_ID_BYTES,
    PUBLIC_KEY_BYTES,
    TAG_BYTES,
    chacha20_poly1305_seal,
    hkdf_sha256,
    key_id_of,
    public_key_of,
    x25519_ephemeral,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

# A state archive uploaded sealed (`PUT /v1/checkpoints/...`) is sent with this type.
SEALED_ARCHIVE_CONTENT_TYPE = "application/x-edgefleet-archive-sealed"
MAGIC = b"EFSTRM1\n"
PREFIX_BYTES = 7
HEADER_BYTES = len(MAGIC) + KEY_ID_BYTES + PUBLIC_KEY_BYTES + PREFIX_BYTES
CHUNK_BYTES = 64 * 1024
_INFO = b"edgefleet sealed stream v1\n"
_MAX_CHUNKS = 2**32


def _nonce(prefix: bytes, counter: int, last: bool) -> bytes:
    if counter >= _MAX_CHUNKS:
        raise InvalidInput("a sealed stream has at most 2^32 chunks", code="bad_sealed_payload")
    return prefix + counter.to_bytes(4, "big") + (b"\x01" if last else b"\x00")


def _key(shared: bytes, ephemeral: bytes, recipient: bytes, device_id: str) -> bytes:
    return hkdf_sha256(shared, ephemeral + recipient, _INFO + device_id.encode())


def seal_stream(recipient: bytes, device_id: str, chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The sealed stream of the bytes `chunks` yields, for `device_id`: the header, then one
    sealed chunk per CHUNK_BYTES of plaintext (holding at most two chunks at a time)."""
    ephemeral, shared = x25519_ephemeral(recipient)
    prefix = os.urandom(PREFIX_BYTES)
    header = MAGIC + key_id_of(recipient) + ephemeral + prefix
    key = _key(shared, ephemeral, recipient, device_id)
    aad = header + device_id.encode()
    yield header
    pending = b""
    counter = 0
    for data in chunks:
        pending += data
        # Keep a full chunk back until more follows: only the last one carries the flag.
        while len(pending) > CHUNK_BYTES:
            chunk, pending = pending[:CHUNK_BYTES], pending[CHUNK_BYTES:]
            yield chacha20_poly1305_seal(key, _nonce(prefix, counter, False), aad, chunk)
            counter += 1
    yield chacha20_poly1305_seal(key, _nonce(prefix, counter, True), aad, pending)


class StreamUnsealer:
    """Opens a sealed stream fed in pieces of any size: `feed` answers the plaintext of the
    chunks complete so far, `finish` the rest once the stream ended. InvalidInput when it is
    malformed, altered, cut short or sealed by another device; Conflict when it is sealed to
    a key `private_keys` (key id -> raw X25519 private keys) does not find."""

    def __init__(self, private_keys: Callable[[bytes], Mapping[bytes, bytes]], device_id: str
                 ) -> None:  # fmt: skip
        self._private_keys = private_keys
        self._device_id = device_id
        self._buffer = b""
        self._aead: ChaCha20Poly1305 | None = None
        self._prefix = b""
        self._aad = b""
        self._counter = 0
        self._done = False

    def feed(self, data: bytes) -> bytes:
        if self._done:
            raise InvalidInput("bytes after the last chunk of a sealed stream",
                               code="bad_sealed_payload")  # fmt: skip
        self._buffer += data
        if self._aead is None:
            if len(self._buffer) < HEADER_BYTES:
                return b""
            self._open_header(self._buffer[:HEADER_BYTES])
            self._buffer = self._buffer[HEADER_BYTES:]
        out = []
        sealed_chunk = CHUNK_BYTES + TAG_BYTES
        # A full chunk may be the last one: open it only once a byte beyond it arrived.
        while len(self._buffer) > sealed_chunk:
            chunk, self._buffer = self._buffer[:sealed_chunk], self._buffer[sealed_chunk:]
            out.append(self._open(chunk, last=False))
        return b"".join(out)

    def finish(self) -> bytes:
        """The plaintext of the last chunk; InvalidInput when the stream was cut short."""
        if self._aead is None or self._done:
            raise InvalidInput("the sealed stream ended before its last chunk",
                               code="bad_sealed_payload")  # fmt: skip
        self._done = True
        return self._open(self._buffer, last=True)

    def _open_header(self, header: bytes) -> None:
        from cryptography.hazmat.primitives.asymmetric.x25519 import (
            X25519PrivateKey,
            X25519PublicKey,
        )
        from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

        if not header.startswith(MAGIC):
            raise InvalidInput("not a sealed stream", code="bad_sealed_payload")
        at = len(MAGIC)
        key_id = header[at : at + KEY_ID_BYTES]
        ephemeral = header[at + KEY_ID_BYTES : at + KEY_ID_BYTES + PUBLIC_KEY_BYTES]
        raw = self._private_keys(key_id).get(key_id)
        if raw is None:
            raise Conflict(f"the stream is sealed to an unknown ingest key {key_id.hex()}; "
                           "seal to the key of the current desired state",
                           code="unknown_ingest_key")  # fmt: skip
        shared = X25519PrivateKey.from_private_bytes(raw).exchange(
            X25519PublicKey.from_public_bytes(ephemeral)
        )
        key = _key(shared, ephemeral, public_key_of(raw), self._device_id)
        self._aead = ChaCha20Poly1305(key)
        self._prefix = header[HEADER_BYTES - PREFIX_BYTES :]
        self._aad = header + self._device_id.encode()

    def _open(self, chunk: bytes, last: bool) -> bytes:
        from cryptography.exceptions import InvalidTag

        if self._aead is None:
            raise InvalidInput("the sealed stream ended inside its header",
                               code="bad_sealed_payload")  # fmt: skip
        nonce = _nonce(self._prefix, self._counter, last)
        self._counter += 1
        try:
            return self._aead.decrypt(nonce, chunk, self._aad)
        except InvalidTag:
            raise InvalidInput("the sealed stream does not open: altered, cut short, or "
                               "sealed by another device",
                               code="bad_sealed_payload") from None  # fmt: skip
