"""The rollout controller: the loop that moves rollouts (and release trains) forward.

Finding and doing are split. Each pass finds the rollouts that are due (bounded), then
reconciles each one on its own, a failure logged with the rollout id while the loop goes on:

1. *Decide* (a read transaction): load the rollout and its device records, refresh each
   device's observed fields from its latest report (`core.rollout_observation`), and call
   the pure `decide`. When the decision evaluates gates that read telemetry, gather it
   (`rollout_telemetry`) and decide again — the engine is deterministic, so the second
   decision is the first one with the gates' evidence.
2. *Apply* (one write transaction): bump the rollout's row version (the optimistic check:
   another replica that got there first makes this one give up and re-read later), publish
   every AssignRelease and RevertRelease into the devices' desired states, save the changed
   device records, the timeline and the device claims. All of it commits together or not
   at all, so a controller killed at any instant neither re-updates a device nor skips a
   gate: after a restart the next pass decides again from what was stored.
3. *Notify* the devices whose desired state changed (their long polls wake), and schedule
   the rollout's next look: its `next_check_at`, or `RESCAN_S` from now at the latest
   (devices that go offline send no report).

Device reports that change an install state and operator commands wake the loop at once;
otherwise it looks at the store every `POLL_S`, so work another replica scheduled is seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from edgefleet.clock import Clock
from edgefleet.core.rollouts.actions import (
    Action,
    AssignRelease,
    Decision,
    MarkDevice,
    RecordGates,
    RevertRelease,
    StartRollout,
    apply_decision,
)
from edgefleet.core.rollouts.decision import decide
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
from edgefleet.errors import Conflict, EdgefleetError
from edgefleet.security.rbac import SYSTEM
from edgefleet.server.services.audit import OperatorContext, record_action
from edgefleet.server.services.quiet_hours import QuietHoursReader
from edgefleet.server.services.release_trains import ReleaseTrainService
from edgefleet.server.services.releases import (
    ReleaseService,
    assign_release_to_device,
    clear_release_of_device,
    delta_pairs_for,
    signed_release,
)
from edgefleet.server.services.rollout_telemetry import gate_telemetry, needs_telemetry
from edgefleet.server.services.rollouts import target_devices
from edgefleet.server.services.telemetry import TelemetryService
from edgefleet.server.watch import DesiredStateWatch
from edgefleet.store import Database, Transaction

log = logging.getLogger(__name__)

POLL_S = 1.0  # the longest the loop sleeps without looking at the store
RESCAN_S = 5.0  # an active rollout is reconciled at least this often
DATA_RECHECK_S = 2.0  # ... and this often while its gates wait for enough telemetry
RETRY_AFTER_FAILURE_S = 5.0  # a rollout whose reconcile failed is tried again after this
MAX_PER_PASS = 50  # rollouts reconciled per pass before looking for newer work
# Rollout-level actions recorded in the audit log too (device-level ones are in the timeline).
_AUDITED = frozenset(
    {"start-rollout", "promote-wave", "complete-rollout", "pause-rollout", "start-rollback",
     "finish-rollback", "fail-rollout"}
)  # fmt: skip


@dataclass(frozen=True)
class _Loaded:
    record: RolloutRecord
    stored: dict[str, DeviceRecord]
    devices: dict[str, RolloutDevice]  # with observed fields, what `decide` sees
    release: Release | None
    left_out: int = 0  # target devices another rollout holds (pending rollouts only)


class RolloutController:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        watch: DesiredStateWatch,
        releases: ReleaseService,
        telemetry: TelemetryService,
        trains: ReleaseTrainService,
    ) -> None:
        self._db = db
        self._clock = clock
        self._watch = watch
        self._releases = releases
        self._telemetry = telemetry
        self._trains = trains
        self._quiet_hours = QuietHoursReader()
        self._lock = threading.Lock()
        self._woken_devices: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None

    # Waking up.

    def wake(self, device_id: str | None = None) -> None:
        """Look at due work now; with a device id, its rollouts become due. Thread-safe."""
        if device_id is not None:
            with self._lock:
                self._woken_devices.add(device_id)
        loop, event = self._loop, self._event
        if loop is not None and event is not None and not loop.is_closed():
            loop.call_soon_threadsafe(event.set)

    async def run_forever(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()
        while True:
            try:
                more = await asyncio.to_thread(self.run_once)
            except Exception:
                log.exception("rollout controller pass failed; will retry")
                more = False
            if more:
                continue
            delay_s = await asyncio.to_thread(self._idle_s)
            if delay_s > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._event.wait(), timeout=delay_s)
            self._event.clear()

    def _idle_s(self) -> float:
        with self._db.read() as tx:
            due = tx.rollouts.next_due_at()
        if due is None:
            return POLL_S
        return max(0.0, min(POLL_S, (due - self._clock.now()).total_seconds()))

    def run_once(self) -> bool:
        """One pass: reconcile due rollouts (bounded), then running trains. True when more
        rollouts were due than one pass takes."""
        with self._lock:
            woken, self._woken_devices = sorted(self._woken_devices), set()
        now = self._clock.now()
        if woken:
            with self._db.transaction() as tx:
                holders = set(tx.rollouts.claims(woken).values())
                tx.rollouts.set_due(sorted(holders), now)
        with self._db.read() as tx:
            due = tx.rollouts.due(now, MAX_PER_PASS)
        for rollout_id in due:
            self.reconcile_logged(rollout_id)
        for name in self._trains.running():
            try:
                if self._trains.advance(name):
                    self.wake()
            except Exception:
                log.exception("release train step failed; will retry", extra={"train": name})
        return len(due) >= MAX_PER_PASS

    def reconcile_logged(self, rollout_id: str) -> None:
        try:
            self.reconcile(rollout_id)
        except Exception as e:
            level = logging.WARNING if isinstance(e, EdgefleetError) else logging.ERROR
            log.log(level, "rollout reconcile failed; will retry",
                    exc_info=not isinstance(e, EdgefleetError),
                    extra={"rollout_id": rollout_id, "error": str(e)})  # fmt: skip
            later = self._clock.now() + timedelta(seconds=RETRY_AFTER_FAILURE_S)
            try:
                with self._db.transaction() as tx:
                    tx.rollouts.postpone(rollout_id, later)
            except EdgefleetError:
                log.warning("could not postpone rollout", extra={"rollout_id": rollout_id})

    # One rollout.

    def reconcile(self, rollout_id: str) -> Decision | None:
        """Decide and apply once; None when there was nothing to do (final, or another
        replica got there first)."""
        now = self._clock.now()
        with self._db.read() as tx:
            loaded = self._load(tx, rollout_id, now)
        if loaded is None:
            return None
        rollout = loaded.record.rollout
        decision = decide(rollout, loaded.devices, {}, now)
        view = _gating_view(rollout, loaded.devices, decision, now)
        if view is not None and needs_telemetry(rollout.spec.gates):
            installed = _newly_installed(decision, now)
            telemetry = gate_telemetry(
                self._db, self._telemetry, view, loaded.stored, installed, now
            )
            decision = decide(rollout, loaded.devices, telemetry, now)
        notify, deltas = self._apply(loaded, decision, now)
        if notify is None:
            return None
        for device_id in sorted(notify):
            self._watch.notify(device_id)
        self._releases.request_deltas(deltas)
        if decision.actions:
            log.info("rollout reconciled", extra={
                "rollout_id": rollout_id, "state": decision.state.value,
                "actions": len(decision.actions), "assigned": len(decision.assignments),
                "reverted": len(decision.reverts), "reason": decision.reason})  # fmt: skip
        return decision

    def _load(self, tx: Transaction, rollout_id: str, now: datetime) -> _Loaded | None:
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
        return _Loaded(record, stored, devices, release, left_out)

    def _apply(
        self, loaded: _Loaded, decision: Decision, now: datetime
    ) -> tuple[set[str] | None, set[tuple[str, str]]]:
        """Store and carry out `decision` in one transaction; (devices to notify, delta
        pairs), or (None, ...) when another replica changed the rollout meanwhile."""
        record = loaded.record
        notify: set[str] = set()
        deltas: set[tuple[str, str]] = set()
        if not decision.actions:
            with self._db.transaction() as tx:
                next_at = _next_due(record.rollout, decision, now)
                tx.rollouts.schedule(record.id, record.version, next_at)
            return notify, deltas
        rollout, after = apply_decision(record.rollout, loaded.devices, decision)
        final = rollout.state in FINAL_STATES
        due = None if final else _next_due(rollout, decision, now)
        started = any(isinstance(a, StartRollout) for a in decision.actions)
        changed = set(after) if started else set(decision.changed_device_ids)
        try:
            with self._db.transaction() as tx:
                # First, so a replica racing on the same rollout waits here, then gives up.
                tx.rollouts.update(replace(record, rollout=rollout, updated_at=now, due_at=due))
                published = self._carry_out(tx, loaded, decision, notify, deltas)
                records = _records(loaded, after, rollout, changed, published, decision, now)
                tx.rollouts.put_devices(record.id, records)
                self._sync_claims(tx, rollout, after, started, final)
                tx.rollouts.append_events(record.id, _timeline(decision, loaded.left_out))
                self._audit(tx, record, decision, now)
        except Conflict as e:
            if e.code == "concurrent_update":
                log.debug("rollout changed meanwhile; next pass decides again",
                          extra={"rollout_id": record.id})  # fmt: skip
                return None, set()
            raise
        return notify, deltas

    def _carry_out(
        self,
        tx: Transaction,
        loaded: _Loaded,
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
    loaded: _Loaded,
    after: Mapping[str, RolloutDevice],
    rollout: Rollout,
    changed: set[str],
    published: Mapping[str, CurrentAssignment],
    decision: Decision,
    now: datetime,
) -> list[DeviceRecord]:
    """The device records to store: engine fields after the decision, plus what the
    controller published and when the release was first assigned and seen installed."""
    installed = _newly_installed(decision, now)
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


def _newly_installed(decision: Decision, now: datetime) -> dict[str, datetime]:
    return {
        a.device_id: now
        for a in decision.actions
        if isinstance(a, MarkDevice) and a.state is DeviceState.INSTALLED
    }


def _gating_view(
    rollout: Rollout, devices: Mapping[str, RolloutDevice], decision: Decision, now: datetime
) -> Rollout | None:
    """The rollout as its gates see it when `decision` (made without telemetry) evaluates
    them or waits for their data; None when the gates are not looked at now."""
    for action in decision.actions:
        if isinstance(action, RecordGates):
            plan = rollout.plan
            for earlier in decision.actions:
                if isinstance(earlier, StartRollout):
                    plan = earlier.plan
            return replace(rollout, plan=plan, wave=action.evaluation.wave)
    after, _ = apply_decision(rollout, devices, decision)
    soaked = after.soak_until is not None and after.soak_until <= now
    return after if after.state is RolloutState.SOAKING and soaked else None


def _next_due(rollout: Rollout, decision: Decision, now: datetime) -> datetime:
    """When to look again: when waiting alone changes the decision, or sooner — soon while
    gates wait for telemetry, which no report announces."""
    rescan_s = DATA_RECHECK_S if rollout.gate_wait_until is not None else RESCAN_S
    rescan = now + timedelta(seconds=rescan_s)
    if decision.next_check_at is None:
        return rescan
    return min(rescan, max(now, decision.next_check_at))


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
