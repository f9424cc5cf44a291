"""Store behaviour every backend must share: round trips, optimistic concurrency, the
audit chain, nonces, and migrations that match the table definitions."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from edgefleet.core.device import Device
from edgefleet.core.enrollment import EnrollmentState, EnrollmentToken
from edgefleet.errors import Conflict, NotFound, Unauthenticated
from edgefleet.security.audit import verify_chain
from edgefleet.store import Database
from edgefleet.store.tables import metadata

T0 = datetime(2026, 11, 27, 12, 0, 0, 123456, tzinfo=UTC)


def new_device(device_id: str = "d-1", name: str = "cam-1") -> Device:
    return Device(
        id=device_id,
        name=name,
        public_key=f"key-{device_id}",
        enrollment=EnrollmentState.PENDING,
        labels={"region": "eu"},
        inventory={"hardware": {"arch": "aarch64"}},
        enrollment_token_id="enr-1",
        created_at=T0,
        last_seen=T0,
        desired={"labels": {"region": "eu"}},
        desired_generation=1,
    )


def test_migrations_produce_exactly_the_table_definitions(db: Database) -> None:
    with db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, metadata) == []
    db.migrate()  # idempotent


def test_device_round_trip_keeps_values_and_utc(db: Database) -> None:
    with db.transaction() as tx:
        tx.devices.insert(new_device())
    with db.read() as tx:
        loaded = tx.devices.get("d-1")
    assert loaded == new_device()
    assert loaded.created_at.tzinfo is not None and loaded.created_at == T0


def test_resolve_by_id_or_unique_name(db: Database) -> None:
    with db.transaction() as tx:
        tx.devices.insert(new_device("d-1", "cam"))
        tx.devices.insert(replace(new_device("d-2", "twin"), enrollment=EnrollmentState.REVOKED))
        tx.devices.insert(replace(new_device("d-3", "twin"), enrollment=EnrollmentState.REVOKED))
    with db.read() as tx:
        assert tx.devices.resolve("cam").id == "d-1"
        assert tx.devices.resolve("d-2").id == "d-2"
        with pytest.raises(Conflict, match="use the device id"):
            tx.devices.resolve("twin")
        with pytest.raises(NotFound):
            tx.devices.resolve("ghost")


def test_optimistic_update_refuses_a_stale_write(db: Database) -> None:
    with db.transaction() as tx:
        tx.devices.insert(new_device())
    with db.read() as tx:
        first = tx.devices.get("d-1")
        second = tx.devices.get("d-1")
    with db.transaction() as tx:
        saved = tx.devices.update(replace(first, enrollment=EnrollmentState.APPROVED))
    assert saved.version == first.version + 1
    with pytest.raises(Conflict, match="changed concurrently"), db.transaction() as tx:
        tx.devices.update(replace(second, labels={"x": "y"}))
    with db.read() as tx:
        assert tx.devices.get("d-1").labels == {"region": "eu"}


def test_failed_transaction_leaves_nothing(db: Database) -> None:
    with pytest.raises(RuntimeError), db.transaction() as tx:
        tx.devices.insert(new_device())
        tx.audit.append(T0.isoformat(), "a", "device.enroll", "device/d-1", "r", {})
        raise RuntimeError("boom")
    with db.read() as tx:
        assert tx.devices.count() == 0
        assert tx.audit.head() is None


def test_audit_appends_form_a_verifiable_chain(db: Database) -> None:
    for i in range(5):
        with db.transaction() as tx:
            tx.audit.append(T0.isoformat(), "admin", "x.y", f"t/{i}", f"req-{i}", {"i": i})
    with db.read() as tx:
        records = tx.audit.page(0, 100)
        assert [r.seq for r in tx.audit.latest(2)] == [4, 5]
        assert [r.seq for r in tx.audit.page(3, 100)] == [4, 5]
    verdict = verify_chain(records)
    assert verdict.ok and verdict.count == 5


def test_nonce_reuse_is_refused_and_pruned_after_expiry(db: Database) -> None:
    with db.transaction() as tx:
        tx.nonces.remember("d-1", "nonce-aaaaaaaaaaaaaaaa", T0)
        tx.nonces.remember("d-2", "nonce-aaaaaaaaaaaaaaaa", T0)  # per device
    with pytest.raises(Unauthenticated) as replay, db.transaction() as tx:
        tx.nonces.remember("d-1", "nonce-aaaaaaaaaaaaaaaa", T0)
    assert replay.value.code == "replayed_request"
    with db.transaction() as tx:
        assert tx.nonces.prune(T0 + timedelta(seconds=1)) == 2
        tx.nonces.remember("d-1", "nonce-aaaaaaaaaaaaaaaa", T0 + timedelta(minutes=5))


def test_enrollment_token_uses_are_counted(db: Database) -> None:
    token = EnrollmentToken("enr-1", "lab", False, None, 2, 0, False, "admin", T0)
    with db.transaction() as tx:
        tx.enrollment_tokens.insert(token, "hash-1")
        tx.enrollment_tokens.count_use("enr-1")
    with db.read() as tx:
        assert tx.enrollment_tokens.find_by_hash("hash-1") == replace(token, uses=1)
        assert tx.enrollment_tokens.find_by_hash("other") is None
