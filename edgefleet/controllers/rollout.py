"""The rollout controller's step, one for the control plane and the lab: load → decide →
apply, through a `RolloutStore` port.

    store.load ─▶ decide(no telemetry) ─▶ gates looked at now? ─▶ store.gate_telemetry
        ─▶ decide(with it) ─▶ apply_decision ─▶ store.apply (records, publish, next look)

1. *Load*: the rollout and its device records with every observed field refreshed (what
   the device last reported, whether it is online, its compatibility).
2. *Decide*: the pure `decide`. When the decision evaluates gates that read telemetry, the
   store gathers it and the engine decides again — it is deterministic, so the second
   decision is the first one with the gates' evidence. (A store whose telemetry is computed
   on demand, the lab's model, hands it over up front: one decision, the same one.)
   Before a wave starts (the decision promotes), the rollout's policies are checked again
   over the wave's devices as they are now (`store.policies`): a policy applied, or labels
   changed, since the rollout was created may forbid it. On a violation the decision
   becomes a pause naming the rule (`hold_for_policies`); the operator resumes once the
   cause is fixed, and the check runs again before the wave.
3. *Apply*: the store saves the records `apply_decision` gives, publishes every
   AssignRelease and RevertRelease, and schedules the next look (`next_due`). It may refuse
   (another replica changed the rollout meanwhile): the next pass decides again.

The control plane's store is SQL (`server/services/rollout_store.py`: one read transaction,
then one write transaction with an optimistic version check); the lab's is in memory
(`controllers/memory.py`) on its simulated clock. Both run this code, so the lab predicts
what the control plane does, and when.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Protocol, TypeVar

from edgefleet.core.governance.policy import Labels, Policy, check_wave
from edgefleet.core.rollouts.actions import (
    Decision,
    MarkDevice,
    PauseRollout,
    PromoteWave,
    RecordGates,
    StartRollout,
    apply_decision,
)
from edgefleet.core.rollouts.decision import decide
from edgefleet.core.rollouts.gates import DeviceTelemetry, GatesSpec
from edgefleet.core.rollouts.rollout import (
    FINAL_STATES,
    DeviceState,
    Rollout,
    RolloutDevice,
    RolloutState,
)

RESCAN_S = 5.0  # an active rollout is reconciled at least this often (see `Timing`)
DATA_RECHECK_S = 2.0  # ... and this often while its gates wait for enough telemetry


@dataclass(frozen=True)
class Timing:
    """When to look at a rollout again without a report.

    `rescan_s`: at least this often (the control plane's store cannot tell when a device
    goes quiet, so it looks again; None where every change is announced, as in the lab).
    `data_recheck_s`: this often while gates wait for telemetry, which no report announces.
    """

    rescan_s: float | None = RESCAN_S
    data_recheck_s: float = DATA_RECHECK_S


class Loaded(Protocol):
    """A rollout as a store loaded it: what `decide` sees (plus whatever the store keeps)."""

    @property
    def rollout(self) -> Rollout: ...

    @property
    def devices(self) -> Mapping[str, RolloutDevice]: ...


L = TypeVar("L", bound=Loaded)


@dataclass(frozen=True)
class Outcome:
    """What a store applies: the decision, the records after it, the next look."""

    decision: Decision
    rollout: Rollout
    devices: Mapping[str, RolloutDevice]
    due_at: datetime | None  # None: final, nothing more to do
    installed: Mapping[str, datetime]  # devices first seen installed by this decision


class RolloutStore(Protocol[L]):
    """The port the controller step runs on."""

    def load(self, rollout_id: str, now: datetime) -> L | None:
        """The rollout with observed device records; None when final (nothing to do)."""
        ...

    def ambient_telemetry(self, loaded: L, now: datetime) -> Mapping[str, DeviceTelemetry] | None:
        """Telemetry read on demand while deciding (the lab's model computes a device's when
        the engine asks for it); None: gathered for the gates a decision looks at."""
        ...

    def gate_telemetry(
        self, loaded: L, view: Rollout, installed: Mapping[str, datetime], now: datetime
    ) -> Mapping[str, DeviceTelemetry]:
        """What the gates of `view` (the rollout as its gates see it) read, per device."""
        ...

    def policies(
        self, loaded: L, device_ids: Sequence[str]
    ) -> tuple[Sequence[Policy], Mapping[str, Labels]]:
        """The policies in force, and the current labels of those of `device_ids` still in
        the fleet, by device name."""
        ...

    def apply(self, loaded: L, outcome: Outcome, now: datetime) -> bool:
        """Save, publish and schedule `outcome` together; False when the rollout changed
        meanwhile (nothing applied)."""
        ...


def reconcile(
    store: RolloutStore[L], rollout_id: str, now: datetime, timing: Timing = Timing()
) -> Decision | None:
    """Decide and apply once; None when there was nothing to do (final, or the store
    refused because the rollout changed meanwhile)."""
    loaded = store.load(rollout_id, now)
    if loaded is None:
        return None
    rollout, devices = loaded.rollout, loaded.devices
    ambient = store.ambient_telemetry(loaded, now)
    decision = decide(rollout, devices, {} if ambient is None else ambient, now)
    if ambient is None and needs_telemetry(rollout.spec.gates):
        view = gating_view(rollout, devices, decision, now)
        if view is not None:
            telemetry = store.gate_telemetry(loaded, view, newly_installed(decision, now), now)
            decision = decide(rollout, devices, telemetry, now)
    promoted = promoted_wave(decision)
    if promoted is not None:
        plan = rollout.require_plan()
        policies, members = store.policies(loaded, plan.waves[promoted].device_ids)
        decision = hold_for_policies(rollout, decision, policies, members, now)
    after, records = apply_decision(rollout, devices, decision)
    due = None if after.state in FINAL_STATES else next_due(after, decision, now, timing)
    outcome = Outcome(decision, after, records, due, newly_installed(decision, now))
    return decision if store.apply(loaded, outcome, now) else None


def promoted_wave(decision: Decision) -> int | None:
    """The index of the wave `decision` starts by promoting, if it does."""
    return next((a.wave for a in decision.actions if isinstance(a, PromoteWave)), None)


def hold_for_policies(
    rollout: Rollout,
    decision: Decision,
    policies: Sequence[Policy],
    members: Mapping[str, Labels],
    now: datetime,
) -> Decision:
    """`decision`, or, when the wave it promotes to breaks a policy over its devices
    `members` (name -> labels), the same decision up to the promotion, then a pause naming
    every broken rule: the next wave's devices get nothing."""
    wave = promoted_wave(decision)
    if wave is None:
        return decision
    violations = check_wave(policies, rollout.spec, rollout.wave_name(wave), members, now)
    if not violations:
        return decision
    reason = f"held before {rollout.wave_name(wave)}: " + "; ".join(str(v) for v in violations)
    cut = next(i for i, a in enumerate(decision.actions) if isinstance(a, PromoteWave))
    actions = (*decision.actions[:cut], PauseRollout(reason))
    return Decision(now, actions, RolloutState.PAUSED, reason)


