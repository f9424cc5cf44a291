"""The agent's link to the control plane: the device API, every request signed.

Each method returns parsed JSON or raises from the error tree: Unavailable when the server
cannot be reached, ApiError with the server's code otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from edgefleet.clock import Clock
from edgefleet.core.protocol import (
    EnrollAnswer,
    EnrollRequest,
    Inventory,
    Report,
    ReportAnswer,
    TelemetryAck,
    from_json,
    to_json,
)
from edgefleet.errors import ApiError, InvalidInput
from edgefleet.security.desired_signature import HEADER as DESIRED_SIGNATURE_HEADER
from edgefleet.security.keys import DeviceKey, device_id_for
from edgefleet.security.request_signing import sign_request
from edgefleet.transport.messages import Transport, TransportResponse, error_from_response

REQUEST_TIMEOUT_S = 15.0
TELEMETRY_CONTENT_TYPE = "application/x-edgefleet-telemetry"
SEALED_TELEMETRY_CONTENT_TYPE = "application/x-edgefleet-telemetry-sealed"
# A whole artifact may take a while on a slow link; progress is kept between attempts.
DOWNLOAD_TIMEOUT_S = 600.0
M = TypeVar("M")


@dataclass(frozen=True)
class SignedDocument:
    """A document's exact bytes and the signature header that came with them."""

    body: bytes
    signature: str | None


