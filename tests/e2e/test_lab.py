"""The Lab view with a stored rehearsal: `edgefleet lab rehearse --fleet-from URL --save`
against a real control plane with real agents, then the real rollout of the same manifest;
the page sets the prediction next to what happened (outcome, blast radius, time to each
wave's gate) and passes axe-core. Only operators who may start rollouts may store one."""

from __future__ import annotations

import json
import re
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from playwright.sync_api import Browser, expect

from edgefleet.artifacts.model_builder import build_mlp
from edgefleet.client import FleetClient
from edgefleet.localfleet import AgentProcess, ServerProcess, wait_for
from tests.cli_runner import run_cli
from tests.conftest import AgentFactory
from tests.e2e.conftest import axe_violations, log_in, new_context
from tests.releases import Trust, publish

FINAL = ("succeeded", "failed", "aborted", "rolled-back")
MANIFEST = {
    "kind": "Rollout",
    "metadata": {"name": "lab-compare"},
    "spec": {
        "release": "labm@1.0.0",
        "target": "kind=lab",
        "strategy": {"waves": [1, "100%"], "soak": "2s", "install_timeout": "5m"},
        "gates": {"install_failure_rate": {"max_percent": 0, "min_devices": 1}},
        "retries": {"max_attempts": 1},
        "on_failure": "rollback",
    },
}


def applied_generation(agent: AgentProcess) -> Any:
    return agent.state().get("applied_generation")


@pytest.mark.slow
def test_a_saved_rehearsal_sits_next_to_the_real_rollout(
    browser: Browser, server: ServerProcess, admin: FleetClient, agents: AgentFactory,
    tmp_path: Path, artifacts: Path,
) -> None:  # fmt: skip
    trust = Trust.install(admin)
    token = admin.create_enrollment_token(auto_approve=True)["token"]
    fleet = [agents(f"lab-{i}", token, {"kind": "lab"}) for i in range(2)]
    for agent in fleet:
        wait_for(partial(applied_generation, agent), what="agent in sync")
    wait_for(lambda: sum(d["status"] == "online" for d in admin.list_devices(selector="kind=lab"))
             == 2, what="fleet online")  # fmt: skip
    publish(admin, tmp_path / "release", "labm", "1.0.0", build_mlp(4, 8, 3, seed=5), "auto",  # type: ignore[arg-type]
            trust.targets_keys, window_s=2)  # fmt: skip
    manifest = tmp_path / "rollout.yaml"
    manifest.write_text(yaml.safe_dump(MANIFEST))

    rehearsed = run_cli("lab", "rehearse", "--fleet-from", server.url, "--token",
                        server.admin_token, "-f", str(manifest), "--hours", "1", "--seed", "1",
                        "--save", "-o", str(tmp_path / "rehearsal.json"),
                        timeout_s=120)  # fmt: skip
    assert rehearsed.code == 0, rehearsed.stderr
    [saved] = admin.list_rehearsals("lab-compare")
    assert f"rehearsal saved as {saved['id']} for rollout lab-compare" in rehearsed.stdout
    assert (saved["release"], saved["outcome"]) == ("labm@1.0.0", "succeeded")
    assert admin.get_rehearsal(saved["id"])["report"] == json.loads(
        (tmp_path / "rehearsal.json").read_text())  # fmt: skip
    [record] = [r for r in admin.audit_tail(20) if r["action"] == "rehearsal.save"]
    assert (record["target"], record["actor"]) == (f"rehearsal/{saved['id']}", saved["created_by"])
    viewer = admin.create_api_token("lab-viewer", "viewer")["token"]
    refused = httpx.post(f"{server.url}/v1/rehearsals", headers={
        "authorization": f"Bearer {viewer}"}, json={"rollout": "x", "report": {}})  # fmt: skip
    assert refused.status_code == 403

    rollout_id = admin.create_rollout(MANIFEST)["rollout"]["id"]
    wait_for(lambda: admin.get_rollout(rollout_id)["state"] in FINAL, timeout_s=180,
             interval_s=0.5, what=f"rollout {rollout_id} finished")  # fmt: skip
    assert admin.get_rollout(rollout_id)["state"] == "succeeded"

    context = new_context(browser, bypass_csp=True)
    page = context.new_page()
    try:
        log_in(page, server.url, server.admin_token)
        page.goto(f"{server.url}/ui#/lab")
        side_by_side = page.get_by_role(
            "table", name=f"Rehearsal {saved['id']} next to rollout {rollout_id}"
        )
        expect(side_by_side).to_be_visible(timeout=15_000)
        outcome = side_by_side.get_by_role("row", name="Outcome", exact=False)
        expect(outcome.get_by_text("succeeded", exact=True)).to_have_count(2)
        finished = side_by_side.get_by_role("row", name="Finished after", exact=False)
        for cell in finished.get_by_role("cell").all()[1:]:  # predicted, real: both ended
            expect(cell).to_have_text(re.compile(r"^\d+ (s|min)"))
        blast = side_by_side.get_by_role("row", name="Blast radius", exact=False)
        expect(blast).to_contain_text("2 of 2 (100%)")
        for wave in ("Wave 1", "Wave 2"):
            row = side_by_side.get_by_role("row", name=re.compile(f"^{wave} "))
            expect(row).to_contain_text("(pass)")
        expect(page.get_by_role("table", name="Rehearsals, newest first")).to_contain_text(
            saved["id"])  # fmt: skip
        page.wait_for_load_state("networkidle")
        page.screenshot(path=str(artifacts / "lab-compared.png"), full_page=True)
        problems = axe_violations(page)
        assert not problems, json.dumps(problems, indent=1)
    finally:
        context.close()
