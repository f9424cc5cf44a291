"""The liveness controller over the in-memory store: it writes exactly what judging every
node on every tick writes (the controller it replaced), tick by tick, while judging only the
nodes whose news or due moment came; a tick without news judges nobody; a heartbeat stored
between its read and its write is never overwritten; two controllers taking turns (a lease
moving between replicas) agree with one."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from edgefleet.controllers.liveness import (
    LivenessChange,
    LivenessController,
    LivenessPolicy,
)
from edgefleet.controllers.memory_liveness import MemoryLivenessStore
from edgefleet.core.workloads.failover import DrainThreshold, Trend
from edgefleet.core.workloads.failure_detector import Liveness
from edgefleet.core.workloads.liveness import evaluate_liveness, observe_heartbeat
from edgefleet.core.workloads.node_health import NOT_DRAINING, NodeHealth, add_sample
from edgefleet.core.workloads.nodes import drain_from_trends, trends_of

T0 = datetime(2026, 6, 1, tzinfo=UTC)
# The server's default thresholds: the battery only (a cpu_load threshold is opt-in).
BATTERY = DrainThreshold("battery_pct", 15.0, falling=True)
POLICY = LivenessPolicy(drain_horizon_s=60.0, drain_thresholds=(BATTERY,))
TICK_S = 0.5
DRAIN_METRICS = {t.metric for t in POLICY.drain_thresholds}  # what a drain reads


def heartbeat(store: MemoryLivenessStore, device_id: str, at: datetime,
              battery_pct: float | None = None) -> None:  # fmt: skip
    """What the server's device link stores for a heartbeat (`record_report`)."""
    previous = store.get(device_id)
    liveness = observe_heartbeat(None if previous is None else previous.liveness, at,
                                 interval_s=1.0)  # fmt: skip
    # cpu_load is sampled too, though no threshold of POLICY reads it.
    values = {} if battery_pct is None else {"battery_pct": battery_pct, "cpu_load": 0.99}
    samples = add_sample(() if previous is None else previous.samples, at, values)
    store.put_report(NodeHealth(device_id, liveness, samples=tuple(samples),
                                drain=NOT_DRAINING if previous is None else previous.drain,
                                reported_at=at))  # fmt: skip


def judge_everyone(
    store: MemoryLivenessStore,
    now: datetime,
    fitted: dict[tuple[str, datetime | None], dict[str, Trend]],
) -> list[LivenessChange]:
    """The reference: every node judged on every tick (`update_drain`, with the trends of
    each node's samples fitted once per heartbeat: `fitted` keeps them by the heartbeat's
    time, as fitting them on every tick cost most of this module's CPU; and of the metrics
    a drain reads only)."""
    changes = []
    for device_id in sorted(store.markers()):
        health = store.get(device_id)
        assert health is not None
        judged = evaluate_liveness(health.liveness, now, T0, POLICY.thresholds)
        drain = health.drain
        if health.samples and judged.state is not Liveness.DEAD:
            key = (device_id, health.reported_at)
            if key not in fitted:
                fitted[key] = trends_of(health.samples, DRAIN_METRICS)
            drain = drain_from_trends(drain, device_id, fitted[key], now,
                                      POLICY.drain_horizon_s, POLICY.drain_thresholds)  # fmt: skip
        if judged.state is health.state and drain.draining == health.drain.draining:
            continue
        assert store.put_judgement(replace(health, liveness=judged, drain=drain),
                                   health.reported_at)  # fmt: skip
        changes.append(LivenessChange(device_id, health.state, judged.state,
                                      round(judged.phi, 2), drain.draining))  # fmt: skip
    return changes


class Fleet:
    """Nodes that heartbeat every second with jitter, some on a draining battery; some stop
    for a while (long enough to be suspect, or dead) and come back; some go for good."""

    def __init__(self, seed: int, nodes: int, batteries: bool) -> None:
        self.rng = random.Random(seed)
        self.ids = [f"n{i:02d}" for i in range(nodes)]
        self.battery = {d: self.rng.uniform(30, 100) for d in self.ids} if batteries else {}
        self.slope = {d: self.rng.choice([0.0, 0.05, 0.3]) for d in self.ids}
        self.next_beat = {d: self.rng.uniform(0, 1) for d in self.ids}
        self.silent_until: dict[str, float] = {}

    def advance(self, t0: float, t1: float, stores: list[MemoryLivenessStore]) -> None:
        """Heartbeats in (t0, t1], stored in every store alike."""
        for d in self.ids:
            if d not in self.silent_until and self.rng.random() < 0.001:
                self.silent_until[d] = t0 + self.rng.choice([3.0, 8.0, 40.0, 1e9])
            while self.next_beat[d] <= t1:
                beat = self.next_beat[d]
                self.next_beat[d] += self.rng.uniform(0.9, 1.1)
                if beat <= self.silent_until.get(d, -1.0):
                    continue
                self.silent_until.pop(d, None)
                level = None
                if d in self.battery:
                    level = max(0.0, self.battery[d] - self.slope[d] * beat)
                for store in stores:
                    heartbeat(store, d, T0 + timedelta(seconds=beat), level)


