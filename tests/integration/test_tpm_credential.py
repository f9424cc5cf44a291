"""Attestation keys certified by credential activation, with EK certificates: a real control
plane trusting one TPM CA (EDGEFLEET_TPM_CA_FILE), real agents, and software TPMs (swtpm)
manufactured with EK certificates by swtpm_setup and its local CA.

A TPM whose EK certificate the trusted CA signed gets its AK certified and its quotes
verified. A device offering an AK from one TPM with the EK of another cannot open the
credential and is refused; so is a TPM whose EK certificate comes from another CA (of the
same name), and one without an EK certificate. Each refusal fails the device's attestation
with the reason, shown by `devices show`, and the policy labels it.
"""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edgefleet.client import FleetClient
from edgefleet.core.governance.attestation import measurement_digest
from edgefleet.localfleet import AgentProcess, ServerProcess, wait_for
from edgefleet.security.tpm_credential import parse_public
from tests.cli_runner import run_cli
from tests.conftest import ADMIN_TOKEN, AgentFactory
from tests.device_requests import RawDevice
from tests.releases import free_port
from tests.swtpm import manufacture, swtpm, tpm2


@dataclass(frozen=True)
class Cas:
    trusted: Path  # CA directory whose issuing CA the server trusts
    rogue: Path  # another local CA, same names, other keys
    state: Path  # TPM states are manufactured under here


@pytest.fixture(scope="module")
def cas(tmp_path_factory: pytest.TempPathFactory) -> Cas:
    root = tmp_path_factory.mktemp("tpm-cas")
    trusted = root / "trusted"
    manufacture(root / "state" / "first", trusted)  # creates the trusted CA
    return Cas(trusted, root / "rogue", root / "state")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, cas: Cas) -> Iterator[ServerProcess]:
    """Trusts EK certificates of the trusted local CA only; labels failing devices."""
    process = ServerProcess(
        tmp_path_factory.mktemp("server") / "data",
        ADMIN_TOKEN,
        env={"EDGEFLEET_ATTESTATION_POLICY": "label",
             "EDGEFLEET_TPM_CA_FILE": str(cas.trusted / "issuercert.pem")},
    )  # fmt: skip
    process.start()
    yield process
    process.stop()


@pytest.fixture
def env(server: ServerProcess) -> dict[str, str]:
    return {"EDGEFLEET_SERVER": server.url, "EDGEFLEET_TOKEN": ADMIN_TOKEN}


def enrolled(agents: AgentFactory, admin: FleetClient, name: str, tcti: str) -> AgentProcess:
    token = admin.create_enrollment_token(auto_approve=True)["token"]
    agent = agents(f"{name}-{free_port()}", token,
                   extra_args=["--attestation-interval", "1", "--tpm", tcti])  # fmt: skip
    wait_for(lambda: agent.state().get("applied_generation"), what="agent in sync")
    return agent


def wait_attestation(admin: FleetClient, device_id: str, status: str) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        record = admin.get_attestation(device_id)
        return record if record["status"] == status else None

    now = admin.get_attestation(device_id)
    found = wait_for(reached, timeout_s=30, what=f"attestation {status} (now {now})")
    assert found is not None
    return found


def show(env: dict[str, str], device_id: str) -> dict[str, str]:
    """`devices show`'s attestation and tpm lines."""
    result = run_cli("devices", "show", device_id, env=env)
    assert result.code == 0, result.stderr
    lines = [ln.strip() for ln in result.stdout.splitlines()]
    return {key: next(ln for ln in lines if ln.startswith(key)) for key in ("attestation", "tpm")}


