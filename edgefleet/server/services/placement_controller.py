"""The control plane's placement controller: the shared controller step
(`controllers.placement`: find → decide → do) over the SQL store
(`services.placement_store`), at the server's clock, under the server's settings.

    find: one read of the fleet (devices, node health, workloads, placement, migrations);
          with `placement_forecast_horizon_s`, its nodes as forecast over that horizon
          (`node_trends`), and each scored decision's reason says so
    decide: core.failover.plan_failover_step, then per move: a failover goes ahead, a move
            off a live node with a healthy copy becomes a planned migration, a replica a
            migration is moving stays (`controllers.placement.plan_move`)
    do: one transaction: the placement (optimistic version), new migrations, the affected
        devices' desired state; then wake their long polls

A tick is idempotent: on unchanged input the plan is a fixpoint and nothing is written. Two
control-plane replicas running it race on the placement row's version; the loser retries on
its next tick.
"""

from __future__ import annotations

from edgefleet.clock import Clock
from edgefleet.controllers import placement as shared
from edgefleet.controllers.placement import (
    HELD_BY_POLICY,
    SYSTEM_ACTOR,
    PlacementPolicy,
    PlacementTick,
    hold_for_policy,
    new_migration_id,
)
from edgefleet.server.services.node_trends import NodeTrends, forecast_destinations
from edgefleet.server.services.placement_store import SqlPlacementStore
from edgefleet.server.watch import DesiredStateWatch
from edgefleet.server.workload_settings import WorkloadSettings
from edgefleet.store import Database

__all__ = [
    "HELD_BY_POLICY",
    "SYSTEM_ACTOR",
    "PlacementController",
    "PlacementTick",
    "hold_for_policy",
    "new_migration_id",
    "placement_policy",
]


def placement_policy(settings: WorkloadSettings) -> PlacementPolicy:
    return PlacementPolicy(settings.failover_policy(), settings.rebalance_migrations)


class PlacementController:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        settings: WorkloadSettings,
        watch: DesiredStateWatch,
        trends: NodeTrends | None = None,  # shared with the liveness controller
    ) -> None:
        self._clock = clock
        forecast = forecast_destinations(settings, trends or NodeTrends())
        self.store = SqlPlacementStore(db, watch, forecast)
        self.controller = shared.PlacementController(self.store, placement_policy(settings))

    def tick(self) -> PlacementTick | None:
        """One placement step; None when nothing had to change."""
        return self.controller.tick(self._clock.now())
