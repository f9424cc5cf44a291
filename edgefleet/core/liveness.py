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
                           `since` (failover's grace periods count from it)

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

from edgefleet.core.failure_detector import (
    DEFAULT_SETTINGS,
    DEFAULT_THRESHOLDS,
    DetectorSettings,
    HeartbeatHistory,
    Liveness,
    Thresholds,
    classify,
    new_history,
    phi,
    record_heartbeat,
)

RELIABILITY_HALF_LIFE_S = 3600.0


@dataclass(frozen=True)
class NodeLiveness:
    """The control plane's view of one device's liveness."""

    history: HeartbeatHistory
    state: Liveness
    since: datetime  # when `state` was entered
    reliability_at_since: float = 1.0  # reliability when `state` was entered
    phi: float = 0.0  # at the last evaluation

    def reliability(self, now: datetime, half_life_s: float = RELIABILITY_HALF_LIFE_S) -> float:
        """Share of recent time alive, exponentially weighted; 1.0 for a new node."""
        target = 0.0 if self.state is Liveness.DEAD else 1.0
        elapsed_s = max(0.0, (now - self.since).total_seconds())
        decay = math.exp(-elapsed_s * math.log(2) / half_life_s)
        return target + (self.reliability_at_since - target) * decay


def observe_heartbeat(
    record: NodeLiveness | None,
    at: datetime,
    settings: DetectorSettings = DEFAULT_SETTINGS,
    *,
    scheduled: bool = True,
) -> NodeLiveness:
    """The record after a heartbeat arrived at `at`: recorded, and the node alive.
    `scheduled=False`: an extra report, which restarts the wait for the next heartbeat
    without adding its (short) interval to the model."""
    if record is None:
        return NodeLiveness(record_heartbeat(new_history(), at, settings), Liveness.ALIVE, at)
    last = record.history.last_heartbeat_at
    if record.state is Liveness.DEAD or (not scheduled and (last is None or at > last)):
        # Neither an outage nor an extra report is a heartbeat interval.
        history = replace(record.history, last_heartbeat_at=at)
    else:
        history = record_heartbeat(record.history, at, settings)
    if record.state is Liveness.ALIVE:
        return replace(record, history=history, phi=0.0)
    return NodeLiveness(history, Liveness.ALIVE, at, record.reliability(at), 0.0)


def evaluate_liveness(
    record: NodeLiveness,
    now: datetime,
    watching_since: datetime,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
    settings: DetectorSettings = DEFAULT_SETTINGS,
) -> NodeLiveness:
    """The record with its verdict at `now`; `since` moves only when the verdict changes."""
    history = record.history
    last = history.last_heartbeat_at
    if last is not None and last < watching_since:
        history = replace(history, last_heartbeat_at=watching_since)
    value = phi(history, now, settings)
    state = classify(value, thresholds)
    if state is record.state:
        return replace(record, phi=value)
    return NodeLiveness(record.history, state, now, record.reliability(now), value)


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
    )
