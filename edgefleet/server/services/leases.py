"""Controller leases of this replica: acquire and renew them, run each controller only while
its lease is held, and make every write of that controller carry the lease's fence.

One task (`run_forever`) tries every lease each `renew_interval_s(ttl)`:

1. *Acquire or renew* (one statement, `LeaseRepository.acquire`), noting the monotonic time
   the statement was sent.
2. Held, with the token already acting: push the local deadline to
   `core.lease.act_until(sent, ttl)`. Held with a new token (first acquisition, or taken
   back after a lapse): stop any old controller task, start a new one under the new fence.
   Held by another replica: stop acting.
3. A deadline that passes without a renewal (the database is unreachable, or the process
   was paused) stops the controller at once, from a timer on the event loop's monotonic
   clock, whatever the acquiring statement is still doing.

A controller runs as an asyncio task whose context holds its fence
(`store.database.ACTING_UNDER`); `asyncio.to_thread` copies it into worker threads, so every
`Database.transaction()` the controller opens checks the fence just before committing. A
cancelled task cannot stop a thread already running a pass: that pass's write is what the
fence refuses once another replica has taken the lease (`Database.fenced_writes_refused`).

On shutdown the leases are released (expired at once), so another replica takes over at its
next try rather than after the TTL.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta

from edgefleet.clock import Clock
from edgefleet.core.lease import Fence, Lease, act_until, renew_interval_s
from edgefleet.store import Database
from edgefleet.store.database import ACTING_UNDER

log = logging.getLogger(__name__)

Controller = Callable[[], Awaitable[None]]


@dataclass
class _Acting:
    fence: Fence
    task: asyncio.Task[None]
    deadline: asyncio.TimerHandle | None = None


def stored_leases(db: Database) -> list[Lease]:
    """Every stored lease, held by any replica, expired or not."""
    with db.read() as tx:
        return tx.leases.list()


class LeaseKeeper:
    """Runs `controllers` (lease name → the coroutine function of its loop) on this replica
    only while it holds each one's lease."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        replica_id: str,
        ttl_s: float,
        controllers: Mapping[str, Controller],
    ) -> None:
        self._db = db
        self._clock = clock
        self.replica_id = replica_id
        self.ttl_s = ttl_s
        self._controllers = dict(controllers)
        self._acting: dict[str, _Acting] = {}

    def leading(self) -> list[str]:
        """The leases this replica holds and acts under now."""
        return sorted(self._acting)

    async def run_forever(self) -> None:
        interval_s = renew_interval_s(self.ttl_s)
        try:
            while True:
                for name in self._controllers:
                    await self._try(name, interval_s)
                await asyncio.sleep(interval_s)
        finally:
            fences = [acting.fence for acting in self._acting.values()]
            for fence in fences:
                self._stop(fence.name, "shutting down")
            for fence in fences:
                await self._release(fence)

    async def _try(self, name: str, timeout_s: float) -> None:
        loop = asyncio.get_running_loop()
        sent = loop.time()
        try:
            lease = await asyncio.wait_for(asyncio.to_thread(self._acquire, name), timeout_s)
        except Exception as e:  # unreachable database, timeout: the deadline decides
            log.warning("lease renewal failed; acting until the lease's deadline",
                        extra={"lease": name, "replica": self.replica_id,
                               "error": str(e) or type(e).__name__})  # fmt: skip
            return
        acting = self._acting.get(name)
        if lease is None:
            if acting is not None:
                self._stop(name, "another replica holds the lease")
            return
        fence = Fence(name, lease.holder, lease.token)
        deadline = act_until(sent, self.ttl_s)
        if deadline <= loop.time():  # the answer came too late to act on
            return
        if acting is not None and acting.fence != fence:
            self._stop(name, "the lease lapsed and was taken again")
            acting = None
        if acting is None:
            acting = _Acting(fence, asyncio.create_task(self._run_under(fence)))
            acting.task.add_done_callback(functools.partial(self._ended, name))
            self._acting[name] = acting
            log.info("acting under lease", extra={"lease": name, "replica": self.replica_id,
                                                  "token": fence.token})  # fmt: skip
        if acting.deadline is not None:
            acting.deadline.cancel()
        acting.deadline = loop.call_at(deadline, self._stop, name, "lease not renewed in time")

    def _acquire(self, name: str) -> Lease | None:
        with self._db.transaction() as tx:
            return tx.leases.acquire(name, self.replica_id, self._clock.now(),
                                     timedelta(seconds=self.ttl_s))  # fmt: skip

    async def _run_under(self, fence: Fence) -> None:
        ACTING_UNDER.set(fence)  # this task's own context, copied into its threads
        await self._controllers[fence.name]()

    def _ended(self, name: str, task: asyncio.Task[None]) -> None:
        """A loop that ended on its own (it should not) is started again at the next try."""
        acting = self._acting.get(name)
        if task.cancelled() or acting is None or acting.task is not task:
            return
        log.error("controller loop ended; restarting it at the next lease try",
                  extra={"lease": name, "replica": self.replica_id,
                         "error": repr(task.exception())})  # fmt: skip
        self._stop(name, "the loop ended")

    def _stop(self, name: str, reason: str) -> None:
        acting = self._acting.pop(name, None)
        if acting is None:
            return
        if acting.deadline is not None:
            acting.deadline.cancel()
        acting.task.cancel()
        log.info("stopped acting under lease", extra={
            "lease": name, "replica": self.replica_id, "token": acting.fence.token,
            "reason": reason,
        })  # fmt: skip

    async def _release(self, fence: Fence) -> None:
        try:
            await asyncio.to_thread(self._release_now, fence)
        except Exception as e:  # the TTL ends the lease anyway
            log.warning(
                "lease not released; it lapses after its TTL",
                extra={"lease": fence.name, "error": str(e) or type(e).__name__},
            )

    def _release_now(self, fence: Fence) -> None:
        with self._db.transaction() as tx:
            tx.leases.release(fence, self._clock.now())
