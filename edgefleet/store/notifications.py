"""PostgreSQL notifications of desired-state changes, so long polls wake on every replica.

A transaction that writes a device row (`DeviceRepository.update`, `.delete`) also runs
`NOTIFY edgefleet_desired, '<device id>:<generation>'` (`-` instead of a generation when the
device is gone or no longer approved). PostgreSQL delivers it when, and only if, that
transaction commits, to every connection that has run `LISTEN edgefleet_desired`: each
replica holds one such connection (`listen_for_desired`) and wakes its waiting long polls.

Notifications are not queued for a listener that is disconnected: after every (re)connect
the listener says so (`on_listening`), and the caller re-reads the generations of every
waiting device once. The channel is per database, not per schema: control planes sharing a
database in separate schemas hear each other's device ids, which match none of their
waiters. SQLite sends nothing; one process's wake-ups are in-process (`server/watch.py`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, make_url, text

log = logging.getLogger(__name__)

CHANNEL = "edgefleet_desired"
GONE = "-"  # the payload's generation for a device deleted, revoked or not yet approved
POLL_S = 1.0  # how often the listening thread checks that it should stop
RECONNECT_S = (0.5, 1.0, 2.0, 5.0)  # waits between reconnects, the last one repeated
# A dead server or a cut link is noticed in ~25 s even when no notification is due.
KEEPALIVE: dict[str, Any] = {"connect_timeout": 5, "keepalives": 1, "keepalives_idle": 10,
             "keepalives_interval": 5, "keepalives_count": 3}  # fmt: skip
_NOTIFY = text("SELECT pg_notify(:channel, :payload)")


def notify_desired(connection: Connection, device_id: str, generation: int | None) -> None:
    """Tell every replica, when this transaction commits, the device's desired generation
    (None: gone or not approved). Nothing on SQLite."""
    if connection.dialect.name != "postgresql":
        return
    payload = f"{device_id}:{GONE if generation is None else generation}"
    connection.execute(_NOTIFY, {"channel": CHANNEL, "payload": payload})


def parse_desired(payload: str) -> tuple[str, int | None]:
    """The device id and generation of a notification.

    >>> parse_desired("3f1c:7"), parse_desired("3f1c:-")
    (('3f1c', 7), ('3f1c', None))
    """
    device_id, _, generation = payload.rpartition(":")
    return device_id, None if generation == GONE else int(generation)


def listen_for_desired(
    database_url: str,
    on_change: Callable[[str, int | None], None],
    on_listening: Callable[[], None],
    stop: threading.Event,
) -> None:
    """Call `on_change(device id, generation)` for every notification until `stop` is set,
    over one dedicated connection, reconnecting after it drops (blocking: run it in a
    thread). `on_listening()` follows each successful LISTEN."""
    import psycopg  # the postgres extra: only a server on PostgreSQL listens

    conninfo = make_url(database_url).set(drivername="postgresql")
    dsn = conninfo.render_as_string(hide_password=False)
    failures = 0
    while not stop.is_set():
        try:
            with psycopg.connect(dsn, autocommit=True, **KEEPALIVE) as connection:
                connection.execute(f"LISTEN {CHANNEL}")
                failures = 0
                log.info("listening for desired-state changes", extra={"channel": CHANNEL})
                on_listening()
                while not stop.is_set():
                    for notification in connection.notifies(timeout=POLL_S):
                        on_change(*parse_desired(notification.payload))
        except psycopg.Error as e:
            wait_s = RECONNECT_S[min(failures, len(RECONNECT_S) - 1)]
            failures += 1
            log.warning("desired-state listener disconnected; reconnecting",
                        extra={"error": str(e).strip(), "retry_in_s": wait_s})  # fmt: skip
            stop.wait(wait_s)
