"""The verdicts of the predictive evaluation (`lab/predictive.py`) and its Markdown table.

A predictive policy *wins* when, on the shipped profiles, it improves a measure by at least
`WIN_MARGIN` on one profile and is worse on none (a measure within the margin is a tie):

- update windows: requests disrupted by installs, against the best static policy
  (at once, or the static maintenance window);
- migration destinations: migrations needed, forecast against current values, for the
  forecast the control plane can run today (`trend`: Holt over the heartbeats' samples)
  and the one that also reads the learned week (`seasonal`);
- telemetry fidelity: bytes sent, and detection delay of steps and of ramps.

Only a policy that wins ships as the default.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

WIN_MARGIN = 0.05


def _compare(before: float, after: float) -> int:
    """-1 better (lower by the margin), 1 worse, 0 a tie."""
    if before <= 0 and after <= 0:
        return 0
    change = (after - before) / max(before, 1e-9)
    return -1 if change <= -WIN_MARGIN else 1 if change >= WIN_MARGIN else 0


def _verdict(pairs: Sequence[tuple[float, float]]) -> str:
    outcomes = [_compare(before, after) for before, after in pairs]
    if any(o > 0 for o in outcomes):
        return "loses"
    return "wins" if any(o < 0 for o in outcomes) else "ties"


def verdicts(results: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """One verdict per predictive policy over all the profiles' results."""
    windows, trend, seasonal, fidelity = [], [], [], []
    for r in results:
        w = r["update_windows"]["policies"]
        best_static = min(w["immediate"]["requests_disrupted_per_1000_installs"],
                          w["static"]["requests_disrupted_per_1000_installs"])  # fmt: skip
        windows.append((best_static, w["predicted"]["requests_disrupted_per_1000_installs"]))
        m = r["migration_destinations"]["policies"]
        trend.append((m["current"]["migrations_needed"], m["trend"]["migrations_needed"]))
        seasonal.append((m["current"]["migrations_needed"], m["seasonal"]["migrations_needed"]))
        f = r["telemetry_fidelity"]["policies"]
        for key in ("bytes_per_device_day", "detection_delay_s_step_median",
                    "detection_delay_s_ramp_median"):  # fmt: skip
            fidelity.append((f["static"][key], f["adaptive"][key]))
    return {
        "window: predicted": _verdict(windows),
        "migration forecast (trend)": _verdict(trend),
        "migration forecast (seasonal)": _verdict(seasonal),
        "telemetry fidelity": _verdict(fidelity),
    }


def render_markdown(results: Sequence[Mapping[str, Any]]) -> str:
    """The evaluation as Markdown tables, one section per question, then the verdicts."""
    lines = ["# Predictive controllers against static policies (lab)", ""]
    if results:
        r0 = results[0]
        lines += [f"Devices per profile: {r0['devices']}; start {r0['start']}; each profile "
                  "with its own seed.", ""]  # fmt: skip
    lines += ["## Update windows: requests disrupted by installs", "",
              "| profile | seed | policy | disrupted / 1000 installs | installs in busy hours | "
              "wait median | wait p95 |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in results:
        for policy, p in r["update_windows"]["policies"].items():
            lines.append(
                f"| {r['profile']} | {r['seed']} | {policy} | "
                f"{p['requests_disrupted_per_1000_installs']:g} | "
                f"{p['installs_in_busy_hours_percent']:g} % | {p['wait_h_median']:g} h | "
                f"{p['wait_h_p95']:g} h |"
            )
    lines += ["", "## Migration destinations: migrations needed", "",
              "| profile | evacuations | policy | migrations needed | follow-ups |",
              "|---|---|---|---|---|"]  # fmt: skip
    for r in results:
        m = r["migration_destinations"]
        for policy, p in m["policies"].items():
            lines.append(f"| {r['profile']} | {m['evacuations']} | {policy} | "
                         f"{p['migrations_needed']} | {p['follow_up_migrations']} |")  # fmt: skip
    lines += ["", "## Telemetry fidelity: bytes sent and anomaly detection delay", "",
              "| profile | devices | policy | bytes / device-day | delay, step (median) | "
              "delay, ramp (median) | incidents (step/ramp/missed) |",
              "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in results:
        f = r["telemetry_fidelity"]
        for policy, p in f["policies"].items():
            lines.append(
                f"| {r['profile']} | {f['devices']} | {policy} | {p['bytes_per_device_day']} | "
                f"{p['detection_delay_s_step_median']} s | "
                f"{p['detection_delay_s_ramp_median']} s | {p['incidents_step']}/"
                f"{p['incidents_ramp']}/{p['incidents_missed']} |"
            )
    lines += ["", f"## Verdicts (a win: {WIN_MARGIN:.0%} better on one profile, worse on none)",
              ""]  # fmt: skip
    lines += [
        f"- {name}: **{verdict}** — "
        + ("ships as the default" if verdict == "wins" else "not the default")
        for name, verdict in verdicts(results).items()
    ]
    return "\n".join(lines) + "\n"
