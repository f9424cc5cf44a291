"""Presence on the MQTT channel: a message is taken only when newer than the last one (a
replayed or late Will cannot undo a reconnect), a Will makes an idle node dead and a hosting
node only suspect (failover's grace still runs, phi still decides dead), the verdict stays
at that floor until the node is heard from, and the connection status follows the Will and
the idle interval."""

from __future__ import annotations

import doctest
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from edgefleet.core import presence as presence_module
from edgefleet.core.device import ConnectionStatus, classify_connection
from edgefleet.core.presence import (
    Presence,
    PresenceState,
    observe_presence,
    parse_presence,
)
from edgefleet.core.workloads.failover import FailoverPolicy
from edgefleet.core.workloads.failure_detector import Liveness
from edgefleet.core.workloads.liveness import (
    NodeLiveness,
    evaluate_liveness,
    liveness_from_dict,
    liveness_to_dict,
    observe_heartbeat,
    observe_will,
)

T0 = datetime(2026, 3, 1, tzinfo=UTC)
ONLINE, OFFLINE = PresenceState.ONLINE, PresenceState.OFFLINE


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def steady(interval_s: float = 1.0, beats: int = 30) -> NodeLiveness:
    record = None
    for i in range(beats):
        record = observe_heartbeat(record, at(i * interval_s), interval_s=interval_s)
    assert record is not None
    return record


def test_a_connection_s_will_follows_its_online_message_and_an_older_will_is_refused() -> None:
    first = observe_presence(None, ONLINE, 10, at(0), 300.0)  # connect: online 10, Will 11
    assert first.accepted and first.record is not None
    assert first.record.idle_interval_s == 300.0
    second = observe_presence(first.record, ONLINE, 20, at(5), 300.0)  # reconnected: 20, 21
    assert second.accepted and second.record is not None
    late_will = observe_presence(second.record, OFFLINE, 11, at(6), 300.0)  # the first Will
    assert not late_will.accepted
    assert late_will.record == second.record
    assert "not newer" in late_will.reason
    will = observe_presence(second.record, OFFLINE, 21, at(7), 300.0)
    assert will.accepted and will.record is not None
    assert will.record.state is OFFLINE and will.record.idle_interval_s is None
    assert not observe_presence(will.record, OFFLINE, 21, at(8), 300.0).accepted  # replayed


@given(st.lists(st.tuples(st.booleans(), st.integers(1, 50)), max_size=30))
def test_the_presence_taken_is_always_the_newest_message_seen(
    messages: list[tuple[bool, int]],
) -> None:
    record: Presence | None = None
    for i, (online, seq) in enumerate(messages):
        record = observe_presence(record, ONLINE if online else OFFLINE, seq, at(i), 60.0).record
    if messages:
        assert record is not None
        assert record.seq == max(seq for _, seq in messages)


def test_a_payload_names_a_state_or_nothing() -> None:
    assert parse_presence(b"online") is ONLINE
    assert parse_presence(b"offline") is OFFLINE
    assert parse_presence(b"OFFLINE") is None
    assert parse_presence(b"\xff") is None


def test_a_will_makes_an_idle_node_dead_at_once_and_it_stays_dead_until_heard_from() -> None:
    record = steady()  # last heartbeat at 29 s
    gone = observe_will(record, at(29.5), hosting=False)
    assert gone.state is Liveness.DEAD and gone.since == at(29.5)
    # phi alone would call it alive for seconds more; the Will's verdict holds.
    assert evaluate_liveness(gone, at(30), T0).state is Liveness.DEAD
    back = observe_heartbeat(gone, at(40))
    assert back.state is Liveness.ALIVE and back.floor is None
    assert evaluate_liveness(back, at(40.5), T0).state is Liveness.ALIVE


def test_a_will_makes_a_hosting_node_suspect_so_failover_keeps_its_grace_period() -> None:
    record = steady()
    will_at = at(29.5)
    gone = observe_will(record, will_at, hosting=True)
    assert gone.state is Liveness.SUSPECT and gone.since == will_at
    # Below phi's verdict the floor holds it suspect; failover counts grace from the Will.
    held = evaluate_liveness(gone, at(30), T0)
    assert held.state is Liveness.SUSPECT and held.since == will_at
    grace_s = FailoverPolicy().suspect_grace_s
    assert (at(30) - held.since).total_seconds() < grace_s
    # phi still decides dead, as for any silent node.
    assert evaluate_liveness(held, at(60), T0).state is Liveness.DEAD


def test_a_will_for_a_node_already_dead_keeps_its_since() -> None:
    dead = evaluate_liveness(steady(), at(90), T0)
    assert dead.state is Liveness.DEAD
    again = observe_will(dead, at(95), hosting=False)
    assert again.state is Liveness.DEAD and again.since == dead.since


def test_the_floor_survives_the_store_round_trip() -> None:
    gone = observe_will(steady(), at(29.5), hosting=True)
    assert liveness_from_dict(liveness_to_dict(gone)) == gone


def test_a_will_after_the_last_heartbeat_shows_the_device_offline_at_once() -> None:
    seen = at(0)
    will = Presence(OFFLINE, at(1), 8)
    assert classify_connection(seen, at(2), 15, will) is ConnectionStatus.OFFLINE
    # A heartbeat after the Will (the device came back over HTTP) counts again.
    assert classify_connection(at(3), at(4), 15, will) is ConnectionStatus.ONLINE


def test_an_idle_device_online_on_mqtt_stays_online_between_its_long_intervals() -> None:
    online = Presence(ONLINE, at(0), 7, idle_interval_s=300.0)
    seen = at(0)
    assert classify_connection(seen, at(290), 15, None) is ConnectionStatus.OFFLINE
    assert classify_connection(seen, at(290), 15, online) is ConnectionStatus.ONLINE
    # A presence the broker could not withdraw (it crashed) still ages out.
    assert classify_connection(seen, at(1000), 15, online) is ConnectionStatus.STALE
    assert classify_connection(seen, at(3100), 15, online) is ConnectionStatus.OFFLINE


def test_phi_judges_an_idle_node_against_the_long_interval() -> None:
    record = steady(interval_s=300.0, beats=5)  # last at 1200 s
    assert evaluate_liveness(record, at(1200 + 450), T0).state is Liveness.ALIVE
    assert evaluate_liveness(record, at(1200 + 3600), T0).state is Liveness.DEAD


def test_the_module_examples_hold() -> None:
    assert doctest.testmod(presence_module).failed == 0
