"""hawkBit DDI end to end: a real control plane and the RAUC project's DDI client
(`rauc_hawkbit.ddi.client.DDIClient`, from PyPI, unmodified), driven the way its own
application (`RaucDBUSDDIClient`) drives it: poll, read the deployment, download the artifact
and check its md5, send feedback.

- a DDI target created with the CLI polls, sends configData (its labels), downloads with the
  hash check (and `.MD5SUM`, a Range), reports feedback that becomes its release status;
- a gated rollout over DDI targets advances on success feedback and rolls back on failure
  feedback; its deployments say `attempt` and the maintenance window;
- a cancel (a re-assignment while an action runs), a GatewayToken enrolling a target that
  waits for approval;
- bad input: malformed feedback, unknown action ids, another target's path, another
  tenant's, a release DDI devices may not get: each a precise 4xx, nothing changed.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from rauc_hawkbit.ddi.cancel_action import CancelStatusExecution, CancelStatusResult
from rauc_hawkbit.ddi.client import APIError, ConfigStatusExecution, ConfigStatusResult, DDIClient
from rauc_hawkbit.ddi.deployment_base import DeploymentStatusExecution, DeploymentStatusResult

from edgefleet.cli.releases import push_file
from edgefleet.client import FleetClient
from edgefleet.core.updates.release import ArtifactKind
from edgefleet.localfleet import ServerProcess, wait_for
from edgefleet.security.tuf_metadata import sign_metadata
from tests.cli_runner import run_cli
from tests.conftest import ADMIN_TOKEN
from tests.releases import Trust

# The patterns RaucDBUSDDIClient reads the links with.
DEPLOYMENT_HREF = re.compile(r"/deploymentBase/(.+)\?c=(.+)$")
MODULE_HREF = re.compile(r"/softwaremodules/(.+)/artifacts/(.+)$")
FINAL = ("succeeded", "failed", "aborted", "rolled-back")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A control plane whose DDI devices may get release `fw`, polling every second."""
    env = {"EDGEFLEET_DDI_RELEASES": "fw", "EDGEFLEET_HEARTBEAT_INTERVAL_S": "1"}
    process = ServerProcess(tmp_path_factory.mktemp("server") / "data", ADMIN_TOKEN, env)
    process.start()
    yield process
    process.stop()


def publish(client: FleetClient, trust: Trust, workdir: Path, name: str, version: str) -> bytes:
    """A signed release of one file (a firmware bundle); returns its bytes."""
    workdir.mkdir(parents=True, exist_ok=True)
    content = f"{name} {version} bundle ".encode() * 300
    path = workdir / f"{name}-{version}.raucb"
    path.write_bytes(content)
    push_file(client, path, f"{name}-bundle", version, ArtifactKind.FILE, [])
    client.create_release(name, version, [f"{name}-bundle@{version}"])
    staged = client.stage_release(name, version)
    for key in trust.targets_keys:
        staged = sign_metadata(staged, key)
    client.publish_release(name, version, staged)
    return content


@pytest.fixture(scope="module")
def bundles(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory
            ) -> dict[str, bytes]:  # fmt: skip
    workdir = tmp_path_factory.mktemp("ddi-releases")
    with server.client() as client:
        trust = Trust.install(client)
        return {f"{name}@{version}": publish(client, trust, workdir, name, version)
                for name, version in (("fw", "1.0.0"), ("fw", "2.0.0"), ("fw", "3.0.0"),
                                      ("vision", "1.0.0"))}  # fmt: skip


def cli_env(server: ServerProcess) -> dict[str, str]:
    return {"EDGEFLEET_SERVER": server.url, "EDGEFLEET_TOKEN": ADMIN_TOKEN}


def create_target(server: ServerProcess, controller_id: str, *labels: str) -> dict[str, Any]:
    args = [a for label in labels for a in ("--label", label)]
    result = run_cli("ddi", "targets", "create", controller_id, *args, "-o", "json",
                     env=cli_env(server))  # fmt: skip
    assert result.code == 0, result.stderr
    target: dict[str, Any] = result.json()
    return target


