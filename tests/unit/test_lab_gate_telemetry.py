"""The lab's gate telemetry arrives as the control plane gets it: in windows aligned to the
fleet policy's length, each an upload interval after it ends, counted from the first whole
window after the install was seen — so a short soak ends waiting for data, and the gate
decides at the first recheck after the window arrives (`sim/lab/telemetry_model.py`,
`sim/lab/controller.py`)."""

from __future__ import annotations

import doctest
import math
from datetime import UTC, datetime
from typing import Any

import pytest

from edgefleet.core.rollouts.rollout import RolloutState
from edgefleet.core.rollouts.spec import parse_rollout_spec
from edgefleet.core.telemetry.sampling import default_policy, policy_from_document
from edgefleet.sim.lab import telemetry_model
from edgefleet.sim.lab.controller import RolloutController
from edgefleet.sim.lab.controller import TimelineEntry as Entry
from edgefleet.sim.lab.fleet_model import LabDevice
from edgefleet.sim.lab.rehearsal import Rehearsal, RehearsalConfig
from edgefleet.sim.lab.telemetry_model import TelemetryDelivery, delivery_from_policy
from edgefleet.sim.model_behaviour import BadModel, ModelBehaviour, parse_bad_model
from edgefleet.sim.profile import ReleaseFacts
from tests.telemetry_fleet import fast_policy

START = datetime(2026, 3, 2, 8, 0, 0, 300_000, tzinfo=UTC)  # 0.3 s past a whole second
# Half the inputs fail, never the health check's self-test input.
FAULTY = BadModel(affected_inputs_percent=50, error_percent=100, latency_factor=1,
                  self_test_failure_percent=0)  # fmt: skip
RELEASES = {
    # The health window does not judge the error rate: only the fleet gate can.
    r: ReleaseFacts(r, size_mb=0.01, health_window_s=1.0, min_requests=1_000_000)
    for r in ("svc@1.0.0", "svc@2.0.0")
}


def test_the_delivery_model_examples() -> None:
    assert doctest.testmod(telemetry_model).failed == 0


def test_delivery_follows_the_fleet_policy() -> None:
    assert delivery_from_policy(policy_from_document(fast_policy())) == TelemetryDelivery(2, 0.5)
    default = delivery_from_policy(default_policy())  # 60 s windows, uploads every 5 min
    assert (default.window_s, default.lag_s) == (60, 150.0)
    off = TelemetryDelivery(window_s=None)  # the policy collects no inference metrics
    assert off.counted_s(10.0, 0.0, 1e6) == (1e6, 1e6)
    assert math.isinf(off.next_arrival_s(100.0))


@pytest.mark.parametrize(
    ("installed_s", "first"), [(100.0, 102), (101.99, 102), (102.0, 104), (103.5, 104)]
)
def test_only_whole_windows_after_the_install_count_once_they_arrived(
    installed_s: float, first: int
) -> None:
    """From the first window starting at or after the install's next whole second."""
    delivery = TelemetryDelivery(window_s=2, lag_s=0.5)
    assert delivery.counted_s(installed_s, 90.0, first + 2.4) == (first, first)  # not yet
    assert delivery.counted_s(installed_s, 90.0, first + 2.5) == (first, first + 2)
    assert delivery.counted_s(installed_s, 90.0, first + 4.5) == (first, first + 4)
    assert delivery.next_arrival_s(first + 2.5) == first + 4.5


def test_a_bad_model_may_say_whether_its_self_test_input_fails() -> None:
    given = parse_bad_model({"affected_inputs_percent": 50, "error_percent": 100,
                             "latency_factor": 1, "self_test_failure_percent": 0},
                            "bad_model")  # fmt: skip
    assert given == FAULTY and given.self_test_failure() == 0
    by_chance = parse_bad_model({"affected_inputs_percent": 50, "error_percent": 100}, "bad")
    assert by_chance.self_test_failure() == 0.5


def fleet(devices: int = 3) -> list[LabDevice]:
    behaviour = ModelBehaviour(requests_per_s=25, error_percent=0.0, sandbox_s=0.6, start_s=0.6)
    return [LabDevice(id=f"d-{i}", name=f"d-{i}", device_class="c", labels={"kind": "svc"},
                      inventory={}, time_zone=None, region="r", zone="z", behaviour=behaviour,
                      heartbeat_interval_s=1.0, current_release="svc@1.0.0")
            for i in range(devices)]  # fmt: skip


