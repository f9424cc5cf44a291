"""Views of a rollout for operators: its status (waves, gates, devices — what `rollouts
status` draws) and its after-action report (timeline, per-wave counts, gate evaluations with
measured values, devices skipped and failed with reasons, rollback actions), as plain JSON
data and as Markdown.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from edgefleet.core.rollouts.codec import device_to_json, gate_evaluation_to_json, time_to_json
from edgefleet.core.rollouts.record import DeviceRecord, RolloutRecord
from edgefleet.core.rollouts.rollout import DeviceState
from edgefleet.core.rollouts.status import describe_rollout, wave_progress
from edgefleet.store import Transaction

_FAILED = (DeviceState.FAILED, DeviceState.ROLLBACK_FAILED)
_REVERTED = (DeviceState.ROLLING_BACK, DeviceState.ROLLED_BACK, DeviceState.ROLLBACK_FAILED)
_ROLLBACK_KINDS = ("rollback", "start-rollback", "revert-release", "finish-rollback")


def rollout_summary(record: RolloutRecord) -> dict[str, Any]:
    """The fields every view of a rollout starts with."""
    rollout = record.rollout
    plan = rollout.plan
    return {
        "id": record.id,
        "name": record.name,
        "release": record.release,
        "target": str(rollout.spec.target),
        "state": rollout.state.value,
        "reason": rollout.reason,
        "train": record.train,
        "created_by": record.created_by,
        "created_at": time_to_json(record.created_at),
        "updated_at": time_to_json(record.updated_at),
        "started_at": time_to_json(rollout.started_at),
        "wave": rollout.wave if plan is not None and plan.waves else None,
        "waves_total": len(plan.waves) if plan is not None else None,
        "on_failure": rollout.spec.on_failure.value,
        "due_at": time_to_json(record.due_at),
    }


def _names(tx: Transaction, device_ids: Sequence[str]) -> dict[str, str]:
    out = {}
    for device_id in device_ids:
        device = tx.devices.find(device_id)
        out[device_id] = device.name if device is not None else device_id
    return out


def _device_row(record: DeviceRecord, name: str) -> dict[str, Any]:
    return {
        **device_to_json(record.device),
        "name": name,
        "wave": record.wave,
        "installed_at": time_to_json(record.installed_at),
    }


def _wave_key(record: DeviceRecord) -> int:
    return record.wave if record.wave is not None else 1 << 30


def build_status(tx: Transaction, record: RolloutRecord, now: datetime) -> dict[str, Any]:
    rollout = record.rollout
    records = tx.rollouts.devices(record.id)
    engine = {d: r.device for d, r in records.items()}
    names = _names(tx, sorted(records))
    last_gate: dict[int, dict[str, Any]] = {}
    for evaluation in rollout.gate_evaluations:
        last_gate[evaluation.wave] = gate_evaluation_to_json(evaluation)
    waves = [
        {
            "index": w.index,
            "label": w.label,
            "size": w.size,
            "soak_s": w.soak_s,
            "counts": {state.value: n for state, n in w.counts},
            "current": w.index == rollout.wave,
            "gate": last_gate.get(w.index),
        }
        for w in wave_progress(rollout, engine)
    ]
    skipped = sum(r.device.state is DeviceState.SKIPPED_INCOMPATIBLE for r in records.values())
    return {
        **rollout_summary(record),
        "summary": describe_rollout(rollout, engine, now),
        "waves": waves,
        "skipped": skipped,
        "gates": [gate_evaluation_to_json(e) for e in rollout.gate_evaluations],
        "devices": [
            _device_row(records[d], names[d])
            for d in sorted(records, key=lambda d: (_wave_key(records[d]), names[d], d))
        ],
        "manifest": dict(record.manifest),
    }


def build_report(tx: Transaction, record: RolloutRecord, now: datetime) -> dict[str, Any]:
    status = build_status(tx, record, now)
    devices: list[dict[str, Any]] = status["devices"]
    names = {d["device_id"]: d["name"] for d in devices}
    timeline = [
        {
            "seq": e.seq,
            "at": time_to_json(e.at),
            "kind": e.kind,
            "actor": e.actor,
            "device_id": e.device_id,
            "device": names.get(e.device_id, e.device_id) if e.device_id else None,
            "reason": e.reason,
        }
        for e in tx.rollouts.events(record.id)
    ]
    totals = Counter(d["state"] for d in devices)
    reverted = [d for d in devices if d["state"] in {s.value for s in _REVERTED}]
    return {
        "rollout": {k: v for k, v in status.items() if k not in ("devices", "waves", "gates")},
        "generated_at": time_to_json(now),
        "totals": dict(sorted(totals.items())),
        "touched": sum(d["attempts"] > 0 for d in devices),
        "waves": status["waves"],
        "gates": status["gates"],
        "skipped": [d for d in devices if d["state"] == DeviceState.SKIPPED_INCOMPATIBLE.value],
        "failed": [d for d in devices if d["state"] in {s.value for s in _FAILED}],
        "rollback": {
            "started_at": time_to_json(record.rollout.rollback_started_at),
            "devices": reverted,
            "actions": [e for e in timeline if e["kind"] in _ROLLBACK_KINDS],
        },
        "timeline": timeline,
    }


# Markdown.


def _cell(value: object) -> str:
    text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ") or "-"


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _time(text: str | None) -> str:
    return "-" if not text else text[:19].replace("T", " ") + "Z"


def format_measured(result: Mapping[str, Any]) -> str:
    """`12.5%` for rates, `+18.2%` or `+0.4` for KPI changes, `-` without a measurement."""
    measured = result.get("measured")
    if not isinstance(measured, int | float):
        return "-"
    if result["gate"].startswith("kpi:"):
        return f"{measured:+.3g}{result['unit']}"
    return f"{measured:.3g}{result['unit']}"


def format_threshold(result: Mapping[str, Any]) -> str:
    sign = "+" if result["gate"].startswith("kpi:") else ""
    return f"≤ {sign}{result['threshold']:g}{result['unit']}"


def render_markdown(report: Mapping[str, Any]) -> str:
    """The report as Markdown, for the after-action review operators file."""
    r = report["rollout"]
    out = [
        f"# Rollout {r['name']} ({r['id']}): {r['state']}",
        "",
        f"- **Release:** {r['release']}",
        f"- **Target:** `{r['target'] or '(every device)'}`",
        f"- **Created:** {_time(r['created_at'])} by {r['created_by']}",
        f"- **Started:** {_time(r['started_at'])}",
        f"- **Outcome:** {r['state']} — {r['reason']}",
        f"- **Devices:** {sum(report['totals'].values())} in the rollout, "
        f"{report['touched']} received the release"
        + "".join(f", {n} {state}" for state, n in report["totals"].items()),
    ]
    if r.get("train"):
        out.append(f"- **Release train:** {r['train']}")
    out += ["", "## Waves", ""]
    rows = []
    for w in report["waves"]:
        counts = w["counts"]
        installed, failed, skipped = (
            counts.get(s, 0) for s in ("installed", "failed", "skipped-incompatible")
        )
        back = counts.get("rolled-back", 0) + counts.get("rolling-back", 0)
        other = w["size"] - installed - failed - skipped - back
        verdict = (w["gate"] or {}).get("verdict", "not evaluated")
        rows.append([w["index"] + 1, w["label"], w["size"], installed, failed, skipped, back,
                     other, verdict])  # fmt: skip
    out += _table(
        ["wave", "size as written", "devices", "installed", "failed", "skipped", "rolled back",
         "other", "gates"],
        rows,
    )  # fmt: skip
    out += ["", "## Gate evaluations", ""]
    if not report["gates"]:
        out.append("No gate was evaluated.")
    for evaluation in report["gates"]:
        out += [
            "",
            f"### Wave {evaluation['wave'] + 1} at {_time(evaluation['at'])}: "
            f"{evaluation['verdict']}",
            "",
            evaluation["reason"],
            "",
        ]
        if evaluation["results"]:
            out += _table(
                ["gate", "verdict", "measured", "threshold", "devices", "samples", "detail"],
                [
                    [g["gate"], g["verdict"], format_measured(g), format_threshold(g),
                     g["devices"], g["samples"], g["reason"]]
                    for g in evaluation["results"]
                ],
            )  # fmt: skip
    for title, devices in (("Devices skipped", report["skipped"]),
                           ("Devices failed", report["failed"])):  # fmt: skip
        out += ["", f"## {title}", ""]
        if not devices:
            out.append("None.")
        out += [f"- {d['name']} (`{d['device_id']}`): {d['reason']}" for d in devices]
    rollback = report["rollback"]
    out += ["", "## Rollback", ""]
    if not rollback["actions"]:
        out.append("No rollback.")
    else:
        out.append(f"Started {_time(rollback['started_at'])}.")
        out.append("")
        out += _table(
            ["time", "action", "device", "reason"],
            [[_time(a["at"]), a["kind"], a["device"], a["reason"]] for a in rollback["actions"]],
        )
        if rollback["devices"]:
            out += ["", "Devices that received the release, now:", ""]
            out += [f"- {d['name']} (`{d['device_id']}`): {d['state']} — {d['reason']}"
                    for d in rollback["devices"]]  # fmt: skip
    out += ["", "## Timeline", ""]
    out += _table(
        ["#", "time", "by", "what", "device", "reason"],
        [[e["seq"], _time(e["at"]), e["actor"], e["kind"], e["device"], e["reason"]]
         for e in report["timeline"]],
    )  # fmt: skip
    return "\n".join(out) + "\n"
