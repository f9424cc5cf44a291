"""Cross-replica wake-ups: desired-state changes any replica commits on PostgreSQL wake the
long polls waiting here.

One thread per replica listens (`store/notifications.listen_for_desired`) and hands each
notification to the event loop, where `DesiredStateWatch.heard` wakes the device's waiters
unless they already read that generation. Notifications sent while the listener was
disconnected are lost, so on every (re)connect every waiting device's generation is re-read
once. On SQLite nothing listens: one process wakes its own long polls, and the watch's
periodic re-read covers other processes.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import Future

from edgefleet.server.metrics import ServerMetrics
from edgefleet.server.services.device_link import DeviceLinkService
from edgefleet.server.watch import DesiredStateWatch
from edgefleet.store import Database
from edgefleet.store.notifications import listen_for_desired

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 5.0


class DesiredNotifications:
    """The replica's listener for desired-state notifications (PostgreSQL only)."""

    def __init__(
        self,
        db: Database,
        watch: DesiredStateWatch,
        device_link: DeviceLinkService,
        metrics: ServerMetrics,
    ) -> None:
        self._db = db
        self._watch = watch
        self._device_link = device_link
        self._metrics = metrics
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        for result in ("woke", "idle"):
            metrics.desired_notifications.inc(result, amount=0)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start listening, if the database is PostgreSQL."""
        if self._db.dialect != "postgresql":
            return
        self._loop = loop
        self._stop.clear()
        self._thread = threading.Thread(
            target=listen_for_desired,
            args=(self._db.url, self._heard, self._listening, self._stop),
            name="desired-notifications",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT_S)
            self._thread = None

    def _heard(self, device_id: str, generation: int | None) -> None:
        """On the listening thread: hand the notification to the event loop."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake, device_id, generation)

    def _wake(self, device_id: str, generation: int | None) -> None:
        woke = self._watch.heard(device_id, generation)
        self._metrics.desired_notifications.inc("woke" if woke else "idle")

    def _listening(self) -> None:
        """On the listening thread, after each LISTEN: catch up on what was missed."""
        if self._loop is None or self._loop.is_closed():
            return
        future = asyncio.run_coroutine_threadsafe(self._recheck(), self._loop)
        future.add_done_callback(_log_failure)

    async def _recheck(self) -> None:
        waiting = self._watch.waiting_devices()
        if waiting:
            generations = await asyncio.to_thread(self._device_link.desired_generations, waiting)
            self._watch.wake_changed(generations)


def _log_failure(future: Future[None]) -> None:
    exception = None if future.cancelled() else future.exception()
    if exception is not None:
        log.warning("re-reading waiting devices after reconnect failed",
                    extra={"error": str(exception)})  # fmt: skip
