"""Governance through the real CLI: sealed telemetry on, rotated and off (`telemetry
sealing`), and the device CA's certificate and revocation list (`devices ca`)."""

from __future__ import annotations

import base64

import pytest
from cryptography import x509

from edgefleet.client import FleetClient
from edgefleet.localfleet import ServerProcess
from edgefleet.security.sealing import key_id_of
from tests.cli_runner import CliResult, run_cli
from tests.conftest import ADMIN_TOKEN


@pytest.fixture
def env(server: ServerProcess) -> dict[str, str]:
    return {"EDGEFLEET_SERVER": server.url, "EDGEFLEET_TOKEN": ADMIN_TOKEN}


def assert_one_line_error(result: CliResult, *fragments: str) -> None:
    assert result.code == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_sealing_on_rotate_off(env: dict[str, str], admin: FleetClient) -> None:
    on = run_cli("telemetry", "sealing", "--on", "-o", "json", env=env)
    assert on.code == 0, on.stderr
    first = on.json()
    assert first["enabled"] is True
    # The key id the CLI shows is the id of the public key devices seal to.
    assert first["key_id"] == key_id_of(base64.b64decode(first["public_key"])).hex()
    assert admin.telemetry_sealing() == first

    shown = run_cli("telemetry", "sealing", env=env)
    assert shown.code == 0, shown.stderr
    assert "on" in shown.stdout and first["key_id"] in shown.stdout

    rotated = run_cli("telemetry", "sealing", "--rotate", "-o", "json", env=env).json()
    assert rotated["enabled"] is True, "rotating keeps sealing on"
    assert rotated["key_id"] != first["key_id"]
    assert rotated["version"] > first["version"]

    off = run_cli("telemetry", "sealing", "--off", "-o", "json", env=env).json()
    assert off["enabled"] is False
    assert admin.telemetry_sealing()["enabled"] is False
    assert run_cli("telemetry", "sealing", "-o", "name", env=env).stdout.strip() == off["key_id"]
    actions = [e["action"] for e in admin.audit_tail(10)]
    assert actions.count("telemetry.sealing.set") >= 3


def test_sealing_mistakes_end_in_one_line(env: dict[str, str], admin: FleetClient) -> None:
    assert_one_line_error(run_cli("telemetry", "sealing", "--on", "--off", env=env),
                          "--on and --off exclude each other")  # fmt: skip
    viewer = admin.create_api_token("gov-viewer", "viewer")["token"]
    as_viewer = {**env, "EDGEFLEET_TOKEN": viewer}
    assert run_cli("telemetry", "sealing", "-o", "json", env=as_viewer).code == 0
    assert_one_line_error(run_cli("telemetry", "sealing", "--on", env=as_viewer),
                          "lacks permission 'telemetry.write'")  # fmt: skip


def test_devices_ca_prints_the_certificate_and_the_revocation_list(env: dict[str, str]) -> None:
    ca = run_cli("devices", "ca", env=env)
    assert ca.code == 0, ca.stderr
    certificate = x509.load_pem_x509_certificate(ca.stdout.encode())
    constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.value.ca is True

    listed = run_cli("devices", "ca", "--crl", env=env)
    assert listed.code == 0, listed.stderr
    crl = x509.load_pem_x509_crl(listed.stdout.encode())
    assert crl.issuer == certificate.subject
    assert crl.is_signature_valid(certificate.public_key())  # type: ignore[arg-type]


def test_devices_ca_help_has_examples() -> None:
    for args in (["devices", "ca"], ["telemetry", "sealing"]):
        shown = run_cli(*args, "--help")
        assert shown.code == 0 and "Examples" in shown.stdout, shown.stdout
