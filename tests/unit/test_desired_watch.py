"""The long-poll watch: notifies wake one device's waiters; a store re-read wakes only
those whose generation moved; close() answers everyone (server shutdown)."""

from __future__ import annotations

import asyncio

from edgefleet.server.watch import DesiredStateWatch


def test_recheck_wakes_only_waiters_whose_generation_moved_or_who_lost_access() -> None:
    async def scenario() -> None:
        watch = DesiredStateWatch()
        watch.bind(asyncio.get_running_loop())
        with watch.subscribe("a") as a, watch.subscribe("b") as b, watch.subscribe("c") as c:
            watch.note("a", 3)
            watch.note("b", 5)
            watch.note("c", 1)
            assert watch.waiting_devices() == ["a", "b", "c"]
            assert watch.wake_changed({"a": 3, "b": 6, "c": None}) == 2
            assert (a.is_set(), b.is_set(), c.is_set()) == (False, True, True)
            watch.notify("a")
            await asyncio.wait_for(a.wait(), timeout=5)
        assert watch.waiting == 0

    asyncio.run(scenario())


def test_close_answers_waiters_and_later_subscribers() -> None:
    async def scenario() -> None:
        watch = DesiredStateWatch()
        watch.bind(asyncio.get_running_loop())
        with watch.subscribe("a") as waiting:
            watch.close()
            assert waiting.is_set()
            with watch.subscribe("b") as later:
                assert later.is_set() and watch.closed

    asyncio.run(scenario())
