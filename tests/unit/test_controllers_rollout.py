"""The rollout controller step shared by the server and the lab, over the in-memory store:
what it applies, when it looks again, and that a decision on a stale load is refused."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from edgefleet.controllers.memory import MemoryRolloutStore
from edgefleet.controllers.rollout import (
    DATA_RECHECK_S,
    RESCAN_S,
    Outcome,
    Timing,
    next_due,
    reconcile,
)
from edgefleet.core.rollouts.gates import DeviceTelemetry
from edgefleet.core.rollouts.rollout import (
    DeviceState,
    InstallReport,
    Rollout,
    RolloutDevice,
    RolloutState,
)
from edgefleet.core.rollouts.spec import parse_rollout_spec
from edgefleet.core.telemetry.kpi import KpiReading

T0 = datetime(2026, 3, 2, 12, tzinfo=UTC)
LAB = Timing(rescan_s=None)


def spec(**gates: Any) -> Any:
    return parse_rollout_spec({
        "release": "det@2.0.0",
        "strategy": {"waves": [1, "100%"], "soak": "10m", "max_unavailable": "100%"},
        "gates": gates or {"install_failure_rate": {"max_percent": 0, "min_devices": 1}},
    })  # fmt: skip


class Harness:
    def __init__(self, telemetry: Mapping[str, DeviceTelemetry] | None = None, **gates: Any):
        self.applied: list[Outcome] = []
        self.asked: list[datetime] = []
        self.store = MemoryRolloutStore(self._telemetry, self.applied.append)
        self._readings = telemetry or {}
        devices = {d: RolloutDevice(d, current_release="det@1.0.0") for d in ("a", "b", "c")}
        self.store.add(Rollout("r1", spec(**gates)), devices)

    def _telemetry(self, rollout: Rollout, now: datetime) -> Mapping[str, DeviceTelemetry]:
        self.asked.append(now)
        return self._readings

    @property
    def rollout(self) -> Rollout:
        return self.store.get("r1").rollout

    def report(self, device_id: str, outcome: InstallReport) -> None:
        record = self.store.get("r1").devices[device_id]
        self.store.observe_device("r1", replace(record, report=outcome))


def test_each_step_applies_the_decision_and_schedules_the_next_look() -> None:
    h = Harness()
    first = reconcile(h.store, "r1", T0, LAB)
    assert first is not None and h.rollout.state is RolloutState.PROGRESSING
    assert [a.kind for a in first.actions] == ["start-rollout", "assign-release"]
    updating = [d for d, r in h.store.get("r1").devices.items() if r.state is DeviceState.UPDATING]
    assert len(updating) == 1
    # Nothing reported: the next look is the install timeout, no blind rescan in the lab.
    assert h.applied[-1].due_at == first.next_check_at
    h.report(updating[0], InstallReport.INSTALLED)
    later = T0 + timedelta(seconds=30)
    second = reconcile(h.store, "r1", later, LAB)
    assert second is not None and h.rollout.state is RolloutState.SOAKING
    assert h.applied[-1].installed == {updating[0]: later}
    assert h.applied[-1].due_at == later + timedelta(minutes=10)  # the soak's end


def test_the_server_looks_again_within_the_rescan_interval() -> None:
    h = Harness()
    decision = reconcile(h.store, "r1", T0)  # the server's timing
    assert decision is not None
    assert h.applied[-1].due_at == T0 + timedelta(seconds=RESCAN_S)
    waiting = replace(h.rollout, state=RolloutState.SOAKING,
                      gate_wait_until=T0 + timedelta(minutes=5))  # fmt: skip
    assert next_due(waiting, decision, T0, LAB) == T0 + timedelta(seconds=DATA_RECHECK_S)
    # A rollback keeps the wait's end, but no gate reads telemetry then: no 2 s rechecks.
    rolling_back = replace(waiting, state=RolloutState.ROLLING_BACK)
    assert next_due(rolling_back, decision, T0) == T0 + timedelta(seconds=RESCAN_S)


def test_a_final_rollout_is_not_reconciled_and_a_stale_load_is_refused() -> None:
    h = Harness()
    stale = h.store.load("r1", T0)
    assert stale is not None
    assert reconcile(h.store, "r1", T0, LAB) is not None
    assert h.store.apply(stale, h.applied[-1], T0) is False  # another decision got there first
    h.store.add(replace(h.rollout, state=RolloutState.SUCCEEDED), h.store.get("r1").devices)
    assert reconcile(h.store, "r1", T0, LAB) is None


def test_gates_that_read_telemetry_get_it_from_the_store() -> None:
    slow = DeviceTelemetry(
        kpis_before={"p95_latency_ms": KpiReading("p95_latency_ms", 10, 50)},
        kpis_after={"p95_latency_ms": KpiReading("p95_latency_ms", 40, 50)},
    )
    kpi = {"kpi": "p95_latency_ms", "max_increase_percent": 20, "min_devices": 1}
    h = Harness({d: slow for d in ("a", "b", "c")}, kpis=[kpi])
    reconcile(h.store, "r1", T0, LAB)
    device = next(
        d for d, r in h.store.get("r1").devices.items() if r.state is DeviceState.UPDATING
    )
    h.report(device, InstallReport.INSTALLED)
    reconcile(h.store, "r1", T0 + timedelta(seconds=30), LAB)
    decision = reconcile(h.store, "r1", T0 + timedelta(minutes=11), LAB)
    assert decision is not None and h.asked
    assert "record-gates" in [a.kind for a in decision.actions]
    assert h.rollout.gate_evaluations[-1].verdict.value == "fail"
