"""Attestation key certification by the control plane, on SQLite and PostgreSQL. The test
plays the TPM with an endorsement key whose private key it holds, opening each credential
as TPM2_ActivateCredential does, so every path runs without a TPM (the swtpm tests in
tests/integration/test_tpm_credential.py run the real one)."""

from __future__ import annotations

import hmac
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.decrepit.ciphers.modes import CFB
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from edgefleet.core.device import Device
from edgefleet.core.governance.attestation import measurement_digest, parse_policy
from edgefleet.errors import Conflict, Forbidden, InvalidInput
from edgefleet.security.tpm_credential import AK_REQUIRED, ObjectAttributes, kdfa, parse_public
from edgefleet.server.services.attestation import AttestationService, KeyOffer
from edgefleet.store import Database
from tests.fake_clock import FakeClock
from tests.store.test_store import T0, new_device
from tests.unit.test_tpm_credential import EK_ATTRIBUTES, certificate, rsa_public

DER = serialization.Encoding.DER


class Tpm:
    """An EK and an AK, as the test's own RSA keys."""

    def __init__(self, ak_attributes: int = AK_REQUIRED) -> None:
        self.ek_key = rsa.generate_private_key(65537, 2048)
        self.ak_key = rsa.generate_private_key(65537, 2048)
        self.ek_public = rsa_public(self.ek_key.public_key(), EK_ATTRIBUTES, ek=True)
        self.ak_public = rsa_public(self.ak_key.public_key(), ak_attributes)
        self.ak_name = parse_public(self.ak_public).name
        self.ak_pem = (
            self.ak_key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )

    def offer(self, ek_certificate: bytes | None = None) -> KeyOffer:
        return KeyOffer(self.ek_public, ek_certificate, self.ak_public, self.ak_name, self.ak_pem)

    def activate(self, credential: bytes) -> bytes:
        """TPM2_ActivateCredential: the seed under the EK, the HMAC over the AK's name."""
        body = credential[8:]
        size = int.from_bytes(body[:2])
        id_object, encrypted_seed = body[2 : 2 + size], body[4 + size :]
        oaep = padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), b"IDENTITY\0")
        seed = self.ek_key.decrypt(encrypted_seed, oaep)
        integrity, enc_identity = id_object[2:34], id_object[34:]
        hmac_key = kdfa(0x000B, seed, "INTEGRITY", b"", b"", 256)
        expected = hmac.new(hmac_key, enc_identity + self.ak_name, "sha256").digest()
        if not hmac.compare_digest(integrity, expected):
            raise ValueError("integrity check failed")
        key = kdfa(0x000B, seed, "STORAGE", self.ak_name, b"", 128)
        decryptor = Cipher(algorithms.AES(key), CFB(bytes(16))).decryptor()
        plain = decryptor.update(enc_identity) + decryptor.finalize()
        return plain[2 : 2 + int.from_bytes(plain[:2])]


@pytest.fixture
def device(db: Database) -> Device:
    with db.transaction() as tx:
        tx.devices.insert(new_device())
        return tx.devices.get("d-1")


def service(
    db: Database, cas: list[x509.Certificate] | None = None, now: datetime = T0
) -> AttestationService:
    return AttestationService(db, FakeClock(now), parse_policy("label"), cas)


def test_a_key_whose_credential_comes_back_is_certified_and_named_by_each_challenge(
    db: Database, device: Device
) -> None:
    svc, tpm = service(db), Tpm()
    assert svc.challenge(device)[2] is None
    credential, expires_at = svc.offer_key(device, "r1", tpm.offer())
    assert expires_at == T0 + timedelta(seconds=120)
    record = svc.activate_key(device, "r2", tpm.activate(credential))
    assert record.ak_certified and record.attestation_key_pem == tpm.ak_pem
    assert record.ek_name == parse_public(tpm.ek_public).name.hex()
    assert record.ek_certificate == "none (the TPM has none)"
    assert svc.challenge(device)[2] == tpm.ak_pem
    # The same TPM cannot open it for another of its keys: the credential names this AK.
    impostor = Tpm()
    impostor.ek_key, impostor.ek_public = tpm.ek_key, tpm.ek_public
    with pytest.raises(ValueError, match="integrity"):
        impostor.activate(svc.offer_key(device, "r3", tpm.offer())[0])


