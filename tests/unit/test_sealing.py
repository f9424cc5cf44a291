"""Sealed payloads: sealed through libcrypto on the device side, opened with `cryptography`
on the control plane's."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given
from hypothesis import strategies as st

from edgefleet.errors import Conflict, InvalidInput
from edgefleet.security.sealing import (
    HEADER_BYTES,
    hkdf_sha256,
    key_id_of,
    new_ingest_key,
    public_key_of,
    seal,
    unseal,
)

PRIVATE = new_ingest_key()
PUBLIC = public_key_of(PRIVATE)
KEYS = {key_id_of(PUBLIC): PRIVATE}


@given(st.binary(max_size=5000))
def test_a_sealed_payload_opens_with_the_ingest_key(plaintext: bytes) -> None:
    sealed = seal(PUBLIC, "d-one", plaintext)
    assert unseal(KEYS, "d-one", sealed) == plaintext
    if len(plaintext) >= 8:
        assert plaintext not in sealed[HEADER_BYTES:]


def test_sealing_is_fresh_every_time() -> None:
    assert seal(PUBLIC, "d-one", b"cpu_load") != seal(PUBLIC, "d-one", b"cpu_load")


def test_an_altered_payload_another_device_or_another_key_does_not_open() -> None:
    sealed = seal(PUBLIC, "d-one", b"gpu_temp_c 71")
    flipped = bytearray(sealed)
    flipped[HEADER_BYTES + 3] ^= 1
    for device_id, payload in (("d-one", bytes(flipped)), ("d-two", sealed)):
        with pytest.raises(InvalidInput) as refused:
            unseal(KEYS, device_id, payload)
        assert refused.value.code == "bad_sealed_payload"
    other = new_ingest_key()
    with pytest.raises(Conflict) as conflict:  # retried by the agent with the current key
        unseal({key_id_of(public_key_of(other)): other}, "d-one", sealed)
    assert conflict.value.code == "unknown_ingest_key"
    with pytest.raises(InvalidInput):
        unseal(KEYS, "d-one", b"EFSEAL1\nshort")


@given(st.binary(min_size=1, max_size=64), st.binary(max_size=64), st.binary(max_size=64),
       st.integers(1, 255))  # fmt: skip
def test_hkdf_is_rfc_5869(secret: bytes, salt: bytes, info: bytes, length: int) -> None:
    expected = HKDF(hashes.SHA256(), length, salt or None, info).derive(secret)
    assert hkdf_sha256(secret, salt or bytes(32), info, length) == expected