def host_of(server: ServerProcess) -> str:
    """The client's `host` setting: DDIClient puts `/{tenant}/controller/...` after it."""
    return server.url.removeprefix("http://") + "/ddi"


class RaucLikeApp:
    """What RaucDBUSDDIClient does with the library, without D-Bus and RAUC: the install
    either succeeds or fails as `installs` says."""

    def __init__(self, ddi: DDIClient, workdir: Path, installs: Callable[[str], bool]):
        self.ddi = ddi
        self.workdir = workdir
        self.installs = installs
        self.deployments: list[dict[str, Any]] = []

    async def poll_once(self) -> dict[str, Any]:
        base: dict[str, Any] = await self.ddi()
        links = base.get("_links", {})
        if "configData" in links:
            await self.ddi.configData(ConfigStatusExecution.closed, ConfigStatusResult.success,
                                      hw_revision="rev2")  # fmt: skip
        if "deploymentBase" in links:
            await self.deploy(links["deploymentBase"]["href"])
        return base

    async def deploy(self, href: str) -> None:
        match = DEPLOYMENT_HREF.search(href)
        assert match is not None, href
        action_id, resource = match.groups()
        info = await self.ddi.deploymentBase[action_id](resource)
        self.deployments.append(info)
        chunk = info["deployment"]["chunks"][0]
        artifact = chunk["artifacts"][0]
        link = MODULE_HREF.search(artifact["_links"]["download"]["href"])
        assert link is not None, artifact["_links"]
        module, file_name = link.groups()
        target = self.workdir / file_name
        md5 = await self.ddi.softwaremodules[module].artifacts[file_name](str(target))
        sha256 = hashlib.sha256(target.read_bytes()).hexdigest()
        verified = md5 == artifact["hashes"]["md5"] and sha256 == artifact["hashes"]["sha256"]
        action = self.ddi.deploymentBase[action_id]
        await action.feedback(DeploymentStatusExecution.proceeding, DeploymentStatusResult.none,
                              ["installing"], cnt=1, of=2)  # fmt: skip
        if verified and self.installs(chunk["version"]):
            await action.feedback(DeploymentStatusExecution.closed,
                                  DeploymentStatusResult.success, ["installed"])  # fmt: skip
        else:
            await action.feedback(DeploymentStatusExecution.closed,
                                  DeploymentStatusResult.failure,
                                  [f"install of {chunk['version']} failed"])  # fmt: skip


def run_with_client(server: ServerProcess, target: dict[str, Any], body: Any) -> Any:
    """Run `body(ddi)` with a DDIClient configured for `target`."""

    async def main() -> Any:
        async with aiohttp.ClientSession() as session:
            ddi = DDIClient(session, host_of(server), False, target["token"], "default",
                            target["controller_id"])  # fmt: skip
            return await body(ddi)

    return asyncio.run(main())


