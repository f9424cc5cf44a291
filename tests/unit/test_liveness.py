"""Node liveness from heartbeat arrivals: verdicts move only when they change, a returning
node is alive at once and not penalised for its outage, a restarted observer does not
declare the fleet dead, reliability decays while dead and recovers while alive; the moment
a verdict would next change is exact (a controller may sleep until then)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgefleet.core.workloads.failure_detector import (
    Liveness,
    Thresholds,
    new_history,
    phi,
    phi_reaches_at,
)
from edgefleet.core.workloads.liveness import (
    NodeLiveness,
    detector_settings,
    evaluate_liveness,
    hosting_heartbeat_s,
    liveness_from_dict,
    liveness_to_dict,
    observe_heartbeat,
    verdict_changes_at,
)

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def steady(beats: int = 30, start: datetime = T0) -> NodeLiveness:
    record = None
    for i in range(beats):
        record = observe_heartbeat(record, start + timedelta(seconds=i))
    assert record is not None
    return record


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_silence_goes_alive_then_suspect_then_dead_and_since_moves_only_on_change() -> None:
    record = steady()  # last heartbeat at 29 s
    alive = evaluate_liveness(record, at(29.5), T0)
    assert alive.state is Liveness.ALIVE and alive.since == record.since
    suspect = evaluate_liveness(alive, at(33.6), T0)
    assert suspect.state is Liveness.SUSPECT and suspect.since == at(33.6)
    still = evaluate_liveness(suspect, at(33.7), T0)
    assert still.state is Liveness.SUSPECT and still.since == at(33.6)
    dead = evaluate_liveness(still, at(40.0), T0)
    assert dead.state is Liveness.DEAD and dead.since == at(40.0)


def test_a_heartbeat_makes_a_dead_node_alive_without_learning_the_outage() -> None:
    dead = evaluate_liveness(steady(), at(120), T0)
    assert dead.state is Liveness.DEAD
    back = observe_heartbeat(dead, at(125))
    assert back.state is Liveness.ALIVE and back.since == at(125)
    assert back.history.intervals_us == dead.history.intervals_us  # the 96 s gap not learned
    for i in range(1, 5):
        back = observe_heartbeat(back, at(125 + i))
    # Judged as quickly as before the outage: dead a few seconds into a new silence.
    assert evaluate_liveness(back, at(129 + 6), T0).state is Liveness.DEAD


def test_a_suspect_node_that_returns_teaches_the_detector_its_gap() -> None:
    suspect = evaluate_liveness(steady(), at(33.6), T0)
    assert suspect.state is Liveness.SUSPECT
    back = observe_heartbeat(suspect, at(33.8))
    assert back.state is Liveness.ALIVE
    assert back.history.intervals_us[-1] == 4_800_000  # lossy links widen the model


def test_an_observer_that_just_started_judges_only_the_silence_it_saw() -> None:
    record = steady()  # silent since 29 s, e.g. while the control plane was down
    restarted_at = at(300)
    assert evaluate_liveness(record, at(301), restarted_at).state is Liveness.ALIVE
    assert evaluate_liveness(record, at(320), restarted_at).state is Liveness.DEAD


def test_thresholds_are_configurable() -> None:
    lenient = Thresholds(suspect_phi=30, dead_phi=60)
    assert evaluate_liveness(steady(), at(33.6), T0).state is Liveness.SUSPECT
    assert evaluate_liveness(steady(), at(33.6), T0, lenient).state is Liveness.ALIVE


def test_reliability_decays_while_dead_and_recovers_while_alive() -> None:
    record = steady()
    assert record.reliability(at(100)) == pytest.approx(1.0)
    dead = evaluate_liveness(record, at(40), T0)
    assert dead.reliability(at(40 + 3600)) == pytest.approx(0.5)  # half-life one hour
    back = observe_heartbeat(dead, at(40 + 3600))
    assert back.reliability_at_since == pytest.approx(0.5)
    assert back.reliability(at(40 + 7200)) == pytest.approx(0.75)


@given(st.lists(st.floats(min_value=0.05, max_value=5.0), min_size=1, max_size=50))
def test_records_survive_the_store_round_trip(gaps: list[float]) -> None:
    record = None
    t = T0
    for gap in gaps:
        t += timedelta(seconds=gap)
        record = observe_heartbeat(record, t)
    assert record is not None
    judged = evaluate_liveness(record, t + timedelta(seconds=3), T0)
    assert liveness_from_dict(liveness_to_dict(judged)) == judged


def test_an_extra_report_proves_life_but_teaches_no_interval() -> None:
    record = steady()  # last scheduled heartbeat at 29 s
    extra = observe_heartbeat(record, at(29.2), scheduled=False)
    assert extra.history.intervals_us == record.history.intervals_us
    assert extra.history.last_heartbeat_at == at(29.2)
    after = observe_heartbeat(extra, at(30.2))  # the schedule restarts after any report
    assert after.history.intervals_us[-1] == 1_000_000
    suspect = evaluate_liveness(record, at(33.6), T0)
    assert observe_heartbeat(suspect, at(33.7), scheduled=False).state is Liveness.ALIVE


def test_a_new_heartbeat_interval_starts_the_history_afresh_and_scales_the_pause() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    record = None
    for i in range(10):  # a node heartbeating every 15 s (the agent's default)
        record = observe_heartbeat(record, t0 + timedelta(seconds=15 * i), interval_s=15.0)
    assert record is not None
    last = t0 + timedelta(seconds=135)
    # One lost heartbeat (30 s of silence) is an acceptable pause at 15 s, not a death.
    assert evaluate_liveness(record, last + timedelta(seconds=29), t0).state is Liveness.ALIVE
    assert evaluate_liveness(record, last + timedelta(seconds=60), t0).state is Liveness.DEAD
    # It starts hosting a replica and is told to heartbeat every second: the 15 s intervals
    # no longer describe it, so a short silence is judged by the new schedule at once.
    at = last + timedelta(seconds=1)
    record = observe_heartbeat(record, at, interval_s=1.0)
    assert record.history.intervals_us == () and record.interval_s == 1.0
    for i in range(1, 6):
        record = observe_heartbeat(record, at + timedelta(seconds=i))
    stopped = at + timedelta(seconds=5)
    assert evaluate_liveness(record, stopped + timedelta(seconds=2), t0).state is Liveness.ALIVE
    assert evaluate_liveness(record, stopped + timedelta(seconds=8), t0).state is Liveness.DEAD
    assert liveness_from_dict(liveness_to_dict(record)) == record


def test_hosting_nodes_heartbeat_fast_until_the_fleet_rate_cap() -> None:
    assert hosting_heartbeat_s(15.0, 1) == 1.0
    assert hosting_heartbeat_s(15.0, 50) == 1.0
    assert hosting_heartbeat_s(15.0, 500) == 10.0  # 50 heartbeats a second in all
    assert hosting_heartbeat_s(15.0, 5000) == 15.0  # never slower than configured
    assert hosting_heartbeat_s(0.5, 3) == 0.5


def test_the_slowed_hosting_interval_moves_in_steps_and_keeps_the_cap() -> None:
    seen: list[float] = []
    for nodes in range(1, 20_001):
        interval = hosting_heartbeat_s(math.inf, nodes)
        assert nodes / interval <= 50.0 + 1e-9  # the fleet-wide cap holds
        assert interval < 1.3 * max(1.0, nodes / 50)  # at most one step slower than needed
        assert not seen or interval >= seen[-1]  # never faster with more hosting nodes
        seen.append(interval)
    assert len(set(seen)) == 27  # 1, 1.25 ... 8, 10 ... 80, 100 ... 400 s


MICROSECOND = timedelta(microseconds=1)


@st.composite
def records(draw: st.DrawFn) -> NodeLiveness:
    """A node heard from at irregular gaps, told an interval or not, in any verdict."""
    gaps = draw(st.lists(st.floats(min_value=0.001, max_value=120.0), min_size=0, max_size=40))
    interval_s = draw(st.none() | st.floats(min_value=0.5, max_value=60.0))
    record = observe_heartbeat(None, T0, interval_s=interval_s)
    t = 0.0
    for gap in gaps:
        t += gap
        record = observe_heartbeat(record, at(t), scheduled=draw(st.booleans()))
    state = draw(st.sampled_from(Liveness))
    return NodeLiveness(record.history, state, record.since, interval_s=interval_s)


thresholds = st.tuples(
    st.floats(min_value=0.1, max_value=50.0), st.floats(min_value=0.0, max_value=50.0)
).map(lambda t: Thresholds(t[0], t[0] + t[1]))


@given(records(), thresholds, st.floats(min_value=0.0, max_value=4000.0),
       st.floats(min_value=-100.0, max_value=4000.0))  # fmt: skip
def test_a_verdict_changes_exactly_when_predicted(
    record: NodeLiveness, limits: Thresholds, now_s: float, watching_s: float
) -> None:
    last = record.history.last_heartbeat_at
    assert last is not None
    now, watching_since = last + timedelta(seconds=now_s), T0 + timedelta(seconds=watching_s)
    changes = verdict_changes_at(record, now, watching_since, limits)

    def verdict(when: datetime) -> Liveness:
        return evaluate_liveness(record, when, watching_since, limits).state

    if changes is None:  # never: dead, and no silence brings it back
        assert record.state is Liveness.DEAD or verdict(now) is record.state
        assert all(verdict(now + timedelta(days=d)) is record.state for d in (0, 1, 365))
        return
    assert changes >= now
    assert verdict(changes) is not record.state
    if changes > now:  # not a moment earlier
        assert verdict(changes - MICROSECOND) is record.state


@given(records(), st.floats(min_value=0.0, max_value=150.0))
def test_phi_reaches_a_value_at_the_first_microsecond_it_can(
    record: NodeLiveness, value: float
) -> None:
    history, settings = record.history, detector_settings(record.interval_s)
    reached = phi_reaches_at(history, value, settings)
    assert reached is not None and history.last_heartbeat_at is not None
    assert phi(history, reached, settings) >= value
    if reached > history.last_heartbeat_at:
        assert phi(history, reached - MICROSECOND, settings) < value
    assert phi_reaches_at(new_history(), value) is None
