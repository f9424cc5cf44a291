"""Device link: the device-facing side of the control plane.

Enrollment (proof of key possession plus an enrollment token), authentication of every
later request (signature, freshness, nonce, enrollment state), heartbeats and the
desired-state document.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from edgefleet.clock import Clock
from edgefleet.core.desired import desired_document, heartbeat_interval_of
from edgefleet.core.device import Device
from edgefleet.core.device_names import validate_device_name
from edgefleet.core.enrollment import (
    EnrollmentState,
    check_device_access,
    check_enrollment_token,
    initial_state,
)
from edgefleet.core.labels import validate_labels
from edgefleet.core.protocol import (
    DesiredState,
    EnrollRequest,
    Report,
    ReportAnswer,
    from_dict,
    to_dict,
)
from edgefleet.core.rollouts.observation import stamp_last_good
from edgefleet.core.updates.release import stamp_active_since
from edgefleet.core.workloads.node_health import record_report as record_node_report
from edgefleet.errors import Conflict, Forbidden, Unauthenticated
from edgefleet.security.keys import decode_public_key, device_id_for
from edgefleet.security.request_signing import (
    SignedRequest,
    check_fresh,
    verify_signed_digest,
    verify_signed_request,
)
from edgefleet.security.tokens import hash_secret
from edgefleet.server.services.audit import DeviceContext, record_action
from edgefleet.server.services.desired import render_device
from edgefleet.server.settings import ServerSettings
from edgefleet.store import Database, Transaction

MAX_CACHED_KEYS = 200_000


class DeviceLinkService:
    def __init__(self, db: Database, clock: Clock, settings: ServerSettings) -> None:
        self._db = db
        self._clock = clock
        self._settings = settings
        self._public_keys: dict[str, str] = {}  # device id -> its enrolled public key

    def enroll(
        self,
        signed: SignedRequest,
        method: str,
        target: str,
        body: bytes,
        request_id: str,
        enroll: EnrollRequest,
    ) -> Device:
        """Admit a device, or return it unchanged if this key already enrolled (idempotent,
        so an agent that crashed before saving the answer can simply ask again; its name
        is then its own). A name another device holds is refused (409 device_name_taken)."""
        now = self._clock.now()
        public_key, enrollment_token = enroll.public_key, enroll.enrollment_token
        heartbeat_interval_s = enroll.heartbeat_interval_s
        decode_public_key(public_key)
        device_id = device_id_for(public_key)
        if signed.device_id != device_id:
            raise Unauthenticated(
                f"enrollment must be signed as {device_id}, the id of the presented key",
                code="bad_signature",
            )
        # Proof of possession: the request is signed by the key being enrolled.
        verify_signed_request(
            signed, public_key, method, target, body, now, self._settings.max_clock_skew_s
        )
        name = validate_device_name(enroll.name)
        labels = validate_labels(enroll.labels)
        with self._db.transaction() as tx:
            tx.nonces.remember(device_id, signed.nonce, self._nonce_expiry(signed))
            token = tx.enrollment_tokens.find_by_hash(hash_secret(enrollment_token))
            if token is None:
                raise Unauthenticated("invalid enrollment token", code="invalid_enrollment_token")
            existing = tx.devices.find(device_id)
            if existing is not None:
                return existing
            check_enrollment_token(token, now)
            device = render_device(
                tx,
                Device(
                    id=device_id,
                    name=name,
                    public_key=public_key,
                    enrollment=initial_state(token),
                    labels=labels,
                    inventory=to_dict(enroll.inventory),
                    enrollment_token_id=token.id,
                    created_at=now,
                    last_seen=now,
                    heartbeat_interval_s=heartbeat_interval_s
                    or self._settings.heartbeat_interval_s,
                ),
            )
            tx.devices.insert(device)
            tx.enrollment_tokens.count_use(token.id)
            record_action(
                tx,
                DeviceContext(device_id, request_id),
                "device.enroll",
                f"device/{device_id}",
                now,
                {"name": name, "enrollment_token": token.id, "enrollment": device.enrollment.value},
            )
            return device

    def authenticate(
        self,
        signed: SignedRequest,
        method: str,
        target: str,
        body: bytes,
        path_device_id: str | None,
    ) -> Device:
        """The approved device that signed this request; refuses forged, stale, replayed,
        cross-device and not-approved requests with the reason."""
        body_sha256 = hashlib.sha256(body).hexdigest()
        return self.authenticate_digest(signed, method, target, body_sha256, path_device_id)

    def authenticate_digest(
        self,
        signed: SignedRequest,
        method: str,
        target: str,
        body_sha256: str,
        path_device_id: str | None,
    ) -> Device:
        """`authenticate` for a body known by its sha256 (hex), hashed while it streamed."""
        now = self._clock.now()
        public_key = self._public_keys.get(signed.device_id)
        if public_key is not None:
            # Forged and stale requests are refused before any database work.
            self._verify(signed, public_key, method, target, body_sha256, path_device_id, now)
        # One transaction reads the device (its enrollment, fresh every time) and records
        # the nonce, as before once the signature and the device id are checked.
        with self._db.transaction() as tx:
            device = self._known_device(tx, signed)
            if public_key is None:
                self._verify(signed, device.public_key, method, target, body_sha256,
                             path_device_id, now)  # fmt: skip
                self._remember_key(device)
            tx.nonces.remember(device.id, signed.nonce, self._nonce_expiry(signed))
        check_device_access(device.enrollment)
        return device

    def admit(self, signed: SignedRequest, path_device_id: str) -> Device:
        """What can be checked of a signed request before its body is read (the signature
        covers the body's hash): fresh, for the signer's own path, from a known approved
        device, with an unused nonce. A large body is read only after this, and
        `authenticate_digest` over its hash then decides."""
        check_fresh(signed, self._clock.now(), self._settings.max_clock_skew_s)
        self._check_path(signed, path_device_id)
        with self._db.read() as tx:
            device = self._known_device(tx, signed)
            replayed = tx.nonces.used(device.id, signed.nonce)
        check_device_access(device.enrollment)
        if replayed:
            raise Unauthenticated("request nonce was already used: replayed request refused",
                                  code="replayed_request")  # fmt: skip
        return device

    @staticmethod
    def _known_device(tx: Transaction, signed: SignedRequest) -> Device:
        device = tx.devices.find(signed.device_id)
        if device is None:
            raise Unauthenticated(
                f"unknown device {signed.device_id!r}: enroll first", code="unknown_device"
            )
        return device

    def _verify(
        self,
        signed: SignedRequest,
        public_key: str,
        method: str,
        target: str,
        body_sha256: str,
        path_device_id: str | None,
        now: datetime,
    ) -> None:
        verify_signed_digest(signed, public_key, method, target, body_sha256, now,
                             self._settings.max_clock_skew_s)  # fmt: skip
        self._check_path(signed, path_device_id)

    @staticmethod
    def _check_path(signed: SignedRequest, path_device_id: str | None) -> None:
        if path_device_id is not None and path_device_id != signed.device_id:
            raise Forbidden(
                f"device {signed.device_id} may not act for device {path_device_id}",
                code="wrong_device",
            )

    def _remember_key(self, device: Device) -> None:
        """Keep the device's public key: an id is the hash of its key, so the pair never
        changes and needs no invalidation (enrollment state is still read every time)."""
        if len(self._public_keys) >= MAX_CACHED_KEYS:
            self._public_keys.clear()
        self._public_keys[device.id] = device.public_key

    def report(self, device: Device, report: Report) -> ReportAnswer:
        """Store a heartbeat in a transaction of its own (services/ingest.py stores many in
        one with `store_report`)."""
        with self._db.transaction() as tx:
            answer, _ = self.store_report(tx, device, report, self._clock.now())
        return answer

    def store_report(
        self, tx: Transaction, device: Device, report: Report, now: datetime
    ) -> tuple[ReportAnswer, bool]:
        """Store a heartbeat of the authenticated `device` in `tx`: the answer, and whether
        its install moved on (its rollout may too). `report.inventory` None: unchanged, the
        stored one is kept, so a concurrent report that changed it is never overwritten
        with an older copy. Refuses a report from the future (applied > desired). Its
        arrival feeds the node's failure detector; the workloads section (replica copies
        and checkpoints) and the node section (address, power, load) feed the workload
        controllers."""
        applied = report.applied_generation
        if applied > device.desired_generation:
            raise Conflict(
                f"applied generation {applied} is ahead of desired generation "
                f"{device.desired_generation}",
                code="generation_ahead",
            )
        # A device that has applied its latest desired state heartbeats at the interval it
        # names (its own, or the hosting interval while it holds replicas).
        interval_s = heartbeat_interval_of(device)
        stored = device.release_status or {}
        reported = to_dict(report.release) if report.release is not None else {}
        status = stamp_last_good(stored, stamp_active_since(stored, reported, now))
        inventory = None if report.inventory is None else to_dict(report.inventory)
        tx.devices.record_report(device.id, now, inventory, applied, status)
        tx.node_health.put_report(record_node_report(
            tx.node_health.find(device.id), device.id, now, report.workloads, report.node,
            interval_s if applied == device.desired_generation else None,
        ))  # fmt: skip
        answer = ReportAnswer(
            desired_generation=device.desired_generation,
            heartbeat_interval_s=interval_s,
            inventory_optional=True if report.inventory is not None else None,
        )
        moved = (reported.get("serial"), reported.get("state")) != (
            stored.get("serial"), stored.get("state"))  # fmt: skip
        return answer, moved

    def desired(self, device_id: str) -> DesiredState:
        """The desired-state document; re-checks enrollment, since a long poll may outlive
        an approval."""
        with self._db.read() as tx:
            device = tx.devices.get(device_id)
        check_device_access(device.enrollment)
        return from_dict(DesiredState, desired_document(device))

    def desired_generations(self, device_ids: Sequence[str]) -> dict[str, int | None]:
        """Each device's desired generation, None when it is gone or no longer approved
        (what a long poll waiting for it must learn)."""
        with self._db.read() as tx:
            found = tx.devices.desired_generations(device_ids)
        approved = EnrollmentState.APPROVED.value
        return {
            device_id: generation if state == approved else None
            for device_id, (generation, state) in found.items()
        }

    def prune_nonces(self) -> int:
        with self._db.transaction() as tx:
            return tx.nonces.prune(self._clock.now())

    def _nonce_expiry(self, signed: SignedRequest) -> datetime:
        """After this, the request's timestamp fails the skew check, so the nonce can go."""
        moment = datetime.fromtimestamp(signed.timestamp, UTC)
        return moment + timedelta(seconds=self._settings.max_clock_skew_s + 1)
