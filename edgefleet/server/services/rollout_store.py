"""The rollout controller's SQL store: the `RolloutStore` port (`controllers/rollout.py`)
over the control plane's database.

- *Load* (a read transaction): the rollout and its device records, each device's observed
  fields refreshed from its latest report (`core.rollouts.observation`); a pending rollout
  takes the devices its target matches now, less those another rollout holds.
- *Gate telemetry*: what the gates read from stored telemetry (`rollout_telemetry`).
- *Apply* (one write transaction): bump the rollout's row version (the optimistic check:
  another replica that got there first makes this one give up and re-read later), publish
  every AssignRelease and RevertRelease into the devices' desired states, save the changed
  device records, the timeline, the device claims and the next look. All of it commits
  together or not at all, so a controller killed at any instant neither re-updates a device
  nor skips a gate: after a restart the next pass decides again from what was stored. Then
  the devices whose desired state changed are notified (their long polls wake).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from edgefleet.controllers.rollout import RESCAN_S, Outcome
from edgefleet.core.governance.policy import Labels, Policy
from edgefleet.core.rollouts.actions import (
    Action,
    AssignRelease,
    Decision,
    MarkDevice,
    RecordGates,
    RevertRelease,
    StartRollout,
)
from edgefleet.core.rollouts.gates import DeviceTelemetry
from edgefleet.core.rollouts.observation import CurrentAssignment, already_runs, observe
from edgefleet.core.rollouts.record import DeviceRecord, RolloutRecord, TimelineEntry
from edgefleet.core.rollouts.rollout import (
    FINAL_STATES,
    DeviceState,
    Rollout,
    RolloutDevice,
    RolloutState,
)
from edgefleet.core.updates.compat import CompatVerdict
from edgefleet.core.updates.release import Ref, Release
from edgefleet.errors import Conflict
from edgefleet.security.rbac import SYSTEM
from edgefleet.server.services.audit import OperatorContext, record_action
from edgefleet.server.services.policies import policies_in_force
from edgefleet.server.services.quiet_hours import QuietHoursReader
from edgefleet.server.services.releases import (
    ReleaseService,
    assign_release_to_device,
    clear_release_of_device,
    delta_pairs_for,
    signed_release,
)
from edgefleet.server.services.rollout_telemetry import gate_telemetry
from edgefleet.server.services.rollouts import target_devices
from edgefleet.server.services.telemetry import TelemetryService
from edgefleet.server.watch import DesiredStateWatch
from edgefleet.store import Database, Transaction

log = logging.getLogger(__name__)

# Rollout-level actions recorded in the audit log too (device-level ones are in the timeline).
_AUDITED = frozenset(
    {"start-rollout", "promote-wave", "complete-rollout", "pause-rollout", "start-rollback",
     "finish-rollback", "fail-rollout"}
)  # fmt: skip


@dataclass(frozen=True)
class SqlLoaded:
    record: RolloutRecord
    stored: dict[str, DeviceRecord]
    devices: dict[str, RolloutDevice]  # with observed fields, what `decide` sees
    release: Release | None
    left_out: int = 0  # target devices another rollout holds (pending rollouts only)

    @property
    def rollout(self) -> Rollout:
        return self.record.rollout


class SqlRolloutStore:
    def __init__(
        self,
        db: Database,
        watch: DesiredStateWatch,
        releases: ReleaseService,
        telemetry: TelemetryService,
    ) -> None:
        self._db = db
        self._watch = watch
        self._releases = releases
        self._telemetry = telemetry
        self._quiet_hours = QuietHoursReader()

    def load(self, rollout_id: str, now: datetime) -> SqlLoaded | None:
        with self._db.read() as tx:
            return self._load(tx, rollout_id, now)

    def ambient_telemetry(
        self, loaded: SqlLoaded, now: datetime
    ) -> Mapping[str, DeviceTelemetry] | None:
        return None  # read from the database only for the gates a decision looks at

    def gate_telemetry(
        self, loaded: SqlLoaded, view: Rollout, installed: Mapping[str, datetime], now: datetime
    ) -> Mapping[str, DeviceTelemetry]:
        return gate_telemetry(self._db, self._telemetry, view, loaded.stored, installed, now)

    def _load(self, tx: Transaction, rollout_id: str, now: datetime) -> SqlLoaded | None:
        record = tx.rollouts.get(rollout_id)
        if record.state in FINAL_STATES:
            return None
        rollout = record.rollout
        stored = tx.rollouts.devices(rollout_id)
        left_out = 0
        if rollout.state is RolloutState.PENDING:
            # The devices its target matches now, less those another rollout holds.
            matching = target_devices(tx, rollout.spec)
            holders = tx.rollouts.claims(matching)
            ids = sorted(d for d in matching if holders.get(d, rollout_id) == rollout_id)
            left_out = len(matching) - len(ids)
        else:
            ids = sorted(stored)
        ref = Ref(rollout.spec.release.name, rollout.spec.release.version)
        release = tx.releases.find(ref)
        artifacts = [] if release is None else [tx.artifacts.get(a) for a in release.artifacts]
        devices: dict[str, RolloutDevice] = {}
        for device_id in ids:
            base = stored.get(device_id) or DeviceRecord(RolloutDevice(device_id))
            device = tx.devices.find(device_id)
            if device is None:  # deleted: `DeviceService.delete` marked its record removed
                devices[device_id] = replace(base.device, healthy=False)
                continue
            verdict = (self._releases.compatibility(artifacts, device, ref.name) if release
                       else CompatVerdict())  # fmt: skip
            devices[device_id] = observe(base.device, base.assignment, device, verdict, now)
        if rollout.spec.predicted_window is not None:  # `window: predicted`: quiet hours
            zones = {d: r.time_zone for d, r in devices.items()}
            profiles = self._quiet_hours.profiles(tx, zones, now)
            devices = {d: replace(r, quiet_hours=profiles.get(d)) for d, r in devices.items()}
        return SqlLoaded(record, stored, devices, release, left_out)

    def policies(
        self, loaded: SqlLoaded, device_ids: Sequence[str]
    ) -> tuple[Sequence[Policy], Mapping[str, Labels]]:
        with self._db.read() as tx:
            found = (tx.devices.find(d) for d in device_ids)
            return policies_in_force(tx), {d.name: d.labels for d in found if d is not None}

    def apply(self, loaded: SqlLoaded, outcome: Outcome, now: datetime) -> bool:
        """Store and carry out `outcome` in one transaction, then wake the devices whose
        desired state changed; False when another replica changed the rollout meanwhile."""
        record, decision = loaded.record, outcome.decision
        if not decision.actions:
            with self._db.transaction() as tx:
                due = outcome.due_at or now + timedelta(seconds=RESCAN_S)
                tx.rollouts.schedule(record.id, record.version, due)
            return True
        notify: set[str] = set()
        deltas: set[tuple[str, str]] = set()
        rollout = outcome.rollout
        final = rollout.state in FINAL_STATES
        started = any(isinstance(a, StartRollout) for a in decision.actions)
        changed = set(outcome.devices) if started else set(decision.changed_device_ids)
        try:
            with self._db.transaction() as tx:
                # First, so a replica racing on the same rollout waits here, then gives up.
                tx.rollouts.update(replace(record, rollout=rollout, updated_at=now,
                                           due_at=outcome.due_at))  # fmt: skip
                published = self._carry_out(tx, loaded, decision, notify, deltas)
                records = _records(loaded, outcome, changed, published, now)
                tx.rollouts.put_devices(record.id, records)
                self._sync_claims(tx, rollout, outcome.devices, started, final)
                tx.rollouts.append_events(record.id, _timeline(decision, loaded.left_out))
                self._audit(tx, record, decision, now)
        except Conflict as e:
            if e.code == "concurrent_update":
                log.debug("rollout changed meanwhile; next pass decides again",
                          extra={"rollout_id": record.id})  # fmt: skip
                return False
            raise
        for device_id in sorted(notify):
            self._watch.notify(device_id)
        self._releases.request_deltas(deltas)
        return True

    def _carry_out(
        self,
        tx: Transaction,
        loaded: SqlLoaded,
        decision: Decision,
        notify: set[str],
        deltas: set[tuple[str, str]],
    ) -> dict[str, CurrentAssignment]:
        """Publish assignments and reverts; what each device's desired state now names."""
        published: dict[str, CurrentAssignment] = {}
        for action in decision.actions:
            if isinstance(action, AssignRelease):
                if loaded.release is None:
                    raise Conflict(f"release {action.release} no longer exists",
                                   code="release_not_found")  # fmt: skip
                release, artifacts = signed_release(
                    tx, Ref(loaded.release.name, loaded.release.version)
                )
                device = tx.devices.get(action.device_id)
                if already_runs(device, release.name, release.version):
                    saved = device  # its last report already confirms the assignment
                else:
                    saved = assign_release_to_device(tx, device, release)
                    deltas |= delta_pairs_for(tx, device, artifacts)
            elif isinstance(action, RevertRelease):
                device = tx.devices.get(action.device_id)
                if action.release is None:
                    saved = clear_release_of_device(tx, device)
                else:
                    name, _, version = action.release.partition("@")
                    release, _ = signed_release(tx, Ref(name, version))
                    saved = assign_release_to_device(tx, device, release)
            else:
                continue
            serial = saved.release_assignment.serial if saved.release_assignment else None
            published[action.device_id] = CurrentAssignment(
                action.release, serial, saved.desired_generation
            )
            notify.add(action.device_id)
        return published

    def _sync_claims(
        self,
        tx: Transaction,
        rollout: Rollout,
        devices: Mapping[str, RolloutDevice],
        started: bool,
        final: bool,
    ) -> None:
        if final:
            tx.rollouts.release(rollout.id)
            return
        if not started:
            return
        skipped = DeviceState.SKIPPED_INCOMPATIBLE
        keep = sorted(d for d, r in devices.items() if r.state is not skipped)
        tx.rollouts.claim(rollout.id, keep)
        extra = sorted(tx.rollouts.claimed_by(rollout.id) - set(keep))
        tx.rollouts.release(rollout.id, extra)

    def _audit(
        self, tx: Transaction, record: RolloutRecord, decision: Decision, now: datetime
    ) -> None:
        ctx = OperatorContext(SYSTEM, f"rollout-controller/{record.id}")
        for action in decision.actions:
            if action.kind in _AUDITED:
                record_action(tx, ctx, f"rollout.{action.kind}", f"rollout/{record.id}", now,
                              {"reason": action.reason})  # fmt: skip