def test_a_tpm_with_a_trusted_ek_certificate_certifies_its_ak_and_verifies(
    admin: FleetClient, agents: AgentFactory, env: dict[str, str], cas: Cas
) -> None:
    with swtpm(cas.state / "first") as tcti:
        agent = enrolled(agents, admin, "certified", tcti)
        device_id = agent.device_id or ""
        record = wait_attestation(admin, device_id, "verified")
        assert record["ak_certified"] is True
        assert record["ek_certificate"] == "issued by CN=swtpm-localca, a trusted TPM CA"
        # The EK it was certified under is this TPM's.
        work = agent.data_dir / "check"
        work.mkdir()
        tpm2(tcti, "tpm2_createek", "-c", "ek.ctx", "-G", "rsa", "-u", "ek.pub", cwd=work)
        tpm2(tcti, "tpm2_flushcontext", "-t", cwd=work)
        assert record["ek_name"] == parse_public((work / "ek.pub").read_bytes()).name.hex()
        lines = show(env, device_id)
        assert "verified (TPM quote over PCR 16" in lines["attestation"]
        assert f"AK certified under EK {record['ek_name']}" in lines["tpm"]
        assert "issued by CN=swtpm-localca, a trusted TPM CA" in lines["tpm"]
        actions = [e["action"] for e in admin.audit_tail(200) if e["target"] == device_id]
        assert "device.attestation_key" in actions


def offer(tcti: str, work: Path, *, certified: bool) -> dict[str, Any]:
    """An EK (with its certificate when `certified`) and an AK made by tpm2-tools in the
    TPM at `tcti`."""
    work.mkdir()
    tpm2(tcti, "tpm2_createek", "-c", "ek.ctx", "-G", "rsa", "-u", "ek.pub", cwd=work)
    tpm2(tcti, "tpm2_createak", "-C", "ek.ctx", "-c", "ak.ctx", "-G", "rsa", "-g", "sha256",
         "-s", "rsassa", "-u", "ak.pub", "-f", "tss", "-n", "ak.name", cwd=work)  # fmt: skip
    tpm2(tcti, "tpm2_flushcontext", "-t", cwd=work)
    tpm2(tcti, "tpm2_readpublic", "-c", "ak.ctx", "-f", "pem", "-o", "ak.pem", cwd=work)
    tpm2(tcti, "tpm2_flushcontext", "-t", cwd=work)
    if certified:
        tpm2(tcti, "tpm2_nvread", "0x01c00002", "-o", "ek.crt", cwd=work)
    b64 = {path.name: base64.b64encode(path.read_bytes()).decode()
           for path in work.glob("*.*") if path.suffix in (".pub", ".crt")}  # fmt: skip
    return {"ek_public": b64["ek.pub"], "ek_certificate": b64.get("ek.crt"),
            "ak_public": b64["ak.pub"], "ak_name": (work / "ak.name").read_bytes().hex(),
            "attestation_key": (work / "ak.pem").read_text()}  # fmt: skip


