"""Device messages from the broker (server/services/device_messages.py) on SQLite and
PostgreSQL: a batch is authenticated in one read, each message answered with its device or
its own refusal; settled sequence numbers refuse the same message later, and once forgotten
the device's floor does; an old timestamp alone refuses nothing; the batcher hands each
caller its own outcome."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from edgefleet.core.device import Device
from edgefleet.core.enrollment import EnrollmentState
from edgefleet.errors import EdgefleetError, Unauthenticated
from edgefleet.security.keys import DeviceKey
from edgefleet.security.message_signing import read_message_signature, sign_message
from edgefleet.server.services.desired import render_device
from edgefleet.server.services.device_messages import (
    ArrivedMessage,
    Batcher,
    DeviceMessageService,
)
from edgefleet.server.settings import ServerSettings
from edgefleet.store import Database
from edgefleet.transport.mqtt_topics import Channel, device_topic
from tests.fake_clock import FakeClock
from tests.store.test_telemetry_store import T0


def enrolled(db: Database, device_id: str, key: DeviceKey, state: EnrollmentState) -> Device:
    device = Device(
        id=device_id, name=device_id, public_key=key.public_key_b64, enrollment=state,
        labels={}, inventory={}, enrollment_token_id=None, created_at=T0, last_seen=T0,
    )  # fmt: skip
    with db.transaction() as tx:
        rendered = render_device(tx, device)
        tx.devices.insert(rendered)
    return rendered


def message(key: DeviceKey, device_id: str, seq: int, payload: bytes = b"r",
            at_s: float = 0.0) -> ArrivedMessage:  # fmt: skip
    topic = device_topic(device_id, Channel.REPORT)
    props = dict(sign_message(key, topic, payload, device_id, seq, T0 + timedelta(seconds=at_s)))
    return ArrivedMessage(read_message_signature(device_id, props.get), topic, payload)


def code(outcome: Device | EdgefleetError) -> str:
    return outcome.code if isinstance(outcome, EdgefleetError) else f"ok:{outcome.id}"


def test_a_batch_is_answered_message_by_message(db: Database, tmp_path: Path) -> None:
    keys = {name: DeviceKey.generate() for name in ("a", "b", "pending", "stranger")}
    enrolled(db, "a", keys["a"], EnrollmentState.APPROVED)
    enrolled(db, "b", keys["b"], EnrollmentState.APPROVED)
    enrolled(db, "pending", keys["pending"], EnrollmentState.PENDING)
    service = DeviceMessageService(db, FakeClock(T0), ServerSettings(data_dir=tmp_path))
    first = message(keys["a"], "a", 1)
    assert service.settle([first.signed]) == [None]

    forged = message(keys["stranger"], "b", 7)  # b's topic, another key
    tampered = replace(message(keys["b"], "b", 8), payload=b"changed")
    outcomes = service.authenticate([
        message(keys["a"], "a", 2),
        first,  # settled before: a replay
        message(keys["b"], "b", 1),
        forged,
        tampered,
        message(keys["stranger"], "nobody", 1),
        message(keys["pending"], "pending", 1),
        message(keys["a"], "a", 3, at_s=-3600),  # held an hour by the broker: still good
    ])  # fmt: skip
    assert [code(o) for o in outcomes] == [
        "ok:a", "replayed_request", "ok:b", "bad_signature", "bad_signature",
        "unknown_device", "device_pending", "ok:a",
    ]  # fmt: skip
    # The same sequence number settled twice: the second consumer is told it was taken.
    second = message(keys["a"], "a", 2).signed
    again = service.settle([first.signed, second, second])
    assert isinstance(again[0], Unauthenticated) and again[0].code == "replayed_request"
    assert again[1] is None  # the first copy in a batch is taken, the next is a replay
    assert isinstance(again[2], Unauthenticated) and again[2].code == "replayed_request"


def test_a_forgotten_sequence_number_stays_refused_by_the_floor(
    db: Database, tmp_path: Path
) -> None:
    """The window: numbers taken are remembered for the skew window, then the floor rises to
    the highest of them; what is above it and never taken is still good (replicas take a
    device's messages out of order), whatever its age."""
    keys = {name: DeviceKey.generate() for name in ("a", "b")}
    enrolled(db, "a", keys["a"], EnrollmentState.APPROVED)
    enrolled(db, "b", keys["b"], EnrollmentState.APPROVED)
    clock = FakeClock(T0)
    settings = ServerSettings(data_dir=tmp_path, max_clock_skew_s=60)
    service = DeviceMessageService(db, clock, settings)
    taken = [message(keys["a"], "a", seq) for seq in (5, 7, 9)]
    assert service.settle([m.signed for m in taken]) == [None] * 3
    assert service.settle([message(keys["b"], "b", 3).signed]) == [None]
    clock.advance(30)
    later = message(keys["a"], "a", 12)  # taken after the others: remembered longer
    assert service.settle([later.signed]) == [None]
    clock.advance(40)  # 5, 7, 9 and b's 3 forgotten; 12 not yet
    with db.transaction() as tx:
        assert tx.nonces.prune(clock.now()) == 4
        assert tx.nonces.floors(["a", "b", "nobody"]) == {"a": 9, "b": 3}
    outcomes = service.authenticate([
        taken[0], taken[2],                   # replays of forgotten numbers: the floor
        message(keys["a"], "a", 6),           # never taken, but below the floor
        later,                                # remembered: a replay
        message(keys["a"], "a", 10, at_s=-86400),  # new, a day old: good
        message(keys["b"], "b", 4),
    ])  # fmt: skip
    assert [code(o) for o in outcomes] == [
        "stale_sequence", "stale_sequence", "stale_sequence", "replayed_request", "ok:a", "ok:b",
    ]  # fmt: skip
    # 12 forgotten in turn: the floor rises to it, never down (two replicas pruning at once
    # raise it to the larger of their two answers); a deleted device's floor goes with it.
    clock.advance(120)
    with db.transaction() as tx:
        assert tx.nonces.prune(clock.now()) == 1
        assert tx.nonces.floors(["a"]) == {"a": 12}
    with db.transaction() as tx:
        tx.nonces.remember("a", "seq-00000000000000000011", clock.now())
    clock.advance(1)
    with db.transaction() as tx:
        assert tx.nonces.prune(clock.now()) == 1
        assert tx.nonces.floors(["a"]) == {"a": 12}
        tx.nonces.forget("a")
        assert tx.nonces.floors(["a", "b"]) == {"b": 3}


def test_the_batcher_gives_each_caller_its_own_outcome() -> None:
    batches: list[list[int]] = []

    def halve(items: list[int]) -> list[int | BaseException]:
        batches.append(items)
        return [i // 2 if i % 2 == 0 else ValueError(f"odd {i}") for i in items]

    async def run() -> list[object]:
        batcher: Batcher[int, int] = Batcher(halve, max_batch=3)
        worker = asyncio.create_task(batcher.run_forever())
        try:
            return await asyncio.gather(*(batcher.submit(i) for i in range(7)),
                                        return_exceptions=True)  # fmt: skip
        finally:
            worker.cancel()

    outcomes = asyncio.run(run())
    assert outcomes[0::2] == [0, 1, 2, 3]
    assert [str(e) for e in outcomes[1::2]] == ["odd 1", "odd 3", "odd 5"]
    # Submitted together: taken in batches of at most three, in order, none twice.
    assert [i for b in batches for i in b] == list(range(7))
    assert max(len(b) for b in batches) == 3 and len(batches) >= 3
