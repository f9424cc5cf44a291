"""Attestation: a device's challenge and measurement report (signed by the device), and
each device's latest verdict for operators."""

from __future__ import annotations

import base64
import binascii

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from edgefleet.core.device import Device
from edgefleet.errors import InvalidInput
from edgefleet.security.rbac import Permission
from edgefleet.server.auth import requires, signed_device
from edgefleet.server.composition import Services, services
from edgefleet.server.error_handlers import request_id_of
from edgefleet.server.schemas.attestation import (
    ActivationIn,
    ActivationOut,
    AttestationIn,
    AttestationOut,
    ChallengeOut,
    CredentialIn,
    CredentialOut,
)
from edgefleet.server.services.attestation import KeyOffer
from edgefleet.server.services.audit import OperatorContext

router = APIRouter(prefix="/v1", tags=["attestation"])


@router.post(
    "/devices/{device_id}/attestation/challenge",
    summary="A fresh nonce for the device's next TPM quote",
)
async def challenge(
    device_id: str, device: Device = Depends(signed_device), svc: Services = Depends(services)
) -> ChallengeOut:
    nonce, expires_at, key = await run_in_threadpool(svc.attestation.challenge, device)
    return ChallengeOut(nonce=nonce, expires_at=expires_at, attestation_key=key)


@router.post(
    "/devices/{device_id}/attestation/credential",
    summary="Offer an attestation key for certification: a credential only its TPM opens",
    responses={
        403: {
            "description": "attestation_key_refused: the key or its TPM is refused "
            "(the device's attestation fails with the reason)"
        }
    },
)
async def offer_attestation_key(
    request: Request,
    device_id: str,
    body: CredentialIn,
    device: Device = Depends(signed_device),
    svc: Services = Depends(services),
) -> CredentialOut:
    try:
        offer = KeyOffer(
            ek_public=base64.b64decode(body.ek_public, validate=True),
            ek_certificate=(
                base64.b64decode(body.ek_certificate, validate=True)
                if body.ek_certificate is not None
                else None
            ),
            ak_public=base64.b64decode(body.ak_public, validate=True),
            ak_name=bytes.fromhex(body.ak_name),
            ak_pem=body.attestation_key,
        )
    except (binascii.Error, ValueError):
        raise InvalidInput("ek_public, ek_certificate and ak_public are base64") from None
    try:
        credential, expires_at = await run_in_threadpool(
            svc.attestation.offer_key, device, request_id_of(request), offer
        )
    finally:
        svc.watch.notify(device.id)
    return CredentialOut(credential=base64.b64encode(credential).decode(), expires_at=expires_at)


@router.post(
    "/devices/{device_id}/attestation/credential/activation",
    summary="Return the credential's secret: the attestation key is certified",
    responses={
        403: {"description": "attestation_key_refused: the secret is not the credential's"},
        409: {"description": "no_outstanding_credential"},
    },
)
async def activate_attestation_key(
    request: Request,
    device_id: str,
    body: ActivationIn,
    device: Device = Depends(signed_device),
    svc: Services = Depends(services),
) -> ActivationOut:
    try:
        record = await run_in_threadpool(
            svc.attestation.activate_key, device, request_id_of(request), bytes.fromhex(body.secret)
        )
    finally:
        svc.watch.notify(device.id)
    return ActivationOut(ek_name=record.ek_name or "", ek_certificate=record.ek_certificate)


@router.post(
    "/devices/{device_id}/attestation",
    summary="Report a measurement of the device's software state (with a TPM quote)",
)
async def attest(
    request: Request,
    device_id: str,
    body: AttestationIn,
    device: Device = Depends(signed_device),
    svc: Services = Depends(services),
) -> AttestationOut:
    record = await run_in_threadpool(
        svc.attestation.attest, device, request_id_of(request), body.measurement, body.digest,
        body.tpm.model_dump() if body.tpm else None,
    )  # fmt: skip
    svc.watch.notify(device.id)
    return AttestationOut.of(record, measurement=False)


@router.get("/devices/{device}/attestation", summary="A device's latest attestation")
def show_attestation(
    device: str,
    ctx: OperatorContext = Depends(requires(Permission.FLEET_READ)),
    svc: Services = Depends(services),
) -> AttestationOut:
    found = svc.devices.get(ctx, device)
    return AttestationOut.of(svc.attestation.status(ctx, found.id))


@router.get("/attestations", summary="Every listed device's latest attestation (no measurement)")
def list_attestations(
    ctx: OperatorContext = Depends(requires(Permission.FLEET_READ)),
    svc: Services = Depends(services),
) -> list[AttestationOut]:
    visible = {d.id for d in svc.devices.list_devices(ctx, None, None, None, None)}
    records = svc.attestation.all(ctx)
    return [AttestationOut.of(r, measurement=False)
            for device_id, r in sorted(records.items()) if device_id in visible]  # fmt: skip
