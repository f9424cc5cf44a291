"""Governance against a real control plane: API tokens bound to a device scope.

An operator token scoped to `region=eu` sets a release on an eu device and is refused on a
us device with the reason (403 `out_of_scope` naming the device and the scope), through the
API and the CLI (one line, non-zero exit); relabelling cannot move a device out of (or
into) its scope; a rollout whose selector reaches outside the scope is refused even where
every device it matches today is in scope, and so are commands on such a rollout; a scoped
admin mints only tokens within its scope.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest

from edgefleet.artifacts.model_builder import build_mlp
from edgefleet.client import FleetClient
from edgefleet.errors import ApiError
from edgefleet.localfleet import ServerProcess
from tests.cli_runner import run_cli
from tests.device_requests import RawDevice
from tests.releases import Trust, publish


@pytest.fixture(scope="module")
def fleet(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Two approved cameras, one per region, and a signed release; device name -> id."""
    with server.client() as admin:
        trust = Trust.install(admin)
        publish(admin, tmp_path_factory.mktemp("release"), "vision", "1.0.0",
                build_mlp(), 18080, trust.targets_keys)  # fmt: skip
        token = admin.create_enrollment_token(auto_approve=True)["token"]
        ids = {}
        for name, region in (("cam-eu", "eu"), ("cam-us", "us")):
            device = RawDevice(server.url)
            assert device.enroll(token, name, {"kind": "camera", "region": region}).is_success
            ids[name] = device.id
        return ids


@pytest.fixture(scope="module")
def eu_token(server: ServerProcess) -> str:
    with server.client() as admin:
        created = admin.create_api_token("eu-operator", "operator", scope="region=eu")
    assert created["scope"] == "region=eu"
    return str(created["token"])


@pytest.fixture
def eu(server: ServerProcess, eu_token: str) -> Iterator[FleetClient]:
    with server.client(eu_token) as client:
        yield client


def test_whoami_shows_the_scope(eu: FleetClient) -> None:
    assert eu.whoami()["scope"] == "region=eu"


def test_a_scoped_operator_sets_a_release_in_scope_and_is_refused_outside(
    fleet: dict[str, str], eu: FleetClient
) -> None:
    assigned = eu.assign_release("vision", "1.0.0", device="cam-eu")
    assert assigned["assigned"] == [fleet["cam-eu"]]
    with pytest.raises(ApiError) as refused:
        eu.assign_release("vision", "1.0.0", device="cam-us")
    assert (refused.value.status, refused.value.code) == (403, "out_of_scope")
    assert refused.value.message == (
        "device cam-us is outside scope 'region=eu' (its labels: kind=camera,region=us)"
    )
    with pytest.raises(ApiError, match="selector 'kind=camera' reaches outside scope"):
        eu.assign_release("vision", "1.0.0", selector="kind=camera")


def test_the_cli_refuses_in_one_line(
    server: ServerProcess, fleet: dict[str, str], eu_token: str
) -> None:
    env = {"EDGEFLEET_SERVER": server.url, "EDGEFLEET_TOKEN": eu_token}
    result = run_cli("devices", "set-release", "vision@1.0.0", "-d", "cam-us", env=env)
    assert result.code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "device cam-us is outside scope 'region=eu'" in lines[0]


def test_relabelling_cannot_move_a_device_across_the_scope(
    fleet: dict[str, str], eu: FleetClient, admin: FleetClient
) -> None:
    assert eu.label_device("cam-eu", {"site": "paris"}, [])["labels"]["site"] == "paris"
    with pytest.raises(ApiError, match="device cam-eu is outside scope 'region=eu'"):
        eu.label_device("cam-eu", {"region": "us"}, [])
    with pytest.raises(ApiError, match="device cam-us is outside scope"):
        eu.label_device("cam-us", {"region": "eu"}, [])
    assert admin.get_device("cam-us")["labels"]["region"] == "us"


def test_a_rollout_whose_selector_reaches_outside_is_refused(
    fleet: dict[str, str], eu: FleetClient
) -> None:
    # Every camera with site=paris is in eu today, yet a us camera labelled site=paris
    # tomorrow would match: the selector itself must stay within the scope.
    with pytest.raises(ApiError) as refused:
        eu.create_rollout({"release": "vision@1.0.0", "target": "site=paris"}, dry_run=True)
    assert refused.value.code == "out_of_scope"
    assert "nothing in it requires region=eu" in refused.value.message
    planned = eu.create_rollout(
        {"release": "vision@1.0.0", "target": "region=eu,kind=camera"}, dry_run=True
    )
    plan = planned.get("plan")
    assert plan is not None
    assert [d["name"] for d in plan["devices"]] == ["cam-eu"]


