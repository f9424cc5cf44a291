"""The device's certificate: a short-lived X.509 certificate for its own Ed25519 key, issued
by the fleet's device CA, kept in the data dir and renewed at 2/3 of its life.

    approved ─▶ no certificate, or past renew_after? ──yes──▶ CSR ─▶ POST certificate ─┐
                   │no                                                                │
                   ▼                                                                  │
              sleep until renew_after ◀──── write device.crt, device-ca.crt ◀─────────┘

The CSR (PKCS#10, RFC 2986) is built here byte by byte and signed with the device key
through libcrypto, as every request is: the private key never leaves the device and the
agent loads no X.509 library. Files: device.crt (the certificate), device-ca.crt (the CA
that issued it, for an MQTT client or other tools), device-cert.json (serial and the times,
as the control plane stated them). The https client presents the certificate once it exists
(`transport.http_client.ClientCertificate`), and a renewed one from the next connection on.
"""

from __future__ import annotations

import base64
import json
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from edgefleet.agent.link import ControlPlaneLink
from edgefleet.atomicfile import write_atomically
from edgefleet.clock import Clock
from edgefleet.security.keys import DeviceKey
from edgefleet.transport.http_client import ClientCertificate

log = logging.getLogger(__name__)

CERTIFICATE_FILE = "device.crt"
CA_CERTIFICATE_FILE = "device-ca.crt"
CERTIFICATE_STATE_FILE = "device-cert.json"

_OID_COMMON_NAME = bytes.fromhex("550403")  # 2.5.4.3
_OID_ED25519 = bytes.fromhex("2b6570")  # 1.3.101.112


def _der(tag: int, content: bytes) -> bytes:
    """One DER TLV."""
    length = len(content)
    if length < 0x80:
        return bytes([tag, length]) + content
    size = (length.bit_length() + 7) // 8
    return bytes([tag, 0x80 | size]) + length.to_bytes(size, "big") + content


def build_csr(key: DeviceKey, common_name: str) -> str:
    """A PEM PKCS#10 request for `key`'s public key with subject CN=`common_name`, signed by
    `key` (Ed25519: the signature is over the DER of the request info itself)."""
    algorithm = _der(0x30, _der(0x06, _OID_ED25519))
    public_key = base64.b64decode(key.public_key_b64)
    subject = _der(0x30, _der(0x31, _der(0x30, _der(0x06, _OID_COMMON_NAME)
                                        + _der(0x0C, common_name.encode()))))  # fmt: skip
    info = _der(0x30, _der(0x02, b"\x00") + subject
                + _der(0x30, algorithm + _der(0x03, b"\x00" + public_key))
                + _der(0xA0, b""))  # fmt: skip
    request = _der(0x30, info + algorithm + _der(0x03, b"\x00" + key.sign(info)))
    body = base64.b64encode(request).decode()
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return "\n".join(["-----BEGIN CERTIFICATE REQUEST-----", *lines,
                      "-----END CERTIFICATE REQUEST-----", ""])  # fmt: skip


@dataclass(frozen=True)
class CertificateState:
    serial: str
    not_after: datetime
    renew_after: datetime


class DeviceCertificates:
    """Keeps the device's certificate current while the device is approved."""

    def __init__(
        self,
        data_dir: Path,
        link: ControlPlaneLink,
        key: DeviceKey,
        clock: Clock,
        client_certificate: ClientCertificate | None = None,
    ) -> None:
        self._data_dir = data_dir
        self._link = link
        self._key = key
        self._clock = clock
        self._client_certificate = client_certificate
        self.state = self._load()
        self._withdraw_if_expired()

    def _load(self) -> CertificateState | None:
        path = self._data_dir / CERTIFICATE_STATE_FILE
        if not path.exists() or not (self._data_dir / CERTIFICATE_FILE).exists():
            return None
        try:
            raw = json.loads(path.read_text())
            return CertificateState(raw["serial"], datetime.fromisoformat(raw["not_after"]),
                                    datetime.fromisoformat(raw["renew_after"]))  # fmt: skip
        except (OSError, ValueError, KeyError, TypeError):
            return None  # unreadable: a new one is requested

    def seconds_until_renewal(self) -> float:
        """0 when a certificate is needed now."""
        if self.state is None:
            return 0.0
        return max(0.0, (self.state.renew_after - self._clock.now()).total_seconds())

    async def run(self) -> None:
        """Renew whenever due, forever; a refusal or a lost connection raises (the agent's
        connection loop backs off and comes back)."""
        while True:
            wait_s = self.seconds_until_renewal()
            if wait_s > 0:
                await self._clock.sleep(wait_s)
                continue  # the clock may have jumped: check again
            self._withdraw_if_expired()
            await self.renew()

    def _withdraw_if_expired(self) -> None:
        """Stop presenting a certificate that expired (the agent was stopped past its end,
        or could not renew in time): the control plane would refuse the handshake, the
        renewal request with it. Requests are signed, so they go through without one."""
        expired = self.state is None or self.state.not_after <= self._clock.now()
        if expired and self._client_certificate is not None:
            self._client_certificate.withdrawn()

    async def renew(self) -> None:
        """Request a certificate for the device key and store it."""
        answer: dict[str, Any] = await self._link.request_certificate(
            build_csr(self._key, self._link.device_id)
        )
        write_atomically(self._data_dir / CA_CERTIFICATE_FILE, answer["ca_certificate"].encode())
        write_atomically(self._data_dir / CERTIFICATE_FILE, answer["certificate"].encode())
        state = {key: answer[key] for key in ("serial", "not_after", "renew_after")}
        write_atomically(self._data_dir / CERTIFICATE_STATE_FILE, json.dumps(state).encode())
        self.state = self._load()
        if self._client_certificate is not None:
            self._client_certificate.renewed()
        log.info("device certificate issued", extra={
            "device_id": self._link.device_id, "serial": answer["serial"],
            "not_after": answer["not_after"]})  # fmt: skip
