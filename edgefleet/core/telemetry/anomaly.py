"""Anomaly detection on a stream of window values, with hysteresis so alerts do not flap.

A detector scores each new value against a baseline learned from earlier values:

- `ROBUST_Z`: (x - median) / (1.4826 * MAD) over the last `baseline_windows` normal values,
  which a few outliers in the baseline cannot drag;
- `EWMA`: (x - mean) / std of an exponentially weighted mean and variance, cheaper in state
  and quicker to follow slow trends.

An alert opens after `open_after` consecutive windows score beyond `open_score`, and closes
after `close_after` consecutive windows score within `close_score` (< `open_score`), so a
value hovering at the threshold neither opens nor closes it repeatedly. Values that score
beyond `open_score` never enter the baseline, and the baseline is frozen while an alert is
open, so an incident does not teach the detector that the incident is normal.

State is plain frozen data (store it as JSON, run it in the server or a simulator);
`step(state, value, now)` returns the next state and the event, if any.

>>> from datetime import datetime, UTC
>>> state = new_detector(DetectorConfig(min_baseline=5))
>>> for v in [10.0, 10.5, 9.5, 10.2, 9.8, 10.1, 50.0, 52.0, 51.0]:
...     state, event = step(state, v, datetime(2026, 1, 1, tzinfo=UTC))
>>> state.phase, event.kind
(<AlertPhase.OPEN: 'open'>, <EventKind.OPENED: 'opened'>)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from edgefleet.errors import InvalidInput

# 1.4826 * MAD estimates the standard deviation of normally distributed data.
MAD_TO_STD = 1.4826


class DetectorKind(StrEnum):
    ROBUST_Z = "robust_z"
    EWMA = "ewma"


class Direction(StrEnum):
    UP = "up"  # only rises are anomalies (latency, errors)
    DOWN = "down"  # only drops (throughput, battery)
    BOTH = "both"


class AlertPhase(StrEnum):
    WARMING_UP = "warming_up"
    NORMAL = "normal"
    OPEN = "open"


class EventKind(StrEnum):
    OPENED = "opened"
    CLOSED = "closed"


@dataclass(frozen=True)
class DetectorConfig:
    kind: DetectorKind = DetectorKind.ROBUST_Z
    direction: Direction = Direction.BOTH
    open_score: float = 4.0
    close_score: float = 2.0
    open_after: int = 3
    close_after: int = 3
    baseline_windows: int = 60
    min_baseline: int = 12
    ewma_alpha: float = 0.1
    # The spread never counts as smaller than this share of the baseline's level (plus
    # min_spread), so a perfectly flat baseline does not turn rounding noise into alerts.
    min_relative_spread: float = 0.01
    min_spread: float = 1e-9

    def __post_init__(self) -> None:
        if not 0 < self.close_score < self.open_score:
            raise InvalidInput("detector needs 0 < close_score < open_score", code="bad_detector")
        if self.open_after < 1 or self.close_after < 1:
            raise InvalidInput("open_after and close_after must be >= 1", code="bad_detector")
        if not 2 <= self.min_baseline <= self.baseline_windows:
            raise InvalidInput(
                "detector needs 2 <= min_baseline <= baseline_windows", code="bad_detector"
            )
        if not 0 < self.ewma_alpha < 1:
            raise InvalidInput("ewma_alpha must be in (0, 1)", code="bad_detector")


@dataclass(frozen=True)
class DetectorState:
    config: DetectorConfig
    phase: AlertPhase = AlertPhase.WARMING_UP
    history: tuple[float, ...] = ()  # ROBUST_Z: the baseline values, oldest first
    mean: float = 0.0  # EWMA
    variance: float = 0.0  # EWMA
    seen: int = 0  # baseline values learned so far
    streak: int = 0  # consecutive windows pushing towards the other phase
    opened_at: datetime | None = None
    last_score: float | None = None


@dataclass(frozen=True)
class AnomalyEvent:
    kind: EventKind
    at: datetime
    value: float
    score: float
    reason: str


def new_detector(config: DetectorConfig | None = None) -> DetectorState:
    return DetectorState(config or DetectorConfig())


def _center_and_spread(state: DetectorState) -> tuple[float, float]:
    config = state.config
    if config.kind is DetectorKind.ROBUST_Z:
        center = _median(state.history)
        spread = MAD_TO_STD * _median([abs(x - center) for x in state.history])
    else:
        center, spread = state.mean, math.sqrt(state.variance)
    floor = config.min_spread + config.min_relative_spread * abs(center)
    return center, max(spread, floor)


def score(state: DetectorState, value: float) -> float | None:
    """How far beyond normal `value` is, in the detector's direction (None while warming
    up). Positive means anomalous-looking; compare with open_score and close_score."""
    if state.seen < state.config.min_baseline:
        return None
    center, spread = _center_and_spread(state)
    z = (value - center) / spread
    match state.config.direction:
        case Direction.UP:
            return z
        case Direction.DOWN:
            return -z
        case Direction.BOTH:
            return abs(z)


def _learn(state: DetectorState, value: float) -> DetectorState:
    config = state.config
    if config.kind is DetectorKind.ROBUST_Z:
        history = (*state.history, value)[-config.baseline_windows :]
        return replace(state, history=history, seen=state.seen + 1)
    if state.seen == 0:
        return replace(state, mean=value, variance=0.0, seen=1)
    diff = value - state.mean
    increment = config.ewma_alpha * diff
    variance = (1 - config.ewma_alpha) * (state.variance + diff * increment)
    return replace(state, mean=state.mean + increment, variance=variance, seen=state.seen + 1)


def step(
    state: DetectorState, value: float, now: datetime
) -> tuple[DetectorState, AnomalyEvent | None]:
    """Feed one window's value; return the new state and an OPENED/CLOSED event or None."""
    if not math.isfinite(value):
        raise InvalidInput(f"cannot score {value}", code="bad_value")
    config = state.config
    current = score(state, value)
    state = replace(state, last_score=current)
    if current is None:
        learned = _learn(state, value)
        if learned.seen >= config.min_baseline:
            learned = replace(learned, phase=AlertPhase.NORMAL)
        return learned, None
    if state.phase is AlertPhase.OPEN:
        streak = state.streak + 1 if current < config.close_score else 0
        if streak < config.close_after:
            return replace(state, streak=streak), None
        event = AnomalyEvent(
            EventKind.CLOSED,
            now,
            value,
            current,
            f"score stayed below {config.close_score:g} for {streak} windows",
        )
        return replace(state, phase=AlertPhase.NORMAL, streak=0, opened_at=None), event
    streak = state.streak + 1 if current > config.open_score else 0
    if current <= config.open_score:
        state = _learn(state, value)
    if streak < config.open_after:
        return replace(state, streak=streak), None
    event = AnomalyEvent(
        EventKind.OPENED,
        now,
        value,
        current,
        f"score {current:.1f} above {config.open_score:g} for {streak} windows "
        f"({config.kind}, {config.direction})",
    )
    return replace(state, phase=AlertPhase.OPEN, streak=0, opened_at=now), event


def _median(values: Sequence[float]) -> float:
    """The median (the statistics module would bring fractions and decimal into the agent,
    which imports this module for its policy)."""
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
