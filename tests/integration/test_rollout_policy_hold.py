"""Policies judged by the rollout controller, against a real control plane and three real
agents: a rollout created under no policy starts its canary; a Policy applied afterwards
(`max_wave_size: 1`) makes the controller pause it before the next wave (two devices) with
the rule and why, in `rollouts status` and the audit log. Resumed without fixing the cause,
it pauses again before the wave; resumed after the policy is deleted, it completes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from edgefleet.artifacts.model_builder import build_mlp
from edgefleet.client import FleetClient
from edgefleet.localfleet import ServerProcess, wait_for
from tests.cli_runner import run_cli
from tests.conftest import ADMIN_TOKEN, AgentFactory
from tests.releases import Trust, publish

# A service that only has to stay up: the rollout, not the workload, is under test.
SERVICE = {"command": ["{python}", "-c", "import time; time.sleep(3600)"],
           "health": {"window_s": 1}}  # fmt: skip
ROLLOUT = {
    "kind": "Rollout", "name": "held-by-policy", "release": "vision@1.0.0",
    "target": "fleet=held",
    "strategy": {"waves": [1, "100%"], "soak": "2s", "max_unavailable": "100%"},
    "gates": {"install_failure_rate": {"max_percent": 0, "min_devices": 1}},
}  # fmt: skip
POLICY = {"kind": "Policy", "metadata": {"name": "small-waves"}, "spec": {"max_wave_size": 1}}
REASON = (
    "held before wave 2/2 (100%): policy small-waves, rule max_wave_size: wave 2/2 (100%) "
    "would update 2 devices at once; the most allowed is 1"
)


def pauses(admin: FleetClient) -> list[dict[str, Any]]:
    return [e for e in admin.audit_tail(200) if e["action"] == "rollout.pause-rollout"]


def test_a_policy_applied_after_creation_pauses_the_rollout_before_the_wave_it_forbids(
    server: ServerProcess, admin: FleetClient, agents: AgentFactory, tmp_path: Path
) -> None:
    trust = Trust.install(admin)
    publish(admin, tmp_path / "release", "vision", "1.0.0", build_mlp(), 0,
            trust.targets_keys, manifest=SERVICE)  # fmt: skip
    token = admin.create_enrollment_token(auto_approve=True)["token"]
    fleet = [agents(f"held-{i}", token, {"fleet": "held"}) for i in range(3)]
    wait_for(lambda: all(a.device_id for a in fleet), what="three agents enrolled")
    env = {"EDGEFLEET_SERVER": server.url, "EDGEFLEET_TOKEN": ADMIN_TOKEN}

    rollout_file = tmp_path / "rollout.yaml"
    rollout_file.write_text(yaml.safe_dump(ROLLOUT))
    assert run_cli("apply", "-f", str(rollout_file), env=env).code == 0
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(yaml.safe_dump(POLICY))
    applied = run_cli("apply", "-f", str(policy_file), env=env)
    assert applied.code == 0, applied.stderr

    def state() -> str:
        return str(admin.get_rollout("held-by-policy")["state"])

    wait_for(lambda: state() == "paused", timeout_s=120, what="the rollout held by the policy")
    rollout = admin.get_rollout("held-by-policy")
    assert rollout["reason"] == REASON
    installed = [d for d in rollout["devices"] if d["state"] == "installed"]
    assert len(installed) == 1, "only the canary wave ran"
    assert all(d["state"] == "waiting" for d in rollout["devices"] if d not in installed)
    status = run_cli("rollouts", "status", "held-by-policy", env=env)
    assert status.code == 0, status.stderr
    assert "rule max_wave_size" in " ".join(status.stdout.split())
    [paused] = pauses(admin)
    assert paused["details"]["reason"] == REASON

    # Resumed with the cause still there, it soaks again and is held again.
    assert run_cli("rollouts", "resume", "held-by-policy", env=env).code == 0
    wait_for(lambda: len(pauses(admin)) == 2 and state() == "paused", timeout_s=60,
             what="the rollout held again")  # fmt: skip
    assert len([d for d in admin.get_rollout("held-by-policy")["devices"]
                if d["state"] == "installed"]) == 1  # fmt: skip

    # The cause fixed, the operator resumes it and it completes.
    admin.delete_policy("small-waves")
    assert run_cli("rollouts", "resume", "held-by-policy", env=env).code == 0
    wait_for(lambda: state() == "succeeded", timeout_s=180, what="the rollout completed")
    devices = admin.get_rollout("held-by-policy")["devices"]
    assert [d["state"] for d in devices] == ["installed"] * 3
