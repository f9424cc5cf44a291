"""Attestation: challenge a device with a fresh nonce, judge the measurement it reports
(and the TPM quote over it), store the verdict and apply the fleet's attestation policy.

One attestation, in one transaction:
  1. a TPM quote must answer the device's outstanding nonce, which is then spent (an old
     quote is refused, 409 `stale_attestation_nonce`, and changes nothing);
  2. the quote is checked against the attestation key the device registered with its first
     quote (a different key later is a failure, not a new registration, and so is a report
     without a quote from a device that registered one);
  3. the slots it measured are compared with the releases they claim to hold;
  4. core.attestation.judge decides; the policy says what the device loses (its release
     section, its workloads, the label attestation=failed), and its desired state is
     re-rendered; a change of verdict is audited as `device.attestation`.
"""

from __future__ import annotations

import base64
import binascii
import logging
import secrets
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from edgefleet.clock import Clock
from edgefleet.core.device import Device
from edgefleet.core.governance.attestation import (
    QUARANTINE_LABEL,
    AttestationPolicy,
    QuoteCheck,
    Verdict,
    is_restricted,
    judge,
    slot_mismatches,
)
from edgefleet.core.updates.release import Ref
from edgefleet.errors import Conflict, InvalidInput
from edgefleet.security.rbac import Permission
from edgefleet.security.tpm_quote import check_quote
from edgefleet.server.services.audit import DeviceContext, OperatorContext, record_action
from edgefleet.server.services.desired import save_device
from edgefleet.store import Database, Transaction
from edgefleet.store.repositories.attestations import AttestationRecord

log = logging.getLogger(__name__)

NONCE_TTL_S = 120.0


