"""The rollout controller: the loop that moves rollouts (and release trains) forward.

Finding and doing are split. Each pass finds the rollouts that are due (bounded), then
reconciles each one on its own, a failure logged with the rollout id while the loop goes on.
Reconciling is the controller step the lab runs too (`controllers.rollout.reconcile`:
load, decide, gather gate telemetry, decide again, apply) over the SQL store
(`rollout_store.py`): one read transaction, then one write transaction with an optimistic
version check, then the devices whose desired state changed are notified. The next look is
the rollout's `next_check_at`, or `RESCAN_S` from now at the latest (devices that go
offline send no report).

Device reports that change an install state and operator commands wake the loop at once;
otherwise it looks at the store every `POLL_S`, so work another replica scheduled is seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from datetime import timedelta

from edgefleet.clock import Clock
from edgefleet.controllers.rollout import reconcile
from edgefleet.core.rollouts.actions import Decision
from edgefleet.errors import EdgefleetError
from edgefleet.server.services.release_trains import ReleaseTrainService
from edgefleet.server.services.releases import ReleaseService
from edgefleet.server.services.rollout_store import SqlRolloutStore
from edgefleet.server.services.telemetry import TelemetryService
from edgefleet.server.watch import DesiredStateWatch
from edgefleet.store import Database

log = logging.getLogger(__name__)

POLL_S = 1.0  # the longest the loop sleeps without looking at the store
RETRY_AFTER_FAILURE_S = 5.0  # a rollout whose reconcile failed is tried again after this
MAX_PER_PASS = 50  # rollouts reconciled per pass before looking for newer work


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
        self._store = SqlRolloutStore(db, watch, releases, telemetry)
        self._trains = trains
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
        decision = reconcile(self._store, rollout_id, self._clock.now())
        if decision is not None and decision.actions:
            log.info("rollout reconciled", extra={
                "rollout_id": rollout_id, "state": decision.state.value,
                "actions": len(decision.actions), "assigned": len(decision.assignments),
                "reverted": len(decision.reverts), "reason": decision.reason})  # fmt: skip
        return decision
