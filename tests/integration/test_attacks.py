"""Attacks on the workload path, played against a real server and real agents: an operator
token asking devices to run a command, a man in the middle on plain HTTP rewriting or
replaying desired state, and a control plane that holds the online key signing documents
that ask for unsigned code. Each must be refused or never executed."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgefleet.artifacts.model_builder import build_mlp
from edgefleet.client import FleetClient
from edgefleet.localfleet import AgentProcess, ServerProcess, wait_for
from edgefleet.security.desired_signature import sign_desired
from edgefleet.security.tuf_keys import load_signing_key
from tests.conftest import ADMIN_TOKEN
from tests.http_mitm import Exchange, HttpMitm
from tests.releases import Trust, free_port, publish

# The release a workload may run: Python's HTTP server, with one bounded parameter.
FILES_SERVICE = {
    "command": ["{python}", "-m", "http.server", "{port}", "--bind", "127.0.0.1",
                "--directory", "{state_dir}"],
    "env": {"PYTHONUNBUFFERED": "{param:unbuffered}"},
    "port": "auto",
    "health": {"http": "/", "interval_s": 0.5},
    "parameters": {"unbuffered": {"type": "integer", "minimum": 0, "maximum": 1, "default": 1}},
}  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("server") / "data", ADMIN_TOKEN)
    process.start()
    with process.client() as client:
        trust = Trust.install(client)
        publish(client, tmp_path_factory.mktemp("release"), "files", "1.0.0",
                build_mlp(4, 8, 3, seed=1), free_port(), trust.targets_keys,
                manifest=FILES_SERVICE)  # fmt: skip
    yield process
    process.stop()


def workload(name: str, **spec: Any) -> dict[str, Any]:
    return {"kind": "Workload", "metadata": {"name": name}, "spec": {
        "artifacts": ["files@1.0.0"], "resources": {"cpu_millicores": 100, "memory_mb": 256},
        "service": {"port": "auto"}, **spec}}  # fmt: skip


def marker_command(marker: Path) -> list[str]:
    return [sys.executable, "-c", f"open({str(marker)!r}, 'w').write('pwned')"]


def test_an_operator_token_cannot_make_devices_run_a_command(
    server: ServerProcess, tmp_path: Path
) -> None:
    with server.client() as admin:
        operator = admin.create_api_token("op", "operator")["token"]
    marker = tmp_path / "pwned"
    headers = {"authorization": f"Bearer {operator}"}
    attempts = {
        "command": workload("pwn", command=marker_command(marker)),
        "env": workload("pwn", env={"LD_PRELOAD": "/tmp/evil.so"}),
        "health_check.command": workload("pwn", health_check={"command": ["sh", "-c", "id"]}),
    }
    for field, manifest in attempts.items():
        answer = httpx.put(f"{server.url}/v1/workloads/pwn", json={"manifest": manifest},
                           headers=headers, timeout=10)  # fmt: skip
        assert answer.status_code == 400, (field, answer.text)
        error = answer.json()["error"]
        assert error["code"] == "unsigned_command" and field in error["message"]
    # Parameters are bounded by the signed manifest: out of range or undeclared, refused.
    for parameters, fragment in [({"unbuffered": 7}, "above the maximum"),
                                 ({"script": "x"}, "not a parameter")]:  # fmt: skip
        answer = httpx.put(f"{server.url}/v1/workloads/pwn",
                           json={"manifest": workload("pwn", parameters=parameters)},
                           headers=headers, timeout=10)  # fmt: skip
        assert answer.status_code == 400
        assert answer.json()["error"]["code"] == "invalid_parameter"
        assert fragment in answer.json()["error"]["message"]
    with server.client() as admin:
        assert all(w["name"] != "pwn" for w in admin.list_workloads())


def _agent(server_url: str, tmp_path: Path, admin: FleetClient, name: str) -> AgentProcess:
    token = admin.create_enrollment_token(auto_approve=True)["token"]
    agent = AgentProcess(server_url, tmp_path / name, token, name,
                         extra_args=["--region", "eu", "--zone", "eu-a"])  # fmt: skip
    agent.start()
    return agent


def _generation(agent: AgentProcess) -> int:
    return int(agent.state().get("applied_generation") or 0)


def _desired(exchange: Exchange) -> bool:
    return exchange.method == "GET" and "/desired" in exchange.target


def test_a_man_in_the_middle_cannot_rewrite_or_replay_desired_state(
    server: ServerProcess, tmp_path: Path
) -> None:
    with server.client() as admin, HttpMitm(server.url) as mitm:
        agent = _agent(mitm.url, tmp_path, admin, "mitm-cam")
        try:
            wait_for(lambda: _generation(agent) > 0, what="first desired state applied")
            first = _generation(agent)
            device = agent.device_id
            assert device is not None
            original = next(e for e in reversed(mitm.seen) if _desired(e) and e.status == 200)

            def rewrite(exchange: Exchange) -> None:
                if _desired(exchange) and exchange.status == 200:
                    document = json.loads(exchange.body)
                    document["labels"]["pwned"] = "yes"
                    exchange.body = json.dumps(document).encode()

            mitm.tamper = rewrite
            admin.label_device(device, {"site": "hall-3"}, [])
            wait_for(lambda: "desired state refused" in agent.log(),
                     what="the rewritten document refused")  # fmt: skip
            assert _generation(agent) == first
            assert "pwned" not in agent.state()["desired"]["labels"]

            mitm.tamper = None  # the link is clean again: the real document goes through
            wait_for(lambda: _generation(agent) > first, what="the real document applied")
            second = _generation(agent)
            assert agent.state()["desired"]["labels"]["site"] == "hall-3"

            def replay(exchange: Exchange) -> None:
                if _desired(exchange):
                    exchange.status, exchange.body = 200, original.body
                    exchange.headers = dict(original.headers)

            mitm.tamper = replay
            admin.label_device(device, {"site": "hall-4"}, [])
            wait_for(lambda: "an old document replayed" in agent.log(),
                     what="the replayed document refused")  # fmt: skip
            assert _generation(agent) == second
            assert agent.state()["desired"]["labels"]["site"] == "hall-3"
            mitm.tamper = None
            wait_for(lambda: agent.state()["desired"]["labels"].get("site") == "hall-4",
                     what="the real document applied after the replay")  # fmt: skip
        finally:
            agent.stop()


def test_a_control_plane_with_the_online_key_cannot_run_unsigned_code(
    server: ServerProcess, tmp_path: Path
) -> None:
    """The online key signs documents, so a compromised control plane signs what it likes;
    what runs still comes only from the operators' signed manifests."""
    online_key = load_signing_key(server.data_dir / "tuf" / "keys" / "timestamp.key")
    marker = tmp_path / "pwned"
    forged = {
        "command": ({"command": marker_command(marker)}, "spec.command: a workload cannot"),
        "env": ({"env": {"PYTHONSTARTUP": str(marker)}}, "spec.env: a workload cannot"),
        "parameter": ({"parameters": {"unbuffered": 9}}, "above the maximum"),
    }
    mode = {"now": "command"}

    def forge(exchange: Exchange) -> None:
        if not (_desired(exchange) and exchange.status == 200):
            return
        document = json.loads(exchange.body)
        for entry in document.get("workloads", {}).get("replicas", []):
            entry["document"]["spec"].update(forged[mode["now"]][0])
        exchange.body = json.dumps(document).encode()
        exchange.headers["x-edgefleet-desired-signature"] = sign_desired(exchange.body, online_key)

    with server.client() as admin, HttpMitm(server.url, forge) as mitm:
        agent = _agent(mitm.url, tmp_path, admin, "forged-cam")
        try:
            wait_for(lambda: _generation(agent) > 0, what="first desired state applied")
            admin.apply_workload(workload("victim"))
            for name, (_, reason) in forged.items():
                mode["now"] = name
                admin.label_device(str(agent.device_id), {"attempt": name}, [])

                def refused(reason: str = reason) -> bool:
                    row = admin.get_workload("victim")["placement"][0]
                    return row.get("state") == "failed" and reason in (row.get("detail") or "")

                wait_for(refused, timeout_s=60, what=f"the forged {name} refused on the device")
            assert not marker.exists()
            assert mitm.seen  # the agent really talked through the forger
        finally:
            agent.stop()
            admin.delete_workload("victim")