class ControlPlaneLink:
    def __init__(self, transport: Transport, key: DeviceKey, clock: Clock) -> None:
        self._transport = transport
        self._key = key
        self._clock = clock
        self.device_id = device_id_for(key.public_key_b64)

    async def _send(
        self,
        method: str,
        target: str,
        payload: Any = None,
        extra_headers: dict[str, str] | None = None,
        timeout_s: float = REQUEST_TIMEOUT_S,
    ) -> TransportResponse:
        body = json.dumps(payload).encode() if payload is not None else b""
        headers = self._signed(method, target, body, extra_headers or {})
        return await self._transport.request(method, target, body, headers, timeout_s)

    def _signed(
        self, method: str, target: str, body: bytes, extra: dict[str, str]
    ) -> Callable[[], dict[str, str]]:
        """The request's headers, signed anew (fresh timestamp and nonce) at every attempt
        the transport makes to send it."""

        def headers() -> dict[str, str]:
            signed = sign_request(self._key, method, target, body, self.device_id,
                                  self._clock.now())  # fmt: skip
            return {**signed, **extra}

        return headers

    @staticmethod
    def _answer(kind: type[M], response: TransportResponse) -> M:
        """The protocol answer of `kind` in `response`, or the error its status says."""
        if response.status >= 400:
            raise error_from_response(response.status, response.body)
        try:
            return from_json(kind, response.body)
        except InvalidInput as e:
            raise ApiError(response.status, "bad_response", f"server sent {e.message}") from None

    async def _exchange(self, target: str, message: object, kind: type[M]) -> M:
        """POST a protocol message; its answer of `kind`."""
        body = to_json(message)
        return self._answer(kind, await self._send_bytes("POST", target, body, {},
                                                         REQUEST_TIMEOUT_S))  # fmt: skip

    @staticmethod
    def _json(response: TransportResponse) -> Any:
        if response.status >= 400:
            raise error_from_response(response.status, response.body)
        try:
            return response.json()
        except ValueError:
            raise ApiError(response.status, "bad_response", "server sent invalid JSON") from None

    async def enroll(
        self,
        enrollment_token: str,
        name: str,
        labels: dict[str, str],
        inventory: Inventory,
        heartbeat_interval_s: float | None,
    ) -> EnrollAnswer:
        request = EnrollRequest(
            enrollment_token=enrollment_token,
            public_key=self._key.public_key_b64,
            name=name,
            labels=labels,
            inventory=inventory,
            heartbeat_interval_s=heartbeat_interval_s,
        )
        return await self._exchange("/v1/enroll", request, EnrollAnswer)

    async def report(self, report: Report) -> ReportAnswer:
        """A heartbeat (`report.inventory` None: unchanged since the last one the server
        took)."""
        return await self._exchange(f"/v1/devices/{self.device_id}/report", report, ReportAnswer)

    async def request_certificate(self, csr_pem: str) -> dict[str, Any]:
        """A certificate of the device CA for the key that signed `csr_pem`."""
        target = f"/v1/devices/{self.device_id}/certificate"
        result: dict[str, Any] = self._json(await self._send("POST", target, {"csr": csr_pem}))
        return result

    async def fetch(self, target: str) -> bytes:
        """A signed GET of a small document (TUF metadata); ApiError on an error status."""
        response = await self._send("GET", target)
        if response.status >= 400:
            raise error_from_response(response.status, response.body)
        return response.body

    async def upload_checkpoint(
        self, sha256: str, archive: bytes, content_type: str = "application/octet-stream"
    ) -> dict[str, Any]:
        """Upload a workload's state archive for a migration (content-addressed by the
        archive's own sha256; `archive` sealed when `content_type` says so)."""
        target = f"/v1/checkpoints/{self.device_id}/{sha256}"
        headers = {"content-type": content_type}
        response = await self._send_bytes("PUT", target, archive, headers, DOWNLOAD_TIMEOUT_S)
        result: dict[str, Any] = self._json(response)
        return result

    async def _send_bytes(
        self, method: str, target: str, body: bytes, extra: dict[str, str], timeout_s: float
    ) -> TransportResponse:
        headers = self._signed(method, target, body, extra)
        return await self._transport.request(method, target, body, headers, timeout_s)

    async def exchange(self, method: str, target: str, body: bytes) -> bytes:
        """A signed request with an opaque body (the training child's, relayed); the
        response body, or the error its status says."""
        headers = {"content-type": "application/msgpack"} if body else {}
        response = await self._send_bytes(method, target, body, headers, REQUEST_TIMEOUT_S)
        if response.status >= 400:
            raise error_from_response(response.status, response.body)
        return response.body

    async def download_blob(self, sha256: str, destination: Path) -> None:
        """Download a blob into `destination`, resuming after the bytes already there."""
        await self._download(f"/v1/blobs/{sha256}", destination)

    async def download_delta(self, to_sha256: str, from_sha256: str, destination: Path) -> bool:
        """Download the delta that turns blob FROM into blob TO. False while the server is
        still computing it (ask again later); ApiError when there is none."""
        target = f"/v1/blobs/{to_sha256}/delta/{from_sha256}"
        return (await self._download(target, destination)).status != 202

    async def _download(self, target: str, destination: Path) -> TransportResponse:
        """A signed, resumable GET into `destination`.

        A 416 means the partial file is not a prefix of this download (or is complete and
        longer): it is removed and the error raised, so the next attempt starts over.
        """
        offset = destination.stat().st_size if destination.exists() else 0
        headers = self._signed("GET", target, b"", {"range": f"bytes={offset}-"} if offset else {})
        response = await self._transport.download(target, headers, destination, DOWNLOAD_TIMEOUT_S)
        if response.status == 416:
            destination.unlink(missing_ok=True)
        if response.status >= 400:
            raise error_from_response(response.status, response.body)
        return response

    async def desired(self, known_generation: int | None, wait_s: float) -> SignedDocument | None:
        """The desired-state document as sent, with its signature (the agent verifies it
        before acting), or None if it stayed at `known_generation` for the whole wait
        (long poll)."""
        target = f"/v1/devices/{self.device_id}/desired?wait={wait_s:g}"
        headers = {} if known_generation is None else {"if-none-match": f'"{known_generation}"'}
        response = await self._send("GET", target, None, headers, timeout_s=wait_s + 10)
        if response.status == 304:
            return None
        if response.status >= 400:
            raise error_from_response(response.status, response.body)
        return SignedDocument(response.body, response.headers.get(DESIRED_SIGNATURE_HEADER))

    async def upload_telemetry(
        self,
        payload: bytes,
        dropped_through_seq: int,
        content_type: str = TELEMETRY_CONTENT_TYPE,
    ) -> TelemetryAck:
        """POST one telemetry batch (wire bytes, or sealed ones with the sealed content type).
        `dropped_through_seq`: every batch up to it that the server lacks is gone here."""
        target = f"/v1/devices/{self.device_id}/telemetry?dropped_through_seq={dropped_through_seq}"
        headers = self._signed("POST", target, payload, {"content-type": content_type})
        response = await self._transport.request(
            "POST", target, payload, headers, REQUEST_TIMEOUT_S
        )
        return self._answer(TelemetryAck, response)

    async def telemetry_cursor(self) -> dict[str, Any]:
        """Where the server's copy of this device's telemetry stands (`acked_through_seq`)."""
        result: dict[str, Any] = self._json(
            await self._send("GET", f"/v1/devices/{self.device_id}/telemetry")
        )
        return result

    async def attestation_challenge(self) -> dict[str, Any]:
        """A fresh nonce (`{"nonce", "expires_at"}`) for the next TPM quote."""
        target = f"/v1/devices/{self.device_id}/attestation/challenge"
        result: dict[str, Any] = self._json(await self._send("POST", target, {}))
        return result

    async def offer_attestation_key(self, offer: dict[str, Any]) -> dict[str, Any]:
        """Offer the TPM's attestation key for certification: `{"credential" (base64)}`."""
        target = f"/v1/devices/{self.device_id}/attestation/credential"
        result: dict[str, Any] = self._json(await self._send("POST", target, offer))
        return result

    async def activate_attestation_key(self, secret: bytes) -> dict[str, Any]:
        """Return the secret the TPM opened the credential to: the key is certified."""
        target = f"/v1/devices/{self.device_id}/attestation/credential/activation"
        body = {"secret": secret.hex()}
        result: dict[str, Any] = self._json(await self._send("POST", target, body))
        return result

    async def attest(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Report a measurement (and a quote); the control plane's verdict."""
        target = f"/v1/devices/{self.device_id}/attestation"
        result: dict[str, Any] = self._json(await self._send("POST", target, payload))
        return result
