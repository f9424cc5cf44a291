"""Rollout status: what a rollout is doing in one line, its progress wave by wave (what
`rollouts status` draws), and when waiting alone will change its next decision."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from edgefleet.core.rollouts.actions import RATE_WINDOW
from edgefleet.core.rollouts.maintenance import next_opening, usable_time_zone
from edgefleet.core.rollouts.predicted_window import judge_idle
from edgefleet.core.rollouts.rollout import (
    FINAL_STATES,
    DeviceState,
    Rollout,
    RolloutDevice,
    RolloutState,
)

# The order in which device counts are listed.
_COUNT_ORDER = (
    DeviceState.INSTALLED,
    DeviceState.UPDATING,
    DeviceState.WAITING,
    DeviceState.OUTSIDE_WINDOW,
    DeviceState.RETRY_WAIT,
    DeviceState.FAILED,
    DeviceState.SKIPPED_INCOMPATIBLE,
    DeviceState.ROLLING_BACK,
    DeviceState.ROLLED_BACK,
    DeviceState.ROLLBACK_FAILED,
    DeviceState.REMOVED,
)


@dataclass(frozen=True)
class WaveProgress:
    index: int
    label: str
    size: int
    soak_s: float
    counts: tuple[tuple[DeviceState, int], ...]  # non-zero counts, in a fixed order

    def count(self, state: DeviceState) -> int:
        return dict(self.counts).get(state, 0)


def _counts(devices: Mapping[str, RolloutDevice], ids: tuple[str, ...]) -> Counter[DeviceState]:
    return Counter(devices[d].state for d in ids if d in devices)


def _ordered(counts: Counter[DeviceState]) -> tuple[tuple[DeviceState, int], ...]:
    return tuple((s, counts[s]) for s in _COUNT_ORDER if counts[s])


def wave_progress(
    rollout: Rollout, devices: Mapping[str, RolloutDevice]
) -> tuple[WaveProgress, ...]:
    """Per wave of the plan: its size and how many of its devices are in each state."""
    if rollout.plan is None:
        return ()
    return tuple(
        WaveProgress(w.index, w.label, w.size, w.soak_s, _ordered(_counts(devices, w.device_ids)))
        for w in rollout.plan.waves
    )


def describe_rollout(rollout: Rollout, devices: Mapping[str, RolloutDevice], now: datetime) -> str:
    """One line: what the rollout is doing or waiting for."""
    plan = rollout.plan
    if plan is None or rollout.state in FINAL_STATES or rollout.state is RolloutState.PAUSED:
        return f"{rollout.state}: {rollout.reason}"
    wave = plan.waves[rollout.wave] if plan.waves else None
    name = f"wave {rollout.wave + 1}/{len(plan.waves)} ({wave.label})" if wave else "no wave"
    if rollout.state is RolloutState.ROLLING_BACK:
        touched = [d for d in devices.values() if d.touched]
        back = sum(d.state is DeviceState.ROLLED_BACK for d in touched)
        return f"rolling back: {back} of {len(touched)} device(s) on their previous release"
    if rollout.state is RolloutState.SOAKING:
        if rollout.gate_wait_until is not None:
            return f"{name}: waiting for enough gate data until {rollout.gate_wait_until:%H:%M:%S}Z"
        until = rollout.soak_until
        return f"{name}: soaking" + (f" until {until:%Y-%m-%d %H:%M:%S}Z" if until else "")
    counts = _ordered(_counts(devices, plan.devices_through(rollout.wave)))
    return f"{name}: " + ", ".join(f"{n} {state}" for state, n in counts)


def next_check_at(
    rollout: Rollout, devices: Mapping[str, RolloutDevice], now: datetime
) -> datetime | None:
    """The earliest time after `now` at which the decision may change without a report."""
    if rollout.state in FINAL_STATES or rollout.state is RolloutState.PENDING:
        return None
    times: list[datetime] = []
    deadline = rollout.deadline_at()
    if deadline is not None and rollout.state is not RolloutState.ROLLING_BACK:
        times.append(deadline)
    if rollout.state is RolloutState.SOAKING:
        times += [t for t in (rollout.soak_until, rollout.gate_wait_until) if t is not None]
    timeout = timedelta(seconds=rollout.spec.strategy.install_timeout_s)
    progressing = rollout.state is RolloutState.PROGRESSING
    windows, predicted = rollout.spec.maintenance_windows, rollout.spec.predicted_window
    for device in devices.values():
        if device.state in (DeviceState.UPDATING, DeviceState.ROLLING_BACK):
            if device.assigned_at is not None:
                times.append(device.assigned_at + timeout)
        elif progressing and device.state is DeviceState.RETRY_WAIT and device.retry_at:
            times.append(device.retry_at)
        elif progressing and device.state is DeviceState.OUTSIDE_WINDOW and windows:
            opening = next_opening(windows, usable_time_zone(device.time_zone), now)
            if opening is not None:
                times.append(opening)
        elif progressing and device.state is DeviceState.OUTSIDE_WINDOW and predicted:
            held_until = judge_idle(predicted, device.quiet_hours, now).held_until
            if held_until is not None:
                times.append(held_until)
    if progressing and rollout.spec.strategy.devices_per_minute is not None:
        times += [t + RATE_WINDOW for t in rollout.recent_assignments]
    return min((t for t in times if t > now), default=None)
