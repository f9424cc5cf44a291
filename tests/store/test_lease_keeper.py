"""LeaseKeeper on each backend: one replica runs each controller loop, a clean shutdown
hands the leases over, a loop runs under its lease's fence, a loop that ends is restarted."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from edgefleet.clock import SystemClock
from edgefleet.core.lease import Fence
from edgefleet.server.services.leases import LeaseKeeper
from edgefleet.store import Database
from edgefleet.store.database import ACTING_UNDER

TTL_S = 1.5


def keeper(db: Database, replica: str, runs: dict[str, list[Fence | None]]) -> LeaseKeeper:
    """A keeper whose loops record, from a worker thread, the fence they act under."""

    def loop(name: str) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            while True:
                runs[name].append(await asyncio.to_thread(ACTING_UNDER.get))
                await asyncio.sleep(0.05)

        return run

    return LeaseKeeper(db, SystemClock(), replica, TTL_S, {"a": loop("a"), "b": loop("b")})


async def until(condition: Callable[[], bool], timeout_s: float = 10) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.02)


def test_one_keeper_acts_and_a_clean_stop_hands_over(db: Database) -> None:
    async def scenario() -> None:
        runs_1: dict[str, list[Fence | None]] = {"a": [], "b": []}
        runs_2: dict[str, list[Fence | None]] = {"a": [], "b": []}
        first, second = keeper(db, "r1", runs_1), keeper(db, "r2", runs_2)
        task_1 = asyncio.create_task(first.run_forever())
        await until(lambda: first.leading() == ["a", "b"])
        task_2 = asyncio.create_task(second.run_forever())
        await asyncio.sleep(3 * TTL_S)  # several renewals: r1 keeps both, r2 never acts
        assert first.leading() == ["a", "b"] and second.leading() == []
        assert runs_2 == {"a": [], "b": []}
        assert set(runs_1["a"]) == {Fence("a", "r1", 1)}
        task_1.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task_1
        assert first.leading() == []
        await until(lambda: second.leading() == ["a", "b"], timeout_s=TTL_S)  # released
        await until(lambda: bool(runs_2["a"]) and bool(runs_2["b"]))
        assert set(runs_2["a"]) == {Fence("a", "r2", 2)}
        task_2.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task_2

    asyncio.run(scenario())


def test_a_loop_that_ends_is_started_again(db: Database) -> None:
    starts: list[Fence | None] = []

    async def short_lived() -> None:
        starts.append(ACTING_UNDER.get())
        raise RuntimeError("boom")

    async def scenario() -> None:
        keeper = LeaseKeeper(db, SystemClock(), "r1", TTL_S, {"a": short_lived})
        task = asyncio.create_task(keeper.run_forever())
        await until(lambda: len(starts) >= 2)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert set(starts) == {Fence("a", "r1", 1)}
