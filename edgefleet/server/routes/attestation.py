"""Attestation: a device's challenge and measurement report (signed by the device), and
each device's latest verdict for operators."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from edgefleet.core.device import Device
from edgefleet.security.rbac import Permission
from edgefleet.server.auth import Services, requires, services, signed_device
from edgefleet.server.error_handlers import request_id_of
from edgefleet.server.services.audit import OperatorContext
from edgefleet.store.repositories.attestations import AttestationRecord

router = APIRouter(prefix="/v1", tags=["attestation"])

HEX64 = r"^[0-9a-f]{64}$"


class ChallengeOut(BaseModel):
    nonce: str = Field(description="64 hex digits to quote over (tpm2_quote -q), used once")
    expires_at: datetime


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
        return cls(device_id=record.device_id,
                   status=record.status.value if record.status else None,
                   reason=record.reason, attested_at=record.attested_at, tpm=record.tpm,
                   pcrs=record.pcrs, measurement_digest=record.measurement_digest,
                   measurement=record.measurement if measurement else {},
                   withholds=withholds)  # fmt: skip


@router.post(
    "/devices/{device_id}/attestation/challenge",
    summary="A fresh nonce for the device's next TPM quote",
)
async def challenge(
    device_id: str, device: Device = Depends(signed_device), svc: Services = Depends(services)
) -> ChallengeOut:
    nonce, expires_at = await run_in_threadpool(svc.attestation.challenge, device)
    return ChallengeOut(nonce=nonce, expires_at=expires_at)


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
