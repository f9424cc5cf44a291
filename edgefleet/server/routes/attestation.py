"""Attestation: a device's challenge and measurement report (signed by the device), and
each device's latest verdict for operators."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from edgefleet.core.device import Device
from edgefleet.errors import InvalidInput
from edgefleet.security.rbac import Permission
from edgefleet.server.auth import Services, requires, services, signed_device
from edgefleet.server.error_handlers import request_id_of
from edgefleet.server.services.attestation import KeyOffer
from edgefleet.server.services.audit import OperatorContext
from edgefleet.store.repositories.attestations import AttestationRecord

router = APIRouter(prefix="/v1", tags=["attestation"])

HEX64 = r"^[0-9a-f]{64}$"


class ChallengeOut(BaseModel):
    nonce: str = Field(description="64 hex digits to quote over (tpm2_quote -q), used once")
    expires_at: datetime
    attestation_key: str | None = Field(
        description="The attestation key (PEM) this device certified by credential "
        "activation; null: none yet. Quotes count only by this key."
    )


class CredentialIn(BaseModel):
    ek_public: str = Field(
        max_length=4096, description="The EK's TPM2B_PUBLIC (tpm2_createek -u, tss format), base64"
    )
    ek_certificate: str | None = Field(
        None,
        max_length=16384,
        description="The EK certificate (DER, tpm2_nvread 0x01c00002), "
        "base64; null when the TPM has none",
    )
    ak_public: str = Field(
        max_length=4096, description="The AK's TPM2B_PUBLIC (tpm2_createak -u, tss format), base64"
    )
    ak_name: str = Field(pattern=r"^[0-9a-f]{4,132}$", description="The AK's name (hex)")
    attestation_key: str = Field(max_length=4096, description="The AK's public key (PEM)")


class CredentialOut(BaseModel):
    credential: str = Field(
        description="The credential file tpm2_activatecredential reads (-i), base64"
    )
    expires_at: datetime


class ActivationIn(BaseModel):
    secret: str = Field(
        pattern=r"^[0-9a-f]{2,128}$",
        description="The credential's secret as the TPM opened it (hex)",
    )


class ActivationOut(BaseModel):
    ek_name: str = Field(description="The name of the endorsement key (the TPM), hex")
    ek_certificate: str = Field(description="What the EK certificate showed")


class QuoteIn(BaseModel):
    nonce: str = Field(pattern=HEX64, description="The nonce of the device's challenge")
    attestation_key: str = Field(
        max_length=4096, description="The attestation key's public part (PEM)"
    )
    message: str = Field(max_length=4096, description="TPMS_ATTEST (tpm2_quote -m), base64")
    signature: str = Field(max_length=4096, description="TPMT_SIGNATURE (tpm2_quote -s), base64")
    pcrs: dict[str, str] = Field(description="Quoted sha256 PCR index -> value (hex)")
    log: list[str] = Field(
        max_length=1024,
        description="Measurement digests extended into "
        "the PCR since the agent reset it, oldest first",
    )


class AttestationIn(BaseModel):
    measurement: dict[str, Any] = Field(
        description="agent (version, sha256 of its files), slots (release, version, sha256 "
        "of each file), config (settings that matter)"
    )
    digest: str = Field(
        pattern=HEX64,
        description="SHA-256 of the measurement's canonical JSON (sorted keys, no spaces)",
    )
    tpm: QuoteIn | None = Field(None, description="A TPM quote over the measurement PCR")


class AttestationOut(BaseModel):
    device_id: str
    status: str | None = Field(description="verified, unverified, failed; null: never")
    reason: str
    attested_at: datetime | None
    tpm: bool
    pcrs: dict[str, str]
    measurement_digest: str | None
    measurement: dict[str, Any] = Field(default_factory=dict)
    withholds: list[str] = Field(description="What the policy withholds: releases, workloads")
    ak_certified: bool = Field(
        False, description="The attestation key passed credential activation"
    )
    ek_name: str | None = Field(
        None, description="The endorsement key (the TPM) it was certified under, hex name"
    )
    ek_certificate: str = Field("", description="What the TPM's EK certificate showed")

    @classmethod
    def of(cls, record: AttestationRecord, *, measurement: bool = True) -> AttestationOut:
        withholds = [
            name
            for name, on in (
                ("releases", record.withhold_releases),
                ("workloads", record.withhold_workloads),
            )
            if on
        ]
        return cls(
            device_id=record.device_id,
            status=record.status.value if record.status else None,
            reason=record.reason,
            attested_at=record.attested_at,
            tpm=record.tpm,
            pcrs=record.pcrs,
            measurement_digest=record.measurement_digest,
            measurement=record.measurement if measurement else {},
            withholds=withholds,
            ak_certified=record.ak_certified,
            ek_name=record.ek_name,
            ek_certificate=record.ek_certificate,
        )


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
