"""Desired-state notifications on PostgreSQL: a device's write notifies its generation when
its transaction commits, never for a rolled-back one or a rehearsal (dry run), and its
deletion or revocation notifies that it is gone."""

from __future__ import annotations

import queue
import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace

import pytest

from edgefleet.core.enrollment import EnrollmentState
from edgefleet.store import Database
from edgefleet.store.notifications import listen_for_desired
from tests.postgres import postgres_unavailable, throwaway_schema
from tests.store.test_store import new_device

pytestmark = pytest.mark.postgres


@pytest.fixture
def db() -> Iterator[Database]:
    reason = postgres_unavailable()
    if reason:
        pytest.skip(reason)
    with throwaway_schema() as url:
        database = Database(url)
        database.migrate()
        try:
            yield database
        finally:
            database.dispose()


@pytest.fixture
def heard(db: Database) -> Iterator[queue.Queue[tuple[str, int | None]]]:
    """What the listener hears, once it listens."""
    notifications: queue.Queue[tuple[str, int | None]] = queue.Queue()
    listening = threading.Event()
    stop = threading.Event()
    thread = threading.Thread(target=listen_for_desired, args=(
        db.url, lambda d, g: notifications.put((d, g)), listening.set, stop))  # fmt: skip
    thread.start()
    try:
        assert listening.wait(10)
        yield notifications
    finally:
        stop.set()
        thread.join(10)


def next_for(heard: queue.Queue[tuple[str, int | None]], device_id: str) -> int | None:
    """The next generation heard for `device_id` (other tests share the database's channel)."""
    while True:
        found, generation = heard.get(timeout=10)
        if found == device_id:
            return generation


def test_commits_notify_their_generation_and_rollbacks_nothing(
    db: Database, heard: queue.Queue[tuple[str, int | None]]
) -> None:
    device_id = f"d-{uuid.uuid4().hex}"
    with db.transaction() as tx:
        tx.devices.insert(replace(new_device(device_id, device_id),
                                  enrollment=EnrollmentState.APPROVED))  # fmt: skip
    with db.transaction() as tx:
        device = tx.devices.update(replace(tx.devices.get(device_id), desired_generation=2))
    assert next_for(heard, device_id) == 2

    with db.rehearsal() as tx:
        tx.devices.update(replace(device, desired_generation=3))
    with pytest.raises(RuntimeError), db.transaction() as tx:
        tx.devices.update(replace(device, desired_generation=4))
        raise RuntimeError("abandoned")
    with db.transaction() as tx:
        device = tx.devices.update(replace(device, desired_generation=5))
    assert next_for(heard, device_id) == 5, "nothing of the rehearsal or the rollback"

    with db.transaction() as tx:
        tx.devices.update(replace(device, enrollment=EnrollmentState.REVOKED))
    assert next_for(heard, device_id) is None
    with db.transaction() as tx:
        tx.devices.delete(device_id)
    assert next_for(heard, device_id) is None
