"""Settings of the workload controllers (liveness, placement, migration): one frozen object
per server process, from EDGEFLEET_* variables, beside `ServerSettings`.

Every field's env var is its name in capitals with the prefix, e.g.
`EDGEFLEET_SUSPECT_GRACE_S=60`. The defaults assume agents that heartbeat every second (the
interval the failure detector's defaults are tuned for); see docs/workloads.md.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from edgefleet.controllers.liveness import LivenessPolicy
from edgefleet.core.workloads.failover import DrainThreshold, FailoverPolicy
from edgefleet.core.workloads.failure_detector import Thresholds
from edgefleet.core.workloads.migration import MigrationLimits, MigrationTiming
from edgefleet.errors import SettingsError


class WorkloadSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EDGEFLEET_", frozen=True, extra="ignore")

    controller_interval_s: float = Field(
        0.5,
        gt=0,
        le=60,
        description="Seconds between runs of the liveness, placement and migration controllers.",
    )
    suspect_phi: float = Field(5.0, gt=0, description="Phi at which a node becomes suspect.")
    dead_phi: float = Field(16.0, gt=0, description="Phi at which a node is declared dead.")
    suspect_grace_s: float = Field(
        30.0,
        ge=0,
        description="How long a suspect node keeps its replicas (held in place) "
        "before they are rescheduled as if it were dead.",
    )
    backfill_max_priority: int | None = Field(
        None,
        description="Stateless replicas of at most this priority are restarted "
        "elsewhere as soon as their node is suspect (unset: never).",
    )
    max_moves_per_step: int = Field(
        20, ge=1, description="Replicas moved per controller run, fleet-wide (thundering herd)."
    )
    max_moves_per_zone_per_step: int = Field(
        5, ge=1, description="Replicas moved into one zone per controller run."
    )
    rebalance_migrations: bool = Field(
        True,
        description="Start a planned migration when placement finds a node better by "
        "more than the migration cost (moves off drained or unsuitable nodes always migrate).",
    )
    max_migrations: int = Field(2, ge=1, description="Active planned migrations, fleet-wide.")
    max_migrations_per_zone: int = Field(
        1, ge=1, description="Active planned migrations touching one zone."
    )
    migration_shift_step_s: float = Field(
        3.0, ge=0, description="Seconds at each traffic weight (10%, 50%) of a migration."
    )
    migration_drain_s: float = Field(
        2.0, ge=0, description="Seconds a migration's source keeps running with no new traffic."
    )
    migration_step_timeout_s: float = Field(
        120.0, gt=0, description="A migration step taking longer aborts the migration."
    )
    drain_horizon_s: float = Field(
        900.0, gt=0, description="Drain a node whose forecast crosses a threshold this soon."
    )
    drain_battery_pct: float = Field(
        15.0, ge=0, le=100, description="Battery charge below which a node is in trouble."
    )
    drain_cpu_load: float | None = Field(
        None,
        gt=0,
        description="CPU load (1-minute load / CPUs) above which a node is in "
        "trouble (unset: load forecasts do not drain; hosts shared by several agents see "
        "one load).",
    )
    placement_forecast_horizon_s: float = Field(
        0.0,
        ge=0,
        le=86400,
        description="Judge destinations by each node's load and battery as forecast this "
        "many seconds ahead (Holt trends of its heartbeats' cpu_load and battery_pct), not "
        "as they are now; 0: off (in the lab it saved fewer than 5 % of migrations).",
    )
    max_checkpoint_bytes: int = Field(
        256 * 1024 * 1024, ge=1024, description="Largest state archive a device may upload."
    )
    checkpoint_quota_bytes: int = Field(
        1024**3,
        ge=1024,
        description="Most bytes of state archives one device may have "
        "stored at a time; an archive goes when its migration ends, or when no migration "
        "took it up within migration_step_timeout_s.",
    )

    @model_validator(mode="after")
    def _ordered(self) -> WorkloadSettings:
        if self.suspect_phi > self.dead_phi:
            raise ValueError("suspect_phi must not exceed dead_phi")
        return self

    def thresholds(self) -> Thresholds:
        return Thresholds(self.suspect_phi, self.dead_phi)

    def liveness_policy(self) -> LivenessPolicy:
        return LivenessPolicy(self.thresholds(), self.drain_horizon_s, self.drain_thresholds())

    def failover_policy(self) -> FailoverPolicy:
        return FailoverPolicy(
            suspect_grace_s=self.suspect_grace_s,
            backfill_max_priority=self.backfill_max_priority,
            max_moves_per_step=self.max_moves_per_step,
            max_moves_per_zone_per_step=self.max_moves_per_zone_per_step,
        )

    def migration_timing(self) -> MigrationTiming:
        return MigrationTiming(
            self.migration_shift_step_s, self.migration_drain_s, self.migration_step_timeout_s
        )

    def migration_limits(self) -> MigrationLimits:
        return MigrationLimits(self.max_migrations, self.max_migrations_per_zone)

    def drain_thresholds(self) -> tuple[DrainThreshold, ...]:
        out = [DrainThreshold("battery_pct", self.drain_battery_pct, falling=True)]
        if self.drain_cpu_load is not None:
            out.append(DrainThreshold("cpu_load", self.drain_cpu_load, falling=False))
        return tuple(out)


def load_workload_settings(**overrides: Any) -> WorkloadSettings:
    """Settings from EDGEFLEET_* variables, overridden by non-None values."""
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return WorkloadSettings(**given)
    except ValidationError as e:
        first = e.errors()[0]
        key = str(first["loc"][0]) if first["loc"] else "?"
        raise SettingsError(
            f"bad setting {key} (env EDGEFLEET_{key.upper()}): {first['msg']}"
        ) from None
