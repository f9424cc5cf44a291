"""Predicted windows: a rollout that installs on each device when it is predicted idle.

In a rollout spec::

    window: predicted                                   # the defaults below
    window: {mode: predicted, max_wait: 24h, min_confidence: 0.5}
    window: static                                      # the default: maintenance_windows only

With `window: predicted` a due device gets the release when its quiet-hours profile
(`core.telemetry.quiet_hours`, learned from its own request rate and CPU) says the current
hour is idle with at least `min_confidence`. The bound: a device is held only for an idle
hour predicted to *begin within* `max_wait`; a device with no such hour ahead (too little
telemetry, no confident quiet hour, or none soon enough) installs at once, as without a
predicted window. The bound is read from the profile at each decision, so it needs no
stored clock and survives a controller restart; a `force` deadline ends any hold too.
Maintenance windows, if the spec also has them, must be open as well.

>>> parse_window_mode("predicted", "spec.window")
PredictedWindow(max_wait_s=86400.0, min_confidence=0.5)
>>> parse_window_mode("static", "spec.window") is None
True
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from edgefleet.core.durations import format_duration
from edgefleet.core.manifest import check_keys, read_duration_s, read_mapping, read_number
from edgefleet.core.telemetry.quiet_hours import (
    DEFAULT_MIN_CONFIDENCE,
    QuietHours,
    forecast_settled_idle,
    next_idle_start,
)
from edgefleet.errors import InvalidInput

DEFAULT_MAX_WAIT_S = 24 * 3600.0
MAX_MAX_WAIT_S = 7 * 86400.0
_MODES = ("static", "predicted")


@dataclass(frozen=True)
class PredictedWindow:
    max_wait_s: float = DEFAULT_MAX_WAIT_S
    min_confidence: float = DEFAULT_MIN_CONFIDENCE


@dataclass(frozen=True)
class IdleVerdict:
    """Whether a device may install now, and until when it is held otherwise."""

    install: bool
    reason: str
    held_until: datetime | None = None  # the predicted idle start it waits for


def parse_window_mode(value: object, path: str) -> PredictedWindow | None:
    """The spec's `window`: None for `static`, a PredictedWindow for `predicted`."""
    if isinstance(value, str):
        if value not in _MODES:
            raise InvalidInput(f"{path}: expected one of {', '.join(_MODES)}, got {value!r}")
        return PredictedWindow() if value == "predicted" else None
    data = read_mapping(value, path)
    check_keys(data, frozenset({"mode", "max_wait", "min_confidence"}), path)
    mode = data.get("mode")
    if mode not in _MODES:
        raise InvalidInput(f"{path}.mode: expected one of {', '.join(_MODES)}")
    if mode == "static":
        if len(data) > 1:
            raise InvalidInput(f"{path}: max_wait and min_confidence need mode: predicted")
        return None
    return PredictedWindow(
        read_duration_s(
            data.get("max_wait", DEFAULT_MAX_WAIT_S), f"{path}.max_wait", MAX_MAX_WAIT_S,
            positive=True,
        ),
        read_number(
            data.get("min_confidence", DEFAULT_MIN_CONFIDENCE), f"{path}.min_confidence", 0.0,
            1.0,
        ),
    )  # fmt: skip


def judge_idle(window: PredictedWindow, profile: QuietHours | None, now: datetime) -> IdleVerdict:
    """May a device whose profile is `profile` install at `now` under `window`?"""
    if profile is None or not profile.known:
        return IdleVerdict(True, "; no telemetry to predict its quiet hours, not held")
    now_forecast = forecast_settled_idle(profile, now)
    if now_forecast.idle and now_forecast.confidence >= window.min_confidence:
        return IdleVerdict(
            True, f"; predicted idle ({now_forecast.reason}, confidence "
            f"{now_forecast.confidence:.2f})"
        )  # fmt: skip
    upcoming = next_idle_start(
        profile, now, window.max_wait_s, min_confidence=window.min_confidence
    )
    wait = format_duration(window.max_wait_s)
    if upcoming is None:
        return IdleVerdict(
            True, f"; no idle hour predicted with confidence >= {window.min_confidence:g} "
            f"within {wait}, installing now"
        )  # fmt: skip
    why = now_forecast.reason
    if now_forecast.idle:
        why += f", but confidence {now_forecast.confidence:.2f} < {window.min_confidence:g}"
    return IdleVerdict(
        False,
        f"waiting for its predicted idle time at {upcoming:%Y-%m-%d %H:%M}Z ({why})",
        held_until=upcoming,
    )
