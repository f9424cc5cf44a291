"""The web dashboard in a real chromium against a real control plane and real agents.

- an operator logs in with an API token and watches devices come online without reloading
  (server-sent events);
- a rollout started from the dashboard goes out in waves, shown live; a bad release (a
  model that answers NaN, so every device's installer refuses it) trips the install-failure
  gate and the page says which gate, what it measured and against which threshold;
- a viewer sees no action button, and a POST forged with the viewer's session is refused,
  as is a change without the dashboard's CSRF header or from another origin;
- every main view passes axe-core with no serious or critical violation, on a laptop and
  a tablet; screenshots of each land in tests/e2e/artifacts/.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from edgefleet.artifacts.model_builder import build_mlp, build_nan_mlp
from edgefleet.client import FleetClient
from edgefleet.localfleet import AgentProcess, ServerProcess, wait_for
from tests.conftest import AgentFactory
from tests.e2e.conftest import LAPTOP, TABLET, axe_violations, log_in, new_context
from tests.releases import Trust, publish

FLEET = {"fleet": "e2e", "region": "eu"}
AGENTS = ("e2e-cam-1", "e2e-cam-2")
SERVICE = {
    "command": ["{python}", "-m", "edgefleet.examples.inference_server",
                "--model", "{artifact:e2e-model}", "--port", "{port}"],
    "port": "auto",
    "health": {"http": "/healthz", "window_s": 1, "interval_s": 0.5},
}  # fmt: skip
FINAL = ("succeeded", "failed", "aborted", "rolled-back")
started: dict[str, str] = {}  # rollouts the dashboard started, by what they were for


class Fleet:
    """The module's two agents, started by the first test that needs them."""

    def __init__(self, server: ServerProcess, factory: AgentFactory) -> None:
        self.server = server
        self.factory = factory
        self.agents: list[AgentProcess] = []

    def start(self) -> list[AgentProcess]:
        if not self.agents:
            with self.server.client() as client:
                token = client.create_enrollment_token(auto_approve=True)["token"]
            self.agents = [self.factory(name, token, FLEET) for name in AGENTS]
        return self.agents


