"""The workload controllers' loop: every `controller_interval_s`, judge liveness, advance
migrations, then place. Each controller finds its work in one read and does each item in
its own transaction; a failure is logged and the loop goes on (the next tick retries).

The order matters only for latency: a node declared dead in this tick has its migrations
aborted and its replicas failed over in the same tick.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from edgefleet.clock import Clock
from edgefleet.controllers.liveness import LivenessController
from edgefleet.errors import EdgefleetError
from edgefleet.server.services.migration_controller import MigrationController
from edgefleet.server.services.placement_controller import PlacementController
from edgefleet.server.workload_settings import WorkloadSettings

log = logging.getLogger(__name__)


class WorkloadControllers:
    def __init__(
        self,
        settings: WorkloadSettings,
        clock: Clock,
        liveness: LivenessController,
        migrations: MigrationController,
        placement: PlacementController,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self.liveness = liveness
        self.migrations = migrations
        self.placement = placement

    def tick(self) -> None:
        """One round of all three controllers (each failure logged, the others still run)."""
        jobs: list[tuple[str, Callable[[], object]]] = [
            ("liveness", lambda: self.liveness.tick(self._clock.now())),
            ("migrations", self.migrations.tick),
            ("placement", self.placement.tick),
        ]
        for name, job in jobs:
            try:
                job()
            except EdgefleetError as e:  # e.g. a concurrent update: the next tick retries
                log.warning(
                    "workload controller step failed; will retry",
                    extra={"job": name, "code": e.code, "error": e.message},
                )
            except Exception:
                log.exception("workload controller failed; will retry", extra={"job": name})

    async def run_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.controller_interval_s)
            await asyncio.to_thread(self.tick)