def needs_telemetry(gates: GatesSpec) -> bool:
    """Whether any declared gate reads telemetry (install failures do not)."""
    return gates.workload_error_rate is not None or bool(gates.kpis)


def newly_installed(decision: Decision, now: datetime) -> dict[str, datetime]:
    """The devices `decision` marks installed, seen so `now`."""
    return {
        a.device_id: now
        for a in decision.actions
        if isinstance(a, MarkDevice) and a.state is DeviceState.INSTALLED
    }


def gating_view(
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
    if decision.state is not RolloutState.SOAKING:
        return None
    after, _ = apply_decision(rollout, devices, decision)
    soaked = after.soak_until is not None and after.soak_until <= now
    return after if soaked else None


def waits_for_data(rollout: Rollout) -> bool:
    """Whether its gates wait for telemetry, which no report announces: soaking with a gate
    wait (a rollback or a pause keeps the wait's end for later, but reads no gate)."""
    return rollout.gate_wait_until is not None and rollout.state is RolloutState.SOAKING


def next_due(
    rollout: Rollout, decision: Decision, now: datetime, timing: Timing = Timing()
) -> datetime | None:
    """When to look again: when waiting alone changes the decision, or sooner — soon while
    gates wait for telemetry (`waits_for_data`), and every `rescan_s` at the latest."""
    rescan_s = timing.data_recheck_s if waits_for_data(rollout) else timing.rescan_s
    if rescan_s is None:
        return decision.next_check_at
    rescan = now + timedelta(seconds=rescan_s)
    if decision.next_check_at is None:
        return rescan
    return min(rescan, max(now, decision.next_check_at))
