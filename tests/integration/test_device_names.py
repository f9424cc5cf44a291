"""Names against a real server: exact validation, legal characters, one device per name."""

from __future__ import annotations

from typing import Any

import pytest

from edgefleet.client import FleetClient
from edgefleet.errors import ApiError
from edgefleet.localfleet import ServerProcess
from tests.cli_runner import run_cli
from tests.conftest import ADMIN_TOKEN
from tests.device_requests import RawDevice


@pytest.fixture
def env(server: ServerProcess) -> dict[str, str]:
    return {"EDGEFLEET_SERVER": server.url, "EDGEFLEET_TOKEN": ADMIN_TOKEN}


@pytest.fixture
def token(admin: FleetClient) -> str:
    return str(admin.create_enrollment_token(auto_approve=True)["token"])


def error_of(response: Any) -> dict[str, Any]:
    return dict(response.json()["error"])


def test_a_label_value_with_a_trailing_newline_is_refused(
    server: ServerProcess, admin: FleetClient, token: str
) -> None:
    raw = RawDevice(server.url)
    assert raw.enroll(token).status_code == 200
    with pytest.raises(ApiError) as refused:
        admin.label_device(raw.id, {"tier": "gold\n"}, [])
    assert refused.value.status == 400 and "'gold\\n'" in refused.value.message
    refused_at_enrollment = RawDevice(server.url).enroll(token, labels={"tier": "gold\n"})
    assert refused_at_enrollment.status_code == 400
    assert admin.get_device(raw.id)["labels"] == {}


@pytest.mark.parametrize(
    ("name", "what"),
    [
        ("cam\u202e1", "U+202E RIGHT-TO-LEFT OVERRIDE"),
        ("cam\u200b1", "U+200B ZERO WIDTH SPACE"),
        ("cam\x9b1", "U+009B"),
        ("cam-1\n", "U+000A"),
        ("cam-1 ", "whitespace"),
    ],
)
def test_enrollment_refuses_names_with_hidden_characters(
    server: ServerProcess, token: str, name: str, what: str
) -> None:
    response = RawDevice(server.url).enroll(token, name=name)
    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_device_name"
    assert what in error_of(response)["message"]


def test_a_taken_name_is_refused_and_reenrollment_keeps_its_own(
    server: ServerProcess, admin: FleetClient, token: str
) -> None:
    first = RawDevice(server.url)
    assert first.enroll(token, name="Cafe\u0301-1").status_code == 200
    again = first.enroll(token, name="Caf\u00e9-1")  # the same key: idempotent
    assert again.status_code == 200 and again.json()["device_id"] == first.id
    clash = RawDevice(server.url).enroll(token, name="Caf\u00e9-1")  # the same name in NFC
    assert clash.status_code == 409
    assert error_of(clash)["code"] == "device_name_taken"
    assert "choose another name" in error_of(clash)["message"]
    assert [d["id"] for d in admin.list_devices() if d["name"] == "Caf\u00e9-1"] == [first.id]


def test_revoking_frees_the_name_and_show_by_name_finds_the_holder(
    server: ServerProcess, admin: FleetClient, token: str, env: dict[str, str]
) -> None:
    old, new = RawDevice(server.url), RawDevice(server.url)
    assert old.enroll(token, name="gate-7").status_code == 200
    assert new.enroll(token, name="gate-7").status_code == 409
    admin.change_enrollment("gate-7", "revoke")
    assert new.enroll(token, name="gate-7").status_code == 200
    shown = run_cli("devices", "show", "gate-7", "-o", "json", env=env)
    assert shown.code == 0, shown.stderr
    assert shown.json()["id"] == new.id
    assert run_cli("devices", "show", old.id, "-o", "json", env=env).json()["name"] == "gate-7"
