"""Rollout service: what operators do with rollouts (create, list, show, commands, report).

Creating a rollout validates its manifest (400 naming the field), checks that its release is
signed, and *claims* every approved device its target matches: a device is in at most one
active rollout, so a rollout whose devices another active rollout holds is refused (409
`devices_in_rollout`, naming the devices and the rollout) unless it supersedes it — the
older rollout is then aborted (its devices keep what they have) and the new one takes over.
Re-applying the manifest of an active rollout with the same (chosen) name changes nothing;
another manifest under that name is refused (409 `rollout_exists`).

The controller (`rollout_controller.py`) does the rest; every operator action here is one
transaction with its audit record, and wakes the controller.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from edgefleet.clock import Clock
from edgefleet.core.enrollment import EnrollmentState
from edgefleet.core.governance.approval import Requester, decide_approver
from edgefleet.core.rollouts.record import DeviceRecord, RolloutRecord, TimelineEntry
from edgefleet.core.rollouts.rollout import (
    FINAL_STATES,
    OperatorCommand,
    Rollout,
    RolloutState,
    apply_command,
    approve,
)
from edgefleet.core.rollouts.spec import RolloutSpec, parse_rollout_spec
from edgefleet.core.rollouts.waves import plan_waves
from edgefleet.core.updates.release import Ref
from edgefleet.errors import Conflict, Forbidden, InvalidInput
from edgefleet.security.rbac import Permission
from edgefleet.server.services.audit import OperatorContext, record_action
from edgefleet.server.services.policies import enforce, rollout_verdict
from edgefleet.server.services.releases import compatibility_of, signed_release
from edgefleet.server.services.rollout_report import (
    build_report,
    build_status,
    rollout_summary,
)
from edgefleet.store import Database, Transaction

MAX_LIST = 500
COMMAND_ATTEMPTS = 3
_SHOWN_CONFLICTS = 5


@dataclass(frozen=True)
class Created:
    record: RolloutRecord
    created: bool  # False: an identical active rollout already existed
    superseded: tuple[str, ...] = ()


def new_rollout_id() -> str:
    return f"ro-{secrets.token_hex(5)}"


def parse_manifest(manifest: Mapping[str, Any], tx: Transaction) -> RolloutSpec:
    """The spec of a rollout manifest, with its KPI gates checked against the fleet
    telemetry policy (a gate on a KPI the fleet does not compute could never decide)."""
    spec = parse_rollout_spec(manifest)
    known = [k.name for k in tx.telemetry.fleet_policy().detection.kpis]
    prefix = "spec." if "spec" in manifest else ""
    for i, gate in enumerate(spec.gates.kpis):
        if gate.kpi not in known:
            raise InvalidInput(
                f"{prefix}gates.kpis[{i}].kpi: unknown KPI {gate.kpi!r}; the fleet telemetry "
                f"policy defines {', '.join(known) or 'none'}"
            )
    return spec


def target_devices(tx: Transaction, spec: RolloutSpec) -> list[str]:
    """Ids of the approved devices the rollout's target matches."""
    return [
        d.id
        for d in tx.devices.all()
        if d.enrollment is EnrollmentState.APPROVED and spec.target.matches(d.labels)
    ]


