"""The rollout series of `/metrics`: active rollouts by state, each active rollout's devices
by state and its wave, and the gates of its latest evaluation (measured value, threshold,
verdict). Labelled by rollout name and release, for active rollouts only, so the label
space stays as small as the number of rollouts running; a finished rollout's series end.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Mapping, Sequence

from edgefleet.core.rollouts.gates import GateVerdict
from edgefleet.core.rollouts.record import RolloutRecord
from edgefleet.core.rollouts.rollout import FINAL_STATES, DeviceState, RolloutState
from edgefleet.server.prometheus import MetricFamily

# Rollouts read per scrape at most (newest first); more would be an unusual fleet.
MAX_ROLLOUTS = 200


def rollout_families(
    active: Sequence[RolloutRecord], device_states: Mapping[str, Mapping[str, int]]
) -> list[MetricFamily]:
    """Families for `active` rollouts, with `device_states` (rollout id -> state -> count)."""
    by_state = MetricFamily("edgefleet_rollouts", "gauge", "Active rollouts, by state.")
    states = Tally(r.state.value for r in active)
    for state in RolloutState:
        if state not in FINAL_STATES:
            by_state.add(states.get(state.value, 0), {"state": state.value})
    devices = MetricFamily(
        "edgefleet_rollout_devices", "gauge",
        "Devices of each active rollout, by their state in it (installed, updating, failed, "
        "...).",
    )  # fmt: skip
    wave = MetricFamily(
        "edgefleet_rollout_wave",
        "gauge",
        "The current wave of each active rollout (1 is the first).",
    )
    waves = MetricFamily("edgefleet_rollout_waves", "gauge", "Waves in each active rollout's plan.")
    value = MetricFamily(
        "edgefleet_rollout_gate_value",
        "gauge",
        "A gate's measured value at its rollout's latest evaluation.",
    )
    threshold = MetricFamily(
        "edgefleet_rollout_gate_threshold",
        "gauge",
        "A gate's threshold at its rollout's latest evaluation.",
    )
    verdict = MetricFamily(
        "edgefleet_rollout_gate_verdict", "gauge",
        "1 for a gate's verdict (pass, fail, insufficient-data) at its rollout's latest "
        "evaluation, 0 for the others.",
    )  # fmt: skip
    for record in active:
        base = {"rollout": record.name, "release": record.release}
        counts = device_states.get(record.id, {})
        for device_state in DeviceState:
            devices.add(counts.get(device_state.value, 0), {**base, "state": device_state.value})
        plan = record.rollout.plan
        if plan is not None:
            wave.add(record.rollout.wave + 1, base)
            waves.add(len(plan.waves), base)
        if not record.rollout.gate_evaluations:
            continue
        latest = record.rollout.gate_evaluations[-1]
        for result in latest.results:
            labels = {**base, "gate": result.gate}
            if result.measured is not None:
                value.add(result.measured, labels)
            threshold.add(result.threshold, labels)
            for kind in GateVerdict:
                verdict.add(int(result.verdict is kind), {**labels, "verdict": kind.value})
    return [by_state, devices, wave, waves, value, threshold, verdict]