def test_rauc_client_polls_downloads_with_hash_check_and_reports(
    server: ServerProcess, admin: FleetClient, bundles: dict[str, bytes], tmp_path: Path
) -> None:
    target = create_target(server, "rauc-1", "kind=gateway")
    assert target["token"].startswith("eft_") and target["enrollment"] == "approved"
    admin.assign_release("fw", "1.0.0", device=target["id"])

    async def body(ddi: DDIClient) -> tuple[dict[str, Any], dict[str, Any], RaucLikeApp]:
        app = RaucLikeApp(ddi, tmp_path, lambda version: True)
        first = await app.poll_once()
        return first, await ddi(), app

    first, second, app = run_with_client(server, target, body)
    assert first["config"]["polling"]["sleep"] == "00:00:01"
    assert {"deploymentBase", "configData"} <= set(first["_links"])
    deployment = app.deployments[0]["deployment"]
    assert (deployment["download"], deployment["update"]) == ("forced", "forced")
    assert "maintenanceWindow" not in deployment  # no rollout, no window
    artifact = deployment["chunks"][0]["artifacts"][0]
    content = bundles["fw@1.0.0"]
    assert artifact["hashes"] == {"sha1": hashlib.sha1(content).hexdigest(),
                                  "md5": hashlib.md5(content).hexdigest(),
                                  "sha256": hashlib.sha256(content).hexdigest()}  # fmt: skip
    assert (tmp_path / artifact["filename"]).read_bytes() == content
    # Done: nothing more to do, the installed action is named, configData was taken.
    assert set(second["_links"]) == {"installedBase"}

    device = admin.get_device(target["id"])
    assert device["labels"] == {"kind": "gateway", "hw_revision": "rev2"}
    status = device["release_status"]
    assert (status["name"], status["version"], status["state"]) == ("fw", "1.0.0", "installed")
    assert status["active"] == {"name": "fw", "version": "1.0.0"}
    assert device["status"] == "online" and device["in_sync"]
    listed = run_cli("devices", "list", "-o", "json", env=cli_env(server)).json()
    assert {d["id"] for d in listed} >= {target["id"]}

    # .MD5SUM and ranges, as other clients (SWUpdate, curl) use them.
    href = artifact["_links"]["download"]["href"]
    auth = {"authorization": f"TargetToken {target['token']}"}
    md5sum = httpx.get(artifact["_links"]["md5sum"]["href"], headers=auth)
    assert md5sum.text == f"{hashlib.md5(content).hexdigest()}  {artifact['filename']}\n"
    ranged = httpx.get(href, headers={**auth, "range": "bytes=10-19"})
    assert ranged.status_code == 206 and ranged.content == content[10:20]
    installed = httpx.get(second["_links"]["installedBase"]["href"], headers=auth).json()
    assert installed["deployment"]["chunks"][0]["version"] == "1.0.0"


def rollout_manifest(name: str, release: str) -> dict[str, Any]:
    return {"kind": "Rollout", "metadata": {"name": name}, "spec": {
        "release": release, "target": "fleet=ddi-rollout",
        "strategy": {"waves": [1, "100%"], "soak": "1s", "max_unavailable": "100%",
                     "install_timeout": "2m"},
        "retries": {"max_attempts": 1},
        "gates": {"install_failure_rate": {"max_percent": 0, "min_devices": 1},
                  "insufficient_data": {"wait": "20s", "then": "fail"}},
        "maintenance_windows": [{"cron": "* * * * *", "duration": "1h", "time_zone": "UTC"}],
    }}  # fmt: skip


def drive_until_final(server: ServerProcess, admin: FleetClient, apps_of: list[dict[str, Any]],
                      rollout_id: str, workdir: Path, installs: Callable[[str], bool]
                      ) -> tuple[dict[str, Any], list[RaucLikeApp]]:  # fmt: skip
    """Every target polls (as its client would, each second) until the rollout ends."""

    async def main() -> tuple[dict[str, Any], list[RaucLikeApp]]:
        async with aiohttp.ClientSession() as session:
            apps = [RaucLikeApp(DDIClient(session, host_of(server), False, t["token"],
                                          "default", t["controller_id"]),
                                workdir, installs) for t in apps_of]  # fmt: skip
            for _ in range(180):
                for app in apps:
                    await app.poll_once()
                status = await asyncio.to_thread(admin.get_rollout, rollout_id)
                if status["state"] in FINAL:
                    return status, apps
                await asyncio.sleep(0.5)
            raise AssertionError(f"rollout {rollout_id} did not finish: {status['state']}")

    return asyncio.run(main())


