"""The in-memory `RolloutStore`: rollouts and their device records in dictionaries, for the
lab's rehearsals (one process, one simulated clock, no replicas).

What the SQL store reads from device rows (reports, liveness, compatibility) its owner
writes into the records with `observe_device` as it happens; what the SQL store publishes
into desired states and schedules, `apply` hands to `on_applied`. The optimistic check of
the SQL store becomes an identity check: a decision made on a rollout that another
decision changed since it was loaded is refused, as another replica's write would make it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from edgefleet.controllers.rollout import Outcome
from edgefleet.core.governance.policy import Labels, Policy
from edgefleet.core.rollouts.gates import DeviceTelemetry
from edgefleet.core.rollouts.rollout import FINAL_STATES, Rollout, RolloutDevice

# The gates' telemetry of a rollout at a time, computed on demand.
Telemetry = Callable[[Rollout, datetime], Mapping[str, DeviceTelemetry]]


@dataclass(frozen=True)
class MemoryRollout:
    rollout: Rollout
    devices: dict[str, RolloutDevice]


class MemoryRolloutStore:
    """`telemetry(rollout, now)`: the gates' telemetry, read on demand; `on_applied(outcome)`:
    carry out an applied outcome (publish, schedule the next look)."""

    def __init__(self, telemetry: Telemetry, on_applied: Callable[[Outcome], None]) -> None:
        self._telemetry = telemetry
        self._on_applied = on_applied
        self._rollouts: dict[str, MemoryRollout] = {}

    def add(self, rollout: Rollout, devices: Mapping[str, RolloutDevice]) -> None:
        self._rollouts[rollout.id] = MemoryRollout(rollout, dict(devices))

    def get(self, rollout_id: str) -> MemoryRollout:
        return self._rollouts[rollout_id]

    def observe_device(self, rollout_id: str, device: RolloutDevice) -> None:
        """A device record's observed fields changed (a report, liveness)."""
        self._rollouts[rollout_id].devices[device.device_id] = device

    # The port.

    def load(self, rollout_id: str, now: datetime) -> MemoryRollout | None:
        loaded = self._rollouts[rollout_id]
        return None if loaded.rollout.state in FINAL_STATES else loaded

    def ambient_telemetry(
        self, loaded: MemoryRollout, now: datetime
    ) -> Mapping[str, DeviceTelemetry] | None:
        return self._telemetry(loaded.rollout, now)

    def gate_telemetry(
        self,
        loaded: MemoryRollout,
        view: Rollout,
        installed: Mapping[str, datetime],
        now: datetime,
    ) -> Mapping[str, DeviceTelemetry]:
        return self._telemetry(view, now)

    def policies(
        self, loaded: MemoryRollout, device_ids: Sequence[str]
    ) -> tuple[Sequence[Policy], Mapping[str, Labels]]:
        return (), {}  # the lab rehearses a rollout, not the fleet's policies

    def apply(self, loaded: MemoryRollout, outcome: Outcome, now: datetime) -> bool:
        rollout_id = loaded.rollout.id
        if self._rollouts.get(rollout_id) is not loaded:
            return False
        self._rollouts[rollout_id] = MemoryRollout(outcome.rollout, dict(outcome.devices))
        self._on_applied(outcome)
        return True
