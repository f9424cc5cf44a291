"""One device per name among devices that are not revoked, on every backend; and the
migration that repairs the names an older database holds."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import insert, inspect, update

from edgefleet.core.device import Device
from edgefleet.core.enrollment import EnrollmentState
from edgefleet.errors import Conflict, NotFound, StoreError
from edgefleet.security.audit import verify_chain
from edgefleet.store import Database
from edgefleet.store.database import MIGRATIONS_DIR
from edgefleet.store.repositories.devices import _values as device_values
from edgefleet.store.tables import devices
from tests.store.test_store import new_device

BEFORE = "0006_checkpoint_archives"  # the revision before device names were checked


def migrate_to(db: Database, action: str, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with db.engine.begin() as connection:
        config.attributes["connection"] = connection
        getattr(command, action)(config, revision)


def revoked(device_id: str, name: str) -> Device:
    return replace(new_device(device_id, name), enrollment=EnrollmentState.REVOKED)


def test_a_name_held_by_a_device_that_is_not_revoked_is_refused(db: Database) -> None:
    with db.transaction() as tx:
        tx.devices.insert(new_device("d-1", "cam"))
    with pytest.raises(Conflict) as taken, db.transaction() as tx:
        tx.devices.insert(new_device("d-2", "cam"))
    assert taken.value.code == "device_name_taken"
    with db.read() as tx:
        assert tx.devices.find("d-2") is None


def test_revoking_a_device_frees_its_name_and_names_resolve_to_the_holder(db: Database) -> None:
    with db.transaction() as tx:
        tx.devices.insert(revoked("d-1", "cam"))
        tx.devices.insert(revoked("d-2", "cam"))
        tx.devices.insert(revoked("d-3", "lone"))
    with db.read() as tx:
        with pytest.raises(Conflict, match=r"revoked devices had it \(d-1, d-2\)"):
            tx.devices.resolve("cam")
        assert tx.devices.resolve("lone").id == "d-3"
    with db.transaction() as tx:
        tx.devices.insert(new_device("d-4", "cam"))
    with db.read() as tx:
        assert tx.devices.resolve("cam").id == "d-4"
        assert tx.devices.resolve("d-1").id == "d-1"


def test_names_resolve_in_nfc(db: Database) -> None:
    with db.transaction() as tx:
        tx.devices.insert(new_device("d-1", "Caf\u00e9"))
    with db.read() as tx:
        assert tx.devices.resolve("Cafe\u0301").id == "d-1"
        with pytest.raises(NotFound):
            tx.devices.resolve("Cafe")


def test_a_lost_race_for_a_name_is_a_conflict(db: Database) -> None:
    if db.dialect == "sqlite":
        pytest.skip("SQLite runs one writer at a time: two enrollments cannot race")
    first_inserted = threading.Event()
    release_first = threading.Event()

    def first() -> None:
        with db.transaction() as tx:
            tx.devices.insert(new_device("d-1", "cam"))
            first_inserted.set()
            release_first.wait(10)

    racer = threading.Thread(target=first)
    racer.start()
    assert first_inserted.wait(10)
    # The second insert finds no holder (uncommitted), then waits on the unique index until
    # the first commits: the database decides, and the loser gets the same answer.
    threading.Timer(0.5, release_first.set).start()
    with pytest.raises(Conflict) as taken, db.transaction() as tx:
        tx.devices.insert(new_device("d-2", "cam"))
    racer.join()
    assert taken.value.code == "device_name_taken"


def test_migration_repairs_illegal_and_duplicate_names_and_audits_each(db: Database) -> None:
    migrate_to(db, "downgrade", BEFORE)
    stored = {
        "d-1": "cam",
        "d-2": "cam",  # later duplicate
        "d-3": "cam",  # revoked: keeps its name
        "d-4": "cam\u202e ",  # bidi control and trailing space, then a duplicate too
        "d-5": "Cafe\u0301",  # not NFC
        "d-6": "\u200b",  # nothing left: the device id
        "d-7": "cam-2",  # taken by its holder before any suffix
    }
    with db.transaction() as tx:
        tx.audit.append("2026-11-27T12:00:00.000000Z", "admin", "token.create", "t", "r", {})
        # Rows as that schema had them: the columns later migrations added are left out.
        present = {column["name"] for column in inspect(tx.connection).get_columns("devices")}
        for number, device_id in enumerate(stored, start=1):
            device = new_device(device_id, f"placeholder-{number}")
            row = device_values(
                replace(device, created_at=device.created_at.replace(second=number))
            )
            tx.connection.execute(insert(devices).values(
                **{k: v for k, v in row.items() if k in present}))  # fmt: skip
        tx.connection.execute(update(devices).where(devices.c.id == "d-3").values(
            enrollment=EnrollmentState.REVOKED.value, version=devices.c.version + 1))  # fmt: skip
        for device_id, name in stored.items():
            tx.connection.execute(
                update(devices).where(devices.c.id == device_id).values(name=name)
            )

    db.migrate()

    with db.read() as tx:
        names = {d.id: d.name for d in tx.devices.all()}
        versions = {d.id: d.version for d in tx.devices.all()}
        records = tx.audit.page(0, 100)
    assert names == {
        "d-1": "cam",
        "d-2": "cam-3",
        "d-3": "cam",
        "d-4": "cam-4",
        "d-5": "Caf\u00e9",
        "d-6": "d-6",
        "d-7": "cam-2",
    }
    assert versions["d-2"] == versions["d-1"] + 1
    renames = [r for r in records if r.action == "device.rename"]
    assert [(r.target, r.details["from"], r.details["to"]) for r in renames] == [
        ("device/d-2", "cam", "cam-3"),
        ("device/d-4", "cam\u202e ", "cam-4"),
        ("device/d-5", "Cafe\u0301", "Caf\u00e9"),
        ("device/d-6", "\u200b", "d-6"),
    ]
    assert renames[0].actor == "migration 0007_device_names"
    assert renames[0].details["reason"] == "the name was already held by d-1"
    assert verify_chain(records).ok
    with pytest.raises(StoreError, match=r"(?i)unique"), db.transaction() as tx:
        tx.connection.execute(update(devices).where(devices.c.id == "d-2").values(name="cam"))