def test_gated_rollout_advances_on_success_and_rolls_back_on_failure(
    server: ServerProcess, admin: FleetClient, bundles: dict[str, bytes], tmp_path: Path
) -> None:
    targets = [create_target(server, f"fleet-{i}", "fleet=ddi-rollout") for i in range(3)]
    good = admin.create_rollout(rollout_manifest("ddi-fw-2", "fw@2.0.0"))["rollout"]
    status, apps = drive_until_final(server, admin, targets, good["id"], tmp_path,
                                     lambda version: True)  # fmt: skip
    assert status["state"] == "succeeded", status
    first = apps[0].deployments[0]["deployment"] if apps[0].deployments else \
        next(a.deployments[0]["deployment"] for a in apps if a.deployments)  # fmt: skip
    assert (first["update"], first["maintenanceWindow"]) == ("attempt", "available")
    for t in targets:
        assert admin.get_device(t["id"])["release_status"]["version"] == "2.0.0"

    bad = admin.create_rollout(rollout_manifest("ddi-fw-3", "fw@3.0.0"))["rollout"]
    status, apps = drive_until_final(server, admin, targets, bad["id"], tmp_path,
                                     lambda version: version != "3.0.0")  # fmt: skip
    assert status["state"] == "rolled-back", status
    touched = [app for app in apps if app.deployments]
    assert len(touched) == 1  # only the canary got 3.0.0, then 2.0.0 again
    versions = [d["deployment"]["chunks"][0]["version"] for d in touched[0].deployments]
    assert versions == ["3.0.0", "2.0.0"]
    for t in targets:
        status_of = admin.get_device(t["id"])["release_status"]
        assert (status_of["version"], status_of["state"]) == ("2.0.0", "installed")


def test_a_reassigned_running_action_is_cancelled_first(
    server: ServerProcess, admin: FleetClient, bundles: dict[str, bytes], tmp_path: Path
) -> None:
    target = create_target(server, "cancel-1")
    admin.assign_release("fw", "1.0.0", device=target["id"])
    serial = admin.get_device(target["id"])["release"]["serial"]

    async def start(ddi: DDIClient) -> None:
        await ddi.deploymentBase[str(serial)].feedback(
            DeploymentStatusExecution.proceeding, DeploymentStatusResult.none, ["downloading"]
        )

    run_with_client(server, target, start)
    admin.assign_release("fw", "2.0.0", device=target["id"])

    async def cancel(ddi: DDIClient) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        base = await ddi()
        stop = await ddi.cancelAction[str(serial)]()
        await ddi.cancelAction[stop["cancelAction"]["stopId"]].feedback(
            CancelStatusExecution.closed, CancelStatusResult.success, ["stopped"]
        )
        return base, stop, await ddi()

    base, stop, after = run_with_client(server, target, cancel)
    assert set(base["_links"]) >= {"cancelAction"} and "deploymentBase" not in base["_links"]
    assert stop == {"id": str(serial), "cancelAction": {"stopId": str(serial)}}
    assert "deploymentBase" in after["_links"] and "cancelAction" not in after["_links"]
    status = admin.get_device(target["id"])["release_status"]
    assert (status["serial"], status["state"], status["reason"]) == (serial, "failed", "stopped")


def test_a_gateway_token_enrolls_a_target_that_waits_for_approval(
    server: ServerProcess, admin: FleetClient
) -> None:
    result = run_cli("ddi", "gateway-token", "create", "-o", "json", env=cli_env(server))
    assert result.code == 0, result.stderr
    token = result.json()["token"]
    url = f"{server.url}/ddi/default/controller/v1/gw-child-1"
    headers = {"authorization": f"GatewayToken {token}"}
    first = httpx.get(url, headers=headers)
    assert first.status_code == 403 and first.json()["error"]["code"] == "device_pending"
    device = admin.get_device("gw-child-1")
    assert device["enrollment"] == "pending"
    admin.change_enrollment(device["id"], "approve")
    assert httpx.get(url, headers=headers).status_code == 200
    wait_for(lambda: admin.get_device("gw-child-1")["status"] == "online", timeout_s=10,
             what="the polls to count as liveness")  # fmt: skip
    admin.revoke_ddi_gateway_token(result.json()["id"])
    revoked = httpx.get(url, headers=headers)
    assert revoked.status_code == 401 and revoked.json()["error"]["code"] == "token_revoked"


def error_of(answer: httpx.Response) -> tuple[int, str]:
    return answer.status_code, answer.json()["error"]["code"]


