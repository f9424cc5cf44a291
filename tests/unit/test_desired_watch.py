"""The long-poll watch: notifies wake one device's waiters; a store re-read, or another
replica's notification, wakes only those whose generation moved; close() answers everyone
(server shutdown)."""

from __future__ import annotations

import asyncio

from edgefleet.server.metrics import Gauge
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


def test_a_notification_wakes_waiters_unless_they_read_that_generation() -> None:
    waiting = Gauge("waiting", "")
    watch = DesiredStateWatch(waiting)
    with watch.subscribe("a") as a, watch.subscribe("b") as b, watch.subscribe("c") as c:
        assert waiting.family().samples[0][2] == 3
        watch.note("a", 3)
        watch.note("b", 3)  # "c" is still reading its document: not noted yet
        assert not watch.heard("a", 3), "this replica's own change, already answered"
        assert watch.heard("b", 4)  # another replica moved it
        assert watch.heard("c", 7)  # woken to read again, whatever it will read
        assert not watch.heard("z", 1), "nobody waits for it"
        assert (a.is_set(), b.is_set(), c.is_set()) == (False, True, True)
        assert watch.heard("a", None), "gone or no longer approved"
    assert waiting.family().samples[0][2] == 0 and watch.waiting == 0
