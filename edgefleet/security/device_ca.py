"""The fleet's device CA: a small X.509 CA of the control plane that certifies devices' own
Ed25519 keys for mutual TLS (to the control plane, to an MQTT broker).

Its key and self-signed certificate live in DATA_DIR/device-ca/ (ca.key 0600, ca.crt),
made on first use. A device sends a CSR signed by its device key; the certificate the CA
issues carries that very key (the private key never leaves the device), the device id as
subject CN and DNS SAN, clientAuth, and a short lifetime: revocation is the device's status,
checked by the control plane on every request, and a CRL (`revocation_list`) for brokers.

Server side only: it imports `cryptography`, which the agent process never loads (the agent
builds its CSR by hand, `agent/certificates.py`).
"""

from __future__ import annotations

import base64
import functools
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edgefleet.atomicfile import write_atomically
from edgefleet.errors import InvalidInput, SettingsError

CA_DIR = "device-ca"
CA_KEY_FILE = "ca.key"
CA_CERT_FILE = "ca.crt"
CA_LIFETIME = timedelta(days=3650)
# Clocks of devices lag: a certificate is valid from a little before it was issued.
BACKDATE = timedelta(minutes=5)


@dataclass(frozen=True)
class IssuedCertificate:
    serial: str  # hex
    pem: str
    not_before: datetime
    not_after: datetime


@dataclass(frozen=True)
class PeerCertificate:
    """What the control plane reads from a device's TLS client certificate (already
    verified against the device CA by the TLS handshake)."""

    device_id: str
    public_key_b64: str
    not_after: datetime


class DeviceCa:
    def __init__(self, key: ec.EllipticCurvePrivateKey, certificate: x509.Certificate) -> None:
        self._key = key
        self.certificate = certificate
        self.certificate_pem = certificate.public_bytes(serialization.Encoding.PEM).decode()

    @classmethod
    def load_or_create(cls, data_dir: Path, now: datetime) -> DeviceCa:
        """The CA under `data_dir`/device-ca, created (key 0600) when absent. Replicas over
        one data volume share it."""
        directory = data_dir / CA_DIR
        key_path, cert_path = directory / CA_KEY_FILE, directory / CA_CERT_FILE
        if not key_path.exists():
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            key = ec.generate_private_key(ec.SECP256R1())
            name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edgefleet device CA")])
            certificate = (
                x509.CertificateBuilder()
                .subject_name(name)
                .issuer_name(name)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - BACKDATE)
                .not_valid_after(now + CA_LIFETIME)
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(
                    x509.KeyUsage(
                        digital_signature=False,
                        content_commitment=False,
                        key_encipherment=False,
                        data_encipherment=False,
                        key_agreement=False,
                        key_cert_sign=True,
                        crl_sign=True,
                        encipher_only=False,
                        decipher_only=False,
                    ),
                    critical=True,
                )
                .add_extension(
                    x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
                )
                .sign(key, hashes.SHA256())
            )
            key_pem = key.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())  # fmt: skip
            # The certificate first: a key file alone would mean a CA that cannot be shown.
            write_atomically(cert_path, certificate.public_bytes(serialization.Encoding.PEM),
                             mode=0o600)  # fmt: skip
            write_atomically(key_path, key_pem, mode=0o600)
        try:
            loaded = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
        except (OSError, ValueError) as e:
            raise SettingsError(f"device CA in {directory} is not usable: {e}") from None
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):
            raise SettingsError(f"device CA key {key_path} is not an EC key")
        return cls(loaded, certificate)

    def issue(
        self,
        csr_pem: str,
        device_id: str,
        public_key_b64: str,
        now: datetime,
        lifetime: timedelta,
    ) -> IssuedCertificate:
        """A certificate for the device's own key from its CSR; InvalidInput when the CSR
        is malformed, not self-signed, or for another key."""
        try:
            csr = x509.load_pem_x509_csr(csr_pem.encode())
        except ValueError:
            raise InvalidInput("csr is not a PEM certificate signing request",
                               code="invalid_csr") from None  # fmt: skip
        public_key = csr.public_key()
        if not isinstance(public_key, ed25519.Ed25519PublicKey):
            raise InvalidInput("the CSR must be for the device's Ed25519 key", code="invalid_csr")
        if not csr.is_signature_valid:
            raise InvalidInput("the CSR's signature does not verify", code="invalid_csr")
        raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        if base64.b64encode(raw).decode() != public_key_b64:
            raise InvalidInput("the CSR is for another key than the device's",
                               code="csr_key_mismatch")  # fmt: skip
        serial = x509.random_serial_number()
        not_before, not_after = now - BACKDATE, now + lifetime
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)]))
            .issuer_name(self.certificate.subject)
            .public_key(public_key)
            .serial_number(serial)
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(device_id)]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )
        pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
        return IssuedCertificate(format(serial, "x"), pem, not_before, not_after)

    def revocation_list(
        self, revoked: list[tuple[str, datetime]], now: datetime, next_update_s: float
    ) -> bytes:
        """A PEM CRL naming `revoked` (serial in hex, revocation time), for brokers."""
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.certificate.subject)
            .last_update(now)
            .next_update(now + timedelta(seconds=next_update_s))
        )
        for serial, revoked_at in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(int(serial, 16))
                .revocation_date(revoked_at)
                .build()
            )
        return builder.sign(self._key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


@functools.lru_cache(maxsize=4096)
def read_peer_certificate(der: bytes) -> PeerCertificate:
    """The device id, key and expiry of a device certificate (DER); InvalidInput when it is
    not one this CA issues (Ed25519, with a CN)."""
    try:
        certificate = x509.load_der_x509_certificate(der)
        names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        public_key = certificate.public_key()
    except ValueError:
        raise InvalidInput("the client certificate is malformed", code="bad_certificate") from None
    if not names or not isinstance(public_key, ed25519.Ed25519PublicKey):
        raise InvalidInput("the client certificate is not a device certificate",
                           code="bad_certificate")  # fmt: skip
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return PeerCertificate(str(names[0].value), base64.b64encode(raw).decode(),
                           certificate.not_valid_after_utc)  # fmt: skip
