"""Device certificates: issuing short-lived X.509 certificates from the fleet's device CA
(`security/device_ca.py`) to approved devices, authenticating devices by the TLS client
certificate they present, and the revocation list brokers load.

Issued certificates are recorded beside the CA, one file per device in
DATA_DIR/device-ca/issued/ (a line per certificate: serial, expiry), where replicas over one
data volume share them with the CA key. The revocation list names the unexpired
certificates of devices that are revoked or deleted; expired lines are dropped as it is
built. The control plane itself needs no list: it reads the device's status on every
request a certificate authenticates.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime, timedelta
from pathlib import Path

from edgefleet.clock import Clock, isoformat_utc
from edgefleet.core.device import Device
from edgefleet.core.enrollment import EnrollmentState, check_device_access
from edgefleet.errors import Forbidden, InvalidInput, Unauthenticated
from edgefleet.security.device_ca import CA_DIR, DeviceCa, IssuedCertificate, read_peer_certificate
from edgefleet.server.services.audit import DeviceContext, record_action
from edgefleet.server.settings import ServerSettings
from edgefleet.store import Database

log = logging.getLogger(__name__)

ISSUED_DIR = "issued"
# A device renews at this share of its certificate's life (the agent does; others may too).
RENEW_AT = 2 / 3


class CertificateService:
    def __init__(self, db: Database, clock: Clock, settings: ServerSettings) -> None:
        self._db = db
        self._clock = clock
        self._lifetime = timedelta(seconds=settings.device_certificate_lifetime_s)
        self._crl_interval_s = settings.housekeeping_interval_s
        self._ca = DeviceCa.load_or_create(settings.data_dir, clock.now())
        self._issued = settings.data_dir / CA_DIR / ISSUED_DIR
        self._issued.mkdir(mode=0o700, exist_ok=True)

    @property
    def ca_certificate_pem(self) -> str:
        return self._ca.certificate_pem

    def issue(self, device: Device, csr_pem: str, request_id: str) -> dict[str, object]:
        """A fresh certificate for an approved device's own key (the route's authentication
        already refused a device that is not approved; this reads its status again)."""
        now = self._clock.now()
        with self._db.transaction() as tx:
            current = tx.devices.find(device.id)
            if current is None:
                raise Unauthenticated(f"unknown device {device.id!r}", code="unknown_device")
            check_device_access(current.enrollment)
            issued = self._ca.issue(csr_pem, current.id, current.public_key, now, self._lifetime)
            self._record(current.id, issued)
            record_action(tx, DeviceContext(current.id, request_id), "device.certificate",
                          f"device/{current.id}",
                          now, {"serial": issued.serial,
                                "not_after": isoformat_utc(issued.not_after)})  # fmt: skip
        renew_after = now + (issued.not_after - now) * RENEW_AT
        return {
            "certificate": issued.pem,
            "ca_certificate": self._ca.certificate_pem,
            "serial": issued.serial,
            "not_before": isoformat_utc(issued.not_before),
            "not_after": isoformat_utc(issued.not_after),
            "renew_after": isoformat_utc(renew_after),
        }

    def _record(self, device_id: str, issued: IssuedCertificate) -> None:
        line = f"{issued.serial} {isoformat_utc(issued.not_after)}\n".encode()
        fd = os.open(self._issued / device_id, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, line)  # one write of a short line: appends do not interleave
        finally:
            os.close(fd)

    def authenticate(self, certificate_der: bytes, path_device_id: str | None) -> Device:
        """The approved device whose certificate (verified against the device CA by the TLS
        handshake) the client presented; refuses expired certificates, keys that are not
        the device's, other devices' paths and devices that are not approved, at once."""
        try:
            peer = read_peer_certificate(certificate_der)
        except InvalidInput as e:
            raise Unauthenticated(e.message, code="bad_certificate") from None
        if peer.not_after <= self._clock.now():
            raise Unauthenticated("the client certificate has expired",
                                  code="certificate_expired")  # fmt: skip
        with self._db.read() as tx:
            device = tx.devices.find(peer.device_id)
        if device is None or device.public_key != peer.public_key_b64:
            raise Unauthenticated(f"the client certificate names unknown device "
                                  f"{peer.device_id!r}", code="unknown_device")  # fmt: skip
        if path_device_id is not None and path_device_id != device.id:
            raise Forbidden(f"device {device.id} may not act for device {path_device_id}",
                            code="wrong_device")  # fmt: skip
        check_device_access(device.enrollment)
        return device

    def revocation_list(self) -> bytes:
        """The PEM CRL of every unexpired certificate of a revoked or deleted device,
        valid until the next housekeeping run plus a margin."""
        now = self._clock.now()
        revoked: list[tuple[str, datetime]] = []
        for path in sorted(self._issued.iterdir()):
            live = self._unexpired(path, now)
            if not live:
                path.unlink(missing_ok=True)
                continue
            with self._db.read() as tx:
                device = tx.devices.find(path.name)
            if device is None or device.enrollment is EnrollmentState.REVOKED:
                revoked += [(serial, now) for serial in live]
        return self._ca.revocation_list(revoked, now, 2 * self._crl_interval_s)

    @staticmethod
    def _unexpired(path: Path, now: datetime) -> list[str]:
        serials = []
        for line in path.read_text().splitlines():
            serial, _, not_after = line.partition(" ")
            if serial and datetime.fromisoformat(not_after) > now:
                serials.append(serial)
        return serials
