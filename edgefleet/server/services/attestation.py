"""Attestation: challenge a device with a fresh nonce, judge the measurement it reports
(and the TPM quote over it), store the verdict and apply the fleet's attestation policy.

One attestation, in one transaction:
  1. a TPM quote must answer the device's outstanding nonce, which is then spent (an old
     quote is refused, 409 `stale_attestation_nonce`, and changes nothing);
  2. the quote is checked against the attestation key the device certified (a quote by any
     other key fails, and so does a report without a quote from a device that certified one);
  3. the slots it measured are compared with the releases they claim to hold;
  4. core.attestation.judge decides; the policy says what the device loses (its release
     section, its workloads, the label attestation=failed), and its desired state is
     re-rendered; a change of verdict is audited as `device.attestation`.

An attestation key is certified by credential activation before any quote by it counts:
  1. the device sends its EK public area (and EK certificate), the AK's public area, name
     and PEM; the server checks the AK is a restricted signing key that never leaves its
     TPM, the EK certificate against the trusted TPM CAs (when configured), and that the
     EK is the one this device certified under before, if any (security.tpm_credential);
  2. it answers with a credential only the TPM holding that EK and that AK can open
     (MakeCredential), keeping the secret's hash;
  3. the device returns the secret (tpm2_activatecredential): the AK is now the device's,
     audited as `device.attestation_key`. A refusal at either step fails the device's
     attestation with the reason, and the policy applies.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509

from edgefleet.clock import Clock
from edgefleet.core.device import Device
from edgefleet.core.governance.attestation import (
    QUARANTINE_LABEL,
    AttestationPolicy,
    AttestationStatus,
    QuoteCheck,
    Verdict,
    is_restricted,
    judge,
    slot_mismatches,
)
from edgefleet.core.updates.release import Ref
from edgefleet.errors import Conflict, Forbidden, InvalidInput
from edgefleet.security.rbac import Permission
from edgefleet.security.tpm_credential import (
    MalformedPublic,
    TpmPublic,
    attestation_key_problem,
    ek_certificate_problem,
    load_ek_certificate,
    make_credential,
    parse_public,
)
from edgefleet.security.tpm_quote import check_quote
from edgefleet.server.services.audit import DeviceContext, OperatorContext, record_action
from edgefleet.server.services.desired import save_device
from edgefleet.store import Database, Transaction
from edgefleet.store.repositories.attestations import AttestationRecord

log = logging.getLogger(__name__)

NONCE_TTL_S = 120.0
CREDENTIAL_TTL_S = 120.0


@dataclass(frozen=True)
class KeyOffer:
    """What a device sends to have its attestation key certified (the TPM's bytes)."""

    ek_public: bytes  # TPM2B_PUBLIC of the endorsement key
    ek_certificate: bytes | None  # DER, from NV 0x01c00002 when the TPM has one
    ak_public: bytes  # TPM2B_PUBLIC of the attestation key
    ak_name: bytes
    ak_pem: str


class AttestationService:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        policy: AttestationPolicy,
        trusted_tpm_cas: Sequence[x509.Certificate] | None = None,
    ) -> None:
        self._db = db
        self._clock = clock
        self.policy = policy
        self._tpm_cas = trusted_tpm_cas

    def challenge(self, device: Device) -> tuple[str, datetime, str | None]:
        """A fresh nonce for the device's next TPM quote (replacing any earlier one), and
        the attestation key the device certified (PEM; None: none yet)."""
        nonce = secrets.token_hex(32)
        expires_at = self._clock.now() + timedelta(seconds=NONCE_TTL_S)
        with self._db.transaction() as tx:
            record = tx.attestations.get(device.id)
            tx.attestations.save(record.with_nonce(nonce, expires_at))
        certified = record.attestation_key_pem if record.ak_certified else None
        return nonce, expires_at, certified

    def offer_key(self, device: Device, request_id: str, offer: KeyOffer) -> tuple[bytes, datetime]:
        """Check an attestation key offered for certification; the credential (the file
        tpm2_activatecredential reads) that only the TPM holding both keys can open, and
        when it expires. Forbidden, with the device's attestation failed for the same
        reason, when the key or its TPM is refused."""
        try:
            ek, ak = parse_public(offer.ek_public), parse_public(offer.ak_public)
        except MalformedPublic as e:
            raise InvalidInput(
                f"a TPM public area does not parse: {e}", code="bad_tpm_public"
            ) from None
        now = self._clock.now()
        problem, ek_note = self._key_problem(ek, ak, offer, now)
        secret = secrets.token_bytes(32)
        credential = b""
        if problem is None:
            try:
                credential = make_credential(ek, offer.ak_name, secret)
            except MalformedPublic as e:
                raise InvalidInput(f"ek_public: {e}", code="bad_tpm_public") from None
        expires_at = now + timedelta(seconds=CREDENTIAL_TTL_S)
        with self._db.transaction() as tx:
            record = tx.attestations.get(device.id)
            if problem is None and record.ek_name not in (None, ek.name.hex()):
                problem = (
                    "the endorsement key is not the one of the TPM this device "
                    f"certified its attestation key under (EK {record.ek_name})"
                )
            if problem is not None:
                self._refuse(tx, device.id, request_id, record, problem, now)
            else:
                pending = {
                    "secret_sha256": hashlib.sha256(secret).hexdigest(),
                    "key_pem": offer.ak_pem,
                    "ek_name": ek.name.hex(),
                    "ek_certificate": ek_note,
                    "expires_at": expires_at.isoformat(),
                }
                tx.attestations.save(replace(record, credential=pending))
        if problem is not None:
            raise Forbidden(problem, code="attestation_key_refused")
        return credential, expires_at

    def _key_problem(
        self, ek: TpmPublic, ak: TpmPublic, offer: KeyOffer, now: datetime
    ) -> tuple[str | None, str]:
        """Why an offered key is refused (None: it is not), and what its EK certificate
        showed."""
        problem = attestation_key_problem(ak, offer.ak_name, offer.ak_pem.encode())
        if problem is not None:
            return problem, ""
        if offer.ek_certificate is None:
            if self._tpm_cas is not None:
                return (
                    "the TPM has no EK certificate, and this control plane accepts only "
                    "TPMs whose EK certificate a trusted TPM CA signed"
                ), ""
            return None, "none (the TPM has none)"
        try:
            certificate = load_ek_certificate(offer.ek_certificate)
        except ValueError:
            return "the EK certificate is not a DER X.509 certificate", ""
        problem = ek_certificate_problem(certificate, ek, self._tpm_cas, now)
        issuer = certificate.issuer.rfc4514_string()
        trust = (
            "a trusted TPM CA"
            if self._tpm_cas is not None
            else ("not checked: no TPM CA configured")
        )
        return problem, f"issued by {issuer}, {trust}"

    def activate_key(self, device: Device, request_id: str, secret: bytes) -> AttestationRecord:
        """The secret of the device's outstanding credential came back: its attestation key
        is certified. Conflict when no credential is outstanding; Forbidden (attestation
        failed) when the secret is not the credential's."""
        now = self._clock.now()
        with self._db.transaction() as tx:
            record = tx.attestations.get(device.id)
            pending = record.credential
            if pending is None or datetime.fromisoformat(pending["expires_at"]) < now:
                raise Conflict(
                    "no credential is outstanding for this device (none was asked "
                    "for, or it expired): offer the attestation key again",
                    code="no_outstanding_credential",
                )
            record = replace(record, credential=None)
            digest = hashlib.sha256(secret).hexdigest()
            problem = None
            if not secrets.compare_digest(digest, str(pending["secret_sha256"])):
                problem = (
                    "the credential's secret came back wrong: the attestation key is "
                    "not in the TPM of the endorsement key it was offered with"
                )
                self._refuse(tx, device.id, request_id, record, problem, now)
            else:
                record = replace(
                    record,
                    attestation_key_pem=str(pending["key_pem"]),
                    ak_certified=True,
                    ek_name=str(pending["ek_name"]),
                    ek_certificate=str(pending["ek_certificate"]),
                    credential_problem=None,
                )
                tx.attestations.save(record)
                record_action(
                    tx,
                    DeviceContext(device.id, request_id),
                    "device.attestation_key",
                    device.id,
                    now,
                    {"ek_name": record.ek_name, "ek_certificate": record.ek_certificate},
                )
        if problem is not None:
            raise Forbidden(problem, code="attestation_key_refused")
        log.info(
            "attestation key certified", extra={"device_id": device.id, "ek_name": record.ek_name}
        )
        return record

    def _refuse(
        self,
        tx: Transaction,
        device_id: str,
        request_id: str,
        record: AttestationRecord,
        problem: str,
        now: datetime,
    ) -> None:
        """Fail the device's attestation: the attestation key it offered was refused."""
        after = replace(
            record,
            status=AttestationStatus.FAILED,
            reason=problem,
            attested_at=now,
            tpm=True,
            credential=None,
            credential_problem=problem,
            withhold_releases=self.policy.withhold_releases,
            withhold_workloads=self.policy.withhold_workloads,
        )
        self._save_verdict(tx, device_id, request_id, record, after, now)
        _log(device_id, Verdict(AttestationStatus.FAILED, problem), True)

    def _save_verdict(
        self,
        tx: Transaction,
        device_id: str,
        request_id: str,
        before: AttestationRecord,
        after: AttestationRecord,
        now: datetime,
    ) -> None:
        """Save a verdict, apply the policy, audit a change of status."""
        tx.attestations.save(after)
        self._apply(
            tx,
            device_id,
            is_restricted(self.policy, after.status),
            before.withhold_releases != after.withhold_releases,
        )
        if before.status is not after.status and after.status is not None:
            record_action(
                tx,
                DeviceContext(device_id, request_id),
                "device.attestation",
                device_id,
                now,
                {"status": after.status.value, "reason": after.reason, "tpm": after.tpm},
            )

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
            self._save_verdict(tx, device.id, request_id, before, record, now)
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
        refused = f": {record.credential_problem}" if record.credential_problem else ""
        if registered is None or not record.ak_certified:
            return record, QuoteCheck(
                f"the attestation key is not certified by credential activation{refused}", {}
            )
        if key != registered:
            return record, QuoteCheck(
                f"the attestation key is not the one this device certified{refused}", {}
            )
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
