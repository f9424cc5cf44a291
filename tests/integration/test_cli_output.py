"""The CLI's output as scripts meet it: piped tables never wrap or cut a row, `-o
table|wide|name|json|yaml` on list and show commands, one time format; and the commands
issue 23 added: devices delete, tokens revoke by name, unknown telemetry metrics."""

from __future__ import annotations

from functools import partial

import pytest
import yaml

from edgefleet.client import FleetClient
from edgefleet.localfleet import AgentProcess, ServerProcess, wait_for
from tests.cli_runner import CliResult, run_cli
from tests.conftest import ADMIN_TOKEN, AgentFactory
from tests.device_requests import RawDevice
from tests.telemetry_fleet import FAST_AGENT_ARGS, fast_policy

# With the narrow width rich assumed, a label value (at most 63 characters) and a name that
# rich folded mid-word.
LONG_VALUE = "a-long-label-value-that-" + "x" * 29 + "-ends-here"
NARROW = {"COLUMNS": "40"}


@pytest.fixture
def env(server: ServerProcess) -> dict[str, str]:
    return {"EDGEFLEET_SERVER": server.url, "EDGEFLEET_TOKEN": ADMIN_TOKEN, **NARROW}


def ok(result: CliResult) -> CliResult:
    assert result.code == 0, (result.stdout, result.stderr)
    return result


def one_line_error(result: CliResult, *fragments: str) -> None:
    assert result.code == 1, (result.stdout, result.stderr)
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: ")
    for fragment in fragments:
        assert fragment in line, line


def rows_with(text: str, needle: str) -> list[str]:
    return [line for line in text.splitlines() if needle in line]


def raw_device(server: ServerProcess, admin: FleetClient, name: str,
               labels: dict[str, str]) -> RawDevice:  # fmt: skip
    device = RawDevice(server.url)
    token = admin.create_enrollment_token(auto_approve=True)["token"]
    assert device.enroll(token, name, labels).status_code == 200
    return device


def test_piped_tables_keep_each_row_on_one_line(
    server: ServerProcess, admin: FleetClient, env: dict[str, str]
) -> None:
    name = "cam-with-a-rather-long-name-0123456789-abcdefghij"
    device = raw_device(server, admin, name, {"kind": "camera", "region": LONG_VALUE})
    labels = f"kind=camera,region={LONG_VALUE}"

    listed = ok(run_cli("devices", "list", "-l", "kind=camera", env=env)).stdout
    [row] = rows_with(listed, device.id)
    assert name in row and labels in row
    assert len(listed.splitlines()) == 2  # the header and the one device
    assert "…" not in listed
    shown = ok(run_cli("devices", "show", name, env=env)).stdout
    assert len(rows_with(shown, labels)) == 1

    admin.create_api_token(f"ci-token-{LONG_VALUE}", "viewer")
    tokens = ok(run_cli("tokens", "list", env=env)).stdout
    assert len(rows_with(tokens, f"ci-token-{LONG_VALUE}")) == 1
    audit = ok(run_cli("audit", "list", "--limit", "5", env=env)).stdout
    [header, *records] = audit.splitlines()
    assert "DETAILS" in header and "REQUEST" in header
    assert len(records) == len(admin.audit_tail(5))
    assert len(rows_with(audit, f"ci-token-{LONG_VALUE}")) == 1


