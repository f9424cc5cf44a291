"""Agreement: the rehearsal predicts the real run — the same decisions, at the same times.

The same small scenario both ways: a fleet of real agents behind a real control plane, and
the lab's copy of that fleet (`--fleet-from`, as `lab rehearse` takes it: starting when it
was copied, with its default controller interval), rehearsing the same rollout manifest
under the same rollout id; the lab runs the control plane's own controller step
(`controllers.rollout`) over its in-memory store. A good release first, then a bad one (its
model answers NaN on every input, so each device's health window rolls it back) held by a
maintenance window that opens at the next minute. The decisions must agree: wave
membership, skipped devices, the sequence of rollout-level actions, the actions on each
device, gate verdicts, every final state, the blast radius. For the bad release the
prediction must hold in time too: each phase between two rollout-level actions or the first
assignment (the window's wait, the install, the soak, the rollback back to the good
release, whose own 2 s health window the lab reads from its signed service manifest)
within 20 % of the real one. The fleet's install times come from its history (the good
release's rollout).

The fleet-level error-rate gate: a release whose model answers NaN on half of the inputs,
with a health window that does not judge the error rate (`min_requests` out of reach in its
signed service manifest), so it installs cleanly on the canary, while a load generator
(`ReleaseTraffic`) sends every serving device inference requests. Under a fast telemetry
policy (2 s windows, uploads every second) the canary's 2 s soak ends before any window of
its traffic can have arrived: the gate waits for data (`extend-soak`), then fails
(`workload_error_rate`), and the canary is rolled back. The lab learns each device's
request rate from the copied fleet's telemetry since its good release went live, when
gate data arrives from the fleet's telemetry policy, and how the release behaves from the
model given to the rehearsal: the same decisions (and gate verdicts per gate), the same
blast radius (the canary), each phase within 20 % — the wait for the gate's data within one
of the controller's 2 s rechecks (see DATA_RECHECK_S below).

Liveness too: a node stopped for good in a real run (its agent killed) and in the lab's copy
of that fleet, where the control plane's own liveness controller (`controllers.liveness`)
judges the silence on simulated time: the same verdicts in the same order, and the time
from its last heartbeat to `dead` within 20 % of the real one.
"""

from __future__ import annotations

import re
import time
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from edgefleet.artifacts.model_builder import build_faulty_mlp, build_mlp, build_nan_mlp
from edgefleet.client import FleetClient
from edgefleet.controllers.rollout import DATA_RECHECK_S
from edgefleet.core.rollouts.spec import parse_rollout_spec
from edgefleet.core.workloads.failure_detector import Liveness
from edgefleet.examples.release_traffic import ReleaseTraffic
from edgefleet.localfleet import AgentProcess, ServerProcess, wait_for
from edgefleet.sim.lab.fleet_copy import copy_fleet
from edgefleet.sim.lab.liveness import LabLiveness
from edgefleet.sim.lab.rehearsal import Rehearsal
from edgefleet.sim.lab.report import build_report
from edgefleet.sim.lab.scenario import scenario_from_server
from edgefleet.sim.lab.scheduler import EventScheduler
from edgefleet.sim.model_behaviour import BadModel
from tests.conftest import ADMIN_TOKEN, AgentFactory
from tests.releases import Trust, publish
from tests.telemetry_fleet import FAST_AGENT_ARGS, fast_policy

ROLLOUT_KINDS = frozenset({
    "start-rollout", "start-soak", "extend-soak", "record-gates", "promote-wave",
    "complete-rollout", "pause-rollout", "start-rollback", "finish-rollback", "fail-rollout",
})  # fmt: skip
FINAL = {"succeeded", "failed", "aborted", "rolled-back"}
# What build_nan_mlp does: NaN outputs on every input.
NAN_MODEL = BadModel(affected_inputs_percent=100, error_percent=100, latency_factor=1)
PHASE_TOLERANCE = 0.2  # of the real phase's length
# Timestamps and scheduling: the lab's event times against the server's clock reads, and the
# real install's process start-ups, which a busy machine (the suite runs modules side by
# side) stretches by a second or so in one rollout and not in the one the lab learnt from.
CLOCK_SLACK_S = 1.5
# A gate waiting for data is looked at again every DATA_RECHECK_S (2 s), and decides at the
# first look after the window that brings the data arrives. The lab knows when that is to
# within about a second: which window is the first whole one after the install (windows
# are 2 s, aligned to the clock) moves with the install's predicted end, and the wait for
# the agent's next upload is its mean (half an interval, 0.5 s here) where a real window
# waits 0.1 to 1.1 s (measured: the collector's next tick, then the upload loop, out of step
# with the windows). A prediction right to within that can fall on the look before or
# after the real one: that phase may differ by one look (or PHASE_TOLERANCE of a long wait).