def create_rollout(
    tx: Transaction,
    ctx: OperatorContext,
    manifest: Mapping[str, Any],
    now: datetime,
    *,
    supersede: bool = False,
    train: str | None = None,
) -> Created:
    """Create a rollout (see the module docstring) inside the caller's transaction."""
    spec = parse_manifest(manifest, tx)
    ref = Ref(spec.release.name, spec.release.version)
    signed_release(tx, ref)
    name = spec.rollout_name
    # Only a name the operator chose identifies a rollout (re-applying its manifest is a
    # no-op); derived names may repeat (the same release to two targets).
    same_name = tx.rollouts.active_named(name) if spec.name else None
    if same_name is not None:
        if dict(same_name.manifest) == dict(manifest):
            return Created(same_name, created=False)
        raise Conflict(
            f"rollout {name!r} ({same_name.id}) is active with a different manifest; abort it "
            "or give the new rollout another name",
            code="rollout_exists",
        )
    targets = target_devices(tx, spec)
    _require_in_scope(tx, ctx, Permission.ROLLOUTS_WRITE, spec, targets)
    violations, approval = rollout_verdict(tx, spec, now)
    enforce(violations)
    holders = tx.rollouts.claims(targets)
    rollout_id = new_rollout_id()
    superseded: list[str] = []
    if holders:
        others = sorted(set(holders.values()))
        if not supersede:
            raise Conflict(_conflict_message(tx, holders), code="devices_in_rollout")
        for other in others:
            _supersede(tx, ctx, tx.rollouts.get(other), rollout_id, now)
            superseded.append(other)
    rollout = Rollout(rollout_id, spec)
    if approval:  # the controller leaves it be until a second operator approves it
        rollout = replace(
            rollout,
            state=RolloutState.AWAITING_APPROVAL,
            reason="needs a second operator's approval: " + "; ".join(approval),
        )
    record = RolloutRecord(
        rollout=rollout,
        name=name,
        manifest=dict(manifest),
        created_by=ctx.actor,
        created_at=now,
        updated_at=now,
        due_at=None if approval else now,
        train=train,
    )
    tx.rollouts.insert(record)
    tx.rollouts.claim(rollout_id, targets)
    note = f"; superseded {', '.join(superseded)}" if superseded else ""
    tx.rollouts.append_events(
        rollout_id,
        [
            TimelineEntry(
                now,
                "create",
                f"created by {ctx.actor}: {spec.release} to {len(targets)} device(s) matching "
                f"'{spec.target}'{note}",
                actor=ctx.actor,
                details={
                    "devices": len(targets),
                    "superseded": superseded,
                    "train": train,
                    "needs_approval": approval,
                },
            )
        ],
    )
    record_action(
        tx, ctx, "rollout.create", f"rollout/{rollout_id}", now,
        {"name": name, "release": str(spec.release), "target": str(spec.target),
         "devices": len(targets), "superseded": superseded, "train": train,
         "needs_approval": approval},
    )  # fmt: skip
    return Created(record, created=True, superseded=tuple(superseded))


def _require_in_scope(
    tx: Transaction,
    ctx: OperatorContext,
    permission: Permission,
    spec: RolloutSpec,
    targets: list[str] | None = None,
) -> None:
    """Forbidden `out_of_scope` unless the rollout's target stays within the caller's device
    scope (`targets`: the ids it matches, by default those it matches now)."""
    ids = set(target_devices(tx, spec) if targets is None else targets)
    matched = {d.name: d.labels for d in tx.devices.all() if d.id in ids}
    ctx.principal.require_on_selector(permission, spec.target, matched)


def plan_preview(tx: Transaction, record: RolloutRecord) -> dict[str, Any]:
    """The devices a rollout created in `tx` holds and the waves it would cut from them if
    it started now: incompatible devices skipped, the rest ranked by the rollout's name
    (`core.waves`), exactly as its start does."""
    spec = record.rollout.spec
    _, artifacts = signed_release(tx, Ref(spec.release.name, spec.release.version))
    devices = [tx.devices.get(d) for d in sorted(tx.rollouts.claimed_by(record.id))]
    verdicts = {d.id: compatibility_of(artifacts, d) for d in devices}
    compatible = [d.id for d in devices if verdicts[d.id].compatible]
    plan = plan_waves(spec.rollout_name, compatible, spec.strategy.waves, spec.strategy.soak_s)
    names = {d.id: d.name for d in devices}
    return {
        "devices": [
            {"id": d.id, "name": d.name, "wave": plan.wave_of(d.id),
             "compatible": verdicts[d.id].compatible, "reason": verdicts[d.id].reason}
            for d in devices
        ],
        "waves": [
            {"index": w.index, "label": w.label, "size": w.size, "soak_s": w.soak_s,
             "devices": [names[d] for d in w.device_ids]}
            for w in plan.waves
        ],
    }  # fmt: skip