def test_an_ak_from_another_tpm_than_the_ek_cannot_be_activated_and_is_refused(
    admin: FleetClient, env: dict[str, str], server: ServerProcess, cas: Cas, tmp_path: Path
) -> None:
    """The device offers TPM A's AK with TPM B's (trusted) EK: the credential is sealed to
    B's EK for A's AK; A cannot open it (not its EK), B cannot either (not its AK)."""
    manufacture(cas.state / "b", cas.trusted)
    with swtpm(tmp_path / "a") as tpm_a, swtpm(cas.state / "b") as tpm_b:
        from_a = offer(tpm_a, tmp_path / "work-a", certified=False)
        from_b = offer(tpm_b, tmp_path / "work-b", certified=True)
        device = RawDevice(server.url)
        token = admin.create_enrollment_token(auto_approve=True)["token"]
        assert device.enroll(token).status_code in (200, 201)
        base = f"/v1/devices/{device.id}/attestation"
        mixed = {**from_a, "ek_public": from_b["ek_public"],
                 "ek_certificate": from_b["ek_certificate"]}  # fmt: skip
        answer = device.call("POST", f"{base}/credential", mixed)
        assert answer.status_code == 200, answer.text
        credential = base64.b64decode(answer.json()["credential"])
        for tcti, work in ((tpm_a, tmp_path / "work-a"), (tpm_b, tmp_path / "work-b")):
            (work / "cred").write_bytes(credential)
            tpm2(tcti, "tpm2_startauthsession", "--policy-session", "-S", "s.ctx", cwd=work)
            tpm2(tcti, "tpm2_policysecret", "-S", "s.ctx", "-c", "e", cwd=work)
            with pytest.raises(subprocess.CalledProcessError):
                tpm2(tcti, "tpm2_activatecredential", "-c", "ak.ctx", "-C", "ek.ctx", "-i",
                     "cred", "-o", "secret", "-P", "session:s.ctx", cwd=work)  # fmt: skip
            tpm2(tcti, "tpm2_flushcontext", "-s", cwd=work)
            tpm2(tcti, "tpm2_flushcontext", "-t", cwd=work)
        # Guessing the secret fails the device, with the reason.
        guessed = device.call("POST", f"{base}/credential/activation", {"secret": "00" * 32})
        assert guessed.status_code == 403
        assert guessed.json()["error"]["code"] == "attestation_key_refused"
        reason = ("the credential's secret came back wrong: the attestation key is not in the "
                  "TPM of the endorsement key it was offered with")  # fmt: skip
        record = admin.get_attestation(device.id)
        assert (record["status"], record["reason"], record["ak_certified"]) == (
            "failed", reason, False)  # fmt: skip
        assert admin.get_device(device.id)["labels"]["attestation"] == "failed"
        assert reason in show(env, device.id)["attestation"]
        # The credential is spent: a second guess has nothing to answer.
        again = device.call("POST", f"{base}/credential/activation", {"secret": "00" * 32})
        assert (again.status_code, again.json()["error"]["code"]) == (
            409, "no_outstanding_credential")  # fmt: skip
        # A quote by the refused key counts for nothing.
        nonce = device.call("POST", f"{base}/challenge", {}).json()
        assert nonce["attestation_key"] is None
        work = tmp_path / "work-a"
        tpm2(tpm_a, "tpm2_quote", "-c", "ak.ctx", "-l", "sha256:16", "-q", nonce["nonce"],
             "-m", "msg", "-s", "sig", "-g", "sha256", cwd=work)  # fmt: skip
        tpm2(tpm_a, "tpm2_flushcontext", "-t", cwd=work)
        tpm2(tpm_a, "tpm2_pcrread", "sha256:16", "-o", "pcr16", cwd=work)
        measurement: dict[str, Any] = {"slots": {}}
        digest = measurement_digest(measurement)
        quoted = device.call("POST", base, {
            "measurement": measurement, "digest": digest,
            "tpm": {"nonce": nonce["nonce"], "attestation_key": from_a["attestation_key"],
                    "message": base64.b64encode((work / "msg").read_bytes()).decode(),
                    "signature": base64.b64encode((work / "sig").read_bytes()).decode(),
                    "pcrs": {"16": (work / "pcr16").read_bytes().hex()}, "log": [digest]},
        }).json()  # fmt: skip
        assert quoted["status"] == "failed"
        assert quoted["reason"] == (
            f"the attestation key is not certified by credential activation: {reason}")  # fmt: skip


def test_an_ek_certificate_from_an_untrusted_ca_or_none_is_refused(
    admin: FleetClient, agents: AgentFactory, env: dict[str, str], cas: Cas, tmp_path: Path
) -> None:
    manufacture(cas.state / "rogue", cas.rogue)
    with swtpm(cas.state / "rogue") as rogue, swtpm(tmp_path / "plain") as plain:
        untrusted = enrolled(agents, admin, "rogue-ek", rogue)
        uncertified = enrolled(agents, admin, "no-ek-cert", plain)
        for agent, reason in (
            (untrusted, "the EK certificate's issuer (CN=swtpm-localca) is not a trusted TPM "
                        "manufacturer CA"),
            (uncertified, "the TPM has no EK certificate, and this control plane accepts only "
                          "TPMs whose EK certificate a trusted TPM CA signed"),
        ):  # fmt: skip
            device_id = agent.device_id or ""
            record = wait_attestation(admin, device_id, "failed")
            assert record["reason"] == reason
            assert record["ak_certified"] is False
            assert admin.get_device(device_id)["labels"]["attestation"] == "failed"
            lines = show(env, device_id)
            assert reason in lines["attestation"] and "AK not certified" in lines["tpm"]
        # The agent keeps trying and keeps being refused: its quotes never count.
        wait_for(lambda: "is not a trusted TPM manufacturer CA" in untrusted.log(),
                 what="the agent logs the refusal")  # fmt: skip
        assert admin.get_attestation(untrusted.device_id or "")["status"] == "failed"
