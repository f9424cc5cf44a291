"""The audit trail: every mutating action recorded and hash-chained; tampering detected."""

from __future__ import annotations

import json
import sqlite3

import pytest

from edgefleet.client import FleetClient
from edgefleet.localfleet import ServerProcess
from tests.cli_runner import CliResult, run_cli
from tests.conftest import ADMIN_TOKEN
from tests.device_requests import RawDevice


def cli(server: ServerProcess, *args: str) -> CliResult:
    return run_cli(*args, env={"EDGEFLEET_SERVER": server.url, "EDGEFLEET_TOKEN": ADMIN_TOKEN})


@pytest.fixture(scope="module")
def history(server: ServerProcess) -> str:
    """A few recorded actions; returns the id of the device they touched."""
    with server.client() as admin:
        raw = RawDevice(server.url)
        raw.enroll(admin.create_enrollment_token()["token"], name="audited")
        admin.change_enrollment(raw.id, "approve")
        admin.label_device(raw.id, {"tier": "gold"}, [])
        admin.create_api_token("ci-bot", "operator")
    return raw.id


def test_mutations_are_recorded_with_actor_target_and_request(
    server: ServerProcess, admin: FleetClient, history: str
) -> None:
    records = admin.audit_tail(50)
    actions = [(r["action"], r["target"]) for r in records]
    for expected in [
        ("device.enroll", f"device/{history}"),
        ("device.approve", f"device/{history}"),
        ("device.label", f"device/{history}"),
    ]:
        assert expected in actions
    approve = next(r for r in records if r["action"] == "device.approve")
    assert approve["actor"].startswith("bootstrap-admin (tok-")
    assert approve["details"] == {"from": "pending", "to": "approved"}
    assert len(approve["request_id"]) >= 8
    assert approve["at"].endswith("Z")
    seqs = [r["seq"] for r in records]
    assert seqs == sorted(seqs)
    # Reads are not audited.
    before = admin.audit_tail(1)[-1]["seq"]
    admin.list_devices()
    assert admin.audit_tail(1)[-1]["seq"] == before


def test_verify_passes_on_an_intact_chain_and_prints_an_anchor(
    server: ServerProcess, history: str
) -> None:
    result = cli(server, "audit", "verify", "-o", "json")
    assert result.code == 0, result.stderr
    verdict = result.json()
    assert verdict["ok"] is True
    assert verdict["records"] >= 4
    assert verdict["head"].startswith(f"{verdict['records']}:")
    listed = cli(server, "audit", "list", "--limit", "3", "-o", "json").json()
    assert len(listed) == 3


def tamper(server: ServerProcess, sql: str, *params: object) -> None:
    with sqlite3.connect(server.db_path) as db:
        db.execute(sql, params)


def test_verify_catches_an_edited_record(server: ServerProcess, history: str) -> None:
    row = (
        sqlite3.connect(server.db_path)
        .execute("SELECT seq, details FROM audit_log WHERE action = 'device.label'")
        .fetchone()
    )
    seq, details = row
    forged = json.dumps({**json.loads(details), "set": {"tier": "bronze"}})
    tamper(server, "UPDATE audit_log SET details = ? WHERE seq = ?", forged, seq)
    try:
        result = cli(server, "audit", "verify")
        assert result.code == 1
        assert f"record {seq} was altered" in result.stderr
        assert "Traceback" not in result.stderr
    finally:
        tamper(server, "UPDATE audit_log SET details = ? WHERE seq = ?", details, seq)
    assert cli(server, "audit", "verify").code == 0


def test_verify_catches_a_deleted_record_and_a_truncated_tail(
    server: ServerProcess, history: str
) -> None:
    anchor = cli(server, "audit", "verify", "-o", "json").json()["head"]
    head_seq = int(anchor.split(":")[0])
    with sqlite3.connect(server.db_path) as db:
        saved = db.execute("SELECT * FROM audit_log WHERE seq IN (2, ?)", (head_seq,)).fetchall()
        db.execute("DELETE FROM audit_log WHERE seq = 2")
    try:
        deleted = cli(server, "audit", "verify")
        assert deleted.code == 1
        assert "record 2 is missing" in deleted.stderr
    finally:
        with sqlite3.connect(server.db_path) as db:
            db.execute("INSERT INTO audit_log VALUES (?,?,?,?,?,?,?,?,?)", saved[0])

    tamper(server, "DELETE FROM audit_log WHERE seq = ?", head_seq)
    try:
        assert cli(server, "audit", "verify").code == 0, "a shorter chain links fine..."
        truncated = cli(server, "audit", "verify", "--anchor", anchor)
        assert truncated.code == 1, "...but not against an anchor kept earlier"
        assert "truncated" in truncated.stderr
    finally:
        with sqlite3.connect(server.db_path) as db:
            db.execute("INSERT INTO audit_log VALUES (?,?,?,?,?,?,?,?,?)", saved[1])
    assert cli(server, "audit", "verify", "--anchor", anchor).code == 0