def _conflict_message(tx: Transaction, holders: Mapping[str, str]) -> str:
    by_rollout: dict[str, list[str]] = {}
    for device_id, rollout_id in sorted(holders.items()):
        by_rollout.setdefault(rollout_id, []).append(device_id)
    parts = []
    for rollout_id, device_ids in sorted(by_rollout.items()):
        other = tx.rollouts.get(rollout_id)
        names = [_device_name(tx, d) for d in device_ids[:_SHOWN_CONFLICTS]]
        more = f" and {len(device_ids) - _SHOWN_CONFLICTS} more" if len(device_ids) > 5 else ""
        parts.append(
            f"{', '.join(names)}{more} in rollout {other.name} ({rollout_id}, {other.release}, "
            f"{other.state})"
        )
    return (
        f"{len(holders)} target device(s) are already in an active rollout: "
        f"{'; '.join(parts)}. A device is in at most one active rollout: wait for it to "
        "finish, abort it, or supersede it (--supersede)"
    )


def _device_name(tx: Transaction, device_id: str) -> str:
    device = tx.devices.find(device_id)
    return device.name if device is not None and device.name != device_id else device_id


def _supersede(
    tx: Transaction, ctx: OperatorContext, other: RolloutRecord, by: str, now: datetime
) -> None:
    if other.state is RolloutState.ROLLING_BACK:
        raise Conflict(
            f"rollout {other.name} ({other.id}) is rolling back and cannot be superseded; "
            "wait for its rollback to finish",
            code="devices_in_rollout",
        )
    aborted = apply_command(
        other.rollout, OperatorCommand.ABORT, now, actor=ctx.actor, note=f"superseded by {by}"
    )
    tx.rollouts.update(replace(other, rollout=aborted, updated_at=now, due_at=None))
    tx.rollouts.release(other.id)
    tx.rollouts.append_events(
        other.id, [TimelineEntry(now, "superseded", aborted.reason, actor=ctx.actor)]
    )
    record_action(tx, ctx, "rollout.abort", f"rollout/{other.id}", now, {"superseded_by": by})


