"""The rehearsal report: what the lab predicts, as JSON (stable field names) and Markdown.

Sections: the conditions; the outcome; a timeline per wave (assigned, settled, soak end,
gate evaluations with measured values); skipped devices (incompatible, held by maintenance
windows); failures; the blast radius of a bad release; liveness; failover and migration
rehearsals; anomaly alerts; the event timeline; and `performance` — the only wall-clock
section, left out when comparing two runs.
"""

from __future__ import annotations

import statistics
from collections import Counter
from datetime import timedelta
from typing import Any

from edgefleet.core.durations import format_duration
from edgefleet.core.rollouts.rollout import DeviceState, format_time
from edgefleet.core.rollouts.status import wave_progress
from edgefleet.sim.faults import fault_to_document
from edgefleet.sim.lab.rehearsal import Rehearsal

MAX_TIMELINE = 400
MAX_LISTED = 20


def _r(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def _gates(rehearsal: Rehearsal, wave_index: int) -> list[dict[str, Any]]:
    start = rehearsal.config.start
    out = []
    for record in rehearsal.controller.waves[wave_index].gates:
        evaluation = record.evaluation
        out.append({
            "at_s": round((evaluation.at - start).total_seconds(), 1),
            "verdict": evaluation.verdict.value,
            "summary": evaluation.reason,
            "results": [{
                "gate": r.gate, "verdict": r.verdict.value, "measured": _r(r.measured, 3),
                "threshold": r.threshold, "unit": r.unit, "devices": r.devices,
                "samples": r.samples, "reason": r.reason,
            } for r in evaluation.results],
        })  # fmt: skip
    return out


def _waves(rehearsal: Rehearsal) -> list[dict[str, Any]]:
    controller = rehearsal.controller
    progress = wave_progress(controller.rollout, controller.records)
    waves = []
    for record, counts in zip(controller.waves, progress, strict=True):
        waves.append({
            "wave": record.index + 1, "label": record.label, "size": record.size,
            "soak_s": record.soak_s,
            "first_assigned_s": _r(record.first_assigned_s),
            "last_assigned_s": _r(record.last_assigned_s),
            "settled_s": _r(record.settled_s), "soak_until_s": _r(record.soak_until_s),
            "gates": _gates(rehearsal, record.index),
            "final_counts": {state.value: n for state, n in counts.counts},
        })  # fmt: skip
    return waves


def _skipped(rehearsal: Rehearsal) -> dict[str, Any]:
    controller = rehearsal.controller
    incompatible = sorted(d for d, r in controller.records.items()
                          if r.state is DeviceState.SKIPPED_INCOMPATIBLE)  # fmt: skip
    reasons = Counter(controller.records[d].reason for d in incompatible)
    waits = controller.window_waits_s
    still = sorted(controller.window_marked_s)
    return {
        "incompatible": {"count": len(incompatible), "reasons": dict(reasons.most_common(10)),
                         "devices": incompatible[:MAX_LISTED]},
        "outside_window": {
            "devices_held": len(controller.ever_outside_window),
            "mean_wait_s": _r(statistics.fmean(waits)) if waits else None,
            "max_wait_s": _r(max(waits)) if waits else None,
            "still_waiting": len(still), "still_waiting_devices": still[:MAX_LISTED],
        },
    }  # fmt: skip


def _blast_radius(rehearsal: Rehearsal) -> dict[str, Any]:
    controller = rehearsal.controller
    plan = controller.rollout.plan
    touched = [d for d, r in controller.records.items() if r.touched]
    exposed = {d: a.exposure for d, a in rehearsal.agents.items() if a.exposure.device_s > 0}
    by_wave: Counter[str] = Counter()
    for device_id in touched:
        wave = plan.wave_of(device_id) if plan is not None else None
        by_wave["?" if wave is None else str(wave + 1)] += 1
    release = str(rehearsal.config.rollout.release)
    return {
        "release": release,
        "release_is_bad": rehearsal._bad_model(release) is not None,
        "devices_targeted": len(controller.records),
        "devices_assigned": len(touched),
        "assigned_by_wave": dict(sorted(by_wave.items())),
        "devices_served_bad_model": len(exposed),
        "device_hours_on_bad_model": round(sum(e.device_s for e in exposed.values()) / 3600, 2),
        "requests_on_bad_model": round(sum(e.requests for e in exposed.values())),
        "errors_on_bad_model": round(sum(e.errors for e in exposed.values())),
        "share_of_target_percent": round(100 * len(touched) / max(1, len(controller.records)),
                                         2),
    }  # fmt: skip


def _failover(rehearsal: Rehearsal) -> dict[str, Any] | None:
    failover = rehearsal.failover
    if failover is None:
        return None
    times = failover.summary_times()
    return {
        "workloads": [w.name for w in rehearsal.config.workloads],
        "replicas_placed": len(failover.placement.assignments),
        "initially_unplaceable": [f"{w}#{r}: {why}" for w, r, why in
                                  failover.initial_unplaceable][:MAX_LISTED],
        "steps": failover.steps,
        "moves": [{
            "workload": m.workload, "replica": m.replica, "from": m.from_node, "to": m.to_node,
            "kind": m.kind, "reason": m.reason, "trigger_s": _r(m.trigger_s),
            "decided_s": _r(m.decided_s), "healthy_s": _r(m.healthy_s),
            "time_to_healthy_s": None if m.healthy_s is None or m.trigger_s is None
            else _r(m.healthy_s - m.trigger_s),
        } for m in failover.moves],
        "node_events": [{"node": e.node, "kind": e.kind, "at_s": _r(e.at_s), "detail": e.detail,
                         "replicas": e.replicas} for e in failover.events],
        "median_failover_s": _r(statistics.median(times)) if times else None,
        "max_failover_s": _r(max(times)) if times else None,
    }  # fmt: skip


def build_report(rehearsal: Rehearsal) -> dict[str, Any]:
    """The report as plain data."""
    config, controller = rehearsal.config, rehearsal.controller
    rollout = controller.rollout
    start = config.start
    counts = Counter(r.state.value for r in controller.records.values())
    names = {i: d.id for i, d in enumerate(rehearsal.devices)}
    simulated_h = config.hours
    timeline = sorted(rehearsal.timeline, key=lambda e: e.at_s)
    return {
        "rehearsal": {
            "rollout_id": config.rollout_id, "release": str(config.rollout.release),
            "target": str(config.rollout.target) or "(every device)", "source": config.source,
            "devices": len(rehearsal.devices), "devices_targeted": len(controller.records),
            "device_classes": dict(sorted(Counter(d.device_class for d in rehearsal.devices)
                                          .items())),
            "hours": config.hours, "seed": config.seed, "start": format_time(start),
            "bad_release": config.bad_release,
            "controller_interval_s": config.controller_interval_s,
        },
        "outcome": {
            "state": rollout.state.value, "reason": rollout.reason,
            "finished_after_s": _r(controller.finished_s),
            "finished_at": None if controller.finished_s is None
            else format_time(start + timedelta(seconds=controller.finished_s)),
            "device_states": dict(sorted(counts.items())),
            "decisions": controller.decisions, "actions": dict(sorted(controller.actions.items())),
        },
        "waves": _waves(rehearsal),
        "skipped": _skipped(rehearsal),
        "failures": {"reasons": dict(controller.failure_reasons.most_common(10)),
                     "health_window_verdicts": dict(Counter(
                         reason.split(" (", 1)[0] for a in rehearsal.agents.values()
                         for reason in a.install_reasons).most_common(5))},
        "blast_radius": _blast_radius(rehearsal),
        "liveness": {state.value: n for state, n in rehearsal.transitions.items()},
        "failover": _failover(rehearsal),
        "anomalies": [{"class": a.device_class, "kpi": a.kpi, "event": a.kind, "at_s": _r(a.at_s),
                       "value": _r(a.value, 3), "score": _r(a.score, 2), "reason": a.reason}
                      for a in rehearsal.cohorts.alerts],
        "faults": [fault_to_document(f, names) for f in rehearsal.faults[:MAX_TIMELINE]],
        "timeline": [{"at_s": round(e.at_s, 1), "at": format_time(start + timedelta(
            seconds=e.at_s)), "kind": e.kind, "text": e.text} for e in timeline[:MAX_TIMELINE]],
        "performance": {
            "wall_s": round(rehearsal.wall_s, 3),
            "simulated_hours_per_wall_s": round(simulated_h / max(rehearsal.wall_s, 1e-9), 1),
            "events": rehearsal.scheduler.processed,
            "decisions": controller.decisions,
            "controller_wall_s": round(controller.wall_s, 3),
            "controller_ms_per_decision": round(1000 * controller.wall_s
                                                / max(1, controller.decisions), 2),
        },
    }  # fmt: skip


def _at(seconds: float | None) -> str:
    return "-" if seconds is None else f"+{format_duration(seconds)}"


def render_markdown(report: dict[str, Any]) -> str:
    """The report for people: headline, waves and gates, skips, blast radius, failover."""
    head, outcome = report["rehearsal"], report["outcome"]
    lines = [
        f"# Rehearsal: {head['release']} ({head['rollout_id']})",
        "",
        f"- Fleet: {head['devices']} devices ({head['source']}); target `{head['target']}`: "
        f"{head['devices_targeted']} devices",
        f"- Simulated {head['hours']:g} h from {head['start']}, seed {head['seed']}"
        + (", **release treated as bad**" if head["bad_release"] else ""),
        f"- Outcome: **{outcome['state']}** "
        + (
            f"after {_at(outcome['finished_after_s'])}"
            if outcome["finished_after_s"] is not None
            else f"(not finished after {head['hours']:g} h)"
        )
        + f" — {outcome['reason']}",
        f"- Device states: {', '.join(f'{k} {v}' for k, v in outcome['device_states'].items())}",
        "",
        "## Waves",
        "",
        "| wave | size | first assigned | settled | soak until | gates |",
        "|---|---|---|---|---|---|",
    ]
    for wave in report["waves"]:
        verdicts = ", ".join(g["verdict"] for g in wave["gates"]) or "-"
        lines.append(
            f"| {wave['wave']} ({wave['label']}) | {wave['size']} | "
            f"{_at(wave['first_assigned_s'])} | {_at(wave['settled_s'])} | "
            f"{_at(wave['soak_until_s'])} | {verdicts} |"
        )
    lines += ["", "### Gate evaluations", ""]
    for wave in report["waves"]:
        for gate in wave["gates"]:
            lines.append(f"- wave {wave['wave']} at {_at(gate['at_s'])}: {gate['summary']}")
    skipped = report["skipped"]
    inc, win = skipped["incompatible"], skipped["outside_window"]
    lines += ["", "## Skipped and held devices", "", f"- Incompatible: {inc['count']}"]
    lines += [f"  - {n} x {reason}" for reason, n in inc["reasons"].items()]
    lines.append(
        f"- Held by maintenance windows: {win['devices_held']} (mean wait "
        f"{_at(win['mean_wait_s'])}, longest {_at(win['max_wait_s'])}; "
        f"{win['still_waiting']} still waiting at the end)"
    )
    blast = report["blast_radius"]
    lines += ["", "## Blast radius", "",
              f"- Devices assigned {blast['release']}: {blast['devices_assigned']} of "
              f"{blast['devices_targeted']} ({blast['share_of_target_percent']}%), by wave "
              f"{blast['assigned_by_wave']}"]  # fmt: skip
    if blast["release_is_bad"]:
        lines.append(
            f"- Served the bad model: {blast['devices_served_bad_model']} devices, "
            f"{blast['device_hours_on_bad_model']} device-hours, "
            f"~{blast['requests_on_bad_model']} requests, "
            f"~{blast['errors_on_bad_model']} errors"
        )
    failover = report["failover"]
    if failover is not None:
        lines += [
            "",
            "## Failover and migration rehearsals",
            "",
            f"- {failover['replicas_placed']} replicas of {', '.join(failover['workloads'])}"
            f"; median time from node failure to healthy elsewhere "
            f"{_at(failover['median_failover_s'])}, worst {_at(failover['max_failover_s'])}",
        ]
        lines += [
            f"- {m['kind']}: {m['workload']}#{m['replica']} {m['from']} → {m['to']}"
            f" (healthy {_at(m['time_to_healthy_s'])} after the trigger)"
            for m in failover["moves"][:MAX_LISTED]
        ]
        lines += [
            f"- {e['kind']} {e['node']} at {_at(e['at_s'])}: {e['detail']}"
            for e in failover["node_events"][:MAX_LISTED]
        ]
    if report["anomalies"]:
        lines += ["", "## Anomaly alerts (per device class)", ""]
        lines += [
            f"- {_at(a['at_s'])} {a['event']}: {a['class']} {a['kpi']} = {a['value']}"
            for a in report["anomalies"][:MAX_LISTED]
        ]
    lines += ["", "## Timeline", ""]
    lines += [f"- `{e['at']}` {e['kind']}: {e['text']}" for e in report["timeline"][:120]]
    perf = report["performance"]
    lines += [
        "",
        "## Performance",
        "",
        f"{perf['wall_s']} s wall for {head['hours']:g} simulated hours "
        f"({perf['simulated_hours_per_wall_s']} h/s); {perf['events']} events, "
        f"{perf['decisions']} decisions ({perf['controller_ms_per_decision']} ms each)",
        "",
    ]
    return "\n".join(lines)
