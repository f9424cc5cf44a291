"""The hawkBit DDI side of the control plane: DDI targets and gateway tokens (operators),
and what a DDI client asks and tells (authentication, polls, deployments, feedback,
cancels, configData, artifact downloads).

A DDI target is an ordinary device row (its name is the controller id) plus a
`ddi_targets` row; its assignment and release status are the ones an agent has, so
`devices set-release`, rollouts, gates and rollbacks treat both kinds alike. Feedback is
stored as the release status an agent reports and wakes the rollout controller as an
agent's report does. The pure mappings are in `core/ddi.py`.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from edgefleet.artifacts.blobstore import BlobStore
from edgefleet.clock import Clock
from edgefleet.core.device import Device
from edgefleet.core.device_names import validate_device_name
from edgefleet.core.enrollment import EnrollmentState, check_device_access
from edgefleet.core.labels import validate_labels
from edgefleet.core.rollouts.maintenance import any_window_open, usable_time_zone
from edgefleet.core.rollouts.observation import device_time_zone, stamp_last_good
from edgefleet.core.rollouts.spec import DeadlineAction
from edgefleet.core.updates.ddi import (
    DDI_KEY_PREFIX,
    ActionHandling,
    ModuleArtifact,
    action_closed,
    applied_after_poll,
    assignment_of_status,
    cancel_action,
    feedback_allowed,
    handling,
    installed_action,
    labels_after_config,
    open_action,
    parse_feedback,
    render_chunks,
    status_after_cancel,
    status_after_feedback,
    validate_controller_id,
)
from edgefleet.core.updates.release import Artifact, Ref, ReleaseAssignment, stamp_active_since
from edgefleet.errors import Conflict, Forbidden, NotFound, Unauthenticated
from edgefleet.security.rbac import Permission
from edgefleet.security.tokens import hash_secret, new_secret
from edgefleet.server.services.audit import DeviceContext, OperatorContext, record_action
from edgefleet.server.services.desired import render_device, save_device
from edgefleet.server.settings import ServerSettings
from edgefleet.store import Database, Transaction
from edgefleet.store.repositories.ddi import DdiTarget, GatewayToken

TARGET_TOKEN_PREFIX = "eft_"
GATEWAY_TOKEN_PREFIX = "efg_"
_HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class Poll:
    """What a base poll answers: the polling interval and the links that apply."""

    interval_s: float
    deployment: tuple[int, str] | None  # (action id, a tag that changes with its content)
    cancel: int | None
    installed: int | None
    config_wanted: bool


@dataclass(frozen=True)
class ArtifactFile:
    sha256: str
    size_bytes: int
    file_name: str
    md5: str


def _new_device_id() -> str:
    return "d-" + base64.b32encode(secrets.token_bytes(13)).decode().lower()[:20]


class DdiService:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        settings: ServerSettings,
        blobs: BlobStore,
        wake_rollouts: Callable[[str], None],
    ) -> None:
        self._db = db
        self._clock = clock
        self._settings = settings
        self._blobs = blobs
        self._wake = wake_rollouts

    # Operators.

    def create_target(
        self, ctx: OperatorContext, controller_id: str, labels: Mapping[str, str]
    ) -> tuple[Device, DdiTarget, str]:
        """An approved DDI device with a new TargetToken (shown once, stored hashed)."""
        ctx.require(Permission.DEVICES_WRITE)
        controller_id = validate_controller_id(controller_id)
        labels = validate_labels(labels)
        # A scoped operator creates devices only inside its scope.
        ctx.principal.require_on_device(Permission.DEVICES_WRITE, controller_id, labels)
        token = new_secret(TARGET_TOKEN_PREFIX)
        now = self._clock.now()
        with self._db.transaction() as tx:
            device, target = self._insert(tx, self._settings.ddi_tenant, controller_id,
                                          labels, EnrollmentState.APPROVED, hash_secret(token),
                                          None, now)  # fmt: skip
            record_action(tx, ctx, "ddi.target.create", f"device/{device.id}", now,
                          {"controller_id": controller_id, "tenant": target.tenant})  # fmt: skip
        return device, target, token

    def create_gateway_token(
        self, ctx: OperatorContext, description: str, auto_approve: bool
    ) -> tuple[GatewayToken, str]:
        """A GatewayToken of the configured tenant: it acts for any target of the tenant and
        enrolls an unknown controller id at its first base poll (pending, unless
        `auto_approve`)."""
        ctx.require(Permission.ENROLLMENT_TOKENS_WRITE)
        if auto_approve:  # a gateway enrolls controllers without any labels we could judge
            ctx.principal.require_fleet_wide("create auto-approving gateway tokens")
        secret = new_secret(GATEWAY_TOKEN_PREFIX)
        now = self._clock.now()
        token = GatewayToken("gw-" + secrets.token_hex(6), self._settings.ddi_tenant,
                             description, auto_approve, False, ctx.actor, now)  # fmt: skip
        with self._db.transaction() as tx:
            tx.ddi.insert_gateway_token(token, hash_secret(secret))
            record_action(tx, ctx, "ddi.gateway_token.create", f"ddi-gateway-token/{token.id}",
                          now, {"tenant": token.tenant, "auto_approve": auto_approve})  # fmt: skip
        return token, secret

    def list_gateway_tokens(self, ctx: OperatorContext) -> list[GatewayToken]:
        ctx.require(Permission.FLEET_READ)
        with self._db.read() as tx:
            return tx.ddi.gateway_tokens()

    def revoke_gateway_token(self, ctx: OperatorContext, token_id: str) -> GatewayToken:
        ctx.require(Permission.ENROLLMENT_TOKENS_WRITE)
        now = self._clock.now()
        with self._db.transaction() as tx:
            token = tx.ddi.revoke_gateway_token(token_id)
            record_action(tx, ctx, "ddi.gateway_token.revoke", f"ddi-gateway-token/{token_id}",
                          now, {})  # fmt: skip
        return token

    def _insert(
        self,
        tx: Transaction,
        tenant: str,
        controller_id: str,
        labels: Mapping[str, str],
        enrollment: EnrollmentState,
        token_hash: str | None,
        gateway_id: str | None,
        now: datetime,
    ) -> tuple[Device, DdiTarget]:
        device_id = _new_device_id()
        device = render_device(tx, Device(
            id=device_id,
            name=validate_device_name(controller_id),
            public_key=DDI_KEY_PREFIX + device_id,
            enrollment=enrollment,
            labels=dict(labels),
            inventory={"ddi": {"tenant": tenant, "controller_id": controller_id}},
            enrollment_token_id=None,
            created_at=now,
            heartbeat_interval_s=self._settings.heartbeat_interval_s,
        ))  # fmt: skip
        target = DdiTarget(device_id, tenant, controller_id, now, gateway_id)
        tx.ddi.insert_target(target, token_hash)
        tx.devices.insert(device)
        return device, target

    # Authentication.

    def authenticate(
        self,
        authorization: str,
        tenant: str,
        controller_id: str,
        enroll: bool,
        request_id: str,
    ) -> Device:
        """The approved device a DDI request acts for. `TargetToken` acts for its own target
        only, `GatewayToken` for any target of its tenant; with `enroll`, a GatewayToken
        enrolls an unknown controller id."""
        scheme, _, secret = authorization.partition(" ")
        if not authorization:
            raise Unauthenticated("missing DDI token: send 'Authorization: TargetToken TOKEN' "
                                  "or 'GatewayToken TOKEN'", code="missing_token")  # fmt: skip
        secret = secret.strip()
        if scheme.lower() not in ("targettoken", "gatewaytoken") or not secret:
            raise Unauthenticated("Authorization must be 'TargetToken TOKEN' or "
                                  "'GatewayToken TOKEN'", code="bad_auth_scheme")  # fmt: skip
        hashed = hash_secret(secret)
        with self._db.read() as tx:
            if scheme.lower() == "targettoken":
                device = self._by_target_token(tx, hashed, tenant, controller_id)
                check_device_access(device.enrollment)
                return device
            gateway = self._gateway(tx, hashed, tenant)
            target = tx.ddi.find_target(tenant, controller_id)
            found = tx.devices.get(target.device_id) if target else None
        if found is None:
            if not enroll:
                raise NotFound(f"no DDI target {controller_id!r} in tenant {tenant!r}: a "
                               "gateway enrolls it with its first base poll",
                               code="device_not_found")  # fmt: skip
            found = self._enroll(gateway, controller_id, request_id)
        device = found
        check_device_access(device.enrollment)
        return device

    @staticmethod
    def _by_target_token(tx: Transaction, hashed: str, tenant: str, controller_id: str) -> Device:
        target = tx.ddi.find_target_by_token(hashed)
        if target is None:
            raise Unauthenticated("invalid DDI target token", code="invalid_token")
        if target.tenant != tenant:
            raise Forbidden(f"the token is for tenant {target.tenant!r}, not {tenant!r}",
                            code="wrong_tenant")  # fmt: skip
        if target.controller_id != controller_id:
            raise Forbidden(f"target {target.controller_id!r} may not act for target "
                            f"{controller_id!r}", code="wrong_device")  # fmt: skip
        return tx.devices.get(target.device_id)

    @staticmethod
    def _gateway(tx: Transaction, hashed: str, tenant: str) -> GatewayToken:
        gateway = tx.ddi.find_gateway_token(hashed)
        if gateway is None:
            raise Unauthenticated("invalid DDI gateway token", code="invalid_token")
        if gateway.revoked:
            raise Unauthenticated("the DDI gateway token is revoked", code="token_revoked")
        if gateway.tenant != tenant:
            raise Forbidden(f"the token is for tenant {gateway.tenant!r}, not {tenant!r}",
                            code="wrong_tenant")  # fmt: skip
        return gateway

    def _enroll(self, gateway: GatewayToken, controller_id: str, request_id: str) -> Device:
        controller_id = validate_controller_id(controller_id)
        state = EnrollmentState.APPROVED if gateway.auto_approve else EnrollmentState.PENDING
        now = self._clock.now()
        with self._db.transaction() as tx:
            device, _ = self._insert(tx, gateway.tenant, controller_id, {}, state, None,
                                     gateway.id, now)  # fmt: skip
            record_action(tx, DeviceContext(device.id, request_id), "device.enroll",
                          f"device/{device.id}", now,
                          {"name": controller_id, "ddi_gateway_token": gateway.id,
                           "enrollment": state.value})  # fmt: skip
        return device

    # Polls.

    def poll(self, device_id: str) -> Poll:
        """A base poll: the device was seen now (its liveness), and it has applied its
        desired state once nothing is left to do or cancel."""
        now = self._clock.now()
        with self._db.transaction() as tx:
            device = tx.devices.get(device_id)
            target = self._target(tx, device)
            assignment, status = device.release_assignment, device.release_status or {}
            applied = applied_after_poll(assignment, status, device.desired_generation,
                                         device.applied_generation)  # fmt: skip
            tx.devices.record_report(device.id, now, None, applied, dict(status))
            deployment = None
            action = open_action(assignment, status)
            if action is not None and assignment is not None:
                deployment = (action, self._tag(tx, device, assignment, now))
        return Poll(
            interval_s=device.heartbeat_interval_s,
            deployment=deployment,
            cancel=cancel_action(assignment, status),
            installed=installed_action(status),
            config_wanted=target.config_received_at is None,
        )

    def _tag(self, tx: Transaction, device: Device, action: ReleaseAssignment,
             now: datetime) -> str:  # fmt: skip
        how = self._handling(tx, device, action, now)
        seed = f"{action.name}@{action.version}/{action.serial}/{how}"
        return hashlib.sha256(seed.encode()).hexdigest()[:8]

    @staticmethod
    def _target(tx: Transaction, device: Device) -> DdiTarget:
        ddi = device.inventory.get("ddi") or {}
        target = tx.ddi.find_target(str(ddi.get("tenant")), str(ddi.get("controller_id")))
        if target is None or target.device_id != device.id:
            raise NotFound(f"device {device.id} is not a DDI target", code="device_not_found")
        return target

    # Deployments.

    def deployment(self, device_id: str, action_id: int, base_url: str) -> dict[str, Any]:
        """`deploymentBase/{actionId}`: the action's release as chunks, and how to handle it."""
        now = self._clock.now()
        with self._db.read() as tx:
            device = tx.devices.get(device_id)
            action = self._action(device, action_id)
            how = self._handling(tx, device, action, now)
            artifacts = self._release_artifacts(tx, action)
        return self._render(action_id, how, artifacts, base_url)

    def installed(self, device_id: str, action_id: int, base_url: str) -> dict[str, Any]:
        """`installedBase/{actionId}`: the release the device reported installed by it."""
        with self._db.read() as tx:
            device = tx.devices.get(device_id)
            status = device.release_status or {}
            if installed_action(status) != action_id:
                raise _no_action(action_id)
            action = assignment_of_status(status)
            artifacts = self._release_artifacts(tx, action)
        return self._render(action_id, handling(False, False, False, None), artifacts, base_url)

    def cancellation(self, device_id: str, action_id: int) -> dict[str, Any]:
        """`cancelAction/{actionId}`: the action the device is asked to stop."""
        with self._db.read() as tx:
            device = tx.devices.get(device_id)
        if cancel_action(device.release_assignment, device.release_status or {}) != action_id:
            raise _no_action(action_id)
        return {"id": str(action_id), "cancelAction": {"stopId": str(action_id)}}

    @staticmethod
    def _action(device: Device, action_id: int) -> ReleaseAssignment:
        assignment, status = device.release_assignment, device.release_status or {}
        if assignment is not None and assignment.serial == action_id:
            return assignment
        if feedback_allowed(action_id, assignment, status):
            return assignment_of_status(status)
        raise _no_action(action_id)

    def _handling(self, tx: Transaction, device: Device, action: ReleaseAssignment,
                  now: datetime) -> ActionHandling:  # fmt: skip
        holder = tx.rollouts.claims([device.id]).get(device.id)
        record = tx.rollouts.find(holder) if holder else None
        if record is None or (
            record.rollout.spec.release.name,
            record.rollout.spec.release.version,
        ) != (action.name, action.version):
            return handling(action.stage_only, False, False, None)
        rollout = record.rollout
        windows = rollout.spec.maintenance_windows
        zone = usable_time_zone(device_time_zone(device.inventory))
        window_open = any_window_open(windows, zone, now) if windows else None
        return handling(action.stage_only, True, rollout.past_deadline(now, DeadlineAction.FORCE),
                        window_open)  # fmt: skip

    def _release_artifacts(
        self, tx: Transaction, action: ReleaseAssignment
    ) -> list[tuple[Artifact, tuple[str, str] | None]]:
        release = tx.releases.get(Ref(action.name, action.version))
        artifacts = [tx.artifacts.get(ref) for ref in release.artifacts]
        return [(a, tx.ddi.hashes(a.sha256)) for a in artifacts]

    def _render(self, action_id: int, how: ActionHandling,
                artifacts: list[tuple[Artifact, tuple[str, str] | None]],
                base_url: str) -> dict[str, Any]:  # fmt: skip
        modules = [self._module(a, known) for a, known in artifacts]
        deployment: dict[str, Any] = {"download": how.download.value, "update": how.update.value}
        if how.maintenance_window is not None:
            deployment["maintenanceWindow"] = how.maintenance_window.value
        deployment["chunks"] = render_chunks(modules, base_url)
        return {"id": str(action_id), "deployment": deployment}

    def _module(self, artifact: Artifact, known: tuple[str, str] | None) -> ModuleArtifact:
        sha1, md5 = known or self._hash_blob(artifact.sha256)
        return ModuleArtifact(artifact.name, artifact.version, artifact.kind.value,
                              artifact.file_name, artifact.size_bytes, artifact.sha256, sha1,
                              md5)  # fmt: skip

    def _hash_blob(self, sha256: str) -> tuple[str, str]:
        """sha1 and md5 of a blob, computed once and kept (DDI clients check them)."""
        sha1, md5 = hashlib.sha1(), hashlib.md5()
        with self._blobs.path(sha256).open("rb") as f:
            while chunk := f.read(_HASH_CHUNK):
                sha1.update(chunk)
                md5.update(chunk)
        with self._db.transaction() as tx:
            tx.ddi.remember_hashes(sha256, sha1.hexdigest(), md5.hexdigest())
        return sha1.hexdigest(), md5.hexdigest()

    # Feedback.

    def feedback(self, device_id: str, action_id: int, body: object) -> None:
        """Deployment feedback: the action's install state becomes the device's release
        status, as an agent's report would; the rollout controller is woken when the state
        moved."""
        parsed = parse_feedback(body, action_id)
        now = self._clock.now()
        with self._db.transaction() as tx:
            device = tx.devices.get(device_id)
            status = device.release_status or {}
            action = self._action(device, action_id)
            if action_closed(action_id, status):
                raise Conflict(f"action {action_id} is closed ({status.get('state')}); "
                               "feedback on it is refused", code="action_closed")  # fmt: skip
            new = status_after_feedback(status, action, parsed)
            self._store_status(tx, device, new, now)
        if (new["serial"], new["state"]) != (status.get("serial"), status.get("state")):
            self._wake(device_id)

    def cancel_feedback(self, device_id: str, action_id: int, body: object) -> None:
        """The device's answer to a cancel: done ends the action as failed; refused lets it
        run on and is not asked again; anything else changes nothing yet."""
        parsed = parse_feedback(body, action_id)
        now = self._clock.now()
        with self._db.transaction() as tx:
            device = tx.devices.get(device_id)
            status = device.release_status or {}
            if cancel_action(device.release_assignment, status) != action_id:
                raise _no_action(action_id)
            new = status_after_cancel(status, parsed)
            if new is None:
                return
            self._store_status(tx, device, new, now)
        self._wake(device_id)

    @staticmethod
    def _store_status(tx: Transaction, device: Device, new: Mapping[str, Any],
                      now: datetime) -> None:  # fmt: skip
        stored = device.release_status or {}
        status = stamp_last_good(stored, stamp_active_since(stored, new, now))
        applied = applied_after_poll(
            device.release_assignment, status, device.desired_generation, device.applied_generation
        )
        tx.devices.record_report(device.id, now, None, applied, status)

    # configData.

    def config_data(self, device_id: str, data: object, mode: str, request_id: str) -> Device:
        """configData: the `data` map onto the device's labels (merge, replace or remove)."""
        now = self._clock.now()
        with self._db.transaction() as tx:
            device = tx.devices.get(device_id)
            target = self._target(tx, device)
            labels = labels_after_config(device.labels, data, mode)
            saved = device
            if labels != dict(device.labels):
                saved = save_device(tx, replace(device, labels=labels))
                record_action(
                    tx,
                    DeviceContext(device.id, request_id),
                    "device.labels",
                    f"device/{device.id}",
                    now,
                    {"labels": labels, "ddi": mode},
                )
            tx.ddi.mark_config_received(target.device_id, now)
        return saved

    # Artifacts.

    def artifact(self, device_id: str, module_id: str, file_name: str) -> ArtifactFile:
        """A file the device may download, with its md5 (`_downloadable`)."""
        with self._db.read() as tx:
            device = tx.devices.get(device_id)
            artifact = _downloadable(tx, device, module_id, file_name)
            known = tx.ddi.hashes(artifact.sha256)
        md5 = known[1] if known else self._hash_blob(artifact.sha256)[1]
        return ArtifactFile(artifact.sha256, artifact.size_bytes, artifact.file_name, md5)


def _no_action(action_id: int) -> NotFound:
    return NotFound(f"no action {action_id} for this target", code="action_not_found")


def _downloadable(tx: Transaction, device: Device, module_id: str, file_name: str) -> Artifact:
    """An artifact of a release the device is assigned, works on, or runs; else NotFound
    (whether or not it exists elsewhere, so nothing else can be probed)."""
    actions = [device.release_assignment] if device.release_assignment else []
    status = device.release_status or {}
    if isinstance(status.get("serial"), int) and status.get("name"):
        actions.append(assignment_of_status(status))
    for action in actions:
        release = tx.releases.find(Ref(action.name, action.version))
        for ref in release.artifacts if release else ():
            artifact = tx.artifacts.get(ref)
            if str(ref) == module_id and artifact.file_name == file_name:
                return artifact
    raise NotFound(f"no artifact {file_name!r} in module {module_id!r} for this target",
                   code="artifact_not_found")  # fmt: skip
