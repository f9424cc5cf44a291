"""The rollout decision: `decide(rollout, devices, telemetry, now)` says what to do next.

The controller calls it whenever something may have changed (a report, a command, a timer)
with the stored rollout, one `RolloutDevice` per device (every target device while the
rollout is pending, every planned device after), the gate telemetry of those devices, and
`now`. It stores `apply_decision(...)` and carries out the AssignRelease and RevertRelease
actions. Killing the controller between any two steps is safe: the next call with the stored
records makes the same decision again, or the one that follows it.

The rules, in the order they are applied until nothing more changes:

1. *Start* (pending): plan the waves over the compatible devices; skip the others.
2. *Observe* reports: an installed report settles a device; a failed one, or no report
   within `install_timeout`, is a failed attempt — the device waits an exponential backoff
   (deterministic "equal jitter" seeded by rollout, device and attempt) and is tried again,
   until `retries.max_attempts` attempts have failed and it counts as failed. A device
   whose compatibility verdict turns negative before its install is skipped.
3. *Deadline*: past a `fail` deadline an unfinished rollout fails (devices keep what they
   have); past a `force` deadline maintenance windows stop holding devices back.
4. *Progress*: devices of waves 0..current that are due are assigned in plan order while
   (a) their maintenance window is open, (b) no more than `max_unavailable` devices are
   then unavailable (updating, or touched by the rollout and unhealthy), and (c) no more
   than `devices_per_minute` assignments fall in the last 60 s. No device of a later wave
   is ever assigned. When every device of waves 0..current is installed, failed or skipped,
   the wave soaks. (Rules 2 and 4 live in `rollout_devices`.)
5. *Soak*: at its end, the gates are evaluated over waves 0..current. Pass: promote (or
   succeed after the last wave). Fail: pause or roll back per `on_failure` — never promote.
   Insufficient data: keep soaking up to the wait, re-evaluating, then promote or fail per
   `insufficient_data.then`.
6. *Roll back*: every device that was ever assigned the release (updating, installed,
   failed or waiting to retry) gets its previous release again — the one it last ran
   successfully before the rollout, not the one its desired state named (a device that
   failed to install that one still runs the one before), or no release when it ran none —
   ignoring windows, the rate limit and max_unavailable: a rollback is an emergency. The
   rollout is rolled back once each has reported its previous release, and fails if one
   did not within `install_timeout` (its desired state still names the previous release).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from datetime import datetime, timedelta

from edgefleet.core.rollouts.actions import (
    Action,
    CompleteRollout,
    Decision,
    ExtendSoak,
    FailRollout,
    FinishRollback,
    MarkDevice,
    PauseRollout,
    PromoteWave,
    RecordGates,
    RevertRelease,
    StartRollback,
    StartRollout,
    StartSoak,
    apply_actions,
)
from edgefleet.core.rollouts.devices import assign_due_devices, observe_reports
from edgefleet.core.rollouts.gates import (
    DeviceTelemetry,
    GateVerdict,
    InstallOutcome,
    InsufficientDataAction,
    evaluate_gates,
    overall_verdict,
)
from edgefleet.core.rollouts.rollout import (
    FINAL_STATES,
    SETTLED_DEVICE_STATES,
    DeviceState,
    GateEvaluation,
    Rollout,
    RolloutDevice,
    RolloutState,
    format_time,
)
from edgefleet.core.rollouts.spec import DeadlineAction, FailureAction
from edgefleet.core.rollouts.status import describe_rollout, next_check_at
from edgefleet.core.rollouts.waves import plan_waves
from edgefleet.errors import InvalidInput

_REVERTED_STATES = (DeviceState.ROLLING_BACK, DeviceState.ROLLED_BACK)


def _start(rollout: Rollout, devices: Mapping[str, RolloutDevice]) -> list[Action]:
    release = rollout.spec.release
    compatible = [d for d in sorted(devices) if devices[d].compatibility.compatible]
    skipped = [d for d in sorted(devices) if not devices[d].compatibility.compatible]
    strategy = rollout.spec.strategy
    plan = plan_waves(rollout.spec.rollout_name, compatible, strategy.waves, strategy.soak_s)
    sizes = ", ".join(str(w.size) for w in plan.waves)
    actions: list[Action] = [
        StartRollout(
            plan,
            f"started {release}: {len(compatible)} device(s) in {len(plan.waves)} wave(s) "
            f"[{sizes}], {len(skipped)} incompatible skipped",
        )
    ]
    actions += [
        MarkDevice(
            d,
            DeviceState.SKIPPED_INCOMPATIBLE,
            f"incompatible with {release}: {devices[d].compatibility.reason}",
        )
        for d in skipped
    ]
    if not plan.waves:
        actions.append(
            FailRollout(
                f"no compatible device to update: the target '{rollout.spec.target}' matched "
                f"{len(devices)} device(s), {len(skipped)} of them incompatible"
            )
        )
    return actions


def _check_deadline(
    rollout: Rollout, devices: Mapping[str, RolloutDevice], now: datetime
) -> list[Action]:
    if rollout.state is RolloutState.ROLLING_BACK:
        return []
    if not rollout.past_deadline(now, DeadlineAction.FAIL):
        return []
    plan = rollout.require_plan()
    installed = sum(devices[d].state is DeviceState.INSTALLED for d in plan.device_ids)
    deadline = rollout.deadline_at()
    assert deadline is not None
    return [
        FailRollout(
            f"deadline {format_time(deadline)} passed during {rollout.wave_name()}: "
            f"{installed} of {len(plan.device_ids)} devices installed"
        )
    ]


def _progress(
    rollout: Rollout, devices: Mapping[str, RolloutDevice], now: datetime
) -> list[Action]:
    plan = rollout.require_plan()
    members = plan.devices_through(rollout.wave)
    if all(devices[d].state in SETTLED_DEVICE_STATES for d in members):
        counts = Counter(devices[d].state for d in members)
        wave = plan.waves[rollout.wave]
        until = now + timedelta(seconds=wave.soak_s)
        return [
            StartSoak(
                rollout.wave,
                until,
                f"{rollout.wave_name()} settled: {counts[DeviceState.INSTALLED]} installed, "
                f"{counts[DeviceState.FAILED]} failed, "
                f"{counts[DeviceState.SKIPPED_INCOMPATIBLE]} skipped; "
                f"soaking until {format_time(until)}",
            )
        ]
    return assign_due_devices(rollout, devices, now)


def _gate_outcome(device: RolloutDevice) -> InstallOutcome | None:
    match device.state:
        case DeviceState.INSTALLED:
            return InstallOutcome.INSTALLED
        case DeviceState.UPDATING:
            return InstallOutcome.IN_PROGRESS
        case DeviceState.SKIPPED_INCOMPATIBLE:
            return None
        case DeviceState.ROLLING_BACK | DeviceState.ROLLED_BACK | DeviceState.ROLLBACK_FAILED:
            return InstallOutcome.ROLLED_BACK
        case _:  # failed, or waiting to try again after a failed attempt
            return InstallOutcome.FAILED if device.touched else None


def _soak(
    rollout: Rollout,
    devices: Mapping[str, RolloutDevice],
    telemetry: Mapping[str, DeviceTelemetry],
    now: datetime,
) -> list[Action]:
    if rollout.soak_until is not None and now < rollout.soak_until:
        return []
    plan, gates = rollout.require_plan(), rollout.spec.gates
    outcomes = {
        d: outcome
        for d in plan.devices_through(rollout.wave)
        if (outcome := _gate_outcome(devices[d])) is not None
    }
    results = evaluate_gates(gates, outcomes, telemetry)
    verdict = overall_verdict(results)
    name = rollout.wave_name()
    if verdict is GateVerdict.INSUFFICIENT_DATA:
        lacking = ", ".join(r.gate for r in results if r.verdict is GateVerdict.INSUFFICIENT_DATA)
        wait_s = gates.insufficient_data_wait_s
        if wait_s is None:
            wait_s = plan.waves[rollout.wave].soak_s
        wait_until = rollout.gate_wait_until or (rollout.soak_until or now) + timedelta(
            seconds=wait_s
        )
        if now < wait_until:
            if rollout.gate_wait_until is not None:
                return []
            return [
                ExtendSoak(
                    rollout.wave,
                    wait_until,
                    f"{name}: not enough data for {lacking}; "
                    f"soaking until {format_time(wait_until)}",
                )
            ]
        passed = gates.insufficient_data_action is InsufficientDataAction.PROMOTE
        summary = f"{name}: still not enough data for {lacking} at {format_time(wait_until)}"
        summary += "; promoting as configured" if passed else "; counted as a failed gate"
    elif verdict is GateVerdict.FAIL:
        passed = False
        failed = "; ".join(f"{r.gate}: {r.reason}" for r in results if r.verdict is verdict)
        summary = f"{name}: gate failed — {failed}"
    else:
        passed = True
        summary = f"{name}: gates passed" if results else f"{name}: no gates declared"
        if results:
            summary += " — " + "; ".join(f"{r.gate}: {r.reason}" for r in results)
    actions: list[Action] = [
        RecordGates(GateEvaluation(rollout.wave, now, verdict, results, summary), summary)
    ]
    if not passed:
        if rollout.spec.on_failure is FailureAction.PAUSE:
            actions.append(PauseRollout(summary))
        else:
            actions.append(StartRollback(summary))
    elif rollout.wave + 1 < len(plan.waves):
        nxt = plan.waves[rollout.wave + 1]
        actions.append(
            PromoteWave(
                rollout.wave + 1,
                f"{summary}; promoting to wave {nxt.index + 1}/{len(plan.waves)} ({nxt.label})",
            )
        )
    else:
        actions.append(CompleteRollout(summary))
    return actions


def _roll_back(
    rollout: Rollout, devices: Mapping[str, RolloutDevice], now: datetime
) -> list[Action]:
    touched = [d for d in sorted(devices) if devices[d].touched]
    started = rollout.rollback_started_at
    reverts: list[Action] = []
    for device_id in touched:
        device = devices[device_id]
        retry_failed = (
            device.state is DeviceState.ROLLBACK_FAILED
            and started is not None
            and device.assigned_at is not None
            and device.assigned_at < started
        )
        if device.state not in (*_REVERTED_STATES, DeviceState.ROLLBACK_FAILED) or retry_failed:
            release = rollout.spec.release
            if device.previous_release is None:
                target = (
                    "no release: it had run none successfully before the rollout, so "
                    f"{release} leaves its desired state"
                )
            else:
                target = f"{device.previous_release}, the release it last ran successfully"
            reverts.append(
                RevertRelease(
                    device_id,
                    device.previous_release,
                    f"revert {release} to {target} (was {device.state})",
                )
            )
    if reverts:
        return reverts
    if any(devices[d].state is DeviceState.ROLLING_BACK for d in touched):
        return []
    failed = [d for d in touched if devices[d].state is DeviceState.ROLLBACK_FAILED]
    if failed:
        shown = ", ".join(failed[:5]) + (" ..." if len(failed) > 5 else "")
        return [
            FailRollout(
                f"rollback incomplete: {len(failed)} of {len(touched)} devices did not confirm "
                f"their previous release ({shown})"
            )
        ]
    if not touched:
        return [FinishRollback(f"no device had received {rollout.spec.release}")]
    return [
        FinishRollback(
            f"all {len(touched)} device(s) that received {rollout.spec.release} "
            "are on their previous release"
        )
    ]


def _step(
    rollout: Rollout,
    devices: Mapping[str, RolloutDevice],
    telemetry: Mapping[str, DeviceTelemetry],
    now: datetime,
) -> list[Action]:
    """The actions of the first rule that has something to do."""
    if rollout.state is RolloutState.PENDING:
        return _start(rollout, devices)
    if rollout.state in FINAL_STATES or rollout.state is RolloutState.AWAITING_APPROVAL:
        return []
    planned = rollout.plan.device_ids if rollout.plan is not None else ()
    for device_id in planned:
        if device_id not in devices:
            raise InvalidInput(f"device {device_id!r} of rollout {rollout.id} has no record")
    actions = observe_reports(rollout, devices, now) or _check_deadline(rollout, devices, now)
    if actions:
        return actions
    match rollout.state:
        case RolloutState.PROGRESSING:
            return _progress(rollout, devices, now)
        case RolloutState.SOAKING:
            return _soak(rollout, devices, telemetry, now)
        case RolloutState.ROLLING_BACK:
            return _roll_back(rollout, devices, now)
        case _:
            return []


def decide(
    rollout: Rollout,
    devices: Mapping[str, RolloutDevice],
    telemetry: Mapping[str, DeviceTelemetry],
    now: datetime,
) -> Decision:
    """Everything to do now, each action with its reason; the same inputs give the same
    decision (mapping order never matters)."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise InvalidInput(f"now ({now.isoformat()}) has no time zone; pass UTC")
    records = {d: devices[d] for d in sorted(devices)}
    actions: list[Action] = []
    # Each round either changes state or leaves nothing to do; a wave needs at most four
    # rounds (observe, assign, soak, gates), so this bound is never reached by a correct
    # rule set.
    for _ in range(10 + 5 * (len(rollout.spec.strategy.waves) + 1)):
        step = _step(rollout, records, telemetry, now)
        if not step:
            break
        actions.extend(step)
        rollout = apply_actions(rollout, records, step, now)
    else:
        raise AssertionError(f"rollout {rollout.id}: decision did not settle")
    return Decision(
        now,
        tuple(actions),
        rollout.state,
        describe_rollout(rollout, records, now),
        next_check_at(rollout, records, now),
    )
