"""Device keys signed through libcrypto agree with `cryptography` (which the control plane
verifies with), and key files written by either are read by the other."""

from __future__ import annotations

import base64
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from hypothesis import given
from hypothesis import strategies as st

from edgefleet.errors import InvalidInput, SettingsError
from edgefleet.security import libcrypto
from edgefleet.security.keys import (
    DeviceKey,
    decode_private_key_pem,
    encode_private_key_pem,
    verify_signature,
)
from edgefleet.security.libcrypto import load_libcrypto

seeds = st.binary(min_size=32, max_size=32)
messages = st.binary(max_size=4096)


def pkcs8(
    key: PrivateKeyTypes,
    encryption: serialization.KeySerializationEncryption | None = None,
    form: serialization.PrivateFormat | None = None,
) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        form or serialization.PrivateFormat.PKCS8,
        encryption or serialization.NoEncryption(),
    )


def raw_public(key: ed25519.Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


@given(seed=seeds, message=messages)
def test_libcrypto_signatures_verify_with_cryptography_and_equal_its_own(
    seed: bytes, message: bytes
) -> None:
    ours = DeviceKey(seed)
    theirs = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
    assert ours.public_key_b64 == raw_public(theirs)
    signature = ours.sign(message)
    theirs.public_key().verify(signature, message)  # raises if it does not verify
    verify_signature(ours.public_key_b64, message, signature)
    # Ed25519 is deterministic: a signature made by cryptography is the one we make.
    assert theirs.sign(message) == signature


@given(seed=seeds)
def test_pem_round_trips_with_cryptography_both_ways(seed: bytes) -> None:
    theirs = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
    assert encode_private_key_pem(seed) == pkcs8(theirs)
    assert decode_private_key_pem(pkcs8(theirs)) == seed
    loaded = serialization.load_pem_private_key(encode_private_key_pem(seed), password=None)
    assert isinstance(loaded, ed25519.Ed25519PrivateKey)
    assert raw_public(loaded) == raw_public(theirs)


def test_a_key_file_written_by_cryptography_is_loaded(tmp_path: Path) -> None:
    theirs = ed25519.Ed25519PrivateKey.generate()
    path = tmp_path / "device.key"
    path.write_bytes(pkcs8(theirs))
    path.chmod(0o600)
    key = DeviceKey.load_or_create(path)
    assert key.public_key_b64 == raw_public(theirs)
    theirs.public_key().verify(key.sign(b"hello"), b"hello")


def test_a_new_key_file_is_private_and_readable_by_cryptography(tmp_path: Path) -> None:
    path = tmp_path / "device.key"
    key = DeviceKey.load_or_create(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(loaded, ed25519.Ed25519PrivateKey)
    assert raw_public(loaded) == key.public_key_b64
    assert DeviceKey.load_or_create(path).public_key_b64 == key.public_key_b64


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660])
def test_a_key_file_others_can_read_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "device.key"
    DeviceKey.load_or_create(path)
    path.chmod(mode)
    with pytest.raises(SettingsError, match="chmod 600"):
        DeviceKey.load_or_create(path)


OTHER_KEYS = {
    "RSA": lambda: pkcs8(rsa.generate_private_key(65537, 2048)),
    "EC": lambda: pkcs8(ec.generate_private_key(ec.SECP256R1())),
    "Ed448": lambda: pkcs8(ed448.Ed448PrivateKey.generate()),
}


@pytest.mark.parametrize("algorithm", sorted(OTHER_KEYS))
def test_a_key_of_another_algorithm_is_refused_naming_it(tmp_path: Path, algorithm: str) -> None:
    path = tmp_path / "device.key"
    path.write_bytes(OTHER_KEYS[algorithm]())
    path.chmod(0o600)
    with pytest.raises(SettingsError, match=f"is not an Ed25519 key \\({algorithm}\\)"):
        DeviceKey.load_or_create(path)


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"", "is not a PEM private key"),
        (b"not a key at all", "is not a PEM private key"),
        (b"-----BEGIN PRIVATE KEY-----\n!!!\n-----END PRIVATE KEY-----\n", "bad base64"),
        (b"-----BEGIN PRIVATE KEY-----\nMAA=\n-----END PRIVATE KEY-----\n", "not an Ed25519"),
        (
            pkcs8(ed25519.Ed25519PrivateKey.generate(),
                  serialization.BestAvailableEncryption(b"secret")),
            "is encrypted",
        ),
        (
            pkcs8(ec.generate_private_key(ec.SECP256R1()),
                  form=serialization.PrivateFormat.TraditionalOpenSSL),
            "'EC PRIVATE KEY', not a PKCS#8 Ed25519",
        ),
        (
            # A PKCS#8 v2 Ed25519 key (with its public key): valid, but not the fixed form.
            b"-----BEGIN PRIVATE KEY-----\n" + base64.b64encode(
                bytes.fromhex("3051020101300506032b657004220420") + bytes(32)
                + bytes.fromhex("812100") + bytes(32)
            ) + b"\n-----END PRIVATE KEY-----\n",
            "openssl pkey",
        ),
    ],
)  # fmt: skip
def test_malformed_key_files_are_refused_clearly(tmp_path: Path, content: bytes, says: str) -> None:
    path = tmp_path / "device.key"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(SettingsError, match=f"device key {path} .*{says}"):
        DeviceKey.load_or_create(path)


def test_a_seed_must_be_32_bytes() -> None:
    with pytest.raises(InvalidInput):
        encode_private_key_pem(bytes(31))
    with pytest.raises(ValueError, match="32 bytes"):
        DeviceKey(bytes(33))


def test_signing_loads_libcrypto_not_the_cryptography_package() -> None:
    script = (
        "import sys\n"
        "from edgefleet.security.request_signing import sign_request\n"
        "from edgefleet.security.keys import DeviceKey\n"
        "from datetime import UTC, datetime\n"
        "sign_request(DeviceKey.generate(), 'GET', '/v1/x', b'', 'd-x', datetime.now(UTC))\n"
        "print(sorted(m for m in sys.modules if m.startswith('cryptography')))\n"
    )
    output = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            check=True).stdout  # fmt: skip
    assert output.strip() == "[]"
    assert "libcrypto" in load_libcrypto().source


@pytest.fixture
def fresh_libcrypto() -> Iterator[None]:
    load_libcrypto.cache_clear()
    yield
    load_libcrypto.cache_clear()


def test_libcrypto_is_found_by_name_too_and_one_without_ed25519_is_refused(
    fresh_libcrypto: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ctypes.util

    by_name = ctypes.util.find_library("crypto")
    if by_name is None:
        pytest.skip("no libcrypto known to the dynamic loader by name")
    monkeypatch.setattr(libcrypto, "_candidates", lambda: iter([(by_name, by_name)]))
    seed = bytes(range(32))
    theirs = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
    assert DeviceKey(seed).sign(b"x") == theirs.sign(b"x")

    load_libcrypto.cache_clear()
    libc = ctypes.util.find_library("c") or "libc.so.6"
    monkeypatch.setattr(
        libcrypto,
        "_candidates",
        lambda: iter([(libc, "the C library"), ("no-such-lib.so", "nothing")]),
    )
    with pytest.raises(SettingsError, match=r"OpenSSL.s libcrypto 1\.1\.1 or newer") as refused:
        DeviceKey.generate()
    assert "the C library (no raw Ed25519 keys" in refused.value.message