def test_bad_input_is_refused_precisely_and_changes_nothing(
    server: ServerProcess, admin: FleetClient, bundles: dict[str, bytes], tmp_path: Path
) -> None:
    mine = create_target(server, "strict-1")
    other = create_target(server, "strict-2")
    admin.assign_release("fw", "1.0.0", device=mine["id"])
    serial = admin.get_device(mine["id"])["release"]["serial"]
    before = admin.get_device(mine["id"])
    base = f"{server.url}/ddi/default/controller/v1/strict-1"
    auth = {"authorization": f"TargetToken {mine['token']}"}
    feedback = f"{base}/deploymentBase/{serial}/feedback"
    ok = {"id": str(serial), "status": {"execution": "closed", "result": {"finished": "success"}}}

    for body in ({"status": {"execution": "exploded"}},
                 {"status": {"execution": "closed", "result": {"finished": "none"}}},
                 {"status": {"execution": "proceeding",
                             "result": {"progress": {"cnt": 5, "of": 2}}}},
                 {**ok, "id": "999"}):  # fmt: skip
        assert error_of(httpx.post(feedback, json=body, headers=auth)) == (400, "invalid_feedback")
    unknown = {"status": ok["status"]}
    assert error_of(httpx.post(f"{base}/deploymentBase/{serial + 7}/feedback", json=unknown,
                               headers=auth)) == (404, "action_not_found")  # fmt: skip
    assert error_of(httpx.get(f"{base}/deploymentBase/{serial + 7}", headers=auth)) == (
        404,
        "action_not_found",
    )
    assert error_of(httpx.get(f"{base}/cancelAction/{serial}", headers=auth)) == (
        404,
        "action_not_found",
    )
    # Another target's path with my token; my path under another tenant.
    others = f"{server.url}/ddi/default/controller/v1/strict-2/deploymentBase/{serial}"
    assert error_of(httpx.get(others, headers=auth)) == (403, "wrong_device")
    assert error_of(httpx.get(base.replace("/default/", "/acme/"), headers=auth)) == (
        403,
        "wrong_tenant",
    )
    assert error_of(httpx.get(base, headers={"authorization": "TargetToken nope"})) == (
        401,
        "invalid_token",
    )
    assert error_of(httpx.get(base, headers={"authorization": f"Bearer {mine['token']}"})) == (
        401,
        "bad_auth_scheme",
    )
    assert error_of(httpx.put(f"{base}/configData", json={"data": {"bad key": "x"}},
                              headers=auth)) == (400, "invalid_config_data")  # fmt: skip
    module = "fw-bundle@2.0.0"  # a release it is not assigned
    assert error_of(httpx.get(f"{base}/softwaremodules/{module}/artifacts/fw-2.0.0.raucb",
                              headers=auth)) == (404, "artifact_not_found")  # fmt: skip
    after = admin.get_device(mine["id"])
    assert (after["release_status"], after["labels"], after["desired_generation"]) == (
        before["release_status"],
        before["labels"],
        before["desired_generation"],
    )

    # A release DDI devices may not get: refused for the device, skipped in a selector.
    refused = httpx.post(f"{server.url}/v1/releases/vision/1.0.0/assign",
                         json={"device": other["id"]},
                         headers={"authorization": f"Bearer {ADMIN_TOKEN}"})  # fmt: skip
    assert error_of(refused) == (409, "ddi_release_not_allowed")
    assert "EDGEFLEET_DDI_RELEASES" in refused.json()["error"]["message"]
    skipped = admin.assign_release("vision", "1.0.0", selector="kind!=none")
    assert other["id"] in {s["id"] for s in skipped["skipped"]}

    # A closed action takes no more feedback.
    assert httpx.post(feedback, json=ok, headers=auth).status_code == 200
    assert error_of(httpx.post(feedback, json=ok, headers=auth)) == (409, "action_closed")
    assert admin.get_device(mine["id"])["release_status"]["state"] == "installed"
    with pytest.raises(APIError, match="403"):
        run_with_client(server, {**mine, "controller_id": "strict-2"}, lambda ddi: ddi())
