"""Attestation end to end: a real control plane (policy: releases, workloads, label), real
agents, and a software TPM (swtpm) driven by tpm2-tools.

A device without a TPM reports its software measurement (unverified). With a TPM, the agent
extends the measurement into PCR 16 and quotes it over the server's nonce: verified; a slot
file changed on disk fails the next attestation, the device is labelled, loses its release
section and takes no new release until the file is put back. A quote replayed with an old
nonce is refused.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgefleet.artifacts.model_builder import build_mlp
from edgefleet.client import FleetClient
from edgefleet.core.governance.attestation import measurement_digest
from edgefleet.localfleet import AgentProcess, ServerProcess, wait_for
from edgefleet.security.keys import DeviceKey
from tests.cli_runner import run_cli
from tests.conftest import ADMIN_TOKEN, AgentFactory
from tests.device_requests import RawDevice
from tests.releases import Trust, free_port, publish
from tests.swtpm import require_tpm_tools, swtpm, tpm2

POLICY = "releases,workloads,label"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """This module's control plane enforces the whole attestation policy."""
    process = ServerProcess(tmp_path_factory.mktemp("server") / "data", ADMIN_TOKEN,
                            env={"EDGEFLEET_ATTESTATION_POLICY": POLICY})  # fmt: skip
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def trust(server: ServerProcess) -> Trust:
    with server.client() as client:
        return Trust.install(client)


@pytest.fixture
def env(server: ServerProcess) -> dict[str, str]:
    return {"EDGEFLEET_SERVER": server.url, "EDGEFLEET_TOKEN": ADMIN_TOKEN}


def enrolled(agents: AgentFactory, admin: FleetClient, name: str, *args: str) -> AgentProcess:
    token = admin.create_enrollment_token(auto_approve=True)["token"]
    agent = agents(f"{name}-{free_port()}", token,
                   extra_args=["--attestation-interval", "1", *args])  # fmt: skip
    wait_for(lambda: agent.state().get("applied_generation"), what="agent in sync")
    return agent


def attestation(admin: FleetClient, agent: AgentProcess) -> dict[str, Any]:
    return admin.get_attestation(agent.device_id or "")


def wait_attestation(admin: FleetClient, agent: AgentProcess, status: str,
                     timeout_s: float = 30) -> dict[str, Any]:  # fmt: skip
    def reached() -> dict[str, Any] | None:
        record = attestation(admin, agent)
        return record if record["status"] == status else None

    found = wait_for(reached, timeout_s=timeout_s,
                     what=f"attestation {status} (now {attestation(admin, agent)})")  # fmt: skip
    assert found is not None
    return found


def release_status(admin: FleetClient, agent: AgentProcess) -> dict[str, Any]:
    return admin.get_device(agent.device_id or "")["release_status"]


def show(env: dict[str, str], agent: AgentProcess) -> str:
    result = run_cli("devices", "show", agent.device_id or "", env=env)
    assert result.code == 0, result.stderr
    [line] = [ln for ln in result.stdout.splitlines() if ln.strip().startswith("attestation")]
    return line


def test_without_a_tpm_the_software_measurement_is_reported_unverified(
    admin: FleetClient, agents: AgentFactory, env: dict[str, str], server: ServerProcess
) -> None:
    agent = enrolled(agents, admin, "plain")
    record = wait_attestation(admin, agent, "unverified")
    assert record["reason"] == "software measurement only (no TPM)"
    assert record["tpm"] is False and record["pcrs"] == {}
    measurement = record["measurement"]
    assert record["measurement_digest"] == measurement_digest(measurement)
    assert len(measurement["agent"]["sha256"]) == 64 and measurement["agent"]["files"] > 50
    assert measurement["config"]["server_url"] == server.url
    assert measurement["config"]["tpm"] is False and measurement["slots"] == {}
    # Report only for unverified devices unless EDGEFLEET_ATTESTATION_REQUIRE_TPM is set.
    assert "attestation" not in admin.get_device(agent.device_id or "")["labels"]
    line = show(env, agent)
    assert "unverified (software measurement only (no TPM))" in line and "no TPM quote" in line
    listed = run_cli("devices", "list", env=env)
    [row] = [r for r in listed.stdout.splitlines() if (agent.device_id or "")[:12] in r]
    assert "unverified" in row


