"""The operator CLI as a shell user meets it: JSON contract, one-line errors, exit codes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from edgefleet.localfleet import ServerProcess, wait_for
from tests.cli_runner import CliResult, run_cli
from tests.conftest import ADMIN_TOKEN, AgentFactory


@pytest.fixture
def env(server: ServerProcess) -> dict[str, str]:
    return {"EDGEFLEET_SERVER": server.url, "EDGEFLEET_TOKEN": ADMIN_TOKEN}


def assert_one_line_error(result: CliResult, *fragments: str) -> None:
    assert result.code == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0]


def test_devices_list_json_contract(env: dict[str, str], agents: AgentFactory) -> None:
    created = run_cli("enrollment-tokens", "create", "--auto-approve", "-o", "json", env=env)
    assert created.code == 0, created.stderr
    token = created.json()["token"]
    assert token.startswith("efe_")
    agent = agents("contract-1", token, labels={"site": "berlin"})
    wait_for(lambda: agent.state().get("applied_generation"), what="agent in sync")

    listed = run_cli("devices", "list", "-l", "site=berlin", "-o", "json", env=env)
    assert listed.code == 0, listed.stderr
    [device] = listed.json()
    assert device["id"] == agent.device_id
    assert device["name"] == "contract-1"
    assert device["enrollment"] == "approved"
    assert device["status"] == "online"
    assert device["labels"] == {"site": "berlin"}
    assert device["last_seen"].endswith("Z")

    table = run_cli("devices", "list", "-l", "site=berlin", env=env)
    assert "contract-1" in table.stdout and "online" in table.stdout
    shown = run_cli("devices", "show", "contract-1", env=env)
    assert "site=berlin" in shown.stdout and "Python" in shown.stdout


def test_label_and_approve_commands(env: dict[str, str], agents: AgentFactory) -> None:
    token = run_cli("enrollment-tokens", "create", "-o", "json", env=env).json()["token"]
    agent = agents("cli-pending", token)
    device_id = wait_for(lambda: agent.device_id, what="enrollment")
    assert device_id is not None
    approved = run_cli("devices", "approve", device_id, "-o", "json", env=env)
    assert approved.json()[0]["enrollment"] == "approved"
    labelled = run_cli("devices", "label", "cli-pending", "tier=gold", "canary=yes", env=env)
    assert labelled.code == 0
    removed = run_cli("devices", "label", device_id, "canary-", "-o", "json", env=env)
    assert removed.json()[0]["labels"] == {"tier": "gold"}


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["devices", "show", "no-such-device"], ["no device with id or name", "device_not_found"]),
        (["devices", "label", "x", "not-a-label"], ["expected key=value or key-"]),
        (["enrollment-tokens", "create", "--expires", "5 parsecs"], ["invalid duration"]),
        (["audit", "verify", "--anchor", "zzz"], ["--anchor must be SEQ:SHA256"]),
    ],
)
def test_errors_are_one_line_with_exit_status_1(
    env: dict[str, str], args: list[str], fragments: list[str]
) -> None:
    assert_one_line_error(run_cli(*args, env=env), *fragments)


def test_wrong_role_unreachable_server_and_missing_server(env: dict[str, str]) -> None:
    viewer = run_cli("tokens", "create", "v", "--role", "viewer", "-o", "json", env=env).json()
    as_viewer = {**env, "EDGEFLEET_TOKEN": viewer["token"]}
    assert_one_line_error(
        run_cli("enrollment-tokens", "create", env=as_viewer), "lacks permission", "insufficient"
    )
    assert_one_line_error(
        run_cli("devices", "list", env={**env, "EDGEFLEET_SERVER": "http://127.0.0.1:9"}),
        "cannot reach",
    )
    assert_one_line_error(
        run_cli("devices", "list", env={"EDGEFLEET_CONFIG": "/nonexistent/config.toml"}),
        "no server given",
    )
    assert_one_line_error(
        run_cli("devices", "list", env={**env, "EDGEFLEET_TOKEN": "x"}), "invalid API token"
    )


def test_login_saves_a_private_config_used_afterwards(
    server: ServerProcess, tmp_path: Path
) -> None:
    config = tmp_path / "cfg" / "config.toml"
    login = run_cli(
        "--config", str(config), "login", "--server", server.url, "--token", ADMIN_TOKEN
    )
    assert login.code == 0, login.stderr
    assert "role admin" in login.stdout
    assert stat.S_IMODE(os.stat(config).st_mode) == 0o600
    whoami = run_cli("whoami", env={"EDGEFLEET_CONFIG": str(config)})
    assert whoami.code == 0 and "bootstrap-admin" in whoami.stdout


def test_agent_refuses_a_bad_server_url_with_one_line(tmp_path: Path) -> None:
    result = run_cli("agent", "--server", "ftp://x", "--data-dir", str(tmp_path / "a"))
    assert_one_line_error(result, "not an http(s) URL")