def test_a_scoped_operator_commands_only_rollouts_within_its_scope(
    fleet: dict[str, str], eu: FleetClient, admin: FleetClient
) -> None:
    admin.create_rollout({"name": "fleet-wide", "release": "vision@1.0.0",
                          "target": "kind=camera"})  # fmt: skip
    refused = refusal(lambda: eu.rollout_command("fleet-wide", "abort"))
    assert (refused.status, refused.code) == (403, "out_of_scope")
    assert "selector 'kind=camera' reaches outside scope 'region=eu'" in refused.message
    admin.rollout_command("fleet-wide", "abort")
    eu.create_rollout({"name": "eu-only", "release": "vision@1.0.0", "target": "region=eu"})
    assert eu.rollout_command("eu-only", "abort")["state"] == "aborted"


def test_a_scoped_operator_places_workloads_only_within_its_scope(
    fleet: dict[str, str], eu: FleetClient
) -> None:
    def workload(selector: str) -> dict[str, object]:
        return {"kind": "Workload", "metadata": {"name": "detector"},
                "spec": {"artifacts": ["vision@1.0.0"], "constraints": {"selector": selector},
                         "resources": {"cpu_millicores": 100, "memory_mb": 64}}}  # fmt: skip

    refused = refusal(lambda: eu.apply_workload(workload("kind=camera"), dry_run=True))
    assert (refused.status, refused.code) == (403, "out_of_scope")
    assert eu.apply_workload(workload("region=eu,kind=camera"), dry_run=True)["outcome"] == (
        "created"
    )


def test_a_token_scoped_to_a_group_follows_the_group(
    server: ServerProcess, fleet: dict[str, str], admin: FleetClient
) -> None:
    admin.create_group("eu-cams", "region=eu,kind=camera")
    created = admin.create_api_token("eu-cams-operator", "operator", scope="group:eu-cams")
    assert created["scope"] == "group:eu-cams"
    with server.client(created["token"]) as scoped:
        assert scoped.assign_release("vision", "1.0.0", device="cam-eu")["assigned"]
        refused = refusal(lambda: scoped.assign_release("vision", "1.0.0", device="cam-us"))
        assert "device cam-us is outside scope 'region=eu,kind=camera'" in refused.message
        admin.delete_group("eu-cams")
        gone = refusal(scoped.whoami)
        assert (gone.status, gone.code) == (401, "scope_group_missing")
    missing = refusal(lambda: admin.create_api_token("x", "operator", scope="group:nope"))
    assert (missing.status, missing.code) == (404, "group_not_found")


def test_a_dashboard_session_keeps_its_tokens_scope(
    server: ServerProcess, fleet: dict[str, str], eu_token: str
) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as browser:
        assert browser.post("/ui/session", json={"token": eu_token}).status_code == 201
        headers = {"x-edgefleet-csrf": "1"}
        assert browser.get("/v1/whoami").json()["scope"] == "region=eu"
        refused = browser.post("/v1/releases/vision/1.0.0/assign", headers=headers,
                               json={"device": "cam-us"})  # fmt: skip
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "out_of_scope"


def test_a_scoped_operator_creates_ddi_devices_only_inside_its_scope(eu: FleetClient) -> None:
    refused = refusal(lambda: eu.create_ddi_target("gw-us", {"region": "us"}))
    assert (refused.status, refused.code) == (403, "out_of_scope")
    assert "device gw-us is outside scope 'region=eu'" in refused.message
    assert eu.create_ddi_target("gw-eu", {"region": "eu"})["name"] == "gw-eu"


def test_a_scoped_operator_cannot_let_devices_in_unjudged(eu: FleetClient) -> None:
    for create in (lambda: eu.create_enrollment_token(auto_approve=True),
                   lambda: eu.create_ddi_gateway_token(auto_approve=True)):  # fmt: skip
        refused = refusal(create)
        assert (refused.status, refused.code) == (403, "out_of_scope")
        assert "a token scoped to 'region=eu' cannot create auto-approving" in refused.message
    # Devices enrolled with a token that does not approve them wait for an approval, which
    # is judged against the scope.
    assert eu.create_enrollment_token()["token"]
    assert eu.create_ddi_gateway_token()["token"]


def refusal(call: Callable[[], object]) -> ApiError:
    with pytest.raises(ApiError) as refused:
        call()
    return refused.value


def test_a_scoped_admin_mints_only_tokens_within_its_scope(
    admin: FleetClient, server: ServerProcess
) -> None:
    scoped = admin.create_api_token("eu-admin", "admin", scope="region=eu")["token"]
    with server.client(scoped) as eu_admin:
        narrower = eu_admin.create_api_token("paris", "operator", scope="region=eu,site=paris")
        assert narrower["scope"] == "region=eu,site=paris"
        with pytest.raises(ApiError, match="cannot mint an unscoped token"):
            eu_admin.create_api_token("anywhere", "operator")
        with pytest.raises(ApiError, match="reaches outside scope 'region=eu'"):
            eu_admin.create_api_token("us", "operator", scope="region=us")


def test_unscoped_tokens_act_on_the_whole_fleet(fleet: dict[str, str], admin: FleetClient) -> None:
    assigned = admin.assign_release("vision", "1.0.0", selector="kind=camera")
    assert sorted(assigned["assigned"]) == sorted(fleet.values())