@pytest.mark.parametrize("seed", range(4))
def test_the_controller_writes_what_judging_everyone_every_tick_writes(seed: int) -> None:
    fleet = Fleet(seed, nodes=40, batteries=True)
    ours, reference = MemoryLivenessStore(), MemoryLivenessStore()
    controller = LivenessController(ours, POLICY, watching_since=T0)
    fitted: dict[tuple[str, datetime | None], dict[str, Trend]] = {}
    judged = seen = 0
    for k in range(1, 600):
        fleet.advance((k - 1) * TICK_S, k * TICK_S, [ours, reference])
        now = T0 + timedelta(seconds=k * TICK_S)
        expected = judge_everyone(reference, now, fitted)
        assert controller.tick(now) == expected, f"tick {k}"
        judged += controller.judged
        seen += len(reference.markers())
    assert ours.markers() == reference.markers()
    assert {d: ours.get(d) for d in fleet.ids} == {d: reference.get(d) for d in fleet.ids}
    # Every state and a drain were exercised, judging a fraction of what the reference did.
    nodes = [h for d in fleet.ids if (h := ours.get(d)) is not None]
    assert Liveness.DEAD in {h.state for h in nodes}
    assert any(h.drain.draining for h in nodes)
    assert judged < seen / 2


def test_two_controllers_taking_turns_agree_with_one() -> None:
    fleet = Fleet(7, nodes=30, batteries=False)
    shared, reference = MemoryLivenessStore(), MemoryLivenessStore()
    replicas = [LivenessController(shared, POLICY, T0), LivenessController(shared, POLICY, T0)]
    fitted: dict[tuple[str, datetime | None], dict[str, Trend]] = {}
    for k in range(1, 600):
        fleet.advance((k - 1) * TICK_S, k * TICK_S, [shared, reference])
        now = T0 + timedelta(seconds=k * TICK_S)
        holder = replicas[(k // 37) % 2]  # the lease moves now and then
        assert holder.tick(now) == judge_everyone(reference, now, fitted), f"tick {k}"
    assert shared.markers() == reference.markers()


def test_a_tick_without_news_judges_nobody_until_a_verdict_is_due() -> None:
    store = MemoryLivenessStore()
    for i in range(10):
        for d in ("a", "b", "c"):
            heartbeat(store, d, T0 + timedelta(seconds=i))
    controller = LivenessController(store, POLICY, T0)
    now = T0 + timedelta(seconds=9.5)
    assert controller.tick(now) == [] and controller.judged == 3
    assert controller.tick(now + timedelta(seconds=0.5)) == [] and controller.judged == 0
    heartbeat(store, "b", T0 + timedelta(seconds=10.2))
    assert controller.tick(T0 + timedelta(seconds=10.5)) == [] and controller.judged == 1
    due = controller.next_due()
    assert due is not None and due > T0 + timedelta(seconds=10.5)
    assert controller.tick(due - timedelta(microseconds=1)) == []
    assert [c.after for c in controller.tick(due)] == [Liveness.SUSPECT, Liveness.SUSPECT]


def test_a_heartbeat_stored_between_read_and_write_is_not_overwritten() -> None:
    class RacingStore(MemoryLivenessStore):
        """A heartbeat of `a` lands just before the controller's write."""

        def put_judgement(self, health: NodeHealth, read_reported_at: datetime | None) -> bool:
            heartbeat(self, health.device_id, T0 + timedelta(seconds=30))
            return super().put_judgement(health, read_reported_at)

    store = RacingStore()
    for i in range(10):
        heartbeat(store, "a", T0 + timedelta(seconds=i))
    controller = LivenessController(store, POLICY, T0)
    assert controller.tick(T0 + timedelta(seconds=30)) == []  # refused: fresher news
    health = store.get("a")
    assert health is not None and health.state is Liveness.ALIVE
    assert health.reported_at == T0 + timedelta(seconds=30)
    assert controller.judged == 1 and controller.tick(T0 + timedelta(seconds=30.5)) == []
    assert controller.judged == 1  # judged again: its marker moved