@pytest.fixture(scope="module")
def trust(server: ServerProcess) -> Trust:
    with server.client() as client:
        return Trust.install(client)


def manifest(name: str, release: str, windows: list[dict[str, str]]) -> dict[str, Any]:
    return {
        "kind": "Rollout",
        "metadata": {"name": name},
        "spec": {
            "release": release,
            "target": "kind=agree",
            "strategy": {"waves": [1, "50%", "100%"], "soak": "2s", "max_unavailable": 1,
                         "install_timeout": "5m"},
            "gates": {"install_failure_rate": {"max_percent": 0, "min_devices": 1}},
            "retries": {"max_attempts": 1},
            "on_failure": "rollback",
            "maintenance_windows": windows,
        },
    }  # fmt: skip


def closed_until_next_minute() -> list[dict[str, str]]:
    """A window open for the first part of every minute, closed now: it opens at the next
    minute and stays open long enough for the rest of the rollout (20 s at least)."""
    second = datetime.now(UTC).second
    if not 22 <= second <= 50:  # too short a window, or too little time to create the rollout
        time.sleep((22 - second) % 60)
        second = 22
    return [{"cron": "* * * * *", "duration": f"{second - 2}s", "time_zone": "UTC"}]


def real_run(admin: FleetClient, document: dict[str, Any]) -> tuple[str, dict[str, Any],
                                                                    dict[str, Any]]:  # fmt: skip
    rollout_id = admin.create_rollout(document)["rollout"]["id"]
    wait_for(lambda: admin.get_rollout(rollout_id)["state"] in FINAL, timeout_s=180,
             interval_s=0.5, what=f"rollout {rollout_id} finished")  # fmt: skip
    return rollout_id, admin.get_rollout(rollout_id), admin.rollout_report(rollout_id)


def decisions_of_real(status: dict[str, Any], report: dict[str, Any]) -> dict[str, Any]:
    per_device: dict[str, list[str]] = {}
    for entry in report["timeline"]:
        if entry["device_id"] and entry["kind"] not in ROLLOUT_KINDS:
            per_device.setdefault(entry["device_id"], []).append(entry["kind"])
    return {
        "state": status["state"],
        "waves": {d["device_id"]: d["wave"] for d in status["devices"]},
        "device_states": {d["device_id"]: d["state"] for d in status["devices"]},
        "rollout_actions": [e["kind"] for e in report["timeline"] if e["kind"] in ROLLOUT_KINDS],
        "device_actions": per_device,
        "gates": [(g["wave"], g["verdict"]) for g in status["gates"]],
        "gate_results": [
            (g["wave"], r["gate"], r["verdict"]) for g in status["gates"] for r in g["results"]
        ],
    }


def decisions_of_lab(rehearsal: Rehearsal) -> dict[str, Any]:
    controller = rehearsal.controller
    rollout = controller.rollout
    assert rollout.plan is not None
    return {
        "state": rollout.state.value,
        "waves": {d: rollout.plan.wave_of(d) for d in controller.records},
        "device_states": {d: r.state.value for d, r in controller.records.items()},
        "rollout_actions": [e.kind for e in rehearsal.timeline if e.kind in ROLLOUT_KINDS],
        "device_actions": {d: kinds for d, kinds in controller.device_actions.items()},
        "gates": [(g.wave, g.verdict.value) for g in rollout.gate_evaluations],
        "gate_results": [
            (g.wave, r.gate, r.verdict.value) for g in rollout.gate_evaluations for r in g.results
        ],
    }


def milestones_of_real(report: dict[str, Any]) -> list[tuple[str, float]]:
    """Each rollout-level action and the first assignment, in seconds since the start."""
    timeline = report["timeline"]
    entries = [(e["kind"], datetime.fromisoformat(e["at"])) for e in timeline
               if e["kind"] in ROLLOUT_KINDS]  # fmt: skip
    first = min(datetime.fromisoformat(e["at"]) for e in timeline if e["kind"] == "assign-release")
    began = entries[0][1]
    entries.append(("first-assignment", first))
    return sorted(((kind, (at - began).total_seconds()) for kind, at in entries),
                  key=lambda m: m[1])  # fmt: skip