@pytest.fixture(scope="module")
def fleet(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    factory = AgentFactory(server, tmp_path_factory.mktemp("e2e-agents"))
    yield Fleet(server, factory)
    for agent in factory.agents:
        agent.stop()


@pytest.fixture(scope="module")
def releases(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    workdir = tmp_path_factory.mktemp("e2e-releases")
    with server.client() as client:
        trust = Trust.install(client)
        for version, model in (("1.0.0", build_mlp(4, 8, 3, seed=21)),
                               ("2.0.0", build_nan_mlp(4, 8, 3, seed=22))):  # fmt: skip
            publish(client, workdir, "e2e", version, model, 0, trust.targets_keys,
                    manifest=SERVICE)  # fmt: skip
    return {"good": "e2e@1.0.0", "bad": "e2e@2.0.0"}


@pytest.fixture
def page(browser: Browser, server: ServerProcess) -> Iterator[Page]:
    context = new_context(browser)
    opened = context.new_page()
    log_in(opened, server.url, server.admin_token)
    yield opened
    context.close()


def shoot(page: Page, artifacts: Path, name: str) -> None:
    page.screenshot(path=str(artifacts / f"{name}.png"), full_page=True)


def wait_final(admin: FleetClient, rollout_id: str) -> dict[str, Any]:
    def final() -> dict[str, Any] | None:
        status = admin.get_rollout(rollout_id)
        return status if status["state"] in FINAL else None

    try:
        status = wait_for(final, timeout_s=120, interval_s=0.5,
                          what=f"rollout {rollout_id} to end")  # fmt: skip
    except TimeoutError:
        now = admin.get_rollout(rollout_id)
        raise AssertionError(
            f"rollout {now['name']} still {now['state']}: {now['reason']}; devices {now['devices']}"
        ) from None
    assert status is not None
    return status


def test_log_in_and_watch_devices_come_online_live(
    page: Page, server: ServerProcess, fleet: Fleet, artifacts: Path
) -> None:
    online = page.locator('[data-count="count-online"]')
    expect(online).to_have_text("0")
    cookie = next(c for c in page.context.cookies() if c["name"] == "edgefleet_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert server.admin_token not in page.url and cookie["value"] != server.admin_token
    page.evaluate("() => { window.notReloaded = true; }")
    fleet.start()
    expect(online).to_have_text("2", timeout=30_000)
    expect(page.locator("#live-state")).to_have_text("live")
    assert page.evaluate("() => window.notReloaded === true"), "the page reloaded"
    expect(page.locator("#trouble")).to_contain_text("Where it hurts now")
    expect(page.get_by_role("table", name="Devices by region and site")).to_contain_text("eu")
    shoot(page, artifacts, "overview")
    page.locator("#count-online").click()
    expect(page.get_by_role("table", name="Devices 1", exact=False)).to_contain_text("e2e-cam-1")
    shoot(page, artifacts, "devices")
    assert server.admin_token not in server.log()


def start_rollout_in_ui(page: Page, name: str, release: str) -> str:
    page.get_by_role("link", name="Rollouts").click()
    page.get_by_label("Name").fill(name)
    page.get_by_label("Release (signed)").select_option(release)
    page.get_by_label("Devices (label selector)").fill("fleet=e2e")
    page.get_by_label("Waves").fill("1, 100%")
    page.get_by_label("Soak per wave").fill("2s")
    page.get_by_label("Install attempts per device").fill("1")
    page.get_by_role("button", name="Start rollout").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text(f"Start rolling out {release}")
    dialog.get_by_role("button", name="Start").click()
    page.wait_for_url("**/ui#/rollouts/ro-*")
    return page.url.rsplit("/", 1)[1]


def test_a_rollout_started_in_the_ui_shows_its_waves_and_a_bad_release_trips_a_gate(
    page: Page, admin: FleetClient, fleet: Fleet, releases: dict[str, str], artifacts: Path
) -> None:
    agents = fleet.start()
    wait_for(lambda: all(a.state().get("applied_generation") for a in agents), timeout_s=60,
             what="agents in sync")  # fmt: skip
    good = start_rollout_in_ui(page, "ui-good", releases["good"])
    started["good"] = good
    heading = page.get_by_role("heading", level=1)
    expect(heading).to_contain_text("ui-good")
    # Live: the page follows the rollout through its waves to the end without a reload.
    status = wait_final(admin, good)
    assert status["state"] == "succeeded", status["reason"]
    expect(heading).to_contain_text("succeeded")
    waves = page.locator(".wave")
    expect(waves).to_have_count(2)
    expect(waves.nth(0)).to_contain_text("1 installed")
    expect(waves.nth(1)).to_contain_text("1 installed")
    expect(page.get_by_role("table", name="Wave 1 gates: pass", exact=False)).to_contain_text(
        "install_failure_rate"
    )
    shoot(page, artifacts, "rollout-good")

    bad = start_rollout_in_ui(page, "ui-bad", releases["bad"])
    started["bad"] = bad
    status = wait_final(admin, bad)
    assert status["state"] == "rolled-back", status["reason"]
    expect(heading).to_contain_text("rolled-back")
    failed = next(r for r in status["gates"][-1]["results"] if r["verdict"] == "fail")
    assert failed["gate"] == "install_failure_rate"
    stopped = page.get_by_text("Stopped by a failed gate in wave 1")
    expect(stopped).to_contain_text(failed["reason"])
    gates = page.get_by_role("table", name="Wave 1 gates: fail", exact=False)
    expect(gates).to_contain_text("install_failure_rate")
    expect(gates).to_contain_text("fail")
    expect(gates).to_contain_text("≤ 0%")
    expect(page.locator("#blast").locator("..")).to_contain_text("Devices touched")
    expect(page.get_by_role("table", name="Events")).to_contain_text("start-rollback")
    shoot(page, artifacts, "rollout-bad")
    # The device page tells the same story from the device's side.
    canary = next(d for d in status["devices"] if d["attempts"] > 0)
    page.get_by_role("link", name=canary["name"]).first.click()
    expect(page.get_by_role("table", name="Rollouts that targeted this device")).to_contain_text(
        "ui-bad"
    )
    history = page.get_by_role("table", name="Release history", exact=False)
    expect(history).to_contain_text("ui-bad")
    expect(history).to_contain_text("revert-release")
    shoot(page, artifacts, "device")


def finished_rollout(admin: FleetClient, fleet: Fleet, releases: dict[str, str]) -> str:
    """A finished rollout: the one the dashboard started, or one started here alone."""
    if "bad" not in started:
        fleet.start()
        wait_for(lambda: len(admin.list_devices("fleet=e2e", status="online")) == 2,
                 timeout_s=60, what="agents online")  # fmt: skip
        manifest = {"kind": "Rollout", "metadata": {"name": "api-bad"},
                    "spec": {"release": releases["bad"], "target": "fleet=e2e",
                             "strategy": {"waves": [1, "100%"], "soak": "2s"},
                             "retries": {"max_attempts": 1},
                             "gates": {"install_failure_rate": {"max_percent": 0,
                                                                "min_devices": 1}}}}  # fmt: skip
        started["bad"] = admin.create_rollout(manifest)["rollout"]["id"]
    wait_final(admin, started["bad"])
    return started["bad"]


def test_a_viewer_sees_no_action_and_forged_changes_are_refused(
    browser: Browser, server: ServerProcess, admin: FleetClient, fleet: Fleet,
    releases: dict[str, str], artifacts: Path,
) -> None:  # fmt: skip
    rollout_id = finished_rollout(admin, fleet, releases)
    viewer = admin.create_api_token("e2e-viewer", "viewer")["token"]
    context = new_context(browser)
    page = context.new_page()
    try:
        log_in(page, server.url, viewer)
        expect(page.locator("#who-name")).to_contain_text("(viewer)")
        page.goto(f"{server.url}/ui#/rollouts")
        expect(page.get_by_role("heading", name="Rollouts")).to_be_visible()
        expect(page.get_by_role("button", name="Start rollout")).to_have_count(0)
        page.goto(f"{server.url}/ui#/rollouts/{rollout_id}")
        expect(page.get_by_role("heading", level=1)).to_contain_text(
            "api-bad" if "good" not in started else "ui-bad"
        )
        expect(page.locator("[data-command]")).to_have_count(0)
        device = fleet.start()[0].device_id
        page.goto(f"{server.url}/ui#/devices/{device}")
        expect(page.get_by_role("heading", name="Identity and enrollment")).to_be_visible()
        expect(page.get_by_role("button", name="Revoke")).to_have_count(0)
        shoot(page, artifacts, "viewer-rollout")
        forged = page.evaluate(
            """async (id) => {
                const r = await fetch(`/v1/rollouts/${id}/rollback`, {method: "POST",
                    headers: {"x-edgefleet-csrf": "1", "content-type": "application/json"},
                    body: "{}"});
                return {status: r.status, body: await r.json()};
            }""",
            rollout_id,
        )
        assert forged["status"] == 403
        assert forged["body"]["error"]["code"] == "insufficient_role"
        session = next(c["value"] for c in context.cookies() if c["name"] == "edgefleet_session")
        page.get_by_role("button", name="Log out").click()
        expect(page.get_by_role("heading", name="Log in to edgefleet")).to_be_visible()
        after = httpx.get(f"{server.url}/v1/whoami", cookies={"edgefleet_session": session})
        assert after.status_code == 401 and after.json()["error"]["code"] == "token_revoked"
    finally:
        context.close()

    # An operator's session cannot be ridden by another site: no CSRF header, or the header
    # from another origin, is refused before anything happens.
    answer = httpx.post(f"{server.url}/ui/session", json={"token": server.admin_token})
    assert answer.status_code == 201
    cookies = {"edgefleet_session": answer.cookies["edgefleet_session"]}
    url = f"{server.url}/v1/rollouts/{rollout_id}/pause"
    for headers in ({}, {"x-edgefleet-csrf": "1", "origin": "https://evil.example"}):
        refused = httpx.post(url, json={}, cookies=cookies, headers=headers)
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["code"] == "csrf_check_failed"
    wrong = httpx.post(f"{server.url}/ui/session", json={"token": "efa_not-a-token"})
    assert wrong.status_code == 401 and "set-cookie" not in wrong.headers


MAIN_VIEWS = ["", "devices", "devices/{device}", "rollouts", "rollouts/{rollout}",
              "workloads", "releases", "audit", "lab"]  # fmt: skip


def test_every_main_view_passes_axe_on_a_laptop_and_a_tablet(
    browser: Browser, server: ServerProcess, admin: FleetClient, fleet: Fleet,
    releases: dict[str, str], artifacts: Path,
) -> None:  # fmt: skip
    rollout_id = finished_rollout(admin, fleet, releases)
    device = fleet.start()[0].device_id or ""
    problems = []
    for size, viewport in (("laptop", LAPTOP), ("tablet", TABLET)):
        context = new_context(browser, viewport, bypass_csp=True)
        page = context.new_page()
        try:
            log_in(page, server.url, server.admin_token)
            for view in MAIN_VIEWS:
                route = view.format(device=device, rollout=rollout_id)
                page.goto(f"{server.url}/ui#/{route}")
                page.locator("main h1").wait_for()
                page.wait_for_load_state("networkidle")
                name = (view.split("/")[0] or "overview") + ("-detail" if "/" in view else "")
                shoot(page, artifacts, f"{size}-{name}")
                for v in axe_violations(page):
                    problems.append(
                        f"{size} #{route}: {v['impact']} {v['id']} ({v['help']}) "
                        f"at {json.dumps(v['nodes'])}"
                    )
        finally:
            context.close()
    assert not problems, "\n".join(problems)
