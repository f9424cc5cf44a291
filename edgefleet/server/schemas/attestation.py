"""HTTP wire schemas: attestation (a device's challenge, key certification and measurement
report; the verdicts operators see)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from edgefleet.store.repositories.attestations import AttestationRecord

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
