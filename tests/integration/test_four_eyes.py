"""Four-eyes approval and policies as code against a real control plane.

A Policy applied with `edgefleet apply -f` holds rollouts that reach two devices or more for
a second operator: the requester cannot approve their own rollout (403 `own_change`), a
second operator can, and the audit log names both; a root rotation waits for a second admin
the same way. Rollouts, labels and release signatures that break a rule are refused with
the policy, the rule and why (403 `policy_violation`); `policy test` says so without
changing anything.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgefleet.artifacts.model_builder import build_mlp
from edgefleet.client import FleetClient
from edgefleet.errors import ApiError
from edgefleet.localfleet import ServerProcess, wait_for
from edgefleet.security.tuf_keys import generate_signing_key
from edgefleet.security.tuf_metadata import RoleKeys, build_next_root, sign_metadata
from tests.cli_runner import run_cli
from tests.conftest import ADMIN_TOKEN
from tests.device_requests import RawDevice
from tests.releases import Trust, publish

POLICY = {
    "kind": "Policy",
    "metadata": {"name": "production"},
    "spec": {
        "approval": {"min_devices": 2, "trust_changes": True},
        "max_wave_size": 1,
        "releases": [{"match": "prod-*", "min_signatures": 2}],
        "forbidden_labels": [["env=prod", "canary=true"]],
    },
}
ROLLOUT = {"kind": "Rollout", "name": "vision-cameras", "release": "vision@1.0.0",
           "target": "kind=camera", "strategy": {"waves": [1, "100%"]}}  # fmt: skip


@pytest.fixture(scope="module")
def trust(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Trust:
    """Two targets keys (threshold 1), a signed release, two cameras, and the policy."""
    with server.client() as admin:
        trust = Trust.install(admin, targets_keys=2, threshold=1)
        publish(admin, tmp_path_factory.mktemp("release"), "vision", "1.0.0", build_mlp(),
                18081, trust.targets_keys[:1])  # fmt: skip
        token = admin.create_enrollment_token(auto_approve=True)["token"]
        for i in range(2):
            assert RawDevice(server.url).enroll(token, f"cam-{i}", {"kind": "camera"}).is_success
    policy_file = tmp_path_factory.mktemp("policy") / "policy.yaml"
    policy_file.write_text(yaml.safe_dump(POLICY))
    applied = run_cli("apply", "-f", str(policy_file), env=env(server, ADMIN_TOKEN))
    assert applied.code == 0, applied.stderr
    assert "policy/production created" in applied.stdout
    return trust


def env(server: ServerProcess, token: str) -> dict[str, str]:
    return {"EDGEFLEET_SERVER": server.url, "EDGEFLEET_TOKEN": token}


def operator(admin: FleetClient, name: str, role: str = "operator") -> str:
    return str(admin.create_api_token(name, role)["token"])


def refusal(call: Any) -> ApiError:
    with pytest.raises(ApiError) as refused:
        call()
    return refused.value


def test_a_second_operator_approves_a_large_rollout_and_the_audit_log_names_both(
    server: ServerProcess, admin: FleetClient, trust: Trust
) -> None:
    alice_token, bob_token = operator(admin, "alice"), operator(admin, "bob")
    with server.client(alice_token) as alice, server.client(bob_token) as bob:
        created = alice.create_rollout(ROLLOUT)["rollout"]
        assert created["state"] == "awaiting-approval"
        assert created["reason"] == ("needs a second operator's approval: policy production: "
                                     "it reaches 2 devices (approval from 2)")  # fmt: skip
        own = refusal(lambda: alice.approve_rollout("vision-cameras"))
        assert (own.status, own.code) == (403, "own_change")
        assert "alice requested this change and cannot approve it too" in own.message
        approved = bob.approve_rollout("vision-cameras", note="checked the canary plan")
        assert approved["state"] == "pending"
        wait_for(lambda: alice.get_rollout("vision-cameras")["state"] == "progressing",
                 what="the approved rollout to start")  # fmt: skip
        again = refusal(lambda: bob.approve_rollout("vision-cameras"))
        assert (again.status, again.code) == (409, "illegal_transition")
    records = admin.audit_tail(50)
    [create] = [r for r in records if r["action"] == "rollout.create"]
    [approve] = [r for r in records if r["action"] == "rollout.approve"]
    assert create["actor"].startswith("alice (")
    assert approve["actor"].startswith("bob (")
    assert approve["details"]["requested_by"] == create["actor"]
    assert approve["details"]["approved_by"] == approve["actor"]


def test_the_cli_approves_and_refuses_the_requester_in_one_line(
    server: ServerProcess, admin: FleetClient, trust: Trust
) -> None:
    carol = operator(admin, "carol")
    approver = operator(admin, "dave", role="rollout-approver")
    with server.client(carol) as client:
        client.rollout_command("vision-cameras", "abort")
        client.create_rollout({**ROLLOUT, "name": "vision-again"})
    own = run_cli("rollouts", "approve", "vision-again", env=env(server, carol))
    assert own.code != 0
    assert len(own.stderr.strip().splitlines()) == 1
    assert "carol requested this change and cannot approve it too" in own.stderr
    approved = run_cli("rollouts", "approve", "vision-again", env=env(server, approver))
    assert approved.code == 0, approved.stderr
    assert "approved by dave" in approved.stdout
    with server.client(carol) as client:
        client.rollout_command("vision-again", "abort")


def test_rules_refuse_with_the_policy_the_rule_and_why(
    server: ServerProcess, admin: FleetClient, trust: Trust, tmp_path: Path
) -> None:
    wide = refusal(lambda: admin.create_rollout({**ROLLOUT, "name": "all-at-once",
                                                 "strategy": {"waves": ["100%"]}}))  # fmt: skip
    assert (wide.status, wide.code) == (403, "policy_violation")
    assert wide.message == ("policy production, rule max_wave_size: a wave would update 2 "
                            "devices at once; the most allowed is 1 (add smaller waves to "
                            "strategy.waves)")  # fmt: skip
    admin.label_device("cam-0", {"env": "prod"}, [])
    labels = refusal(lambda: admin.label_device("cam-0", {"canary": "true"}, []))
    assert labels.code == "policy_violation"
    assert "device cam-0 would carry env=prod and canary=true together" in labels.message
    assert "canary" not in admin.get_device("cam-0")["labels"]
    staged_dir = tmp_path / "prod"
    once = refusal(lambda: publish(admin, staged_dir, "prod-vision", "1.0.0", build_mlp(),
                                   18082, trust.targets_keys[:1]))  # fmt: skip
    assert once.code == "policy_violation"
    assert "release prod-vision matches 'prod-*', which needs 2 signatures; it has 1" in (
        once.message
    )


def test_policy_test_explains_without_applying(
    server: ServerProcess, admin: FleetClient, trust: Trust, tmp_path: Path
) -> None:
    manifest = tmp_path / "rollout.yaml"
    manifest.write_text(yaml.safe_dump({**ROLLOUT, "name": "rehearsed",
                                        "strategy": {"waves": ["100%"]}}))  # fmt: skip
    before = (len(admin.list_rollouts()), admin.audit_tail(1)[-1]["seq"])
    result = run_cli("policy", "test", "-f", str(manifest), env=env(server, ADMIN_TOKEN))
    assert result.code == 1
    assert "rollout/rehearsed refused by 1 policy(ies)" in result.stdout
    assert "policy production, rule max_wave_size: a wave would update 2 devices" in (result.stdout)
    assert "needs a second operator's approval: policy production: it reaches 2" in (result.stdout)
    as_json = run_cli("policy", "test", "-f", str(manifest), "-o", "json",
                      env=env(server, ADMIN_TOKEN))  # fmt: skip
    assert json.loads(as_json.stdout)[0]["violations"][0]["rule"] == "max_wave_size"
    assert (len(admin.list_rollouts()), admin.audit_tail(1)[-1]["seq"]) == before


def test_a_root_rotation_waits_for_a_second_admin(
    server: ServerProcess, admin: FleetClient, trust: Trust
) -> None:
    second = operator(admin, "erin", role="admin")
    current = admin.tuf_metadata("1.root.json")
    new_key = generate_signing_key()
    expires = datetime.now(UTC) + timedelta(days=365)
    v2 = build_next_root(current, expires=expires, root=RoleKeys((new_key.public_key,)))
    v2 = sign_metadata(sign_metadata(v2, trust.root_keys[0]), new_key)
    pending = admin.rotate_root(json.loads(v2))["pending_change"]
    assert pending["state"] == "pending"
    assert admin.trust_status()["root_version"] == 1
    own = refusal(lambda: admin.approve_change(pending["id"]))
    assert (own.status, own.code) == (403, "own_change")
    listed = run_cli("changes", "list", env=env(server, second))
    assert pending["id"] in listed.stdout
    approved = run_cli("changes", "approve", pending["id"], env=env(server, second))
    assert approved.code == 0, approved.stderr
    assert "approved by erin" in approved.stdout
    assert admin.trust_status()["root_version"] == 2
    [rotation] = [r for r in admin.audit_tail(20) if r["action"] == "trust.rotate-root"]
    assert rotation["actor"].startswith("erin (")
    assert rotation["details"]["requested_by"].startswith("bootstrap-admin (")
    assert rotation["details"]["approved_by"] == rotation["actor"]