def rehearse(delivery: TelemetryDelivery, soak: str = "2s", **gate: Any) -> Rehearsal:
    spec = parse_rollout_spec({
        "release": "svc@2.0.0", "target": "kind=svc",
        "strategy": {"waves": [1, "50%", "100%"], "soak": soak, "max_unavailable": 1},
        "gates": {"workload_error_rate": {"max_percent": 5, "min_devices": 1,
                                          "min_requests": 10, **gate},
                  "insufficient_data": {"wait": "5m", "then": "fail"}},
        "retries": {"max_attempts": 1},
    })  # fmt: skip
    config = RehearsalConfig(rollout=spec, rollout_id="r", start=START, hours=1, seed=1,
                             bad_release=True, bad_model=FAULTY, releases=RELEASES,
                             controller_interval_s=1.0, telemetry=delivery)  # fmt: skip
    return Rehearsal(config, fleet()).run()


def kinds(timeline: list[Entry]) -> list[str]:
    return [e.kind for e in timeline]


def at(timeline: list[Entry], kind: str) -> float:
    return next(e.at_s for e in timeline if e.kind == kind)


def test_a_short_soak_waits_for_the_first_window_then_the_gate_fails() -> None:
    rehearsal = rehearse(TelemetryDelivery(window_s=2, lag_s=0.5))
    timeline = rehearsal.timeline
    assert kinds(timeline) == ["start-rollout", "start-soak", "extend-soak", "record-gates",
                               "start-rollback", "finish-rollback"]  # fmt: skip
    assert "workload_error_rate" in next(e.text for e in timeline if e.kind == "record-gates")
    installed = at(timeline, "start-soak")  # the controller saw the canary installed
    assert at(timeline, "extend-soak") == pytest.approx(installed + 2)  # the soak's end
    # The first window starting after the install's next whole second, its end, the lag,
    # then the next of the rechecks every 2 s from the soak's end.
    epoch = START.timestamp()
    first = math.ceil((math.floor(epoch + installed) + 1) / 2) * 2 - epoch
    arrives = first + 2 + 0.5
    looks = math.ceil((arrives - (installed + 2)) / 2)
    assert at(timeline, "record-gates") == pytest.approx(installed + 2 + 2 * looks)
    # Only the canary was touched: installed cleanly, then reverted.
    assert list(rehearsal.controller.device_actions.values()) == [
        ["assign-release", "mark-device", "revert-release", "mark-device"]
    ]


def test_slower_uploads_make_the_gate_wait_longer() -> None:
    quick = rehearse(TelemetryDelivery(window_s=2, lag_s=1.0)).timeline
    slow = rehearse(TelemetryDelivery(window_s=10, lag_s=30.0)).timeline
    wait_quick = at(quick, "record-gates") - at(quick, "extend-soak")
    wait_slow = at(slow, "record-gates") - at(slow, "extend-soak")
    assert wait_slow >= 30 > wait_quick


def test_skipping_rechecks_that_see_no_new_window_changes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    delivery = TelemetryDelivery(window_s=10, lag_s=30.0)
    skipping = rehearse(delivery)

    skip = RolloutController._data_look_s

    def every_recheck(self: RolloutController, t: float, outcome: Any) -> float | None:
        if outcome.rollout.state is RolloutState.SOAKING:
            return (outcome.due_at - START).total_seconds()  # the shared step's 2 s looks
        return skip(self, t, outcome)

    monkeypatch.setattr(RolloutController, "_data_look_s", every_recheck)
    looking = rehearse(delivery)
    assert skipping.timeline == looking.timeline
    assert skipping.controller.decisions < looking.controller.decisions


def test_without_enough_traffic_the_wait_ends_as_configured() -> None:
    rehearsal = rehearse(TelemetryDelivery(window_s=2, lag_s=1.0), min_requests=10**9)
    timeline = rehearsal.timeline
    assert kinds(timeline)[:4] == ["start-rollout", "start-soak", "extend-soak", "record-gates"]
    assert at(timeline, "record-gates") == pytest.approx(at(timeline, "start-soak") + 2 + 300)
    assert "still not enough data" in next(e.text for e in timeline if e.kind == "record-gates")
