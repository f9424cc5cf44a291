"""Leases in the store (SQLite and PostgreSQL): acquire, renew, take over after expiry,
release, and the fence check that refuses a controller's write after a takeover."""

from __future__ import annotations

import contextvars
from datetime import UTC, datetime, timedelta

import pytest

from edgefleet.core.lease import Fence, Lease
from edgefleet.errors import LeaseLost
from edgefleet.store import Database
from edgefleet.store.database import ACTING_UNDER

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TTL = timedelta(seconds=6)
NAME = "rollout-controller"


def acquire(db: Database, holder: str, now: datetime, name: str = NAME) -> Lease | None:
    with db.transaction() as tx:
        return tx.leases.acquire(name, holder, now, TTL)


def test_acquire_renew_take_over_and_release(db: Database) -> None:
    first = acquire(db, "r1", T0)
    assert first is not None and (first.holder, first.token) == ("r1", 1)
    assert first.expires_at == T0 + TTL
    assert acquire(db, "r2", T0 + timedelta(seconds=3)) is None  # r1's, unexpired
    renewed = acquire(db, "r1", T0 + timedelta(seconds=2))
    assert renewed is not None and renewed.token == 1
    assert renewed.expires_at == T0 + timedelta(seconds=8)
    assert acquire(db, "r2", T0 + timedelta(seconds=7)) is None
    taken = acquire(db, "r2", T0 + timedelta(seconds=8))  # expired exactly now
    assert taken is not None and (taken.holder, taken.token) == ("r2", 2)
    with db.transaction() as tx:
        assert not tx.leases.release(Fence(NAME, "r1", 1), T0 + timedelta(seconds=9))
        assert tx.leases.release(Fence(NAME, "r2", 2), T0 + timedelta(seconds=9))
    back = acquire(db, "r1", T0 + timedelta(seconds=9))
    assert back is not None and (back.holder, back.token) == ("r1", 3)
    with db.read() as tx:
        assert [(lease.name, lease.holder, lease.token) for lease in tx.leases.list()] == [
            (NAME, "r1", 3)
        ]


def test_each_lease_is_its_own_row(db: Database) -> None:
    assert acquire(db, "r1", T0, "housekeeping") is not None
    assert acquire(db, "r2", T0, NAME) is not None
    with db.read() as tx:
        assert {(lease.name, lease.holder) for lease in tx.leases.list()} == {
            ("housekeeping", "r1"),
            (NAME, "r2"),
        }


def _write_under(db: Database, fence: Fence, name: str) -> None:
    """A controller's write (here: taking another lease) made under `fence`."""

    def write() -> None:
        ACTING_UNDER.set(fence)
        with db.transaction() as tx:
            tx.leases.acquire(name, "marker", T0, TTL)

    contextvars.copy_context().run(write)


def test_a_write_under_a_taken_over_lease_is_refused_and_rolled_back(db: Database) -> None:
    first = acquire(db, "r1", T0)
    assert first is not None
    stale = Fence(NAME, "r1", first.token)
    _write_under(db, stale, "written-by-r1")  # holds: commits
    assert acquire(db, "r2", T0 + TTL) is not None  # r1 paused past its lease: r2 takes it
    with pytest.raises(LeaseLost):
        _write_under(db, stale, "late-write-by-r1")
    assert db.fenced_writes_refused == 1
    _write_under(db, Fence(NAME, "r2", 2), "written-by-r2")
    with db.read() as tx:
        names = {lease.name for lease in tx.leases.list()}
    assert "written-by-r1" in names and "written-by-r2" in names
    assert "late-write-by-r1" not in names


def test_expiry_alone_does_not_refuse_a_write(db: Database) -> None:
    """Nobody else acted while the holder was late: its token is still the lease's."""
    first = acquire(db, "r1", T0)
    assert first is not None
    _write_under(db, Fence(NAME, "r1", first.token), "late-but-unopposed")
    assert db.fenced_writes_refused == 0


def test_migrating_again_changes_nothing(db: Database) -> None:
    acquire(db, "r1", T0)
    db.migrate()
    with db.read() as tx:
        assert [lease.holder for lease in tx.leases.list()] == ["r1"]
