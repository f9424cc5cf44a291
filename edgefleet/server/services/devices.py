"""Device service: what operators do to devices (list, approve, label, configure) and groups."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

from edgefleet.clock import Clock
from edgefleet.core.device import ConnectionStatus, Device
from edgefleet.core.enrollment import EnrollmentAction, EnrollmentState, transition
from edgefleet.core.governance.policy import check_labels
from edgefleet.core.group import Group, validate_group_name
from edgefleet.core.labels import LabelChange
from edgefleet.core.rollouts.record import TimelineEntry
from edgefleet.core.rollouts.rollout import DeviceState as RolloutDeviceState
from edgefleet.core.selector import Selector, parse_selector
from edgefleet.security.rbac import Permission
from edgefleet.server.services.audit import OperatorContext, record_action
from edgefleet.server.services.desired import save_device
from edgefleet.server.services.policies import enforce, policies_in_force
from edgefleet.server.watch import DesiredStateWatch
from edgefleet.store import Database, Transaction


class DeviceService:
    def __init__(self, db: Database, clock: Clock, watch: DesiredStateWatch) -> None:
        self._db = db
        self._clock = clock
        self._watch = watch
        self._enrollment_listeners: list[Callable[[str, EnrollmentState | None], None]] = []

    def on_enrollment_change(self, listener: Callable[[str, EnrollmentState | None], None]) -> None:
        """Call `listener(device_id, enrollment)` after each committed enrollment change, and
        with None after a deletion (the MQTT channel keeps the broker's accounts)."""
        self._enrollment_listeners.append(listener)

    def now(self) -> datetime:
        return self._clock.now()

    def list_devices(
        self,
        ctx: OperatorContext,
        selector: str | None = None,
        group: str | None = None,
        status: ConnectionStatus | None = None,
        enrollment: EnrollmentState | None = None,
    ) -> list[Device]:
        ctx.require(Permission.FLEET_READ)
        parsed = parse_selector(selector or "")
        now = self._clock.now()
        with self._db.read() as tx:
            group_selector = parse_selector(tx.groups.get(group).selector) if group else Selector()
            found = tx.devices.all()
        return [
            d
            for d in found
            if parsed.matches(d.labels)
            and group_selector.matches(d.labels)
            and (status is None or d.connection(now) is status)
            and (enrollment is None or d.enrollment is enrollment)
        ]

    def get(self, ctx: OperatorContext, id_or_name: str) -> Device:
        ctx.require(Permission.FLEET_READ)
        with self._db.read() as tx:
            return tx.devices.resolve(id_or_name)

    def change_enrollment(
        self, ctx: OperatorContext, id_or_name: str, action: EnrollmentAction
    ) -> Device:
        ctx.require(Permission.DEVICES_WRITE)
        now = self._clock.now()
        with self._db.transaction() as tx:
            device = tx.devices.resolve(id_or_name)
            ctx.principal.require_on_device(Permission.DEVICES_WRITE, device.name, device.labels)
            new_state = transition(device.enrollment, action)
            saved = tx.devices.update(replace(device, enrollment=new_state))
            record_action(
                tx,
                ctx,
                f"device.{action.value}",
                f"device/{device.id}",
                now,
                {"from": device.enrollment.value, "to": new_state.value},
            )
        self._watch.notify(saved.id)
        for listener in self._enrollment_listeners:
            listener(saved.id, saved.enrollment)
        return saved

    def delete(self, ctx: OperatorContext, id_or_name: str) -> Device:
        """Decommission a device: forget its key, nonces, desired state, telemetry and
        liveness, release it from rollouts (its record in an active one says `removed`), so
        placement moves its replicas and its name is free. The audit trail keeps its history;
        its requests are refused from now on (401: the key is unknown)."""
        ctx.require(Permission.DEVICES_WRITE)
        now = self._clock.now()
        with self._db.transaction() as tx:
            device = tx.devices.resolve(id_or_name)
            ctx.principal.require_on_device(Permission.DEVICES_WRITE, device.name, device.labels)
            for rollout_id in set(tx.rollouts.claims([device.id]).values()):
                self._remove_from_rollout(tx, rollout_id, device, ctx.actor, now)
            tx.devices.delete(device.id)
            tx.nonces.forget(device.id)
            tx.attestations.forget(device.id)
            tx.node_health.forget(device.id)
            tx.telemetry.forget_device(device.id)
            record_action(
                tx,
                ctx,
                "device.delete",
                f"device/{device.id}",
                now,
                {"name": device.name, "enrollment": device.enrollment.value},
            )
        self._watch.notify(device.id)
        for listener in self._enrollment_listeners:
            listener(device.id, None)
        return device

    @staticmethod
    def _remove_from_rollout(
        tx: Transaction, rollout_id: str, device: Device, actor: str, now: datetime
    ) -> None:
        record = tx.rollouts.get(rollout_id)
        # Bumps the rollout's version (a controller pass that read it before gives up) and
        # makes it due, so the controller's next look at the store goes on without it.
        tx.rollouts.update(replace(record, updated_at=now, due_at=now))
        tx.rollouts.release(rollout_id, [device.id])
        stored = tx.rollouts.devices(rollout_id).get(device.id)
        if stored is not None:
            removed = replace(stored.device, state=RolloutDeviceState.REMOVED,
                              reason=f"device {device.name} deleted by {actor}")  # fmt: skip
            tx.rollouts.put_devices(rollout_id, [replace(stored, device=removed)])
        tx.rollouts.append_events(rollout_id, [TimelineEntry(
            now, "device-removed", f"device {device.name} ({device.id}) deleted by {actor}",
            actor=actor)])  # fmt: skip

    def relabel(self, ctx: OperatorContext, id_or_name: str, change: LabelChange) -> Device:
        ctx.require(Permission.DEVICES_WRITE)
        now = self._clock.now()
        with self._db.transaction() as tx:
            device = tx.devices.resolve(id_or_name)
            labels = change.apply(device.labels)
            # In scope before and after: a scoped operator can neither take a device nor
            # give one away.
            ctx.principal.require_on_device(Permission.DEVICES_WRITE, device.name, device.labels)
            ctx.principal.require_on_device(Permission.DEVICES_WRITE, device.name, labels)
            enforce(check_labels(policies_in_force(tx), device.name, labels))
            saved = save_device(tx, replace(device, labels=labels))
            record_action(
                tx,
                ctx,
                "device.label",
                f"device/{device.id}",
                now,
                {"set": dict(change.set), "remove": sorted(change.remove)},
            )
        self._watch.notify(saved.id)
        return saved

    def configure(
        self, ctx: OperatorContext, id_or_name: str, heartbeat_interval_s: float
    ) -> Device:
        ctx.require(Permission.DEVICES_WRITE)
        now = self._clock.now()
        with self._db.transaction() as tx:
            device = tx.devices.resolve(id_or_name)
            ctx.principal.require_on_device(Permission.DEVICES_WRITE, device.name, device.labels)
            saved = save_device(tx, replace(device, heartbeat_interval_s=heartbeat_interval_s))
            record_action(
                tx,
                ctx,
                "device.configure",
                f"device/{device.id}",
                now,
                {"heartbeat_interval_s": heartbeat_interval_s},
            )
        self._watch.notify(saved.id)
        return saved

    # Groups: named selectors.

    def create_group(
        self, ctx: OperatorContext, name: str, selector: str, description: str
    ) -> Group:
        ctx.require(Permission.GROUPS_WRITE)
        now = self._clock.now()
        group = Group(
            name=validate_group_name(name),
            selector=str(parse_selector(selector)),
            description=description,
            created_by=ctx.actor,
            created_at=now,
        )
        with self._db.transaction() as tx:
            tx.groups.insert(group)
            record_action(
                tx, ctx, "group.create", f"group/{name}", now, {"selector": group.selector}
            )
        return group

    def list_groups(self, ctx: OperatorContext) -> list[Group]:
        ctx.require(Permission.FLEET_READ)
        with self._db.read() as tx:
            return tx.groups.all()

    def get_group(self, ctx: OperatorContext, name: str) -> tuple[Group, list[Device]]:
        """A group and the devices its selector matches now."""
        ctx.require(Permission.FLEET_READ)
        with self._db.read() as tx:
            group = tx.groups.get(name)
            selector = parse_selector(group.selector)
            return group, [d for d in tx.devices.all() if selector.matches(d.labels)]

    def delete_group(self, ctx: OperatorContext, name: str) -> None:
        ctx.require(Permission.GROUPS_WRITE)
        now = self._clock.now()
        with self._db.transaction() as tx:
            tx.groups.delete(name)
            record_action(tx, ctx, "group.delete", f"group/{name}", now)
