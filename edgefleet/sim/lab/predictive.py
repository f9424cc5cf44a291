"""The lab's evaluation of the predictive controllers against today's static policies, on a
fleet profile and a seed (`edgefleet lab predictive`, `bench/predictive/run.py`).

Each device behaves after its class's `activity` (`sim/activity.py`): busy and quiet hours
in its own zone, its traffic and CPU following them. Three questions, each answered by the
control plane's own pure code on both sides:

**Update windows** — requests disrupted by installs. Each device's quiet hours are learned
(`core.telemetry.quiet_hours`) from `history_days` of its hourly request rate and CPU; then
a rollout starts at each of `rollout_starts` times spread over a week, and each device is
installed under three policies: at once (no window), in the static maintenance window
`STATIC_WINDOW` (02:00-06:00 device time, `core.rollouts.maintenance`), and with
`window: predicted` (`core.rollouts.predicted_window.judge_idle`, as the controller asks
it). An install takes the service down for the class's `start_s` plus `SWITCH_S`; the
requests arriving meanwhile are disrupted. Reported: requests disrupted per 1000 installs,
the share of installs in busy hours, and the wait from the rollout's start.

**Migration destinations** — migrations needed. At `evacuations` random times over a day
a replica of the profile's first workload leaves a random node and `core.placement.place`
chooses its destination, once from the nodes' values now and once from forecast nodes
(`core.workloads.forecast.forecast_node`, Holt trends over the last two hours of 5-minute
samples, `FORECAST_HORIZON_S` ahead). A destination whose CPU would pass 95 % with the
replica, or whose battery would fall below 15 % (the drain thresholds), within
`CHECK_HORIZON_S` needs one more migration. Battery drains come from the profile's faults.

**Telemetry fidelity** — bytes sent and anomaly detection delay. Over a day each device
reports its inference latency; `incident_percent` of them degrade once, half by a step
(x2 at once), half by a ramp (to x2 over an hour). The control plane alerts on a window
whose p95 latency passes 1.5x the device's baseline p95, when the batch carrying it
arrives. Static:
60 s windows, uploads every 300 s. Predictive: at each upload the control plane advises
(`core.telemetry.fidelity.advise_fidelity` on a Holt trend of the windows so far) and the
device samples as `core.telemetry.sampling.decide_sampling` says (15 s windows and 60 s
uploads near the threshold, 300 s windows far from it). Bytes per window and per batch
come from encoding real batches with the device codec (`core.telemetry.wire`).
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from edgefleet.core.rollouts.maintenance import (
    MaintenanceWindow,
    any_window_open,
    next_opening,
    parse_cron,
    usable_time_zone,
)
from edgefleet.core.rollouts.predicted_window import PredictedWindow, judge_idle
from edgefleet.core.telemetry.fidelity import MetricTrend, Threshold, advise_fidelity
from edgefleet.core.telemetry.quiet_hours import (
    HourSample,
    QuietHours,
    expected_activity,
    learn_quiet_hours,
)
from edgefleet.core.telemetry.sampling import DeviceCondition, decide_sampling, default_policy
from edgefleet.core.telemetry.sketch import DDSketch
from edgefleet.core.telemetry.windows import MetricKind, Window
from edgefleet.core.telemetry.wire import Batch, encode_batch
from edgefleet.core.workloads.failover import DEFAULT_DRAIN_THRESHOLDS, fit_trend
from edgefleet.core.workloads.forecast import forecast_node
from edgefleet.core.workloads.placement import Placement, place
from edgefleet.core.workloads.terms import Node, PowerSource, Topology
from edgefleet.core.workloads.workload import Workload, parse_workload
from edgefleet.sim.activity import DeviceActivity
from edgefleet.sim.faults import FaultKind, FaultTarget, schedule_faults
from edgefleet.sim.lab.fleet_model import LabDevice, lab_fleet_from_profile
from edgefleet.sim.profile import FleetProfile

DEFAULT_START = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday
STATIC_WINDOW = MaintenanceWindow(parse_cron("0 2 * * *"), 4 * 3600.0)
SWITCH_S = 1.0
FORECAST_HORIZON_S = 3600.0
CHECK_HORIZON_S = 2 * 3600.0
SAMPLE_STEP_S = 300.0
LOAD_LIMIT = next(t.value for t in DEFAULT_DRAIN_THRESHOLDS if t.metric == "cpu_load")
BATTERY_LIMIT = next(t.value for t in DEFAULT_DRAIN_THRESHOLDS if t.metric == "battery_pct")
LATENCY = "inference.latency_ms"
ALERT_FACTOR = 1.5
INCIDENT_FACTOR = 2.0
DEFAULT_WORKLOAD = {"kind": "Workload", "metadata": {"name": "evaluation"},
                    "spec": {"resources": {"cpu_millicores": 200, "memory_mb": 64}}}  # fmt: skip


@dataclass(frozen=True)
class PredictiveConfig:
    profile: FleetProfile
    devices: int = 200
    seed: int | None = None  # None: the profile's seed
    start: datetime = DEFAULT_START
    history_days: int = 21
    rollout_starts: int = 28
    evacuations: int = 200
    incident_percent: float = 20.0
    fidelity_devices: int = 100

    @property
    def run_seed(self) -> int:
        return self.profile.seed if self.seed is None else self.seed

    def quick(self) -> PredictiveConfig:
        """The `--quick` form: fewer devices, rollout starts, evacuations and incidents."""
        return replace(self, devices=min(self.devices, 40), rollout_starts=7, evacuations=40,
                       fidelity_devices=40)  # fmt: skip


def _activity(profile: FleetProfile, device: LabDevice) -> DeviceActivity:
    device_class = next(c for c in profile.classes if c.name == device.device_class)
    return DeviceActivity(device_class.activity, usable_time_zone(device.time_zone), device.seed)


def _percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --- update windows -------------------------------------------------------------------------


def hourly_samples(activity: DeviceActivity, device: LabDevice, first: datetime,
                   hours: int) -> list[HourSample]:  # fmt: skip
    """The device's hourly telemetry from `first` on: request rate and CPU, each the mean
    of four readings in the hour (what the hourly rollups hold)."""
    peak = device.behaviour.requests_per_s
    base, busy = device.hardware.base_cpu_percent, activity.activity.busy_cpu_percent
    samples = []
    for h in range(hours):
        hour = first + timedelta(hours=h)
        level = statistics.fmean(activity.level(hour + timedelta(minutes=7.5 + 15 * k))
                                 for k in range(4))  # fmt: skip
        samples.append(HourSample(hour, peak * level, min(100.0, base + busy * level)))
    return samples


def _install_at(policy: str, device: LabDevice, profile: QuietHours, start: datetime) -> datetime:
    zone = usable_time_zone(device.time_zone)
    if policy == "static":
        if any_window_open((STATIC_WINDOW,), zone, start):
            return start
        return next_opening((STATIC_WINDOW,), zone, start) or start
    if policy == "predicted":
        at = start
        for _ in range(200):  # each step moves to a later predicted idle start
            verdict = judge_idle(PredictedWindow(), profile, at)
            if verdict.install or verdict.held_until is None:
                return at
            at = verdict.held_until
        return at
    return start


def evaluate_windows(config: PredictiveConfig, fleet: Sequence[LabDevice]) -> dict[str, Any]:
    """Requests disrupted by installs under each window policy."""
    week_s = 7 * 86400
    starts = [config.start + timedelta(days=config.history_days,
                                       seconds=i * week_s // config.rollout_starts)
              for i in range(config.rollout_starts)]  # fmt: skip
    # Rollouts start on the hour, as the hourly profile sees them, and also in between.
    starts = [s + timedelta(minutes=20 * (i % 3)) for i, s in enumerate(starts)]
    results: dict[str, dict[str, list[float]]] = {
        p: {"disrupted": [], "wait_h": [], "busy": []} for p in ("immediate", "static", "predicted")
    }
    first = config.start
    span_h = int((starts[-1] - first).total_seconds() // 3600) + 1
    for device in fleet:
        activity = _activity(config.profile, device)
        downtime_s = device.behaviour.start_s + SWITCH_S
        samples = hourly_samples(activity, device, first, span_h)
        zone = usable_time_zone(device.time_zone) or "UTC"
        for start in starts:
            since = start - timedelta(days=config.history_days)
            seen = [s for s in samples if since <= s.hour < start]
            learned = learn_quiet_hours(seen, start, zone)
            for policy, out in results.items():
                at = _install_at(policy, device, learned, start)
                level = activity.level(at)
                out["disrupted"].append(device.behaviour.requests_per_s * level * downtime_s)
                out["wait_h"].append((at - start).total_seconds() / 3600)
                out["busy"].append(1.0 if level >= 0.5 else 0.0)
    installs = len(fleet) * len(starts)
    return {
        "installs": installs,
        "rollout_starts": len(starts),
        "policies": {
            policy: {
                "requests_disrupted_per_1000_installs": round(
                    1000 * sum(r["disrupted"]) / installs, 1
                ),
                "installs_in_busy_hours_percent": round(100 * sum(r["busy"]) / installs, 1),
                "wait_h_median": round(statistics.median(r["wait_h"]), 2),
                "wait_h_p95": round(_percentile(r["wait_h"], 0.95), 2),
            }
            for policy, r in results.items()
        },
    }  # fmt: skip


# --- migration destinations -----------------------------------------------------------------


@dataclass(frozen=True)
class _Battery:
    start_pct: float
    drain_per_h: float
    fault_at_s: float | None = None
    fault_drain_per_h: float = 0.0

    def at(self, t_s: float) -> float:
        if self.fault_at_s is None or t_s <= self.fault_at_s:
            return self.start_pct - self.drain_per_h * t_s / 3600
        before = self.start_pct - self.drain_per_h * self.fault_at_s / 3600
        return before - self.fault_drain_per_h * (t_s - self.fault_at_s) / 3600


def _batteries(config: PredictiveConfig, fleet: Sequence[LabDevice]) -> dict[str, _Battery]:
    targets = [FaultTarget(i, d.device_class, d.region, d.zone, frozenset())
               for i, d in enumerate(fleet)]  # fmt: skip
    events = schedule_faults(config.profile.faults, targets, 86400.0, config.run_seed)
    drains = {fleet[i].id: e for e in events if e.kind is FaultKind.BATTERY_DRAIN
              for i in e.device_indices}  # fmt: skip
    out = {}
    for d in fleet:
        if d.battery_start_percent is None or d.hardware.power is PowerSource.MAINS:
            continue
        spec = d.hardware.battery
        fault = drains.get(d.id)
        out[d.id] = _Battery(d.battery_start_percent, spec.drain_percent_per_hour if spec else 0.0,
                             fault.at_s if fault else None,
                             fault.drain_percent_per_hour if fault else 0.0)  # fmt: skip
    return out


def _node_at(device: LabDevice, activity: DeviceActivity, battery: _Battery | None,
             start: datetime, t_s: float) -> Node:  # fmt: skip
    """The node as placement sees it at `t_s`, with its whole CPU and its host load."""
    base = device.node()
    cpu = int(device.inventory.get("hardware", {}).get("cpu_count", 1)) * 1000
    load = activity.cpu_percent(start + timedelta(seconds=t_s), device.hardware.base_cpu_percent)
    return replace(
        base, cpu_millicores=cpu, used_cpu_millicores=round(load / 100 * cpu),
        battery_pct=None if battery is None else max(0.0, battery.at(t_s)),
    )  # fmt: skip


def _needs_another_move(device: LabDevice, activity: DeviceActivity, battery: _Battery | None,
                        start: datetime, t_s: float, demand: int) -> bool:  # fmt: skip
    """Would the destination pass a drain threshold within CHECK_HORIZON_S of the move?"""
    step = 0.0
    while step <= CHECK_HORIZON_S:
        node = _node_at(device, activity, battery, start, t_s + step)
        if (node.used_cpu_millicores + demand) / node.cpu_millicores > LOAD_LIMIT:
            return True
        if node.battery_pct is not None and node.battery_pct < BATTERY_LIMIT:
            return True
        step += SAMPLE_STEP_S
    return False


def _forecast(device: LabDevice, activity: DeviceActivity, battery: _Battery | None,
              start: datetime, t_s: float, cpu_profile: QuietHours | None) -> Node:  # fmt: skip
    """The forecast node: Holt trends of the last two hours, and with `cpu_profile` the
    peak load its learned week expects over the horizon."""
    now = start + timedelta(seconds=t_s)
    known: list[float] = []
    if cpu_profile is not None:
        hours = range(math.ceil(FORECAST_HORIZON_S / 3600) + 1)
        expected = [expected_activity(cpu_profile, now + timedelta(hours=k)) for k in hours]
        known = [e for e in expected if e is not None]
    history = [_node_at(device, activity, battery, start, t_s - k * SAMPLE_STEP_S)
               for k in range(24, -1, -1)]  # fmt: skip
    times = [now - timedelta(seconds=k * SAMPLE_STEP_S) for k in range(24, -1, -1)]
    trends = {}
    load = fit_trend([(t, n.used_cpu_millicores / n.cpu_millicores)
                      for t, n in zip(times, history, strict=True)])  # fmt: skip
    if load is not None:
        trends["cpu_load"] = load
    if battery is not None:
        charge = fit_trend([(t, n.battery_pct or 0.0) for t, n in zip(times, history, strict=True)])
        if charge is not None:
            trends["battery_pct"] = charge
    return forecast_node(history[-1], trends, now, FORECAST_HORIZON_S,
                         seasonal_peak_load=max(known) if known else None)  # fmt: skip


def evaluate_migrations(config: PredictiveConfig, fleet: Sequence[LabDevice]) -> dict[str, Any]:
    """Migrations needed when destinations are chosen by current or by forecast values."""
    workloads = config.profile.workloads
    workload: Workload = replace(
        workloads[0] if workloads else parse_workload(DEFAULT_WORKLOAD), replicas=1
    )
    demand = workload.resources.cpu_millicores
    rng = random.Random(f"predictive-migrations:{config.run_seed}")
    activities = {d.id: _activity(config.profile, d) for d in fleet}
    batteries = _batteries(config, fleet)
    start = config.start + timedelta(days=config.history_days)
    cpu_profiles = {
        d.id: learn_quiet_hours(
            [replace(s, requests_per_s=None) for s in hourly_samples(
                activities[d.id], d, config.start, config.history_days * 24)],
            start, usable_time_zone(d.time_zone) or "UTC",
        )
        for d in fleet
    }  # fmt: skip
    counts = {"current": 0, "trend": 0, "seasonal": 0}
    placed = dict.fromkeys(counts, 0)
    for _ in range(config.evacuations):
        t_s = rng.uniform(2 * 3600, 22 * 3600)
        source = rng.choice(fleet).id
        for policy in counts:
            nodes = []
            for d in fleet:
                if d.id == source:
                    continue
                battery = batteries.get(d.id)
                if battery is not None and battery.at(t_s) <= 0:
                    continue  # flat: dead
                if policy != "current":
                    profile = cpu_profiles[d.id] if policy == "seasonal" else None
                    nodes.append(_forecast(d, activities[d.id], battery, start, t_s, profile))
                else:
                    nodes.append(_node_at(d, activities[d.id], battery, start, t_s))
            plan = place([workload], nodes, Topology(), Placement(),
                         start + timedelta(seconds=t_s))  # fmt: skip
            if not plan.placement.assignments:
                continue
            target = plan.placement.assignments[0].node_id
            device = next(d for d in fleet if d.id == target)
            placed[policy] += 1
            counts[policy] += 1
            if _needs_another_move(device, activities[target], batteries.get(target), start,
                                   t_s, demand):  # fmt: skip
                counts[policy] += 1
    return {
        "evacuations": config.evacuations,
        "workload": workload.name,
        "policies": {
            p: {"placed": placed[p], "migrations_needed": counts[p],
                "follow_up_migrations": counts[p] - placed[p]}
            for p in counts
        },
    }  # fmt: skip


# --- telemetry fidelity ---------------------------------------------------------------------


def _latency_window(start_s: int, length_s: int, mean_ms: float, count: int,
                    rng: random.Random) -> Window:  # fmt: skip
    sketch = DDSketch()
    draws = max(1, min(count, 20))
    for _ in range(draws):
        sketch.add(mean_ms * math.exp(rng.gauss(0, 0.3)), max(1, count // draws))
    total = mean_ms * count
    return Window(LATENCY, MetricKind.TIMING, (), start_s, length_s, count, total,
                  mean_ms * 0.5, mean_ms * 2, mean_ms, sketch)  # fmt: skip


def _bytes_per_batch(windows_per_batch: int, window_s: int, rate: float) -> int:
    """Encoded size of one batch of `windows_per_batch` latency windows (the real codec)."""
    rng = random.Random(window_s * 7919 + windows_per_batch)
    count = max(1, round(rate * window_s))
    windows = tuple(_latency_window(1_800_000_000 + i * window_s, window_s, 30.0, count, rng)
                    for i in range(windows_per_batch))  # fmt: skip
    return len(encode_batch(Batch(1, windows)))


@dataclass(frozen=True)
class _Incident:
    at_s: float
    ramp_s: float  # 0: a step


def _latency_at(baseline: float, incident: _Incident | None, t_s: float) -> float:
    if incident is None or t_s < incident.at_s:
        return baseline
    if incident.ramp_s <= 0:
        return baseline * INCIDENT_FACTOR
    share = min(1.0, (t_s - incident.at_s) / incident.ramp_s)
    return baseline * (1 + (INCIDENT_FACTOR - 1) * share)


def _window_p95(baseline: float, incident: _Incident | None, start_s: float, length_s: float,
                rng: random.Random) -> float:  # fmt: skip
    """The window's p95 latency: the 95th percentile of its 15-second levels, with noise."""
    points = max(1, int(length_s // 15))
    values = [_latency_at(baseline, incident, start_s + (i + 0.5) * length_s / points)
              for i in range(points)]  # fmt: skip
    return _percentile(values, 0.95) * (1 + rng.gauss(0, 0.02))


def _run_device(
    baseline: float,
    rate: float,
    incident: _Incident | None,
    adaptive: bool,
    seed: int,
    sizes: dict[tuple[int, int], int],
) -> tuple[int, float | None]:
    """(bytes sent, detection delay in s or None) over a day for one device."""
    rng = random.Random(seed)
    policy = default_policy()
    watch = (Threshold(LATENCY, baseline * ALERT_FACTOR),)
    condition = DeviceCondition()
    t_s, sent, detected = 0.0, 0, None
    history: list[tuple[datetime, float]] = []
    while t_s < 86400:
        decision = decide_sampling(policy, condition)
        window_s = decision.window_s_for(LATENCY) or 60
        upload_s = decision.upload_interval_s
        windows = max(1, int(upload_s // window_s))
        key = (windows, window_s)
        if key not in sizes:
            sizes[key] = _bytes_per_batch(windows, window_s, rate)
        sent += sizes[key]
        for i in range(windows):
            w_start = t_s + i * window_s
            p95 = _window_p95(baseline, incident, w_start, window_s, rng)
            history.append((DEFAULT_START + timedelta(seconds=w_start + window_s), p95))
            if detected is None and incident is not None and p95 > baseline * ALERT_FACTOR:
                detected = t_s + windows * window_s - incident.at_s  # when the batch arrives
        t_s += windows * window_s
        if adaptive:
            trend = fit_trend(history[-12:])
            if trend is not None:
                advice = advise_fidelity(
                    watch, {LATENCY: MetricTrend(trend.level, trend.slope_per_s)}
                )
                condition = DeviceCondition(fine_metrics=advice.fine, coarse_metrics=advice.coarse)
    return sent, detected


def evaluate_fidelity(config: PredictiveConfig, fleet: Sequence[LabDevice]) -> dict[str, Any]:
    """Bytes sent and anomaly detection delay, static sampling against fidelity advice."""
    rng = random.Random(f"predictive-fidelity:{config.run_seed}")
    sizes: dict[tuple[int, int], int] = {}
    out: dict[str, dict[str, list[float]]] = {
        p: {"bytes": [], "step": [], "ramp": [], "missed": []} for p in ("static", "adaptive")
    }
    for device in fleet[: config.fidelity_devices]:
        baseline = device.behaviour.latency.p95_ms * device.speed_factor
        incident = None
        if rng.uniform(0, 100) < config.incident_percent:
            incident = _Incident(rng.uniform(2 * 3600, 20 * 3600), rng.choice((0.0, 3600.0)))
        seed = rng.getrandbits(32)
        for policy, acc in out.items():
            sent, delay = _run_device(baseline, device.behaviour.requests_per_s, incident,
                                      policy == "adaptive", seed, sizes)  # fmt: skip
            acc["bytes"].append(sent)
            if incident is not None:
                if delay is None:
                    acc["missed"].append(1.0)
                else:
                    acc["step" if incident.ramp_s == 0 else "ramp"].append(delay)
    return {
        "devices": min(len(fleet), config.fidelity_devices),
        "policies": {
            p: {
                "bytes_per_device_day": round(statistics.fmean(acc["bytes"])),
                "detection_delay_s_step_median": round(_percentile(acc["step"], 0.5)),
                "detection_delay_s_ramp_median": round(_percentile(acc["ramp"], 0.5)),
                "incidents_step": len(acc["step"]),
                "incidents_ramp": len(acc["ramp"]),
                "incidents_missed": len(acc["missed"]),
            }
            for p, acc in out.items()
        },
    }


def run_predictive(config: PredictiveConfig) -> dict[str, Any]:
    """All three evaluations on one fleet (the same devices and seed for every policy)."""
    fleet = lab_fleet_from_profile(config.profile, config.devices, config.run_seed)
    return {
        "profile": config.profile.name,
        "devices": len(fleet),
        "seed": config.run_seed,
        "start": config.start.isoformat(),
        "update_windows": evaluate_windows(config, fleet),
        "migration_destinations": evaluate_migrations(config, fleet),
        "telemetry_fidelity": evaluate_fidelity(config, fleet),
    }
