"""What the web dashboard shows that no single operator endpoint answers: the fleet's counts
and its trouble spots, a device's whole story on one page, pages of devices, the audit
chain's verification, and the `Pulse` the event stream compares to announce changes.

Every figure over the fleet is counted by the database (`store/repositories/dashboard.py`);
nothing here loads all devices.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from edgefleet.clock import Clock, isoformat_utc
from edgefleet.core.device import OFFLINE_AFTER_INTERVALS, ONLINE_WITHIN_INTERVALS
from edgefleet.core.rollouts.rollout import FINAL_STATES, RolloutState
from edgefleet.core.workloads.failure_detector import phi
from edgefleet.security.audit import ChainVerifier
from edgefleet.security.rbac import Permission
from edgefleet.server.services.audit import OperatorContext
from edgefleet.server.workload_settings import WorkloadSettings
from edgefleet.store import Database, Transaction
from edgefleet.store.repositories.dashboard import DashboardRepository, DeviceRow, StatusCutoffs

MAX_PAGE = 200
TROUBLE_LIST = 10
# Rollouts that stopped on a failure stay on the overview this long after their last change.
TROUBLE_WINDOW = timedelta(hours=24)
TROUBLED_ROLLOUTS = (RolloutState.PAUSED, RolloutState.ROLLING_BACK, RolloutState.FAILED,
                     RolloutState.ROLLED_BACK)  # fmt: skip
ACTIVE_ROLLOUTS = tuple(s.value for s in RolloutState if s not in FINAL_STATES)
# A node is "near its limits" this close to the drain threshold, or at this CPU load.
BATTERY_MARGIN_PCT = 15.0
NEAR_CPU_LOAD = 0.9
AUDIT_VERIFY_PAGE = 1000


@dataclass(frozen=True)
class Pulse:
    """What the event stream compares from one tick to the next."""

    status: dict[str, int]
    enrollment: dict[str, int]
    open_alerts: int
    rollouts: dict[str, tuple[str, int]]  # id -> (state, version)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else isoformat_utc(moment)


def status_cutoffs(intervals: list[float], now: datetime) -> list[StatusCutoffs]:
    """The instants that split each heartbeat interval's devices into online, stale and
    offline, as `core.device.classify_connection` does for one device."""
    return [StatusCutoffs(i, now - timedelta(seconds=ONLINE_WITHIN_INTERVALS * i),
                          now - timedelta(seconds=OFFLINE_AFTER_INTERVALS * i))
            for i in intervals]  # fmt: skip


def _connection(row: DeviceRow, cutoffs: list[StatusCutoffs]) -> str:
    cut = next((c for c in cutoffs if c.heartbeat_interval_s == row.heartbeat_interval_s), None)
    if row.gone or row.last_seen is None or cut is None or row.last_seen < cut.offline_before:
        return "offline"
    return "online" if row.last_seen >= cut.online_since else "stale"


def _device_row_out(row: DeviceRow, cutoffs: list[StatusCutoffs]) -> dict[str, Any]:
    return {
        "id": row.id, "name": row.name, "enrollment": row.enrollment,
        "status": _connection(row, cutoffs) if row.enrollment == "approved" else None,
        "labels": row.labels, "region": row.region, "site": row.site,
        "last_seen": _iso(row.last_seen), "release": row.release,
        "release_state": row.release_state,
    }  # fmt: skip


class DashboardService:
    def __init__(self, db: Database, clock: Clock, workload_settings: WorkloadSettings) -> None:
        self._db = db
        self._clock = clock
        self._battery_near_pct = workload_settings.drain_battery_pct + BATTERY_MARGIN_PCT
        self._cpu_near = min(NEAR_CPU_LOAD, workload_settings.drain_cpu_load or NEAR_CPU_LOAD)

    def _cutoffs(self, repo: DashboardRepository, now: datetime) -> list[StatusCutoffs]:
        return status_cutoffs(repo.heartbeat_intervals(), now)

    def overview(self, ctx: OperatorContext) -> dict[str, Any]:
        """Counts by status, location and release, and where it hurts now."""
        ctx.require(Permission.FLEET_READ)
        now = self._clock.now()
        with self._db.read() as tx:
            repo = DashboardRepository(tx.connection)
            cutoffs = self._cutoffs(repo, now)
            alerts_open, alerts = repo.open_alerts(TROUBLE_LIST)
            _, stale = repo.device_page(cutoffs, status="stale", enrollment=None, search=None,
                                        offset=0, limit=TROUBLE_LIST)  # fmt: skip
            _, offline = repo.device_page(cutoffs, status="offline", enrollment=None,
                                          search=None, offset=0, limit=TROUBLE_LIST)  # fmt: skip
            out = {
                "at": isoformat_utc(now),
                "status": repo.status_counts(cutoffs),
                "enrollment": repo.enrollment_counts(),
                "locations": repo.counts_by_location(cutoffs),
                "releases": repo.counts_by_release(),
                "trouble": {
                    "open_alerts": alerts_open,
                    "alerts": [{**a, "opened_at": _iso(a["opened_at"])} for a in alerts],
                    "stale": [_device_row_out(r, cutoffs) for r in stale],
                    "offline": [_device_row_out(r, cutoffs) for r in offline],
                    "rollouts": [
                        {**r, "updated_at": _iso(r["updated_at"])}
                        for r in repo.rollouts_in_trouble(
                            [s.value for s in TROUBLED_ROLLOUTS], now - TROUBLE_WINDOW
                        )
                    ],
                    "nodes": repo.nodes_near_limits(
                        self._battery_near_pct, self._cpu_near, TROUBLE_LIST
                    ),
                },
                "active_rollouts": sum(
                    1
                    for state, _ in repo.rollout_states(now, ACTIVE_ROLLOUTS).values()
                    if state in ACTIVE_ROLLOUTS
                ),
                "limits": {"battery_pct": self._battery_near_pct, "cpu_load": self._cpu_near},
            }
        return out

    def devices(
        self,
        ctx: OperatorContext,
        status: str | None,
        enrollment: str | None,
        search: str | None,
        offset: int,
        limit: int,
    ) -> dict[str, Any]:
        """One page of devices in name order, with the number that match."""
        ctx.require(Permission.FLEET_READ)
        now = self._clock.now()
        with self._db.read() as tx:
            repo = DashboardRepository(tx.connection)
            cutoffs = self._cutoffs(repo, now)
            total, rows = repo.device_page(cutoffs, status=status, enrollment=enrollment,
                                           search=search, offset=offset,
                                           limit=min(limit, MAX_PAGE))  # fmt: skip
        return {"total": total, "offset": offset,
                "devices": [_device_row_out(r, cutoffs) for r in rows]}  # fmt: skip

    def device_story(self, ctx: OperatorContext, device_id: str) -> dict[str, Any]:
        """Liveness (phi), replicas it hosts, its rollouts with their events about it (installs,
        failures, rollbacks and why), and the audit records about it."""
        ctx.require(Permission.FLEET_READ)
        now = self._clock.now()
        with self._db.read() as tx:
            device = tx.devices.resolve(device_id)
            health = tx.node_health.find(device.id)
            repo = DashboardRepository(tx.connection)
            rollouts = repo.device_rollouts(device.id, TROUBLE_LIST * 2)
            audit = repo.audit_about(f"device/{device.id}", TROUBLE_LIST * 5)
            release_events = repo.device_release_events(device.id, TROUBLE_LIST * 5)
            placed = [a for a in tx.placement.load().placement.assignments
                      if a.node_id == device.id]  # fmt: skip
        liveness = None
        if health is not None:
            history = health.liveness.history
            liveness = {
                "state": health.state.value, "since": _iso(health.liveness.since),
                "phi": round(max(0.0, min(phi(history, now), 1e9)), 3),
                "reliability": round(health.liveness.reliability(now), 4),
                "last_heartbeat_at": _iso(history.last_heartbeat_at),
                "node": dict(health.node), "draining": health.drain.draining,
                "drain_reason": health.drain.reason, "replicas": [dict(r) for r in
                                                                    health.replicas],
            }  # fmt: skip
        return {
            "device_id": device.id,
            "liveness": liveness,
            "placed": [
                {"workload": a.workload, "replica": a.replica, "generation": a.generation}
                for a in placed
            ],
            "rollouts": [
                {
                    **r,
                    "installed_at": _iso(r["installed_at"]),
                    "first_assigned_at": _iso(r["first_assigned_at"]),
                    "created_at": _iso(r["created_at"]),
                }
                for r in rollouts
            ],
            "release_events": [{**e, "at": _iso(e["at"])} for e in release_events],
            "audit": audit,
        }

    def verify_audit(self, ctx: OperatorContext) -> dict[str, Any]:
        """Walk the whole hash chain here, page by page."""
        ctx.require(Permission.AUDIT_READ)
        verifier = ChainVerifier()
        after = 0
        while True:
            with self._db.read() as tx:
                page = tx.audit.page(after, AUDIT_VERIFY_PAGE)
            for record in page:
                verifier.feed(record)
            if len(page) < AUDIT_VERIFY_PAGE or not verifier.ok:
                break
            after = page[-1].seq
        verifier.finish()
        return {"ok": verifier.ok, "records": verifier.count, "head_seq": verifier.head_seq,
                "head_hash": verifier.head_hash, "problem": verifier.problem,
                "broken_seq": verifier.broken_seq}  # fmt: skip

    def pulse(self) -> Pulse:
        """The counts and rollout states the event stream announces changes of."""
        now = self._clock.now()
        with self._db.read() as tx:
            return _pulse(tx, now)

    def session_info(self, ctx: OperatorContext) -> dict[str, Any]:
        """Who is signed in and what the role may do (the UI hides what it may not)."""
        p = ctx.principal
        return {"name": p.name, "token_id": p.token_id, "role": str(p.role),
                "permissions": sorted(x.value for x in p.permissions)}  # fmt: skip


def _pulse(tx: Transaction, now: datetime) -> Pulse:
    repo = DashboardRepository(tx.connection)
    cutoffs = status_cutoffs(repo.heartbeat_intervals(), now)
    open_alerts, _ = repo.open_alerts(0)
    return Pulse(
        status=repo.status_counts(cutoffs),
        enrollment=repo.enrollment_counts(),
        open_alerts=open_alerts,
        rollouts=repo.rollout_states(now - TROUBLE_WINDOW, ACTIVE_ROLLOUTS),
    )
