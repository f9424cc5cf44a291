"""The agent's hand-built PKCS#10 request, read by `cryptography` as the device CA reads it."""

from __future__ import annotations

import base64

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from edgefleet.agent.certificates import build_csr
from edgefleet.security.keys import DeviceKey

KEY = DeviceKey(bytes(range(32)))


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=200))
def test_the_csr_is_self_signed_for_the_device_key_and_names_it(common_name: str) -> None:
    csr = x509.load_pem_x509_csr(build_csr(KEY, common_name).encode())
    assert csr.is_signature_valid
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == common_name
    raw = csr.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert base64.b64encode(raw).decode() == KEY.public_key_b64


def test_a_csr_altered_after_signing_does_not_verify() -> None:
    pem = build_csr(KEY, "d-abc")
    der = x509.load_pem_x509_csr(pem.encode()).public_bytes(serialization.Encoding.DER)
    forged = der.replace(b"d-abc", b"d-abd")
    assert not x509.load_der_x509_csr(forged).is_signature_valid
