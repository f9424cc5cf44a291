"""The placement controller's SQL store: the `PlacementStore` port
(`controllers/placement.py`) over the control plane's database.

- *Load* (a read transaction): the fleet as `fleet_view.load_view` reads it (approved
  devices with node health, workloads, the placement in force, active migrations,
  quarantined nodes), the workloads a residency policy holds, and the nodes as placement
  sees them: now, or with `placement_forecast_horizon_s` as forecast over that horizon
  (`node_trends`), which each scored decision's reason then says.
- *Apply* (one write transaction): the placement with its optimistic version (`Conflict`
  when another replica wrote it first), the move history, the queued migrations (none for
  a replica that is already migrating), and the desired state of every node whose replicas
  changed (and of every hosting node when the hosting interval moved). Then the long polls
  of those devices wake.
"""

from __future__ import annotations

from datetime import datetime

from edgefleet.controllers.placement import Applied, PlacementOutcome, PlacementView
from edgefleet.core.workloads.migration import Migration
from edgefleet.server.services.desired import refresh_device, refresh_hosting_nodes
from edgefleet.server.services.fleet_view import load_view
from edgefleet.server.services.node_trends import DestinationForecast
from edgefleet.server.services.policies import residency_holds
from edgefleet.server.watch import DesiredStateWatch
from edgefleet.store import Database


class SqlPlacementStore:
    def __init__(
        self, db: Database, watch: DesiredStateWatch, forecast: DestinationForecast | None
    ) -> None:
        self._db = db
        self._watch = watch
        self._forecast = forecast

    def load(self, now: datetime) -> PlacementView | None:
        with self._db.read() as tx:
            if not tx.workloads.all() and not tx.placement.load().placement.assignments:
                return None  # nothing declared, nothing placed: no need to read the fleet
            fleet = load_view(tx, now)
            held = residency_holds(tx, fleet.specs)
        copies = {
            (a.node_id, a.workload, a.replica): copy
            for a in fleet.placement.placement.assignments
            if a.node_id in fleet.health
            and (copy := fleet.health[a.node_id].copy_status(a.workload, a.replica)) is not None
        }
        forecast = self._forecast
        return PlacementView(
            workloads={name: record.spec for name, record in fleet.workloads.items()},
            nodes=fleet.nodes(forecast),
            liveness_since=fleet.liveness_since(),
            record=fleet.placement,
            migrations=fleet.migrations,
            copies=copies,
            drain_reasons={d: h.drain.reason for d, h in fleet.health.items()},
            held=held,
            forecast_note=None if forecast is None else forecast.note,
        )

    def apply(self, view: PlacementView, outcome: PlacementOutcome, now: datetime) -> Applied:
        current, after = view.record.placement, outcome.plan.placement
        created: list[Migration] = []
        with self._db.transaction() as tx:
            tx.placement.save(view.record, after, outcome.decisions, now)
            tx.placement_moves.record(list(outcome.moves))
            busy = {(m.workload, m.replica) for m in tx.migrations.active()}
            for m in outcome.migrations:
                if (m.workload, m.replica) not in busy:
                    tx.migrations.insert(m)
                    busy.add((m.workload, m.replica))
                    created.append(m)
            affected = set(outcome.affected)
            refreshed = [d for d in sorted(affected) if refresh_device(tx, d)]
            refreshed += refresh_hosting_nodes(tx, current, after, affected)
        for device_id in refreshed:
            self._watch.notify(device_id)
        return Applied(tuple(created), tuple(refreshed))
