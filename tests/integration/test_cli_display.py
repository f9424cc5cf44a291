"""The CLI against a real server holding strings with hidden characters: people see them
escaped, scripts get them exact."""

from __future__ import annotations

import pytest

from edgefleet.client import FleetClient
from edgefleet.localfleet import ServerProcess
from tests.cli_runner import run_cli
from tests.conftest import ADMIN_TOKEN
from tests.device_requests import INVENTORY, RawDevice

# Clears the screen, sets the window title, then reverses the rest of the line.
HOSTILE = "Linux\x1b[2J\x1b]0;owned\x07\u202eevil\x9b31m"
SHOWN = "Linux\\x1b[2J\\x1b]0;owned\\x07\\u202eevil\\x9b31m"


@pytest.fixture
def env(server: ServerProcess) -> dict[str, str]:
    return {"EDGEFLEET_SERVER": server.url, "EDGEFLEET_TOKEN": ADMIN_TOKEN}


@pytest.fixture
def token(admin: FleetClient) -> str:
    return str(admin.create_enrollment_token(auto_approve=True)["token"])


def test_cli_shows_hidden_characters_of_stored_strings_escaped(
    server: ServerProcess, token: str, env: dict[str, str]
) -> None:
    raw = RawDevice(server.url)
    inventory = {**INVENTORY, "software": {**INVENTORY["software"], "os_version": HOSTILE}}
    payload = {"enrollment_token": token, "public_key": raw.key.public_key_b64,
               "name": "inventory-cam", "labels": {}, "inventory": inventory}  # fmt: skip
    assert raw.call("POST", "/v1/enroll", payload).status_code == 200

    shown = run_cli("devices", "show", raw.id, env=env)
    assert shown.code == 0, shown.stderr
    assert SHOWN in shown.stdout
    assert "\x1b[2J" not in shown.stdout and "\u202e" not in shown.stdout
    exact = run_cli("devices", "show", raw.id, "-o", "json", env=env)
    assert exact.json()["inventory"]["software"]["os_version"] == HOSTILE

    created = run_cli("enrollment-tokens", "create", "--description", HOSTILE, env=env)
    assert created.code == 0, created.stderr
    assert "\x1b[2J" not in created.stdout
    listed = run_cli("enrollment-tokens", "list", env=env)
    assert SHOWN in listed.stdout and "\x07" not in listed.stdout


def test_cli_errors_quoting_markup_or_escapes_stay_one_plain_line(env: dict[str, str]) -> None:
    # The slash makes the server answer "no such endpoint", quoting the path as it came.
    missing = run_cli("devices", "show", "cam[/]\x1b[2J", env=env)
    assert missing.code == 1, missing.stderr
    [line] = missing.stderr.strip().splitlines()
    assert line == "error: no such endpoint: GET /v1/devices/cam[/]\\x1b[2J (not_found)"
