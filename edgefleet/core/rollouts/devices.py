"""Device rules of a rollout: reading each device's report about its current assignment
(installed; a failed attempt, retried after an exponential backoff until the attempts are
used up; no report within the install timeout), and choosing which due devices get the
release now (maintenance windows, predicted idle hours, max_unavailable, the rate limit).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping
from datetime import datetime, timedelta

from edgefleet.core.backoff import backoff_delay_s
from edgefleet.core.durations import format_duration
from edgefleet.core.rollouts.actions import RATE_WINDOW, Action, AssignRelease, MarkDevice
from edgefleet.core.rollouts.maintenance import any_window_open, next_opening, usable_time_zone
from edgefleet.core.rollouts.predicted_window import judge_idle
from edgefleet.core.rollouts.rollout import (
    DeviceState,
    InstallReport,
    Rollout,
    RolloutDevice,
    RolloutState,
    format_time,
)
from edgefleet.core.rollouts.spec import DeadlineAction

_WAITING_STATES = (DeviceState.WAITING, DeviceState.OUTSIDE_WINDOW)


def _retry_delay_s(rollout: Rollout, device: RolloutDevice) -> float:
    seed = hashlib.sha256(f"{rollout.id}\x00{device.device_id}\x00{device.attempts}".encode())
    retries = rollout.spec.retries
    return backoff_delay_s(
        device.attempts - 1,
        retries.backoff_initial_s,
        retries.backoff_max_s,
        random.Random(int.from_bytes(seed.digest()[:8], "big")),
    )


def _failed_attempt(rollout: Rollout, device: RolloutDevice, why: str, now: datetime) -> MarkDevice:
    max_attempts = rollout.spec.retries.max_attempts
    if device.attempts >= max_attempts:
        return MarkDevice(
            device.device_id,
            DeviceState.FAILED,
            f"{why}; attempt {device.attempts} of {max_attempts}, no retry left",
        )
    retry_at = now + timedelta(seconds=_retry_delay_s(rollout, device))
    return MarkDevice(
        device.device_id,
        DeviceState.RETRY_WAIT,
        f"{why}; attempt {device.attempts} of {max_attempts}, "
        f"retrying after {format_time(retry_at)}",
        retry_at=retry_at,
    )


def _timed_out(rollout: Rollout, device: RolloutDevice, now: datetime) -> bool:
    timeout_s = rollout.spec.strategy.install_timeout_s
    return device.assigned_at is not None and now >= device.assigned_at + timedelta(
        seconds=timeout_s
    )


def _timeout(rollout: Rollout) -> str:
    return format_duration(rollout.spec.strategy.install_timeout_s)


def _observe_one(rollout: Rollout, device: RolloutDevice, now: datetime) -> Action | None:
    release = rollout.spec.release
    state, report = device.state, device.report
    if state is DeviceState.ROLLING_BACK:
        previous = device.previous_release or "no release"
        if report is InstallReport.INSTALLED:
            return MarkDevice(device.device_id, DeviceState.ROLLED_BACK, f"back on {previous}")
        if report is InstallReport.FAILED or _timed_out(rollout, device, now):
            why = (
                "reported a failure"
                if report is InstallReport.FAILED
                else f"no report in {_timeout(rollout)}"
            )
            return MarkDevice(
                device.device_id,
                DeviceState.ROLLBACK_FAILED,
                f"rollback to {previous}: {why}; its desired state still names {previous}",
            )
        return None
    if rollout.state is RolloutState.ROLLING_BACK:
        return None
    if state in (DeviceState.UPDATING, DeviceState.INSTALLED):
        if report is InstallReport.FAILED:
            return _failed_attempt(rollout, device, f"install of {release} failed", now)
        if state is DeviceState.UPDATING and report is InstallReport.INSTALLED:
            return MarkDevice(device.device_id, DeviceState.INSTALLED, f"installed {release}")
        if state is DeviceState.UPDATING and _timed_out(rollout, device, now):
            why = f"no install report within {_timeout(rollout)}"
            return _failed_attempt(rollout, device, why, now)
    elif (
        state in (*_WAITING_STATES, DeviceState.RETRY_WAIT) and not device.compatibility.compatible
    ):
        return MarkDevice(
            device.device_id,
            DeviceState.SKIPPED_INCOMPATIBLE,
            f"incompatible with {release}: {device.compatibility.reason}",
        )
    return None


def observe_reports(
    rollout: Rollout, devices: Mapping[str, RolloutDevice], now: datetime
) -> list[Action]:
    """Settle, retry or fail each planned device from its report about its assignment."""
    planned = rollout.plan.device_ids if rollout.plan is not None else ()
    out = []
    for device_id in planned:
        device = devices[device_id]
        if _settled_quietly(device):
            continue  # the common case, decided without a call (the lab reads 10k devices)
        action = _observe_one(rollout, device, now)
        if action is not None:
            out.append(action)
    return out


def _settled_quietly(device: RolloutDevice) -> bool:
    """True when `_observe_one` has nothing to say of the device whatever the rollout's
    state: installed and not reporting a failure, or waiting and compatible."""
    state = device.state
    if state is DeviceState.INSTALLED:
        return device.report is not InstallReport.FAILED
    return state in _WAITING_STATES and device.compatibility.compatible


def _window_check(rollout: Rollout, device: RolloutDevice, now: datetime) -> tuple[bool, str]:
    windows, predicted = rollout.spec.maintenance_windows, rollout.spec.predicted_window
    if not windows and predicted is None:
        return True, ""
    if rollout.past_deadline(now, DeadlineAction.FORCE):
        return True, "; deadline passed, maintenance window not required"
    zone, note = usable_time_zone(device.time_zone), ""
    if zone is None and device.time_zone is not None:
        note = f" (its zone {device.time_zone!r} is unknown; using UTC)"
    if windows and not any_window_open(windows, zone, now):
        opening = next_opening(windows, zone, now)
        when = f"; next opens {format_time(opening)}" if opening is not None else ""
        return False, f"outside its maintenance window in {zone or 'UTC'}{note}{when}"
    if predicted is None:
        return True, ""
    verdict = judge_idle(predicted, device.quiet_hours, now)
    return verdict.install, verdict.reason


def _rollback_note(device: RolloutDevice) -> str:
    """Where a rollback would take a device about to get its first attempt, when that is not
    the release its desired state names (it failed to install that one)."""
    if device.touched or device.desired_release in (None, device.current_release):
        return ""
    named = f"its desired state names {device.desired_release}"
    if device.current_release is None:
        return f"; a rollback leaves it no release: it ran none successfully ({named})"
    return (
        f"; a rollback returns it to {device.current_release}, the release it last ran "
        f"successfully ({named})"
    )


def _due(device: RolloutDevice, now: datetime) -> bool:
    if device.state is DeviceState.RETRY_WAIT:
        return device.retry_at is None or device.retry_at <= now
    return device.state in _WAITING_STATES


def assign_due_devices(
    rollout: Rollout, devices: Mapping[str, RolloutDevice], now: datetime
) -> list[Action]:
    """Assign the release to due devices of waves 0..current, in plan order, within the
    maintenance windows, max_unavailable and the rate limit; mark those a window holds."""
    plan, strategy = rollout.require_plan(), rollout.spec.strategy
    members = plan.devices_through(rollout.wave)
    all_planned = plan.device_ids
    slots = strategy.max_unavailable_of(len(all_planned)) - sum(
        devices[d].unavailable for d in all_planned
    )
    rate_left = float("inf")
    if strategy.devices_per_minute is not None:
        recent = sum(t > now - RATE_WINDOW for t in rollout.recent_assignments)
        rate_left = strategy.devices_per_minute - recent
    max_attempts = rollout.spec.retries.max_attempts
    actions: list[Action] = []
    for device_id in members:
        device = devices[device_id]
        if not _due(device, now):
            continue
        is_open, note = _window_check(rollout, device, now)
        if not is_open:
            if device.state is not DeviceState.OUTSIDE_WINDOW:
                actions.append(MarkDevice(device_id, DeviceState.OUTSIDE_WINDOW, note))
            continue
        cost = 0 if device.unavailable else 1
        if rate_left < 1 or slots < cost:
            if device.state is DeviceState.OUTSIDE_WINDOW:
                actions.append(
                    MarkDevice(
                        device_id,
                        DeviceState.WAITING,
                        "maintenance window open; waiting for max_unavailable or rate limit",
                    )
                )
            continue
        wave = plan.waves[plan.wave_by_device[device_id]]
        actions.append(
            AssignRelease(
                device_id,
                str(rollout.spec.release),
                wave.index,
                device.attempts + 1,
                f"wave {wave.index + 1}/{len(plan.waves)} ({wave.label}): install "
                f"{rollout.spec.release}, attempt {device.attempts + 1} of {max_attempts}{note}"
                f"{_rollback_note(device)}",
            )
        )
        rate_left -= 1
        slots -= cost
    return actions
