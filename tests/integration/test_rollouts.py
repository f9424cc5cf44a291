"""Fleet rollouts end to end: a real control plane, four real agents, signed releases served by
the example inference workload, and inference traffic driven at every device that runs one.

- a good release goes out in waves [1, 50%, 100%] with its gates evaluated and passing;
- a bad release (NaN on some inputs, so the workload answers 500 and counts errors) trips
  the error-rate gate after the canary wave and is rolled back automatically, with only the
  canary ever touched; the report tells the story;
- the server killed with SIGKILL mid-rollout resumes after a restart without re-assigning a
  device or skipping a gate;
- a device is in at most one active rollout (refusal, then --supersede);
- pause, resume, abort from the CLI;
- a rollback returns a device to the release it last ran successfully, not to one it was
  assigned and failed to install.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgefleet.artifacts.model_builder import build_faulty_mlp, build_mlp, build_nan_mlp, save_model
from edgefleet.cli.releases import push_file
from edgefleet.client import FleetClient
from edgefleet.core.updates.release import ArtifactKind
from edgefleet.examples.release_traffic import ReleaseTraffic
from edgefleet.localfleet import AgentProcess, ServerProcess, wait_for
from edgefleet.security.tuf_metadata import sign_metadata
from tests.cli_runner import run_cli
from tests.conftest import ADMIN_TOKEN, AgentFactory
from tests.releases import Trust
from tests.telemetry_fleet import FAST_AGENT_ARGS, fast_policy

FLEET = "kind=camera,fleet=rollouts"
FINAL = ("succeeded", "failed", "aborted", "rolled-back")
# Gates that decide on a small fleet: one device may decide (the canary wave has one), and
# the error rate needs real traffic; without enough data the wave waits, then fails.
GATES = {
    "install_failure_rate": {"max_percent": 0, "min_devices": 1},
    "workload_error_rate": {"max_percent": 5, "min_devices": 1, "min_requests": 40},
    "insufficient_data": {"wait": "60s", "then": "fail"},
}
STRATEGY = {"waves": [1, "50%", "100%"], "soak": "4s", "max_unavailable": "100%",
            "install_timeout": "3m"}  # fmt: skip


def service_manifest(model: str) -> str:
    # The agent's own health window does not judge the error rate (min_requests is out of
    # reach): the bad release installs cleanly, and only the fleet gate can catch it.
    return json.dumps({
        "command": ["{python}", "-m", "edgefleet.examples.inference_server",
                    "--model", f"{{artifact:{model}}}", "--port", "{port}"],
        "port": "auto",
        "health": {"http": "/healthz", "window_s": 1, "interval_s": 0.5,
                   "min_requests": 1_000_000},
    })  # fmt: skip


def publish(client: FleetClient, trust: Trust, workdir: Path, version: str, model: Any) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    path = save_model(model, workdir / f"vision-{version}.onnx")
    push_file(client, path, "vision-model", version, ArtifactKind.ONNX_MODEL, [])
    manifest = workdir / f"vision-{version}-service.json"
    manifest.write_text(service_manifest("vision-model"))
    push_file(client, manifest, "vision-service", version, ArtifactKind.SERVICE, [])
    client.create_release("vision", version, [f"vision-model@{version}",
                                              f"vision-service@{version}"])  # fmt: skip
    staged = client.stage_release("vision", version)
    for key in trust.targets_keys:
        staged = sign_metadata(staged, key)
    client.publish_release("vision", version, staged)


@pytest.fixture(scope="module")
def trust(server: ServerProcess) -> Trust:
    with server.client() as client:
        client.set_telemetry_policy(fast_policy())
        return Trust.install(client)


def applied_generation(agent: AgentProcess) -> Any:
    """The generation the agent applied: falsy until it follows its desired state."""
    return agent.state().get("applied_generation")


@pytest.fixture(scope="module")
def fleet(
    server: ServerProcess, trust: Trust, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[AgentProcess]]:
    """Four agents labelled for this module, each with a StatsD endpoint and fast telemetry."""
    factory = AgentFactory(server, tmp_path_factory.mktemp("rollout-agents"))
    with server.client() as client:
        token = client.create_enrollment_token(auto_approve=True)["token"]
    agents = [
        factory(f"rcam-{i}", token, {"kind": "camera", "fleet": "rollouts"},
                extra_args=FAST_AGENT_ARGS)
        for i in range(4)
    ]  # fmt: skip
    for agent in agents:
        wait_for(partial(applied_generation, agent), timeout_s=60,
                 what=f"{agent.name} in sync")  # fmt: skip
    yield agents
    for agent in factory.agents:
        agent.stop()


@pytest.fixture(scope="module")
def releases(server: ServerProcess, trust: Trust, tmp_path_factory: pytest.TempPathFactory
             ) -> dict[str, str]:  # fmt: skip
    workdir = tmp_path_factory.mktemp("rollout-releases")
    with server.client() as client:
        publish(client, trust, workdir, "1.0.0", build_mlp(4, 8, 3, seed=11))
        publish(client, trust, workdir, "2.0.0", build_mlp(4, 8, 3, seed=12))
        publish(client, trust, workdir, "3.0.0",
                build_faulty_mlp(4, 8, 3, bad_fraction=0.5, seed=13))  # fmt: skip
    return {"good": "vision@1.0.0", "next": "vision@2.0.0", "bad": "vision@3.0.0"}


def cli_env(server: ServerProcess) -> dict[str, str]:
    return {"EDGEFLEET_SERVER": server.url, "EDGEFLEET_TOKEN": ADMIN_TOKEN}


def rollout_manifest(name: str, release: str, **spec: Any) -> dict[str, Any]:
    return {"kind": "Rollout", "metadata": {"name": name},
            "spec": {"release": release, "target": FLEET, "strategy": STRATEGY,
                     "gates": GATES, **spec}}  # fmt: skip


def wait_final(admin: FleetClient, rollout_id: str, timeout_s: float = 240) -> dict[str, Any]:
    def final() -> dict[str, Any] | None:
        status = admin.get_rollout(rollout_id)
        return status if status["state"] in FINAL else None

    status = wait_for(final, timeout_s=timeout_s, interval_s=0.5,
                      what=f"rollout {rollout_id} to finish")  # fmt: skip
    assert status is not None
    return status


def served_requests(admin: FleetClient, since: str) -> dict[str, float]:
    """Inference requests per fleet device that telemetry has stored since `since` ago."""
    answer = admin.telemetry_query("inference.requests", selector=FLEET, since=since)
    return {s["device_id"]: (s["summary"] or {}).get("sum", 0.0) for s in answer["series"]}


def desired_serials(admin: FleetClient) -> dict[str, int]:
    out = {}
    for device in admin.list_devices(FLEET):
        assignment = (device.get("desired") or {}).get("release") or {}
        out[device["id"]] = int(assignment.get("serial", 0))
    return out


def releases_running(admin: FleetClient) -> dict[str, str | None]:
    out = {}
    for device in admin.list_devices(FLEET):
        active = (device.get("release_status") or {}).get("active") or {}
        out[device["id"]] = f"{active['name']}@{active['version']}" if active else None
    return out


@pytest.mark.slow
def test_good_release_in_waves_then_bad_release_rolled_back_after_the_canary(
    server: ServerProcess, admin: FleetClient, fleet: list[AgentProcess],
    releases: dict[str, str], tmp_path: Path,
) -> None:  # fmt: skip
    ids = sorted(a.device_id or "" for a in fleet)
    with ReleaseTraffic(server.client, FLEET) as traffic:
        # A good release, in waves, written as YAML and applied with the CLI.
        good = tmp_path / "good.yaml"
        good.write_text(json.dumps(rollout_manifest("vision-good", releases["good"])))
        applied = run_cli("apply", "-f", str(good), "-o", "json", env=cli_env(server))
        assert applied.code == 0, applied.stderr
        rollout_id = applied.json()[0]["result"]["rollout"]["id"]
        watched = run_cli("rollouts", "status", rollout_id, "--watch", "--interval", "0.5",
                          env=cli_env(server), timeout_s=240)  # fmt: skip
        assert watched.code == 0, watched.stderr
        status = wait_final(admin, rollout_id)
        assert status["state"] == "succeeded", status["reason"]
        assert "workload_error_rate" in watched.stdout and "pass" in watched.stdout
        assert [w["size"] for w in status["waves"]] == [1, 1, 2]
        assert [g["wave"] for g in status["gates"]] == [0, 1, 2]
        for evaluation in status["gates"]:
            assert evaluation["verdict"] == "pass"
            install, errors = evaluation["results"]
            assert install["measured"] == 0 and errors["measured"] <= 5
            assert errors["samples"] >= 40  # requests the gate saw
        assert releases_running(admin) == {d: releases["good"] for d in ids}
        report = admin.rollout_report(rollout_id)
        gate_at = [g["at"] for g in report["gates"]]
        assigned_at = {e["device_id"]: e["at"] for e in report["timeline"]
                       if e["kind"] == "assign-release"}  # fmt: skip
        assert sorted(assigned_at) == ids
        for device in status["devices"]:
            if device["wave"]:  # never before the gates of the wave before it passed
                assert assigned_at[device["device_id"]] >= gate_at[device["wave"] - 1]

        # A bad release: the canary installs it (its health window sees nothing wrong),
        # traffic finds the NaNs, the error-rate gate fails, the canary is rolled back.
        # First every device serves 1.0.0 long enough for a KPI baseline.
        wait_for(lambda: min(served_requests(admin, "1m").get(d, 0) for d in ids) >= 60,
                 timeout_s=60, what="a baseline of traffic on every device")  # fmt: skip
        before = desired_serials(admin)
        # Also a KPI gate: the canary's error rate against its own baseline on 1.0.0.
        # It reads the same windows, so with the same minimum both gates decide together.
        kpi = {"kpi": "error_rate_pct", "max_increase": 5, "min_devices": 1, "min_samples": 40}
        bad = admin.create_rollout(
            rollout_manifest("vision-bad", releases["bad"], gates={**GATES, "kpis": [kpi]})
        )
        bad_id = bad["rollout"]["id"]
        status = wait_final(admin, bad_id)
        assert traffic.sent > 0
    assert status["state"] == "rolled-back", status["reason"]
    gate = status["gates"][-1]
    assert gate["wave"] == 0 and gate["verdict"] == "fail"
    errors = next(r for r in gate["results"] if r["gate"] == "workload_error_rate")
    assert errors["verdict"] == "fail" and errors["measured"] > 5
    kpi_result = next(r for r in gate["results"] if r["gate"] == "kpi:error_rate_pct")
    assert kpi_result["verdict"] == "fail" and kpi_result["measured"] > 5, kpi_result
    assert "before" in kpi_result["reason"]
    touched = [d for d in status["devices"] if d["attempts"] > 0]
    assert len(touched) == 1 and touched[0]["wave"] == 0
    canary = touched[0]["device_id"]
    assert touched[0]["state"] == "rolled-back"
    after = desired_serials(admin)
    assert {d: after[d] - before[d] for d in ids} == {d: 2 if d == canary else 0 for d in ids}
    running = releases_running(admin)
    assert running == {d: releases["good"] for d in ids}

    # The report, as JSON and as Markdown from the CLI.
    report = admin.rollout_report(bad_id)
    assert report["rollout"]["state"] == "rolled-back"
    assert [a["kind"] for a in report["rollback"]["actions"]] == [
        "start-rollback",
        "revert-release",
        "finish-rollback",
    ]
    assert [e["device_id"] for e in report["timeline"] if e["kind"] == "assign-release"] == [canary]
    markdown = run_cli("rollouts", "report", bad_id, env=cli_env(server))
    assert markdown.code == 0, markdown.stderr
    for needle in (
        "# Rollout vision-bad",
        "rolled-back",
        "workload_error_rate",
        "fail",
        "≤ 5%",
        "## Rollback",
        "revert-release",
        "## Timeline",
    ):
        assert needle in markdown.stdout
    assert f"{errors['measured']:.3g}%" in markdown.stdout


@pytest.mark.slow
def test_a_server_killed_mid_rollout_resumes_without_reassigning_or_skipping_a_gate(
    server: ServerProcess, admin: FleetClient, fleet: list[AgentProcess],
    releases: dict[str, str],
) -> None:  # fmt: skip
    ids = sorted(a.device_id or "" for a in fleet)
    before = desired_serials(admin)
    strategy = {**STRATEGY, "soak": "6s"}
    with ReleaseTraffic(server.client, FLEET):
        created = admin.create_rollout(
            rollout_manifest("vision-next", releases["next"], strategy=strategy)
        )
        rollout_id = created["rollout"]["id"]

        def second_wave_soaking() -> dict[str, Any] | None:
            status = admin.get_rollout(rollout_id)
            assert status["state"] not in FINAL, status["reason"]
            return status if (status["wave"], status["state"]) == (1, "soaking") else None

        killed_at = wait_for(second_wave_soaking, timeout_s=180, interval_s=0.2,
                             what="the second wave to soak")  # fmt: skip
        assert killed_at is not None
        server.kill()  # SIGKILL: no shutdown of any kind
        server.start()
        with server.client() as client:
            status = wait_final(client, rollout_id)
            report = client.rollout_report(rollout_id)
            after = desired_serials(client)
    assert status["state"] == "succeeded", status["reason"]
    assert [g["wave"] for g in killed_at["gates"]] == [0]  # wave 2's gates were still due
    assert [g["wave"] for g in status["gates"]] == [0, 1, 2]
    assert all(g["verdict"] == "pass" for g in status["gates"])
    assigned = sorted(e["device_id"] for e in report["timeline"] if e["kind"] == "assign-release")
    assert assigned == ids, (report["timeline"], status["devices"])
    assert {d: after[d] - before[d] for d in ids} == {d: 1 for d in ids}
    assert all(d["attempts"] == 1 for d in status["devices"])


def test_one_active_rollout_per_device_then_pause_resume_abort(
    server: ServerProcess, admin: FleetClient, fleet: list[AgentProcess],
    releases: dict[str, str], tmp_path: Path,
) -> None:  # fmt: skip
    env = cli_env(server)
    # Windows that stay closed through the test (1 January, 03:00 UTC): nothing installs.
    closed = [{"cron": "0 3 1 1 *", "duration": "1m", "time_zone": "UTC"}]
    first = tmp_path / "first.yaml"
    first.write_text(json.dumps(rollout_manifest("held", releases["next"],
                                                 maintenance_windows=closed)))  # fmt: skip
    created = run_cli("apply", "-f", str(first), "-o", "json", env=env)
    assert created.code == 0, created.stderr
    first_id = created.json()[0]["result"]["rollout"]["id"]
    wait_for(lambda: admin.get_rollout(first_id)["state"] == "progressing", what="started")
    # The canary is due but outside its window; the later waves wait for their turn.
    wait_for(lambda: sorted(d["state"] for d in admin.get_rollout(first_id)["devices"])
             == ["outside-window", "waiting", "waiting", "waiting"],
             what="the canary held by the window")  # fmt: skip

    refused = run_cli("rollouts", "create", "--release", releases["good"], "-l", FLEET,
                      "--name", "other", env=env)  # fmt: skip
    assert refused.code == 1
    assert "devices_in_rollout" in refused.stderr and first_id in refused.stderr
    assert "4 target device(s) are already in an active rollout" in refused.stderr

    taken = run_cli("rollouts", "create", "--release", releases["good"], "-l", FLEET,
                    "--name", "other", "--window", "0 3 1 1 *;1m;UTC", "--supersede",
                    "-o", "json", env=env)  # fmt: skip
    assert taken.code == 0, taken.stderr
    assert taken.json()["superseded"] == [first_id]
    second_id = taken.json()["rollout"]["id"]
    assert admin.get_rollout(first_id)["state"] == "aborted"
    wait_for(lambda: admin.get_rollout(second_id)["state"] == "progressing", what="started")

    for command, state in (("pause", "paused"), ("resume", "progressing"), ("abort", "aborted")):
        result = run_cli("rollouts", command, second_id, "--note", f"test {command}", env=env)
        assert result.code == 0, result.stderr
        assert admin.get_rollout(second_id)["state"] == state
    illegal = run_cli("rollouts", "resume", second_id, env=env)
    assert illegal.code == 1 and "illegal_transition" in illegal.stderr
    listed = run_cli("rollouts", "list", "-o", "json", env=env).json()
    assert {r["id"]: r["state"] for r in listed}[second_id] == "aborted"
    actions = [r["action"] for r in admin.audit_tail(20)]
    for action in ("rollout.create", "rollout.abort", "rollout.pause", "rollout.resume"):
        assert action in actions
    # Devices kept what they had: nothing was ever assigned.
    report = admin.rollout_report(second_id)
    assert not [e for e in report["timeline"] if e["kind"] == "assign-release"]


def test_bad_manifests_are_refused_naming_the_field_and_trains_wait_for_releases(
    server: ServerProcess, admin: FleetClient, releases: dict[str, str], tmp_path: Path,
) -> None:  # fmt: skip
    env = cli_env(server)
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: Rollout\nmetadata: {name: bad}\nspec:\n  release: vision@1.0.0\n"
                   "  strategy: {waves: [1, 0%]}\n")  # fmt: skip
    refused = run_cli("apply", "-f", str(bad), env=env)
    assert refused.code == 1
    assert "spec.strategy.waves[1]" in refused.stderr and "invalid_input" in refused.stderr
    response = httpx.post(f"{server.url}/v1/rollouts", json={"manifest": {"release": "x"}},
                          headers={"authorization": f"Bearer {ADMIN_TOKEN}"})  # fmt: skip
    assert response.status_code == 400 and "release" in response.json()["error"]["message"]

    train = tmp_path / "train.yaml"
    train.write_text(json.dumps({
        "kind": "ReleaseTrain", "metadata": {"name": "vision-future"},
        "spec": {"releases": ["vision@9.0.0", "vision@9.1.0"],
                 "rollout": {"target": FLEET, "strategy": STRATEGY, "gates": GATES}},
    }))  # fmt: skip
    applied = run_cli("apply", "-f", str(train), env=env)
    assert applied.code == 0 and "releasetrain/vision-future created" in applied.stdout
    wait_for(
        lambda: (
            "waiting for vision@9.0.0 to be created and signed"
            in admin.get_release_train("vision-future")["reason"]
        ),
        what="the train to wait",
    )
    listed = run_cli("trains", "list", "-o", "json", env=env).json()
    assert [t["name"] for t in listed] == ["vision-future"] and listed[0]["state"] == "running"
    again = run_cli("apply", "-f", str(train), env=env)
    assert "releasetrain/vision-future unchanged" in again.stdout


@pytest.mark.slow
def test_rollback_removes_the_release_from_a_device_that_had_none(
    server: ServerProcess, admin: FleetClient, agents: AgentFactory, trust: Trust,
    releases: dict[str, str],
) -> None:  # fmt: skip
    """The previous release of a fresh device is none: rolling back stops and removes the
    release it got, and the device reports no release."""
    token = admin.create_enrollment_token(auto_approve=True)["token"]
    fresh = agents("rfresh-0", token, {"kind": "camera", "fleet": "fresh"},
                   extra_args=FAST_AGENT_ARGS)  # fmt: skip
    wait_for(lambda: fresh.state().get("applied_generation"), what="fresh agent in sync")
    # A gate that cannot get its data (no traffic): after the wait the wave fails.
    gates = {"workload_error_rate": {"max_percent": 5, "min_devices": 1, "min_requests": 40},
             "insufficient_data": {"wait": "2s", "then": "fail"}}  # fmt: skip
    manifest = {"kind": "Rollout", "metadata": {"name": "fresh-rollback"},
                "spec": {"release": releases["good"], "target": "fleet=fresh",
                         "strategy": {"waves": [1], "soak": "1s", "install_timeout": "3m"},
                         "gates": gates}}  # fmt: skip
    rollout_id = admin.create_rollout(manifest)["rollout"]["id"]

    def serving_port() -> int | None:
        active = (admin.get_device(fresh.device_id or "")["release_status"] or {}).get("active")
        return int(active["port"]) if active and active.get("port") else None

    port = wait_for(serving_port, timeout_s=120, what="the release running on the device")
    status = wait_final(admin, rollout_id)
    assert status["state"] == "rolled-back", status["reason"]
    assert [d["state"] for d in status["devices"]] == ["rolled-back"]
    watched = run_cli("rollouts", "status", rollout_id, "--watch", env=cli_env(server))
    assert watched.code == 4, watched.stderr  # like kubectl rollout status: not a success
    assert "rolled-back" in watched.stderr
    wait_for(lambda: admin.get_device(fresh.device_id or "")["release_status"] == {},
             what="the device to report no release")  # fmt: skip
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
    assert not (fresh.data_dir / "release" / "current").exists()
    fresh.stop()
    fresh.start()  # the removal holds across a restart: nothing comes back
    wait_for(lambda: admin.get_device(fresh.device_id or "")["status"] == "online",
             what="fresh agent back")  # fmt: skip
    assert admin.get_device(fresh.device_id or "")["release_status"] == {}
    assert not (fresh.data_dir / "release" / "current").exists()


def test_a_device_already_running_the_release_is_not_reinstalled(
    server: ServerProcess, admin: FleetClient, agents: AgentFactory, trust: Trust,
    releases: dict[str, str],
) -> None:  # fmt: skip
    token = admin.create_enrollment_token(auto_approve=True)["token"]
    device = agents("rsame-0", token, {"kind": "camera", "fleet": "same"})
    wait_for(lambda: device.state().get("applied_generation"), what="agent in sync")

    def rollout(name: str) -> dict[str, Any]:
        manifest = {"kind": "Rollout", "metadata": {"name": name},
                    "spec": {"release": releases["good"], "target": "fleet=same",
                             "strategy": {"waves": [1], "soak": "1s"}}}  # fmt: skip
        return wait_final(admin, admin.create_rollout(manifest)["rollout"]["id"])

    assert rollout("same-first")["state"] == "succeeded"
    first = admin.get_device(device.device_id or "")
    assert first["release_status"]["state"] == "installed"
    again = rollout("same-again")
    assert again["state"] == "succeeded", again["reason"]
    assert [d["state"] for d in again["devices"]] == ["installed"]
    after = admin.get_device(device.device_id or "")
    assert after["desired"]["release"]["serial"] == first["desired"]["release"]["serial"]
    assert after["release_status"] == first["release_status"]  # nothing was reinstalled


@pytest.mark.slow
def test_a_rollback_returns_a_device_to_the_release_it_last_ran_not_the_one_it_failed(
    server: ServerProcess, admin: FleetClient, agents: AgentFactory, trust: Trust,
    releases: dict[str, str], tmp_path: Path,
) -> None:  # fmt: skip
    """The device is assigned 2.4.0, which fails its health window (NaN model): the agent
    goes back to 1.0.0 and stays assigned 2.4.0. A rollout of the bad 3.0.0 reaches it and
    its gate fails: the rollback returns it to 1.0.0, the release it last ran successfully
    (returning it to 2.4.0 failed again and left it serving 3.0.0: `rollback incomplete`)."""
    token = admin.create_enrollment_token(auto_approve=True)["token"]
    agent = agents("rlast-0", token, {"kind": "camera", "fleet": "last-good"},
                   extra_args=FAST_AGENT_ARGS)  # fmt: skip
    wait_for(lambda: agent.state().get("applied_generation"), what="agent in sync")
    device_id = agent.device_id or ""

    def reported() -> tuple[str | None, str | None, str | None]:
        """(release of the current assignment, its install state, the release running)."""
        status = admin.get_device(device_id)["release_status"] or {}
        active = status.get("active") or {}
        running = f"{active['name']}@{active['version']}" if active else None
        return f"{status.get('name')}@{status.get('version')}", status.get("state"), running

    admin.assign_release("vision", "1.0.0", device=device_id)
    wait_for(lambda: reported() == ("vision@1.0.0", "installed", "vision@1.0.0"),
             timeout_s=120, what="1.0.0 installed")  # fmt: skip
    with server.client() as client:
        publish(client, trust, tmp_path / "failing", "2.4.0", build_nan_mlp(4, 8, 3, seed=14))
    admin.assign_release("vision", "2.4.0", device=device_id)
    wait_for(lambda: reported() == ("vision@2.4.0", "rolled-back", "vision@1.0.0"),
             timeout_s=120, what="2.4.0 rolled back by the agent, 1.0.0 live")  # fmt: skip

    # A gate that cannot get its data (no traffic): after the wait the wave fails.
    gates = {"workload_error_rate": {"max_percent": 5, "min_devices": 1, "min_requests": 40},
             "insufficient_data": {"wait": "2s", "then": "fail"}}  # fmt: skip
    manifest = {"kind": "Rollout", "metadata": {"name": "last-good"},
                "spec": {"release": releases["bad"], "target": "fleet=last-good",
                         "strategy": {"waves": [1], "soak": "1s", "install_timeout": "3m"},
                         "gates": gates, "retries": {"max_attempts": 1}}}  # fmt: skip
    rollout_id = admin.create_rollout(manifest)["rollout"]["id"]
    status = wait_final(admin, rollout_id)

    assert status["state"] == "rolled-back", status["reason"]
    assert [d["state"] for d in status["devices"]] == ["rolled-back"]
    assert status["gates"][-1]["verdict"] == "insufficient-data"
    assert reported() == ("vision@1.0.0", "installed", "vision@1.0.0")
    assert admin.get_device(device_id)["release"]["version"] == "1.0.0"
    timeline = admin.rollout_report(rollout_id)["timeline"]
    (assigned,) = [e for e in timeline if e["kind"] == "assign-release"]
    assert assigned["reason"].endswith(
        "a rollback returns it to vision@1.0.0, the release it last ran successfully "
        "(its desired state names vision@2.4.0)"
    )
    (revert,) = [e for e in timeline if e["kind"] == "revert-release"]
    assert revert["reason"].startswith(
        "revert vision@3.0.0 to vision@1.0.0, the release it last ran successfully"
    )


def test_a_dry_run_plans_the_waves_the_rollout_gets_and_writes_nothing(
    server: ServerProcess, admin: FleetClient, fleet: list[AgentProcess],
    releases: dict[str, str], tmp_path: Path,
) -> None:  # fmt: skip
    env = cli_env(server)
    flags = ["rollouts", "create", "-r", releases["next"], "-l", FLEET, "--name", "planned",
             "--waves", "1,50%,100%", "--window", "0 3 1 1 *;1m;UTC"]  # fmt: skip
    audit_head = admin.audit_tail(1)[0]["seq"]
    rollouts_before = admin.list_rollouts()

    dry = run_cli(*flags, "--dry-run", "-o", "json", env=env)
    assert dry.code == 0, dry.stderr
    answer = dry.json()
    assert answer["dry_run"] is True and answer["created"] is True
    plan = answer["plan"]
    assert [w["size"] for w in plan["waves"]] == [1, 1, 2]
    planned = {name: w["index"] for w in plan["waves"] for name in w["devices"]}
    assert sorted(planned) == sorted(a.name for a in fleet)
    shown = run_cli(*flags, "--dry-run", env=env)
    assert "rollout planned would be created (dry run, nothing stored)" in shown.stdout
    [canary_row] = [line for line in shown.stdout.splitlines() if line.startswith("1 (1)")]
    assert next(n for n, w in planned.items() if w == 0) in canary_row
    manifest = tmp_path / "planned.yaml"
    manifest.write_text(json.dumps(rollout_manifest("planned", releases["next"])))
    applied = run_cli("apply", "-f", str(manifest), "--dry-run", env=env)
    assert applied.code == 0, applied.stderr
    assert "rollout/planned created (dry run)" in applied.stdout
    # Nothing was stored, audited or claimed.
    assert admin.audit_tail(1)[0]["seq"] == audit_head
    assert admin.list_rollouts() == rollouts_before

    created = run_cli(*flags, "-o", "json", env=env)
    assert created.code == 0, created.stderr
    rollout_id = created.json()["rollout"]["id"]
    wait_for(lambda: admin.get_rollout(rollout_id)["state"] == "progressing", what="started")
    names = {a.device_id: a.name for a in fleet}
    started = {names[d["device_id"]]: d["wave"] for d in admin.get_rollout(rollout_id)["devices"]}
    assert started == planned  # the dry run showed the very plan
    assert run_cli("rollouts", "abort", rollout_id, env=env).code == 0
    aborted = run_cli("rollouts", "status", "planned", "--watch", env=env)
    assert aborted.code == 5, (aborted.stdout, aborted.stderr)
    assert f"rollout planned ({rollout_id}) ended aborted" in aborted.stderr


def test_status_watch_streams_changes_and_exits_by_outcome(
    server: ServerProcess, admin: FleetClient, agents: AgentFactory, trust: Trust,
    releases: dict[str, str],
) -> None:  # fmt: skip
    env = cli_env(server)
    token = admin.create_enrollment_token(auto_approve=True)["token"]
    device = agents("rwatch-0", token, {"kind": "camera", "fleet": "watch"})
    wait_for(lambda: device.state().get("applied_generation"), what="agent in sync")

    # A soak long enough that the watch, however slowly its CLI starts, sees the rollout
    # running before it succeeds.
    created = run_cli("rollouts", "create", "-r", releases["good"], "-l", "fleet=watch",
                      "--name", "watched", "--waves", "1", "--soak", "10s", env=env)  # fmt: skip
    assert created.code == 0, created.stderr
    watched = run_cli("rollouts", "status", "watched", "--watch", "--interval", "0.5",
                      "-o", "json", env=env, timeout_s=240)  # fmt: skip
    assert watched.code == 0, (watched.stdout, watched.stderr)
    states = [json.loads(line)["state"] for line in watched.stdout.splitlines()]
    assert len(states) > 1 and states[-1] == "succeeded"  # one object per change

    failing = run_cli("rollouts", "create", "-r", releases["good"], "-l", "fleet=nobody-here",
                      "--name", "lonely", env=env)  # fmt: skip
    assert failing.code == 0, failing.stderr
    failed = run_cli("rollouts", "status", "lonely", "--watch", env=env)
    assert failed.code == 3, (failed.stdout, failed.stderr)
    assert "ended failed: no compatible device to update" in failed.stderr
    assert "failed" in failed.stdout  # off a terminal: a line per change, then the status