class RolloutService:
    def __init__(self, db: Database, clock: Clock, wake: Callable[[], None]) -> None:
        self._db = db
        self._clock = clock
        self._wake = wake

    def now(self) -> datetime:
        return self._clock.now()

    def create(
        self, ctx: OperatorContext, manifest: Mapping[str, Any], *, supersede: bool = False
    ) -> Created:
        ctx.require(Permission.ROLLOUTS_WRITE)
        now = self._clock.now()
        with self._db.transaction() as tx:
            created = create_rollout(tx, ctx, manifest, now, supersede=supersede)
        self._wake()
        return created

    def dry_run(
        self, ctx: OperatorContext, manifest: Mapping[str, Any], *, supersede: bool = False
    ) -> dict[str, Any]:
        """What `create` would do, decided by the same code in a transaction that is rolled
        back (nothing is stored, audited or woken): the rollout, what it would supersede, and
        its devices and waves as it would start now."""
        ctx.require(Permission.ROLLOUTS_WRITE)
        with self._db.rehearsal() as tx:
            created = create_rollout(tx, ctx, manifest, self._clock.now(), supersede=supersede)
            preview = plan_preview(tx, created.record) if created.created else None
        return {
            "dry_run": True,
            "created": created.created,
            "superseded": list(created.superseded),
            "rollout": rollout_summary(created.record),
            "plan": preview,
        }

    def list_rollouts(
        self, ctx: OperatorContext, *, active_only: bool = False
    ) -> list[dict[str, Any]]:
        """Newest first, each with its device counts by state."""
        ctx.require(Permission.FLEET_READ)
        with self._db.read() as tx:
            records = tx.rollouts.recent(active_only=active_only, limit=MAX_LIST)
            counts = tx.rollouts.state_counts([r.id for r in records])
        return [{**rollout_summary(r), "counts": counts[r.id]} for r in records]

    def status(self, ctx: OperatorContext, id_or_name: str) -> dict[str, Any]:
        """The rollout with its waves, gates and devices (what `rollouts status` draws)."""
        ctx.require(Permission.FLEET_READ)
        with self._db.read() as tx:
            record = tx.rollouts.resolve(id_or_name)
            return build_status(tx, record, self._clock.now())

    def report(self, ctx: OperatorContext, id_or_name: str) -> dict[str, Any]:
        """The after-action report: timeline, waves, gates, skipped/failed, rollback."""
        ctx.require(Permission.FLEET_READ)
        with self._db.read() as tx:
            record = tx.rollouts.resolve(id_or_name)
            return build_report(tx, record, self._clock.now())

    def command(
        self, ctx: OperatorContext, id_or_name: str, command: OperatorCommand, note: str = ""
    ) -> RolloutRecord:
        """pause | resume | abort | rollback; IllegalTransition (409) when the state does
        not allow it."""
        ctx.require(Permission.ROLLOUTS_WRITE)
        for attempt in range(COMMAND_ATTEMPTS):
            try:
                saved = self._command_once(ctx, id_or_name, command, note)
                break
            except Conflict as e:
                # The controller saved the rollout between our read and write (PostgreSQL
                # reads committed data); the command is decided again on the new state.
                if e.code != "concurrent_update" or attempt + 1 == COMMAND_ATTEMPTS:
                    raise
        self._wake()
        return saved

    def approve(self, ctx: OperatorContext, id_or_name: str, note: str = "") -> RolloutRecord:
        """Approve a rollout awaiting a second operator: 403 `own_change` for its requester,
        409 `illegal_transition` unless it awaits approval. The timeline and the audit log
        name both operators."""
        ctx.require(Permission.ROLLOUTS_APPROVE)
        now = self._clock.now()
        with self._db.transaction() as tx:
            record = tx.rollouts.resolve(id_or_name)
            _require_in_scope(tx, ctx, Permission.ROLLOUTS_APPROVE, record.rollout.spec)
            decision = decide_approver(
                Requester.from_actor(record.created_by),
                Requester(ctx.principal.token_id, ctx.principal.name),
            )
            if not decision.allowed:
                raise Forbidden(decision.reason, code="own_change")
            changed = approve(record.rollout, requested_by=record.created_by, actor=ctx.actor)
            saved = tx.rollouts.update(replace(record, rollout=changed, updated_at=now, due_at=now))
            tx.rollouts.append_events(record.id, [TimelineEntry(
                now, "approve", changed.reason + (f": {note}" if note else ""),
                actor=ctx.actor)])  # fmt: skip
            record_action(tx, ctx, "rollout.approve", f"rollout/{record.id}", now,
                          {"requested_by": record.created_by, "approved_by": ctx.actor,
                           "note": note})  # fmt: skip
        self._wake()
        return saved

    def _command_once(
        self, ctx: OperatorContext, id_or_name: str, command: OperatorCommand, note: str
    ) -> RolloutRecord:
        now = self._clock.now()
        with self._db.transaction() as tx:
            record = tx.rollouts.resolve(id_or_name)
            _require_in_scope(tx, ctx, Permission.ROLLOUTS_WRITE, record.rollout.spec)
            was_final = record.state in FINAL_STATES
            changed = apply_command(record.rollout, command, now, actor=ctx.actor, note=note)
            final = changed.state in FINAL_STATES
            if command is OperatorCommand.ROLLBACK and was_final:
                # Rolling back a finished rollout needs its devices back.
                touched = _touched(tx.rollouts.devices(record.id))
                tx.rollouts.claim(record.id, touched)
            saved = tx.rollouts.update(
                replace(record, rollout=changed, updated_at=now, due_at=None if final else now)
            )
            if final:
                tx.rollouts.release(record.id)
            tx.rollouts.append_events(
                record.id, [TimelineEntry(now, command.value, changed.reason, actor=ctx.actor)]
            )
            record_action(
                tx, ctx, f"rollout.{command.value}", f"rollout/{record.id}", now,
                {"from": record.state.value, "to": changed.state.value, "note": note},
            )  # fmt: skip
        return saved


def _touched(records: Mapping[str, DeviceRecord]) -> list[str]:
    return sorted(d for d, r in records.items() if r.device.touched)