def test_a_wrong_secret_fails_the_device_and_spends_the_credential(
    db: Database, device: Device
) -> None:
    svc, tpm = service(db), Tpm()
    svc.offer_key(device, "r1", tpm.offer())
    with pytest.raises(Forbidden, match="the credential's secret came back wrong"):
        svc.activate_key(device, "r2", bytes(32))
    with db.read() as tx:
        record = tx.attestations.get(device.id)
        labels = tx.devices.get(device.id).labels
    assert record.status == "failed" and not record.ak_certified
    reason = ("the credential's secret came back wrong: the attestation key is not in the TPM "
              "of the endorsement key it was offered with")  # fmt: skip
    assert record.reason == reason
    assert labels["attestation"] == "failed"  # the policy's label action
    with pytest.raises(Conflict, match="no credential is outstanding"):
        svc.activate_key(device, "r3", bytes(32))
    # A quote by the refused key counts for nothing, and says why.
    nonce = svc.challenge(device)[0]
    measurement: dict[str, Any] = {"slots": {}}
    digest = measurement_digest(measurement)
    quoted = svc.attest(device, "r4", measurement, digest, {
        "nonce": nonce, "attestation_key": tpm.ak_pem, "message": "", "signature": "",
        "pcrs": {}, "log": [digest]})  # fmt: skip
    assert quoted.status == "failed"
    assert (
        quoted.reason == f"the attestation key is not certified by credential activation: {reason}"
    )


def test_keys_that_are_not_attestation_keys_or_come_from_another_tpm_are_refused(
    db: Database, device: Device
) -> None:
    svc = service(db)
    with pytest.raises(Forbidden, match="the attestation key can decrypt"):
        svc.offer_key(device, "r1", Tpm(AK_REQUIRED | ObjectAttributes.DECRYPT).offer())
    with pytest.raises(InvalidInput, match="does not parse"):
        svc.offer_key(device, "r2", KeyOffer(b"\0\4abcd", None, b"", b"", ""))
    first = Tpm()
    svc.activate_key(device, "r3", first.activate(svc.offer_key(device, "r3", first.offer())[0]))
    # A new AK of the same TPM is fine; the same device with another TPM is not.
    again = Tpm()
    again.ek_key, again.ek_public = first.ek_key, first.ek_public
    svc.activate_key(device, "r4", again.activate(svc.offer_key(device, "r4", again.offer())[0]))
    with pytest.raises(Forbidden, match="the endorsement key is not the one of the TPM"):
        svc.offer_key(device, "r5", Tpm().offer())


def test_with_trusted_tpm_cas_a_tpm_without_an_ek_certificate_is_refused(
    db: Database, device: Device
) -> None:
    ca_key = rsa.generate_private_key(65537, 2048)
    ca = certificate("TPM CA", ca_key.public_key(), "TPM CA", ca_key, ca=True)
    svc, tpm = service(db, [ca], datetime.now(UTC)), Tpm()  # `certificate` is valid now
    with pytest.raises(Forbidden, match="the TPM has no EK certificate"):
        svc.offer_key(device, "r1", tpm.offer())
    ek_cert = certificate("ek", tpm.ek_key.public_key(), "TPM CA", ca_key)
    credential, _ = svc.offer_key(device, "r2", tpm.offer(ek_cert.public_bytes(DER)))
    record = svc.activate_key(device, "r2", tpm.activate(credential))
    assert record.ek_certificate == "issued by CN=TPM CA, a trusted TPM CA"
