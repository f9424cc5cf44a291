"""Node liveness: what the control plane believes about each device's health, from the
arrival times of its heartbeats (`core.failure_detector`, phi accrual) rather than fixed
timeouts, plus the slow-moving reliability score placement uses.

One `NodeLiveness` record per device holds the detector's history, the current verdict
(`alive`, `suspect`, `dead`) and when it was reached, and the reliability at that moment:

    heartbeat arrives      `observe_heartbeat`: recorded; the node is alive at once. After a
                           `dead` verdict the silence is not learned as an interval (an
                           outage is not a slow heartbeat), so a returning node is judged as
                           quickly as before. An extra report (sent at once on a change, not
                           on the heartbeat schedule) proves life but teaches no interval:
                           only the schedule's own intervals model when the next is due
    controller tick        `evaluate_liveness`: phi now -> verdict; a change of verdict moves
                           `since` (failover's grace periods count from it).
                           `verdict_changes_at` says when, without a heartbeat, the verdict
                           would next change: the controller need not look before then
    the broker's Will      `observe_will` (MQTT channel: the device's connection ended
                           without a goodbye): a node hosting nothing is dead at once; a
                           hosting node only becomes suspect at once, so failover's grace
                           period runs from the Will and phi still decides `dead`. The
                           verdict does not fall below that floor until the node is heard
                           from again

The verdict only counts silence the observer could have seen: `watching_since` (when the
controller started) stands in for an older last heartbeat, so a control plane that was down
for a minute does not declare the whole fleet dead on its first tick.

Reliability is an exponentially weighted share of time alive (half-life
`RELIABILITY_HALF_LIFE_S`); since the verdict is constant between changes it has a closed
form, so it is stored only when the verdict changes.

>>> from datetime import datetime, timedelta, timezone
>>> t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
>>> rec = None
>>> for i in range(10):
...     rec = observe_heartbeat(rec, t0 + timedelta(seconds=i))
>>> evaluate_liveness(rec, t0 + timedelta(seconds=30), t0).state
<Liveness.DEAD: 'dead'>
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from edgefleet.core.workloads.failure_detector import (
    DEFAULT_SETTINGS,
    DEFAULT_THRESHOLDS,
    DetectorSettings,
    HeartbeatHistory,
    Liveness,
    Thresholds,
    classify,
    new_history,
    phi,
    phi_reaches_at,
    record_heartbeat,
)

RELIABILITY_HALF_LIFE_S = 3600.0

# Nodes that host replicas heartbeat fast, so a dead one fails over within seconds, but the
# fleet-wide rate of those heartbeats is capped (as Nomad caps its heartbeat rate): with more
# hosting nodes each heartbeats less often.
HOSTING_HEARTBEAT_S = 1.0
MAX_HOSTING_HEARTBEATS_PER_S = 50.0
# A slowed hosting interval is rounded up to one of these (x 10**k: the R10 preferred
# numbers), so it changes only when the number of hosting nodes moves by ~25%; each change
# re-renders every hosting node (services/desired.refresh_hosting_nodes).
_INTERVAL_STEPS = (1.0, 1.25, 1.6, 2.0, 2.5, 3.2, 4.0, 5.0, 6.3, 8.0)


def hosting_heartbeat_s(
    configured_s: float,
    hosting_nodes: int,
    fastest_s: float = HOSTING_HEARTBEAT_S,
    max_per_s: float = MAX_HOSTING_HEARTBEATS_PER_S,
) -> float:
    """The heartbeat interval of a node that hosts replicas: `fastest_s` while the fleet has
    at most `max_per_s * fastest_s` hosting nodes, then slower so that all of them together
    send at most `max_per_s` heartbeats a second; never slower than the node's own
    `configured_s`.

    The slowed interval is rounded up to a step of a fixed ladder (never faster than the cap
    allows), so it does not change with every node that starts or stops hosting.

    >>> hosting_heartbeat_s(15.0, 3), hosting_heartbeat_s(15.0, 200), hosting_heartbeat_s(2.0, 500)
    (1.0, 4.0, 2.0)
    >>> hosting_heartbeat_s(15.0, 51), hosting_heartbeat_s(15.0, 62), hosting_heartbeat_s(15.0, 63)
    (1.25, 1.25, 1.6)
    """
    return min(configured_s, max(fastest_s, _step_at_least(hosting_nodes / max_per_s)))


def _step_at_least(seconds: float) -> float:
    """The smallest ladder step (x 10**k) that is at least `seconds`."""
    if seconds <= 0:
        return 0.0
    scale = 10.0 ** math.floor(math.log10(seconds))
    for step in (*_INTERVAL_STEPS, 10.0):
        if step * scale >= seconds * (1 - 1e-12):
            return round(step * scale, 12)
    return 10.0 * scale


def detector_settings(interval_s: float | None) -> DetectorSettings:
    """The detector for a node told to heartbeat every `interval_s`: history starts from that
    interval, and one lost heartbeat is an acceptable pause (never less than the default's)."""
    if interval_s is None:
        return DEFAULT_SETTINGS
    return replace(
        DEFAULT_SETTINGS,
        first_interval_s=interval_s,
        acceptable_pause_s=max(DEFAULT_SETTINGS.acceptable_pause_s, interval_s),
    )


@dataclass(frozen=True)
class NodeLiveness:
    """The control plane's view of one device's liveness."""

    history: HeartbeatHistory
    state: Liveness
    since: datetime  # when `state` was entered
    reliability_at_since: float = 1.0  # reliability when `state` was entered
    phi: float = 0.0  # at the last evaluation
    interval_s: float | None = None  # the heartbeat interval the node was told, if known
    floor: Liveness | None = None  # the least verdict since its Will, until it is heard from

    def reliability(self, now: datetime, half_life_s: float = RELIABILITY_HALF_LIFE_S) -> float:
        """Share of recent time alive, exponentially weighted; 1.0 for a new node."""
        target = 0.0 if self.state is Liveness.DEAD else 1.0
        elapsed_s = max(0.0, (now - self.since).total_seconds())
        decay = math.exp(-elapsed_s * math.log(2) / half_life_s)
        return target + (self.reliability_at_since - target) * decay


def observe_heartbeat(
    record: NodeLiveness | None,
    at: datetime,
    settings: DetectorSettings | None = None,
    *,
    scheduled: bool = True,
    interval_s: float | None = None,
) -> NodeLiveness:
    """The record after a heartbeat arrived at `at`: recorded, and the node alive.
    `scheduled=False`: an extra report, which restarts the wait for the next heartbeat
    without adding its (short) interval to the model. `interval_s`: the interval the node
    now heartbeats at, when known; a change starts the history afresh (the old intervals
    would model the wrong schedule). `settings` default to `detector_settings` of it."""
    if interval_s is None and record is not None:
        interval_s = record.interval_s
    settings = settings or detector_settings(interval_s)
    if record is None or interval_s != record.interval_s:
        fresh = record_heartbeat(new_history(), at, settings)
        if record is None:
            return NodeLiveness(fresh, Liveness.ALIVE, at, interval_s=interval_s)
        if record.state is Liveness.ALIVE:
            return replace(record, history=fresh, phi=0.0, interval_s=interval_s, floor=None)
        return NodeLiveness(fresh, Liveness.ALIVE, at, record.reliability(at), 0.0, interval_s)
    last = record.history.last_heartbeat_at
    if record.state is Liveness.DEAD or (not scheduled and (last is None or at > last)):
        # Neither an outage nor an extra report is a heartbeat interval.
        history = replace(record.history, last_heartbeat_at=at)
    else:
        history = record_heartbeat(record.history, at, settings)
    if record.state is Liveness.ALIVE:
        return replace(record, history=history, phi=0.0, floor=None)
    return NodeLiveness(history, Liveness.ALIVE, at, record.reliability(at), 0.0, interval_s)


_SEVERITY = {Liveness.ALIVE: 0, Liveness.SUSPECT: 1, Liveness.DEAD: 2}


def _at_least(verdict: Liveness, floor: Liveness | None) -> Liveness:
    """`verdict`, or the floor a Will set when that is worse."""
    if floor is not None and _SEVERITY[floor] > _SEVERITY[verdict]:
        return floor
    return verdict


def observe_will(record: NodeLiveness, at: datetime, hosting: bool) -> NodeLiveness:
    """The record after the broker published the node's Will at `at` (its connection ended
    without a goodbye): dead at once when it hosts nothing; suspect at once when it hosts
    replicas, so that failover holds them for its grace period and phi decides `dead` as
    for any silent node. Either stays the least verdict until the node is heard from.

    >>> from datetime import datetime, timezone
    >>> t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    >>> alive = observe_heartbeat(None, t0)
    >>> observe_will(alive, t0, hosting=False).state, observe_will(alive, t0, hosting=True).state
    (<Liveness.DEAD: 'dead'>, <Liveness.SUSPECT: 'suspect'>)
    """
    floor = Liveness.SUSPECT if hosting else Liveness.DEAD
    if _SEVERITY[record.state] >= _SEVERITY[floor]:
        return replace(record, floor=floor)
    return NodeLiveness(record.history, floor, at, record.reliability(at), record.phi,
                        record.interval_s, floor)  # fmt: skip


def evaluate_liveness(
    record: NodeLiveness,
    now: datetime,
    watching_since: datetime,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
    settings: DetectorSettings | None = None,
) -> NodeLiveness:
    """The record with its verdict at `now`; `since` moves only when the verdict changes.
    `settings` default to `detector_settings` of the node's interval."""
    settings = settings or detector_settings(record.interval_s)
    value = phi(_watched(record.history, watching_since), now, settings)
    state = _at_least(classify(value, thresholds), record.floor)
    if state is record.state:
        return replace(record, phi=value)
    return NodeLiveness(record.history, state, now, record.reliability(now), value,
                        record.interval_s, record.floor)  # fmt: skip


def verdict_changes_at(
    record: NodeLiveness,
    now: datetime,
    watching_since: datetime,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
    settings: DetectorSettings | None = None,
) -> datetime | None:
    """The first moment from `now` at which `evaluate_liveness` would give a verdict other
    than `record.state` if no heartbeat arrives; None: never (dead, or never heard from).

    phi only grows with the silence, so without a heartbeat the verdict only moves down,
    alive -> suspect -> dead; `now` itself when the verdict is already another.

    >>> from datetime import datetime, timedelta, timezone
    >>> t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    >>> rec = None
    >>> for i in range(10):
    ...     rec = observe_heartbeat(rec, t0 + timedelta(seconds=i))
    >>> at = verdict_changes_at(rec, t0 + timedelta(seconds=9), t0)
    >>> before = at - timedelta(microseconds=1)
    >>> evaluate_liveness(rec, before, t0).state, evaluate_liveness(rec, at, t0).state
    (<Liveness.ALIVE: 'alive'>, <Liveness.SUSPECT: 'suspect'>)
    """
    settings = settings or detector_settings(record.interval_s)
    history = _watched(record.history, watching_since)
    verdict = _at_least(classify(phi(history, now, settings), thresholds), record.floor)
    if verdict is not record.state:
        return now
    if record.state is Liveness.ALIVE:
        at = phi_reaches_at(history, thresholds.suspect_phi, settings)
    elif record.state is Liveness.SUSPECT:
        at = phi_reaches_at(history, thresholds.dead_phi, settings)
    else:
        return None
    return None if at is None else max(at, now)


def _watched(history: HeartbeatHistory, watching_since: datetime) -> HeartbeatHistory:
    """The history as the observer could have seen it: a last heartbeat before it started
    watching counts from `watching_since`."""
    last = history.last_heartbeat_at
    if last is not None and last < watching_since:
        return replace(history, last_heartbeat_at=watching_since)
    return history


def liveness_to_dict(record: NodeLiveness) -> dict[str, Any]:
    """Plain JSON for the store (timestamps as ISO 8601)."""
    h = record.history
    last = h.last_heartbeat_at
    return {
        "intervals_us": list(h.intervals_us),
        "last_heartbeat_at": None if last is None else last.isoformat(),
        "state": record.state.value,
        "since": record.since.isoformat(),
        "reliability_at_since": record.reliability_at_since,
        "phi": record.phi if math.isfinite(record.phi) else 1e9,
        "interval_s": record.interval_s,
        "floor": None if record.floor is None else record.floor.value,
    }


def liveness_from_dict(raw: Mapping[str, Any]) -> NodeLiveness:
    intervals = tuple(int(v) for v in raw.get("intervals_us", ()))
    last = raw.get("last_heartbeat_at")
    history = HeartbeatHistory(
        intervals,
        sum(intervals),
        sum(v * v for v in intervals),
        None if last is None else datetime.fromisoformat(str(last)),
    )
    return NodeLiveness(
        history,
        Liveness(str(raw["state"])),
        datetime.fromisoformat(str(raw["since"])),
        float(raw.get("reliability_at_since", 1.0)),
        float(raw.get("phi", 0.0)),
        None if raw.get("interval_s") is None else float(raw["interval_s"]),
        None if raw.get("floor") is None else Liveness(str(raw["floor"])),
    )
