"""The round planner: which devices train in the next round, or why the round cannot run.

A device is eligible when it matches the job's selector and is online, not in a
maintenance window, on an allowed network, within the allowed regions (data residency: its
`region` label), below the load ceiling, and has battery to spare (or is charging). Of the
eligible, devices that sat out the previous round go first; then the charging, the fuller
battery, the lighter load; ties are broken by a seeded shuffle, so the same inputs give the
same plan. A device from the previous round is taken again only when the others are too
few. Fewer eligible than `minClients`: the round is retried later, and after `retries`
attempts the job pauses with the reasons devices were passed over.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from edgefleet.core.learning.manifest import TrainingSpec


@dataclass(frozen=True)
class Candidate:
    """What the plane knows of one device when it plans (from its last heartbeat)."""

    id: str
    labels: dict[str, str]
    online: bool
    battery_pct: float | None  # None: mains powered
    charging: bool
    network: str  # ethernet | wifi | cellular | offline
    load: float  # 0..1, the device's CPU use
    in_maintenance: bool


@dataclass(frozen=True)
class RoundPlan:
    clients: tuple[str, ...]  # empty when the round cannot run
    reason: str
    pause: bool = False  # give up: the job pauses with `reason`


def ineligibility(spec: TrainingSpec, device: Candidate) -> str | None:
    """Why `device` cannot train for `spec` now, or None."""
    rules = spec.eligibility
    if not spec.selector.matches(device.labels):
        return "not selected"
    if not device.online:
        return "offline"
    if device.in_maintenance:
        return "in a maintenance window"
    if device.network not in rules.networks:
        return f"network {device.network}"
    if rules.regions and device.labels.get("region") not in rules.regions:
        return "data residency"
    if device.load > rules.max_load:
        return "busy"
    if (
        device.battery_pct is not None
        and not device.charging
        and device.battery_pct < rules.min_battery_pct
    ):
        return "battery low"
    return None


def plan_round(
    spec: TrainingSpec,
    candidates: Sequence[Candidate],
    previous_round: frozenset[str],
    attempt: int,
    rng: random.Random,
) -> RoundPlan:
    """The cohort of the next round (`attempt` counts earlier failed tries of this round)."""
    passed_over: Counter[str] = Counter()
    eligible = []
    for device in sorted(candidates, key=lambda d: d.id):
        why = ineligibility(spec, device)
        if why is None:
            eligible.append(device)
        elif why != "not selected":
            passed_over[why] += 1
    if len(eligible) < spec.min_clients:
        detail = ", ".join(f"{n} {why}" for why, n in sorted(passed_over.items())) or "none"
        reason = (
            f"{len(eligible)} eligible devices, {spec.min_clients} needed (passed over: {detail})"
        )
        if attempt >= spec.retries:
            return RoundPlan((), f"paused after {attempt + 1} attempts: {reason}", pause=True)
        return RoundPlan((), f"retry: {reason}")
    rng.shuffle(eligible)
    eligible.sort(
        key=lambda d: (
            d.id in previous_round,
            not d.charging,
            -(100.0 if d.battery_pct is None else d.battery_pct),
            round(d.load, 1),
        )
    )
    chosen = tuple(sorted(d.id for d in eligible[: spec.clients_per_round]))
    repeats = len(set(chosen) & previous_round)
    reason = f"{len(chosen)} of {len(eligible)} eligible devices"
    if repeats:
        reason += f" ({repeats} from the previous round: too few others)"
    return RoundPlan(chosen, reason)