def test_a_tpm_quote_verifies_until_a_slot_file_changes(
    admin: FleetClient, agents: AgentFactory, env: dict[str, str], trust: Trust, tmp_path: Path
) -> None:
    with swtpm(tmp_path / "tpm") as tcti:
        agent = enrolled(agents, admin, "tpm", "--tpm", tcti)
        device_id = agent.device_id or ""
        port = free_port()
        publish(admin, tmp_path, "vision", "1.0.0", build_mlp(4, 8, 3, seed=1), port,
                trust.targets_keys)  # fmt: skip
        admin.assign_release("vision", "1.0.0", device=device_id)
        wait_for(lambda: release_status(admin, agent).get("state") == "installed",
                 timeout_s=60, what="release 1.0.0 installed")  # fmt: skip

        def verified_with_slot() -> dict[str, Any] | None:
            record = attestation(admin, agent)
            slots = record["measurement"].get("slots", {})
            return record if record["status"] == "verified" and slots else None

        record = wait_for(verified_with_slot, timeout_s=30, what="verified with slot a")
        assert record["tpm"] is True and list(record["pcrs"]) == ["16"]
        assert record["measurement"]["slots"]["a"]["release"] == "vision"
        assert "PCR 16" in record["reason"]
        line = show(env, agent)
        assert "verified (" in line and "PCRs 16" in line

        # Tamper with the live model file: the next measurement differs from the release.
        slot = agent.data_dir / "release" / "slots" / "a"
        files = json.loads((slot / "slot.json").read_text())["files"]
        model = slot / files["vision-model"]
        original = model.read_bytes()
        model.write_bytes(original + b"tampered")
        failed = wait_attestation(admin, agent, "failed")
        assert "slot a: vision-model of vision 1.0.0 has sha256" in failed["reason"]
        assert failed["withholds"] == ["releases", "workloads"]
        device = admin.get_device(device_id)
        assert device["labels"]["attestation"] == "failed"
        assert "release" not in device["desired"]
        # The agent takes the withheld section as no release: its service stops.
        wait_for(lambda: not release_status(admin, agent).get("active"),
                 what="the release stopped")  # fmt: skip
        assert "failed (slot a: vision-model" in show(env, agent)
        listed = run_cli("devices", "list", "-l", "attestation=failed", env=env)
        assert device_id[:12] in listed.stdout and "failed" in listed.stdout

        # A new release is not delivered to it while it fails ...
        publish(admin, tmp_path, "vision", "2.0.0", build_mlp(4, 8, 3, seed=2), port,
                trust.targets_keys)  # fmt: skip
        admin.assign_release("vision", "2.0.0", device=device_id)
        assert "release" not in admin.get_device(device_id)["desired"]
        # ... and once the file is whole again, attestation passes and the release comes.
        model.write_bytes(original)
        wait_attestation(admin, agent, "verified")
        assert "attestation" not in admin.get_device(device_id)["labels"]
        wait_for(lambda: release_status(admin, agent).get("version") == "2.0.0"
                 and release_status(admin, agent).get("state") == "installed",
                 timeout_s=60, what="release 2.0.0 installed after attestation passed")  # fmt: skip


def test_a_replayed_quote_is_refused(
    admin: FleetClient, agents: AgentFactory, server: ServerProcess, tmp_path: Path
) -> None:
    require_tpm_tools()
    with swtpm(tmp_path / "tpm") as tcti:
        agent = enrolled(agents, admin, "replay", "--tpm", tcti)
        record = wait_attestation(admin, agent, "verified")
        agent.stop()  # the test speaks for the device now, with its key and its TPM
        device = RawDevice(server.url, DeviceKey.load_or_create(agent.data_dir / "device.key"))
        measurement = record["measurement"]
        digest = measurement_digest(measurement)
        work = tmp_path / "quote"
        work.mkdir()
        tpm2(tcti, "tpm2_pcrreset", "16", cwd=work)
        tpm2(tcti, "tpm2_pcrextend", f"16:sha256={digest}", cwd=work)
        tpm2(tcti, "tpm2_pcrread", "sha256:16", "-o", "pcr16", cwd=work)
        base = f"/v1/devices/{device.id}/attestation"

        def quoted() -> dict[str, Any]:
            nonce = device.call("POST", f"{base}/challenge", {}).json()["nonce"]
            tpm2(tcti, "tpm2_quote", "-c", "0x81010016", "-l", "sha256:16", "-q", nonce,
                 "-m", "msg", "-s", "sig", "-g", "sha256", cwd=work)  # fmt: skip
            return {
                "measurement": measurement,
                "digest": digest,
                "tpm": {
                    "nonce": nonce,
                    "attestation_key": (agent.data_dir / "attestation" / "ak.pem").read_text(),
                    "message": base64.b64encode((work / "msg").read_bytes()).decode(),
                    "signature": base64.b64encode((work / "sig").read_bytes()).decode(),
                    "pcrs": {"16": (work / "pcr16").read_bytes().hex()},
                    "log": [digest],
                },
            }

        body = quoted()
        first = device.call("POST", base, body)
        assert first.status_code == 200, first.text
        assert first.json()["status"] == "verified"
        replayed = device.call("POST", base, body)  # the same quote, its nonce spent
        assert replayed.status_code == 409
        assert replayed.json()["error"]["code"] == "stale_attestation_nonce"
        device.call("POST", f"{base}/challenge", {})  # a new challenge: still not its nonce
        assert device.call("POST", base, body).status_code == 409
        assert attestation(admin, agent)["status"] == "verified"  # a replay changes nothing

        # A device that registered a TPM key cannot fall back to a software measurement.
        plain = device.call("POST", base, {"measurement": measurement, "digest": digest}).json()
        assert (plain["status"], plain["reason"]) == (
            "failed",
            "no TPM quote, but this device registered a TPM attestation key",
        )

        # A quote whose reported PCR value is not what the TPM quoted fails the device.
        forged = quoted()
        forged["tpm"]["pcrs"] = {"16": "00" * 32}
        answer = device.call("POST", base, forged).json()
        assert answer["status"] == "failed"
        assert answer["reason"] == "the reported PCR values do not match the quote's PCR digest"