def test_every_output_form_of_a_list_and_a_show(
    server: ServerProcess, admin: FleetClient, env: dict[str, str]
) -> None:
    device = raw_device(server, admin, "forms-1", {"forms": "yes"})
    as_json = ok(run_cli("devices", "list", "-l", "forms=yes", "-o", "json", env=env)).json()
    as_yaml = ok(run_cli("devices", "list", "-l", "forms=yes", "-o", "yaml", env=env))
    assert yaml.safe_load(as_yaml.stdout) == as_json
    names = ok(run_cli("devices", "list", "-l", "forms=yes", "-o", "name", env=env))
    assert names.stdout == "forms-1\n"
    table = ok(run_cli("devices", "list", "-l", "forms=yes", env=env)).stdout
    wide = ok(run_cli("devices", "list", "-l", "forms=yes", "-o", "wide", env=env)).stdout
    assert "ARCH" not in table and "ENROLLED" not in table
    [wide_row] = rows_with(wide, device.id)
    assert "ARCH" in wide.splitlines()[0] and "x86_64" in wide_row
    shown = ok(run_cli("devices", "show", "forms-1", "-o", "name", env=env))
    assert shown.stdout == "forms-1\n"
    shown_yaml = ok(run_cli("devices", "show", "forms-1", "-o", "yaml", env=env))
    assert yaml.safe_load(shown_yaml.stdout)["id"] == device.id

    for command in (["tokens", "list"], ["enrollment-tokens", "list"], ["audit", "list"],
                    ["groups", "list"], ["rollouts", "list"], ["releases", "list"],
                    ["artifacts", "list"], ["workloads", "list"], ["placements", "nodes"],
                    ["alerts", "list"], ["trains", "list"]):  # fmt: skip
        documents = ok(run_cli(*command, "-o", "json", env=env)).json()
        assert yaml.safe_load(ok(run_cli(*command, "-o", "yaml", env=env)).stdout) == documents
        listed = ok(run_cli(*command, "-o", "name", env=env)).stdout.splitlines()
        assert len(listed) == len(documents), command
        ok(run_cli(*command, "-o", "wide", env=env))
    token_names = ok(run_cli("tokens", "list", "-o", "name", env=env)).stdout.splitlines()
    assert token_names == [t["name"] for t in admin.list_api_tokens()]
    bad = run_cli("devices", "list", "-o", "xml", env=env)
    assert bad.code == 2 and "xml" in bad.stderr


def test_times_are_utc_with_a_z_or_local_with_its_zone(
    server: ServerProcess, admin: FleetClient, env: dict[str, str]
) -> None:
    admin.create_api_token("timed", "viewer", expires_in_s=86400)
    utc = ok(run_cli("tokens", "list", env=env)).stdout
    [row] = rows_with(utc, "timed")
    expires = next(t for t in admin.list_api_tokens() if t["name"] == "timed")["expires_at"]
    assert f"{expires[:10]} {expires[11:19]}Z" in row
    local = ok(run_cli("tokens", "list", env={**env, "EDGEFLEET_TIME": "local",
                                             "TZ": "Asia/Kolkata"})).stdout  # fmt: skip
    [row] = rows_with(local, "timed")
    assert " IST" in row and "Z " not in row
    one_line_error(run_cli("tokens", "list", env={**env, "EDGEFLEET_TIME": "mars"}),
                   "EDGEFLEET_TIME")  # fmt: skip


def test_tokens_revoke_by_name(admin: FleetClient, env: dict[str, str]) -> None:
    created = admin.create_api_token("deploy-bot", "operator")
    revoked = ok(run_cli("tokens", "revoke", "deploy-bot", "-o", "json", env=env)).json()
    assert revoked["id"] == created["id"] and revoked["revoked"] is True
    refused = run_cli("whoami", env={**env, "EDGEFLEET_TOKEN": created["token"]})
    one_line_error(refused, "token_revoked")
    # The name is free again; two live tokens sharing one are told apart by id only.
    first = admin.create_api_token("twin", "viewer")
    second = admin.create_api_token("twin", "viewer")
    one_line_error(run_cli("tokens", "revoke", "twin", env=env), "ambiguous_token",
                   first["id"], second["id"])  # fmt: skip
    ok(run_cli("tokens", "revoke", first["id"], env=env))
    assert ok(run_cli("tokens", "revoke", "twin", "-o", "name", env=env)).stdout == "twin\n"
    assert [r["target"] for r in admin.audit_tail(2)] == [
        f"api-token/{first['id']}",
        f"api-token/{second['id']}",
    ]
    one_line_error(run_cli("tokens", "revoke", "nobody", env=env), "token_not_found")


