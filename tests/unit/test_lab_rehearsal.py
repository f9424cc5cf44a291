"""The accelerated rehearsal: deterministic for a seed, driven by the pure rollout engine
(waves as planned, gates, rollback of a bad release), skips and windows reported, failovers
rehearsed; and the models it rests on (mixture latency, phi detection delays)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from edgefleet.core.rollouts.spec import parse_rollout_spec
from edgefleet.core.rollouts.waves import plan_waves
from edgefleet.core.workloads.failure_detector import Liveness
from edgefleet.sim.lab.liveness import LabLiveness
from edgefleet.sim.lab.report import build_report, render_markdown
from edgefleet.sim.lab.scenario import scenario_from_profile
from edgefleet.sim.lab.scheduler import EventScheduler
from edgefleet.sim.lab.telemetry_model import latency_quantile_ms
from edgefleet.sim.model_behaviour import BadModel, LatencyDistribution
from edgefleet.sim.network import NetworkConditions

START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def rollout(**changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": "cams",
        "release": "detector@2.0.0",
        "target": "kind=camera",
        "strategy": {"waves": [1, "10%", "50%", "100%"], "soak": "20m",
                     "max_unavailable": "10%"},
        "gates": {"install_failure_rate": {"max_percent": 5, "min_devices": 1},
                  "kpis": [{"kpi": "p95_latency_ms", "max_increase_percent": 20,
                            "min_devices": 1}]},
        "retries": {"max_attempts": 1},
    }  # fmt: skip
    spec.update(changes)
    return spec


def rehearse(devices: int = 200, hours: float = 12.0, seed: int = 3, bad: bool = False,
             profile: str = "retail-cameras", **changes: Any) -> dict[str, Any]:  # fmt: skip
    spec = parse_rollout_spec(rollout(**changes))
    scenario = scenario_from_profile(spec, profile, devices, seed)
    rehearsal = scenario.rehearsal(start=START, hours=hours, seed=seed, bad_release=bad)
    return build_report(rehearsal.run())


def without_performance(report: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in report.items() if k != "performance"}


def test_the_same_seed_gives_the_same_report() -> None:
    first = rehearse(seed=3)
    assert without_performance(first) == without_performance(rehearse(seed=3))
    other = rehearse(seed=4)
    assert without_performance(first) != without_performance(other)
    assert first["performance"]["decisions"] > 0


def test_a_good_release_goes_out_in_the_planned_waves() -> None:
    report = rehearse()
    assert report["outcome"]["state"] == "succeeded"
    spec = parse_rollout_spec(rollout())
    targeted = report["rehearsal"]["devices_targeted"]
    incompatible = report["skipped"]["incompatible"]["count"]
    assert incompatible > 0  # the legacy cameras' onnxruntime is too old
    assert all("onnxruntime" in reason for reason in report["skipped"]["incompatible"]["reasons"])
    ids = [f"cam-{i:05d}" for i in range(200)]
    planned = plan_waves("cams", ids[: targeted - incompatible], spec.strategy.waves, 0)
    assert [w["size"] for w in report["waves"]] == [len(w.device_ids) for w in planned.waves]
    assert all(w["gates"] and w["gates"][-1]["verdict"] in ("pass", "insufficient-data")
               for w in report["waves"])  # fmt: skip
    assert report["outcome"]["device_states"] == {
        "installed": targeted - incompatible,
        "skipped-incompatible": incompatible,
    }
    assert report["blast_radius"]["release_is_bad"] is False
    kinds = [e["kind"] for e in report["timeline"]]
    assert kinds.index("start-rollout") < kinds.index("complete-rollout")


def test_a_bad_release_is_stopped_and_rolled_back_early() -> None:
    report = rehearse(bad=True)
    assert report["outcome"]["state"] == "rolled-back"
    failed_gate = [g for w in report["waves"] for g in w["gates"] if g["verdict"] == "fail"]
    assert failed_gate and "install_failure_rate" in failed_gate[0]["summary"]
    blast = report["blast_radius"]
    assert blast["release_is_bad"] is True
    assert 0 < blast["devices_assigned"] < blast["devices_targeted"] / 4
    assert blast["devices_served_bad_model"] == blast["devices_assigned"]
    assert blast["errors_on_bad_model"] > 0
    touched_waves = {int(w) for w in blast["assigned_by_wave"]}
    assert touched_waves <= {1, 2}
    assert report["outcome"]["device_states"].get("rolled-back") == blast["devices_assigned"]


def test_maintenance_windows_hold_devices_in_their_own_time_zone() -> None:
    windows = [{"cron": "0 2 * * *", "duration": "2h", "time_zone": "device"}]
    report = rehearse(hours=30, maintenance_windows=windows)
    held = report["skipped"]["outside_window"]
    assert held["devices_held"] > 0 and held["max_wait_s"] > 3600
    first = report["waves"][0]["first_assigned_s"]
    assert first is not None and first >= 3600  # 08:00Z is outside 02:00-04:00 everywhere


def test_failovers_are_rehearsed_when_the_profile_kills_a_hosting_node() -> None:
    report = rehearse(profile="factory-gateways", devices=150, hours=3,
                      target="", release="sensor-analytics@1.4.0")  # fmt: skip
    failover = report["failover"]
    assert failover is not None and failover["replicas_placed"] > 0
    moves = [m for m in failover["moves"] if m["kind"] == "failover"]
    assert moves and all(m["to"] != m["from"] for m in moves)
    assert failover["median_failover_s"] is not None
    returned = [e for e in failover["node_events"] if e["kind"] == "returned"]
    assert returned  # the node that died at 1h comes back after 20m and is fenced
    assert "Failover and migration rehearsals" in render_markdown(report)


def test_a_bad_model_has_a_slower_tail_than_a_good_one() -> None:
    dist = LatencyDistribution(20.0, 45.0)
    assert latency_quantile_ms(dist, 0.5) == pytest.approx(20.0)
    assert latency_quantile_ms(dist, 0.95) == pytest.approx(45.0)
    bad = BadModel(affected_inputs_percent=30, latency_factor=3.0)
    assert latency_quantile_ms(dist, 0.95, bad=bad) > 2 * 45.0
    assert latency_quantile_ms(dist, 0.95, 2.0, bad) == pytest.approx(
        2 * latency_quantile_ms(dist, 0.95, bad=bad)
    )


def silence_verdicts(last_s: float, back_s: float | None, interval_s: float,
                     conditions: NetworkConditions) -> list[tuple[float, Liveness]]:  # fmt: skip
    """The lab's liveness controller on a device silent after a heartbeat at `last_s`."""
    scheduler = EventScheduler()
    seen: list[tuple[float, Liveness]] = []
    lab = LabLiveness(scheduler, START, 1, lambda _, state: seen.append((scheduler.now_s, state)))
    scheduler.at(last_s, lab.fall_silent, "d", last_s, interval_s, conditions)
    if back_s is not None:
        scheduler.at(back_s, lab.heartbeat, "d", back_s)
    scheduler.run(until_s=3600.0)
    return seen


def test_phi_declares_a_silent_device_dead_after_a_few_intervals() -> None:
    clean = silence_verdicts(1000.0, None, 30.0, NetworkConditions(latency_ms=20, jitter_ms=2))
    lossy = silence_verdicts(
        1000.0, None, 30.0, NetworkConditions(latency_ms=20, jitter_ms=2, loss_percent=10)
    )
    assert [state for _, state in clean] == [Liveness.SUSPECT, Liveness.DEAD]
    (suspect_s, _), (dead_s, _) = clean
    assert 1030.0 < suspect_s <= dead_s < 1090.0
    assert lossy[-1][1] is Liveness.DEAD and lossy[-1][0] > dead_s  # patience on a lossy link
    back = silence_verdicts(1000.0, 1020.0, 30.0, NetworkConditions())
    assert back == []  # back before it was suspect: no verdict changed
    late = silence_verdicts(1000.0, 2000.0, 30.0, NetworkConditions())
    assert [state for _, state in late] == [Liveness.SUSPECT, Liveness.DEAD, Liveness.ALIVE]
    assert late[-1][0] == 2000.0
