"""Sealed streams (`security/sealed_stream.py`): sealed through libcrypto as a device does,
opened with `cryptography` as the control plane does, fed in pieces of any size; a stream
altered, reordered, cut short (also exactly at a chunk boundary) or claimed by another device
does not open."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgefleet.errors import Conflict, InvalidInput
from edgefleet.security.sealed_stream import CHUNK_BYTES, HEADER_BYTES, StreamUnsealer, seal_stream
from edgefleet.security.sealing import TAG_BYTES, key_id_of, new_ingest_key, public_key_of

PRIVATE = new_ingest_key()
PUBLIC = public_key_of(PRIVATE)
KEYS = {key_id_of(PUBLIC): PRIVATE}
SEALED_CHUNK = CHUNK_BYTES + TAG_BYTES


def sealed(plaintext: bytes, device: str = "dev-1") -> bytes:
    pieces = (plaintext[i : i + 10_000] for i in range(0, len(plaintext), 10_000))
    return b"".join(seal_stream(PUBLIC, device, pieces))


def unsealed(stream: bytes, device: str = "dev-1", piece: int = 4096) -> bytes:
    opener = StreamUnsealer(lambda _key_id: KEYS, device)
    out = [opener.feed(stream[i : i + piece]) for i in range(0, len(stream), piece)]
    return b"".join(out) + opener.finish()


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 3 * CHUNK_BYTES + 5), st.integers(1, 2 * SEALED_CHUNK))
def test_a_stream_opens_to_its_plaintext_whatever_the_pieces(size: int, piece: int) -> None:
    plaintext = os.urandom(size)
    stream = sealed(plaintext)
    chunks = max(1, -(-size // CHUNK_BYTES))
    assert len(stream) == HEADER_BYTES + size + chunks * TAG_BYTES
    assert unsealed(stream, piece=piece) == plaintext


def test_no_plaintext_shows_in_the_stream() -> None:
    marker = b"MARKER-" * 1000
    assert b"MARKER" not in sealed(marker + os.urandom(CHUNK_BYTES) + marker)


def chunk_spans(stream: bytes) -> Iterator[tuple[int, int]]:
    for start in range(HEADER_BYTES, len(stream), SEALED_CHUNK):
        yield start, min(start + SEALED_CHUNK, len(stream))


def test_a_stream_cut_altered_or_reordered_does_not_open() -> None:
    stream = sealed(os.urandom(2 * CHUNK_BYTES + 100))
    (a0, a1), (b0, b1), _last = chunk_spans(stream)
    cut_at_boundary = stream[:b1]  # two whole chunks: only the missing last flag tells
    swapped = stream[:a0] + stream[b0:b1] + stream[a0:a1] + stream[b1:]
    flipped = bytearray(stream)
    flipped[a0 + 10] ^= 1
    for broken in (cut_at_boundary, swapped, bytes(flipped), stream[:-1], stream[:HEADER_BYTES]):
        with pytest.raises(InvalidInput, match=r"does not open|ended"):
            unsealed(broken)
    with pytest.raises(InvalidInput, match="ended before its last chunk"):
        unsealed(stream[: HEADER_BYTES - 1])


def test_a_stream_opens_only_as_the_device_that_sealed_it_and_with_a_known_key() -> None:
    stream = sealed(b"state")
    with pytest.raises(InvalidInput, match="sealed by another device"):
        unsealed(stream, device="dev-2")
    opener = StreamUnsealer(lambda _key_id: {}, "dev-1")
    with pytest.raises(Conflict, match="unknown ingest key"):
        opener.feed(stream)