def _records(
    loaded: SqlLoaded,
    outcome: Outcome,
    changed: set[str],
    published: Mapping[str, CurrentAssignment],
    now: datetime,
) -> list[DeviceRecord]:
    """The device records to store: engine fields after the decision, plus what the
    controller published and when the release was first assigned and seen installed."""
    rollout, after, installed = outcome.rollout, outcome.devices, outcome.installed
    out = []
    for device_id in sorted(changed):
        base = loaded.stored.get(device_id, DeviceRecord(RolloutDevice(device_id)))
        assignment = published.get(device_id, base.assignment)
        first = base.first_assigned_at
        installed_at = installed.get(device_id, base.installed_at)
        if device_id in published:
            installed_at = None
            if published[device_id].release == str(rollout.spec.release) and first is None:
                first = now
        out.append(
            DeviceRecord(
                device=_stored_fields(after[device_id]),
                wave=rollout.plan.wave_of(device_id) if rollout.plan else None,
                assignment=assignment,
                first_assigned_at=first,
                installed_at=installed_at,
            )
        )
    return out


def _stored_fields(device: RolloutDevice) -> RolloutDevice:
    return RolloutDevice(
        device.device_id, device.state, device.attempts, device.assigned_at, device.retry_at,
        device.previous_release, device.reason,
    )  # fmt: skip


def _timeline(decision: Decision, left_out: int) -> list[TimelineEntry]:
    entries = []
    for action in decision.actions:
        entries.append(
            TimelineEntry(
                decision.at, action.kind, action.reason,
                device_id=getattr(action, "device_id", None),
                details=_details(action),
            )
        )  # fmt: skip
        if isinstance(action, StartRollout) and left_out:
            entries.append(TimelineEntry(
                decision.at, "left-out",
                f"{left_out} device(s) matching the target are in other active rollouts and "
                "were left out"))  # fmt: skip
    return entries


def _details(action: Action) -> dict[str, object]:
    if isinstance(action, AssignRelease):
        return {"release": action.release, "wave": action.wave, "attempt": action.attempt}
    if isinstance(action, RevertRelease):
        return {"release": action.release}
    if isinstance(action, MarkDevice):
        return {"state": action.state.value}
    if isinstance(action, RecordGates):
        return {"wave": action.evaluation.wave, "verdict": action.evaluation.verdict.value}
    return {}