def milestones_of_lab(rehearsal: Rehearsal) -> list[tuple[str, float]]:
    entries = [(e.kind, e.at_s) for e in rehearsal.timeline if e.kind in ROLLOUT_KINDS]
    first = rehearsal.controller.waves[0].first_assigned_s
    assert first is not None
    began = entries[0][1]
    entries.append(("first-assignment", first))
    return sorted(((kind, at_s - began) for kind, at_s in entries), key=lambda m: m[1])


def phases(milestones: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """Each stretch between two milestones: (the milestone ending it, its length)."""
    return [(kind, at - milestones[i][1]) for i, (kind, at) in enumerate(milestones[1:])]


def assert_phases_agree(real: list[tuple[str, float]], lab: list[tuple[str, float]]) -> None:
    """The same phases in the same order, each predicted within PHASE_TOLERANCE of the real
    one (plus CLOCK_SLACK_S); a wait for gate data ended by a recheck, within one look."""
    assert [k for k, _ in lab] == [k for k, _ in real]
    for i, ((kind, real_s), (_, lab_s)) in enumerate(zip(real, lab, strict=True)):
        tolerance_s = PHASE_TOLERANCE * real_s
        if kind == "record-gates" and i > 0 and real[i - 1][0] == "extend-soak":
            tolerance_s = max(tolerance_s, DATA_RECHECK_S)  # see DATA_RECHECK_S above
        assert abs(lab_s - real_s) <= tolerance_s + CLOCK_SLACK_S, (
            f"the phase ending in {kind}: predicted {lab_s:.1f} s, really {real_s:.1f} s "
            f"(real {real}, lab {lab})"
        )


def blast_radius_of_real(report: dict[str, Any]) -> list[str]:
    return sorted({e["device_id"] for e in report["timeline"] if e["kind"] == "assign-release"})


def applied_generation(agent: AgentProcess) -> Any:
    """The generation the agent applied: falsy until it follows its desired state."""
    return agent.state().get("applied_generation")


@pytest.mark.slow
def test_the_rehearsal_and_the_real_rollout_agree(
    server: ServerProcess, admin: FleetClient, agents: AgentFactory, trust: Trust,
    tmp_path: Path,
) -> None:  # fmt: skip
    token = admin.create_enrollment_token(auto_approve=True)["token"]
    fleet = [
        agents(f"agree-{i}", token, {"kind": "agree", "ring": "legacy" if i == 3 else "main"},
               extra_args=["--statsd-port", "0"])
        for i in range(4)
    ]  # fmt: skip
    for agent in fleet:
        wait_for(partial(applied_generation, agent), what="agent in sync")
    wait_for(lambda: sum(d["status"] == "online" for d in admin.list_devices(selector="kind=agree"))
             == 4, what="fleet online")  # fmt: skip
    runs = [("agree-good", "1.0.0", build_mlp(4, 8, 3, seed=1), False),
            ("agree-bad", "2.0.0", build_nan_mlp(4, 8, 3, seed=2), True)]  # fmt: skip
    for name, version, model, bad in runs:
        publish(admin, tmp_path / name, "agree", version, model, "auto",  # type: ignore[arg-type]
                trust.targets_keys, requires=["label.ring=main"], window_s=2)  # fmt: skip
        document = manifest(name, f"agree@{version}", closed_until_next_minute() if bad else [])
        scenario = scenario_from_server(parse_rollout_spec(document), admin)  # before it starts
        facts = scenario.releases[f"agree@{version}"]  # the release's own health window
        assert (facts.health_window_s, facts.max_error_percent) == (2, 5)
        rollout_id, status, report = real_run(admin, document)
        rehearsal = (
            replace(scenario, rollout_id=rollout_id)
            .rehearsal(hours=6, seed=1, bad_release=bad, bad_model=NAN_MODEL)
            .run()
        )
        real, lab = decisions_of_real(status, report), decisions_of_lab(rehearsal)
        assert lab == real, f"{name}: the rehearsal disagrees with the real run"
        radius = build_report(rehearsal)["blast_radius"]["devices_assigned"]
        assert radius == len(blast_radius_of_real(report)), f"{name}: blast radius"
    # The rollback reinstalls the good release with its own 2 s window, as the device does.
    assert scenario.releases["agree@1.0.0"].health_window_s == 2
    assert real["state"] == "rolled-back"
    assert sorted(real["device_states"].values()) == ["rolled-back", "skipped-incompatible",
                                                      "waiting", "waiting"]  # fmt: skip
    assert rehearsal.controller.window_waits_s, "the window held the first wave back"
    assert_phases_agree(phases(milestones_of_real(report)), phases(milestones_of_lab(rehearsal)))


# The fleet gate: a release whose model answers NaN on half of the inputs (build_faulty_mlp:
# those whose first feature is above 0, so not the self-test's zeros).
FAULTY_MODEL = BadModel(affected_inputs_percent=50, error_percent=100, latency_factor=1,
                        self_test_failure_percent=0)  # fmt: skip
GATE_FLEET = "kind=gate"
# One telemetry window of the canary's traffic decides (the load generator's ~20-30
# requests a second to each device; ≥ 10 even in a window it joined a second late, when
# it learnt the new port), and the soak ends before any window can have arrived, so the
# gate first waits for data, then fails.
GATES = {
    "install_failure_rate": {"max_percent": 0, "min_devices": 1},
    "workload_error_rate": {"max_percent": 5, "min_devices": 1, "min_requests": 10},
    "insufficient_data": {"wait": "60s", "then": "fail"},
}


def gate_service(model: str) -> dict[str, Any]:
    """The inference server, whose health window does not judge the error rate (its
    min_requests is out of reach): a bad release installs cleanly, only the fleet gate can
    catch it."""
    return {
        "command": ["{python}", "-m", "edgefleet.examples.inference_server",
                    "--model", f"{{artifact:{model}}}", "--port", "{port}"],
        "port": "auto",
        "health": {"http": "/healthz", "window_s": 1, "interval_s": 0.5,
                   "min_requests": 1_000_000},
    }  # fmt: skip


def gate_manifest(name: str, release: str, waves: list[Any], gates: dict[str, Any]
                  ) -> dict[str, Any]:  # fmt: skip
    return {
        "kind": "Rollout",
        "metadata": {"name": name},
        "spec": {
            "release": release,
            "target": GATE_FLEET,
            "strategy": {"waves": waves, "soak": "2s", "max_unavailable": 1,
                         "install_timeout": "5m"},
            "gates": gates,
            "retries": {"max_attempts": 1},
            "on_failure": "rollback",
        },
    }  # fmt: skip


def served_since_release(admin: FleetClient) -> list[float]:
    """Per device, the inference requests telemetry holds since its live release changed
    (what the fleet copy learns each device's request rate from)."""
    served = []
    for device in admin.list_devices(selector=GATE_FLEET):
        since = (device.get("release_status") or {}).get("active_since")
        answer = (admin.telemetry_query("inference.requests", device=device["id"], since=since)
                  if since else {"series": []})  # fmt: skip
        served.append(sum((s["summary"] or {}).get("sum", 0.0) for s in answer["series"]))
    return served


@pytest.mark.slow
def test_the_rehearsal_predicts_the_fleet_error_rate_gate(
    server: ServerProcess, admin: FleetClient, agents: AgentFactory, trust: Trust,
    tmp_path: Path,
) -> None:  # fmt: skip
    previous_policy = admin.telemetry_policy()["manifest"]
    admin.set_telemetry_policy(fast_policy())  # 2 s windows, uploads every second
    try:
        token = admin.create_enrollment_token(auto_approve=True)["token"]
        fleet = [agents(f"gate-{i}", token, {"kind": "gate"}, extra_args=FAST_AGENT_ARGS)
                 for i in range(3)]  # fmt: skip
        for agent in fleet:
            wait_for(partial(applied_generation, agent), what="agent in sync")
        for version, model in (
            ("1.0.0", build_mlp(4, 8, 3, seed=21)),
            ("2.0.0", build_faulty_mlp(4, 8, 3, bad_fraction=0.5, seed=22)),
        ):
            publish(
                admin,
                tmp_path / version,
                "gate",
                version,
                model,
                0,
                trust.targets_keys,
                manifest=gate_service("gate-model"),
            )
        with ReleaseTraffic(server.client, GATE_FLEET):
            # The good release, one device at a time: its installs and the traffic each
            # device then serves are the history the lab learns from.
            good = gate_manifest(
                "gate-good",
                "gate@1.0.0",
                ["100%"],
                {"install_failure_rate": GATES["install_failure_rate"]},
            )
            _, status, _ = real_run(admin, good)
            assert status["state"] == "succeeded", status["reason"]
            wait_for(
                lambda: min(served_since_release(admin)) >= 60,
                what="traffic on the good release on every device",
            )
            document = gate_manifest("gate-bad", "gate@2.0.0", [1, "50%", "100%"], GATES)
            scenario = scenario_from_server(parse_rollout_spec(document), admin,
                                            selector=GATE_FLEET)  # fmt: skip
            rollout_id, status, report = real_run(admin, document)
    finally:
        admin.set_telemetry_policy(previous_policy)
    assert (scenario.telemetry.window_s, scenario.telemetry.lag_s) == (2, 0.5)
    rehearsal = (
        replace(scenario, rollout_id=rollout_id)
        .rehearsal(hours=1, seed=1, bad_release=True, bad_model=FAULTY_MODEL)
        .run()
    )
    real, lab = decisions_of_real(status, report), decisions_of_lab(rehearsal)
    assert lab == real, "the rehearsal disagrees with the real run"
    # What the agreement is about: the canary installed cleanly, the gate waited for its
    # traffic's telemetry and failed on its error rate, the canary went back to 1.0.0.
    assert real["state"] == "rolled-back"
    assert real["gate_results"] == [(0, "install_failure_rate", "pass"),
                                    (0, "workload_error_rate", "fail")]  # fmt: skip
    assert real["rollout_actions"] == [
        "start-rollout",
        "start-soak",
        "extend-soak",
        "record-gates",
        "start-rollback",
        "finish-rollback",
    ]
    canary = [d for d, wave in real["waves"].items() if wave == 0]
    assert blast_radius_of_real(report) == canary
    assert build_report(rehearsal)["blast_radius"]["devices_assigned"] == 1
    assert_phases_agree(phases(milestones_of_real(report)), phases(milestones_of_lab(rehearsal)))


# The liveness controller runs this often in the liveness run's control plane (the default
# 0.5 s would often skip `suspect`: with a steady 1 s heartbeat, phi goes from 5 to 16 in
# about 0.4 s; the lab judges at the exact moment).
LIVENESS_TICK_S = 0.1
VERDICT = re.compile(r'msg="node liveness changed" device_id=(\S+) from=(\w+) to=(\w+)')


def real_verdicts(server: ServerProcess, device_id: str) -> list[str]:
    """The verdicts the control plane's liveness controller wrote for `device_id`, in order
    (from its log)."""
    return [m[3] for m in VERDICT.finditer(server.log()) if m[1] == device_id]


@pytest.mark.slow
def test_the_lab_judges_a_stopped_node_as_the_control_plane_does(tmp_path: Path) -> None:
    env = {"EDGEFLEET_CONTROLLER_INTERVAL_S": str(LIVENESS_TICK_S)}
    server = ServerProcess(tmp_path / "server", ADMIN_TOKEN, env)
    server.start()
    agent: AgentProcess | None = None
    try:
        with server.client() as admin:
            token = admin.create_enrollment_token(auto_approve=True)["token"]
            agent = AgentProcess(server.url, tmp_path / "node", token, "live-0",
                                 {"kind": "live"}, heartbeat_interval_s=1.0)  # fmt: skip
            agent.start()
            wait_for(lambda: [n for n in admin.list_nodes()
                              if n["name"] == "live-0" and n["heartbeats_seen"] >= 30],
                     timeout_s=120, what="30 heartbeats")  # fmt: skip
            [device] = copy_fleet(admin, "kind=live", "1h")
            agent.kill()
            [node] = wait_for(lambda: [n for n in admin.list_nodes()
                                       if n["name"] == "live-0" and n["liveness"] == "dead"],
                              timeout_s=60, what="the stopped node declared dead")  # fmt: skip
    finally:
        if agent is not None:
            agent.stop()
        server.stop()
    assert node["last_heartbeat_at"] is not None
    real_dead_s = (datetime.fromisoformat(node["liveness_since"])
                   - datetime.fromisoformat(node["last_heartbeat_at"])).total_seconds()  # fmt: skip
    real = real_verdicts(server, device.id)

    scheduler = EventScheduler()
    seen: list[tuple[float, Liveness]] = []
    lab = LabLiveness(scheduler, datetime.now(UTC), seed=1,
                      on_change=lambda _, state: seen.append((scheduler.now_s, state)))  # fmt: skip
    lab.fall_silent(device.id, 0.0, device.heartbeat_interval_s, device.network)
    scheduler.run(until_s=600.0)

    assert [state.value for _, state in seen] == real == ["suspect", "dead"]
    lab_dead_s = seen[-1][0]
    assert abs(lab_dead_s - real_dead_s) <= PHASE_TOLERANCE * real_dead_s, (
        f"dead {lab_dead_s:.2f} s after the last heartbeat in the lab, really {real_dead_s:.2f} s"
    )