class AttestationService:
    def __init__(self, db: Database, clock: Clock, policy: AttestationPolicy) -> None:
        self._db = db
        self._clock = clock
        self.policy = policy

    def challenge(self, device: Device) -> tuple[str, datetime]:
        """A fresh nonce for the device's next TPM quote (replacing any earlier one)."""
        nonce = secrets.token_hex(32)
        expires_at = self._clock.now() + timedelta(seconds=NONCE_TTL_S)
        with self._db.transaction() as tx:
            record = tx.attestations.get(device.id)
            tx.attestations.save(record.with_nonce(nonce, expires_at))
        return nonce, expires_at

    def attest(
        self,
        device: Device,
        request_id: str,
        measurement: Mapping[str, Any],
        digest: str,
        tpm: Mapping[str, Any] | None,
    ) -> AttestationRecord:
        """Judge one attestation and apply the policy; the stored record."""
        now = self._clock.now()
        with self._db.transaction() as tx:
            record = tx.attestations.get(device.id)
            quote: QuoteCheck | None = None
            log_digests: list[str] = []
            if tpm is not None:
                record, quote = self._check_quote(record, tpm, now)
                log_digests = [str(d) for d in tpm.get("log") or []]
            elif record.attestation_key_pem is not None:
                # No downgrade: a device with a registered TPM key must keep quoting.
                quote = QuoteCheck("no TPM quote, but this device registered a TPM "
                                   "attestation key", {})  # fmt: skip
            mismatches = slot_mismatches(dict(measurement.get("slots") or {}),
                                         _published(tx, measurement))  # fmt: skip
            verdict = judge(measurement, digest, mismatches, quote, log_digests)
            restricted = is_restricted(self.policy, verdict.status)
            before = record
            record = replace(
                record,
                status=verdict.status,
                reason=verdict.reason,
                attested_at=now,
                tpm=tpm is not None,
                pcrs={str(i): v for i, v in (quote.pcrs if quote else {}).items()},
                measurement_digest=digest,
                measurement=dict(measurement),
                withhold_releases=restricted and self.policy.withhold_releases,
                withhold_workloads=restricted and self.policy.withhold_workloads,
            )
            tx.attestations.save(record)
            self._apply(tx, device.id, restricted,
                        before.withhold_releases != record.withhold_releases)  # fmt: skip
            if before.status is not verdict.status:
                record_action(tx, DeviceContext(device.id, request_id), "device.attestation",
                              device.id, now,
                              {"status": verdict.status.value, "reason": verdict.reason,
                               "tpm": tpm is not None})  # fmt: skip
        _log(device.id, verdict, tpm is not None)
        return record

    def _check_quote(
        self, record: AttestationRecord, tpm: Mapping[str, Any], now: datetime
    ) -> tuple[AttestationRecord, QuoteCheck]:
        """Spend the outstanding nonce on this quote and check it; Conflict when the quote
        answers no outstanding nonce (a replay, or a challenge that expired)."""
        nonce = str(tpm.get("nonce") or "")
        expired = record.nonce_expires_at is None or record.nonce_expires_at < now
        if record.nonce is None or expired or not secrets.compare_digest(record.nonce, nonce):
            raise Conflict("the quote does not answer this device's outstanding challenge "
                           "(an old quote, or the challenge expired): ask for a new one",
                           code="stale_attestation_nonce")  # fmt: skip
        record = record.with_nonce(None, None)
        key = str(tpm.get("attestation_key") or "")
        registered = record.attestation_key_pem
        if registered is None:
            registered = key  # registered by the device's first quote
            record = replace(record, attestation_key_pem=key)
        elif key != registered:
            return record, QuoteCheck("the attestation key is not the one this device "
                                      "registered", {})  # fmt: skip
        try:
            message = base64.b64decode(str(tpm.get("message")), validate=True)
            signature = base64.b64decode(str(tpm.get("signature")), validate=True)
            pcrs = {int(i): str(v) for i, v in dict(tpm.get("pcrs") or {}).items()}
        except (binascii.Error, ValueError):
            raise InvalidInput("tpm.message and tpm.signature are base64, tpm.pcrs maps PCR "
                               "indexes to hex values") from None  # fmt: skip
        check = check_quote(registered.encode(), message, signature,
                            bytes.fromhex(nonce), pcrs)  # fmt: skip
        return record, check

    def _apply(
        self, tx: Transaction, device_id: str, restricted: bool, releases_changed: bool
    ) -> None:
        """Add or remove the quarantine label as the policy says; re-render the device's
        desired state when that or the release section withheld changed (only then: the
        device row is what heartbeats write too)."""
        device = tx.devices.get(device_id)
        labels = dict(device.labels)
        key, value = QUARANTINE_LABEL
        if restricted and self.policy.quarantine_label:
            labels[key] = value
        elif labels.get(key) == value:
            del labels[key]
        if labels != device.labels or releases_changed:
            save_device(tx, replace(device, labels=labels))

    def status(self, ctx: OperatorContext, device_id: str) -> AttestationRecord:
        """The device's latest attestation (an empty record if it never attested)."""
        ctx.require(Permission.FLEET_READ)
        with self._db.read() as tx:
            return tx.attestations.get(device_id)

    def all(self, ctx: OperatorContext) -> dict[str, AttestationRecord]:
        """Every device's latest attestation, by device id."""
        ctx.require(Permission.FLEET_READ)
        with self._db.read() as tx:
            return tx.attestations.all()


def _published(
    tx: Transaction, measurement: Mapping[str, Any]
) -> dict[tuple[str, str], dict[str, str] | None]:
    """The published artifact hashes of each release a measured slot names."""
    out: dict[tuple[str, str], dict[str, str] | None] = {}
    for slot in dict(measurement.get("slots") or {}).values():
        key = (str(slot.get("release")), str(slot.get("version")))
        release = tx.releases.find(Ref(*key))
        out[key] = (
            None
            if release is None
            else {a.name: a.sha256 for a in (tx.artifacts.get(r) for r in release.artifacts)}
        )
    return out


def _log(device_id: str, verdict: Verdict, tpm: bool) -> None:
    level = logging.WARNING if verdict.status == "failed" else logging.INFO
    log.log(
        level,
        "attestation",
        extra={
            "device_id": device_id,
            "status": verdict.status.value,
            "reason": verdict.reason,
            "tpm": tpm,
        },
    )
