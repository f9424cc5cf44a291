"""The rollout controller checks the rollout's policies again before each wave: a policy
applied (or a label gained) after the rollout was created pauses it before the wave it
forbids, naming the rule; the in-memory store has no policies, so the lab never holds."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from edgefleet.controllers.memory import MemoryRollout, MemoryRolloutStore
from edgefleet.controllers.rollout import Timing, reconcile
from edgefleet.core.governance.policy import Labels, Policy, check_wave, parse_policy
from edgefleet.core.rollouts.rollout import (
    DeviceState,
    InstallReport,
    Rollout,
    RolloutDevice,
    RolloutState,
)
from edgefleet.core.rollouts.spec import parse_rollout_spec

T0 = datetime(2026, 3, 2, 12, tzinfo=UTC)
LAB = Timing(rescan_s=None)
SPEC = parse_rollout_spec({
    "release": "det@2.0.0",
    "strategy": {"waves": [1, "100%"], "soak": "10m", "max_unavailable": "100%"},
    "gates": {"install_failure_rate": {"max_percent": 0, "min_devices": 1}},
})  # fmt: skip


def policy(**spec: Any) -> Policy:
    return parse_policy({"kind": "Policy", "metadata": {"name": "prod"}, "spec": spec})


class PolicyStore(MemoryRolloutStore):
    """The in-memory store with policies in force and device labels, as the SQL one has."""

    def __init__(self, policies: Sequence[Policy], labels: Mapping[str, Labels]) -> None:
        super().__init__(lambda rollout, now: {}, lambda outcome: None)
        self.in_force = list(policies)
        self.labels = labels

    def policies(
        self, loaded: MemoryRollout, device_ids: Sequence[str]
    ) -> tuple[Sequence[Policy], Mapping[str, Labels]]:
        return self.in_force, {f"cam-{d}": self.labels.get(d, {}) for d in device_ids}


def run_canary(store: MemoryRolloutStore) -> str:
    """Start the rollout, install its canary; the first wave then soaks."""
    store.add(Rollout("r1", SPEC), {d: RolloutDevice(d, current_release="det@1.0.0")
                                    for d in ("a", "b", "c")})  # fmt: skip
    reconcile(store, "r1", T0, LAB)
    [canary] = [d for d, r in store.get("r1").devices.items() if r.state is DeviceState.UPDATING]
    record = store.get("r1").devices[canary]
    store.observe_device("r1", replace(record, report=InstallReport.INSTALLED))
    reconcile(store, "r1", T0 + timedelta(seconds=30), LAB)
    assert store.get("r1").rollout.state is RolloutState.SOAKING
    return canary


def test_a_wave_larger_than_a_policy_applied_since_pauses_before_it() -> None:
    store = PolicyStore([policy(max_wave_size=1)], {})
    canary = run_canary(store)
    decision = reconcile(store, "r1", T0 + timedelta(minutes=11), LAB)
    assert decision is not None
    rollout = store.get("r1").rollout
    assert rollout.state is RolloutState.PAUSED
    assert rollout.reason == (
        "held before wave 2/2 (100%): policy prod, rule max_wave_size: wave 2/2 (100%) would "
        "update 2 devices at once; the most allowed is 1"
    )
    assert [a.kind for a in decision.actions] == ["record-gates", "pause-rollout"]
    waiting = {d for d, r in store.get("r1").devices.items() if r.state is DeviceState.WAITING}
    assert waiting == {"a", "b", "c"} - {canary}, "the next wave's devices got nothing"
    # Paused, it stays paused: the controller does not resume it by itself.
    store.in_force = []
    reconcile(store, "r1", T0 + timedelta(minutes=20), LAB)
    assert store.get("r1").rollout.state is RolloutState.PAUSED


def test_a_label_gained_since_creation_counts_and_the_lab_never_holds() -> None:
    rule = policy(maintenance=[{"devices": "env=prod"}])
    held = PolicyStore([rule], {"b": {"env": "prod"}, "c": {"env": "prod"}})
    run_canary(held)
    reconcile(held, "r1", T0 + timedelta(minutes=11), LAB)
    assert held.get("r1").rollout.state is RolloutState.PAUSED
    assert "declares no maintenance window" in held.get("r1").rollout.reason

    lab = MemoryRolloutStore(lambda rollout, now: {}, lambda outcome: None)
    run_canary(lab)
    decision = reconcile(lab, "r1", T0 + timedelta(minutes=11), LAB)
    assert decision is not None and "promote-wave" in [a.kind for a in decision.actions]
    assert lab.get("r1").rollout.state is RolloutState.PROGRESSING


def test_check_wave_counts_the_wave_and_its_devices_labels_now() -> None:
    fits = check_wave([policy(max_wave_size=3)], SPEC, "wave 2/2", {"x": {}, "y": {}}, T0)
    assert fits == []
    [violation] = check_wave([policy(max_wave_size=1)], SPEC, "wave 2/2", {"x": {}, "y": {}}, T0)
    assert violation.rule == "max_wave_size"
    assert violation.reason == "wave 2/2 would update 2 devices at once; the most allowed is 1"
    rule = policy(maintenance=[{"devices": "env=prod"}])
    assert check_wave([rule], SPEC, "wave 2/2", {"x": {"env": "dev"}}, T0) == []
    [late] = check_wave([rule], SPEC, "wave 2/2", {"x": {"env": "prod"}}, T0)
    assert late.reason == (
        "the rollout reaches x, matching 'env=prod', and declares no maintenance window"
    )