def test_devices_delete_decommissions_a_device(
    server: ServerProcess, admin: FleetClient, agents: AgentFactory, env: dict[str, str]
) -> None:
    # Single use: the agent, told its device is unknown, tries to enroll again and is refused.
    token = admin.create_enrollment_token(auto_approve=True, max_uses=1)["token"]
    agent = agents("retiring-1", token, {"site": "closing"})
    wait_for(lambda: agent.state().get("applied_generation"), what="agent in sync")
    device_id = agent.device_id
    raw = raw_device(server, admin, "retiring-raw", {"site": "closing"})
    assert raw.report().status_code == 200

    deleted = ok(run_cli("devices", "delete", "retiring-1", "retiring-raw", env=env))
    assert f"device retiring-1 ({device_id}) deleted" in deleted.stdout
    assert raw.report().status_code == 401  # its key is forgotten
    one_line_error(run_cli("devices", "show", "retiring-1", env=env), "device_not_found")
    assert ok(run_cli("devices", "list", "-l", "site=closing", "-o", "name", env=env)).stdout == ""
    # The agent is refused from now on, and says so.
    wait_for(lambda: "unknown device" in agent.log() and "exhausted" in agent.log(),
             what="the deleted agent refused")  # fmt: skip
    [record] = [r for r in admin.audit_tail(20) if r["action"] == "device.delete"
                and r["target"] == f"device/{device_id}"]  # fmt: skip
    assert record["details"]["name"] == "retiring-1"
    # Its name is free: a new device may take it.
    assert raw_device(server, admin, "retiring-1", {}).report().status_code == 200
    one_line_error(run_cli("devices", "delete", "no-such-device", env=env), "device_not_found")
    viewer = admin.create_api_token("viewer-del", "viewer")["token"]
    one_line_error(
        run_cli("devices", "delete", "retiring-1", env={**env, "EDGEFLEET_TOKEN": viewer}),
        "insufficient_role",
    )


def test_an_unknown_metric_names_the_closest_ones(
    server: ServerProcess, admin: FleetClient, agents: AgentFactory, env: dict[str, str]
) -> None:
    admin.set_telemetry_policy(fast_policy())
    token = admin.create_enrollment_token(auto_approve=True)["token"]
    agent: AgentProcess = agents("metrics-1", token, extra_args=FAST_AGENT_ARGS)
    wait_for(partial(lambda a: "host.cpu.percent" in admin.telemetry_metrics(
        a.device_id or "", "1h") if a.device_id else False, agent),
        timeout_s=60, what="host metrics stored")  # fmt: skip
    known = ok(run_cli("telemetry", "query", "-m", "host.cpu.percent", "-d", "metrics-1",
                       "-o", "json", env=env))  # fmt: skip
    assert known.json()["metric"] == "host.cpu.percent"
    typo = run_cli("telemetry", "query", "-m", "host.cpu_percent", "-d", "metrics-1", env=env)
    one_line_error(typo, "unknown metric 'host.cpu_percent'", "did you mean host.cpu.percent",
                   "unknown_metric")  # fmt: skip


@pytest.mark.parametrize("command", [
    "devices list", "devices show", "devices delete", "devices label", "groups create",
    "audit list", "rollouts create", "rollouts status", "rollouts list", "trains show",
    "telemetry query", "alerts list", "workloads migrate", "placements nodes",
    "artifacts push", "releases sign",
])  # fmt: skip
def test_help_ends_with_examples_and_names_values_in_words(command: str) -> None:
    helped = ok(run_cli(*command.split(), "--help", env={"COLUMNS": "200"}))
    assert "Examples" in helped.stdout and f"edgefleet {command} " in helped.stdout
    options = [line for line in helped.stdout.splitlines() if " --" in line]
    assert options
    for line in options:
        if "--help" not in line:
            assert not any(
                t in line
                for t in ("<str>", "<int>", "<float>", "<path>", "<list[str]>", "<list[path]>")
            ), line
