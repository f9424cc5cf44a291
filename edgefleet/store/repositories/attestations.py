"""Device attestations: the latest verdict on each device's measured software state, the
TPM attestation key it certified (by credential activation, under which endorsement key)
and the nonce it was last challenged with."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, bindparam, delete, insert, select, update

from edgefleet.core.governance.attestation import AttestationStatus
from edgefleet.store.tables import device_attestations


@dataclass(frozen=True)
class AttestationRecord:
    device_id: str
    attestation_key_pem: str | None = None
    nonce: str | None = None  # the outstanding challenge (hex), used once
    nonce_expires_at: datetime | None = None
    status: AttestationStatus | None = None  # None: never attested
    reason: str = ""
    attested_at: datetime | None = None
    tpm: bool = False
    pcrs: dict[str, str] = field(default_factory=dict)  # quoted PCR index -> hex value
    measurement_digest: str | None = None
    measurement: dict[str, Any] = field(default_factory=dict)
    withhold_releases: bool = False
    withhold_workloads: bool = False
    ak_certified: bool = False  # attestation_key_pem passed credential activation
    ek_name: str | None = None  # hex name of the EK (the TPM) it was certified under
    ek_certificate: str = ""  # what the EK certificate showed
    # The outstanding credential: secret_sha256, key_pem, ek_name, ek_certificate, expires_at
    credential: dict[str, Any] | None = None
    credential_problem: str | None = None  # why the last key offered was refused

    def with_nonce(self, nonce: str | None, expires_at: datetime | None) -> AttestationRecord:
        return replace(self, nonce=nonce, nonce_expires_at=expires_at)


def _record(row: Row[Any]) -> AttestationRecord:
    return AttestationRecord(
        device_id=row.device_id,
        attestation_key_pem=row.attestation_key_pem,
        nonce=row.nonce,
        nonce_expires_at=row.nonce_expires_at,
        status=AttestationStatus(row.status) if row.status else None,
        reason=row.reason,
        attested_at=row.attested_at,
        tpm=row.tpm,
        pcrs=dict(row.pcrs),
        measurement_digest=row.measurement_digest,
        measurement=dict(row.measurement),
        withhold_releases=row.withhold_releases,
        withhold_workloads=row.withhold_workloads,
        ak_certified=row.ak_certified,
        ek_name=row.ek_name,
        ek_certificate=row.ek_certificate,
        credential=dict(row.credential) if row.credential is not None else None,
        credential_problem=row.credential_problem,
    )


_FIND = select(device_attestations).where(device_attestations.c.device_id == bindparam("b_device"))


class AttestationRepository:
    def __init__(self, connection: Connection) -> None:
        self._c = connection

    def find(self, device_id: str) -> AttestationRecord | None:
        row = self._c.execute(_FIND, {"b_device": device_id}).first()
        return _record(row) if row is not None else None

    def get(self, device_id: str) -> AttestationRecord:
        """The device's record, or an empty one (never attested, never challenged)."""
        return self.find(device_id) or AttestationRecord(device_id)

    def all(self) -> dict[str, AttestationRecord]:
        return {row.device_id: _record(row) for row in self._c.execute(select(device_attestations))}

    def withholding_workloads(self) -> frozenset[str]:
        """Devices the attestation policy keeps workloads off."""
        query = select(device_attestations.c.device_id).where(
            device_attestations.c.withhold_workloads.is_(True))  # fmt: skip
        return frozenset(self._c.execute(query).scalars())

    def save(self, record: AttestationRecord) -> None:
        values = {
            "attestation_key_pem": record.attestation_key_pem,
            "nonce": record.nonce,
            "nonce_expires_at": record.nonce_expires_at,
            "status": record.status.value if record.status else None,
            "reason": record.reason,
            "attested_at": record.attested_at,
            "tpm": record.tpm,
            "pcrs": record.pcrs,
            "measurement_digest": record.measurement_digest,
            "measurement": record.measurement,
            "withhold_releases": record.withhold_releases,
            "withhold_workloads": record.withhold_workloads,
            "ak_certified": record.ak_certified,
            "ek_name": record.ek_name,
            "ek_certificate": record.ek_certificate,
            "credential": record.credential,
            "credential_problem": record.credential_problem,
        }
        table = device_attestations
        changed = self._c.execute(
            update(table).where(table.c.device_id == record.device_id).values(**values)
        ).rowcount
        if not changed:
            self._c.execute(insert(table).values(device_id=record.device_id, **values))

    def forget(self, device_id: str) -> None:
        """Drop the record of a device that is deleted."""
        self._c.execute(delete(device_attestations)
                        .where(device_attestations.c.device_id == device_id))  # fmt: skip
