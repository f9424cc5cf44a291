"""The rollout series of /metrics: states, devices, waves and the latest gate evaluation of
every active rollout, as Prometheus reads them."""

from __future__ import annotations

from datetime import UTC, datetime

from edgefleet.core.rollouts.gates import GateResult, GateVerdict
from edgefleet.core.rollouts.record import RolloutRecord
from edgefleet.core.rollouts.rollout import GateEvaluation, Rollout, RolloutState
from edgefleet.core.rollouts.spec import parse_rollout_spec
from edgefleet.core.rollouts.waves import Wave, WavePlan
from edgefleet.server.prometheus import render
from edgefleet.server.services.rollout_metrics import rollout_families

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def record(name: str, state: RolloutState, **rollout: object) -> RolloutRecord:
    spec = parse_rollout_spec({"name": name, "release": "det@2.0.0",
                               "strategy": {"waves": [1, "50%"]}})  # fmt: skip
    body = Rollout(f"ro-{name}", spec, state=state, **rollout)  # type: ignore[arg-type]
    return RolloutRecord(body, name, {}, "alice", NOW, NOW, NOW)


def test_active_rollouts_show_progress_and_their_latest_gates() -> None:
    plan = WavePlan("canary", (Wave(0, "1", ("d1",), 60), Wave(1, "50%", ("d2", "d3"), 60),
                               Wave(2, "rest", ("d4",), 60)))  # fmt: skip
    latency = GateResult("kpi:p95_latency_ms", GateVerdict.FAIL, 31.5, 20.0, "%", 1, 40, "")
    installs = GateResult("install_failure_rate", GateVerdict.PASS, 0.0, 10.0, "%", 1, 1, "")
    gates = (GateEvaluation(0, NOW, GateVerdict.FAIL, (latency, installs), "p95 up"),)
    soaking = record("canary", RolloutState.SOAKING, plan=plan, wave=1, gate_evaluations=gates)
    pending = record("later", RolloutState.PENDING)
    text = render(
        rollout_families([soaking, pending], {"ro-canary": {"installed": 2, "updating": 1}})
    )
    lines = set(text.splitlines())
    base = 'rollout="canary",release="det@2.0.0"'
    assert 'edgefleet_rollouts{state="soaking"} 1' in lines
    assert 'edgefleet_rollouts{state="pending"} 1' in lines
    assert 'edgefleet_rollouts{state="succeeded"} 1' not in text  # final states are not kept
    assert f'edgefleet_rollout_devices{{{base},state="installed"}} 2' in lines
    assert f'edgefleet_rollout_devices{{{base},state="failed"}} 0' in lines
    assert (f"edgefleet_rollout_wave{{{base}}} 2" in lines
            and f"edgefleet_rollout_waves{{{base}}} 3" in lines)  # fmt: skip
    gate = f'{base},gate="kpi:p95_latency_ms"'
    assert f"edgefleet_rollout_gate_value{{{gate}}} 31.5" in lines
    assert f"edgefleet_rollout_gate_threshold{{{gate}}} 20" in lines
    assert f'edgefleet_rollout_gate_verdict{{{gate},verdict="fail"}} 1' in lines
    assert f'edgefleet_rollout_gate_verdict{{{gate},verdict="pass"}} 0' in lines
    assert 'edgefleet_rollout_wave{rollout="later"' not in text  # not started: no plan
    assert 'edgefleet_rollout_gate_value{rollout="later"' not in text
