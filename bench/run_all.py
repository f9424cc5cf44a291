"""The benchmark suite: run every benchmark under bench/ in one go and write one report,
bench/results/latest.json and a Markdown table, bench/results/latest.md.

    .venv/bin/python bench/run_all.py [--quick] [--only NAME ...] [--skip NAME ...]
                                      [--reuse NAME ...] [--list]
    edgefleet bench all [--quick]                      (the same, from the CLI)

Each benchmark is its own script (it states what it measures and under which conditions,
prints its table and writes bench/results/<name>.json); this runner calls them one after
the other (never in parallel: they measure CPU time on the same machine), then reads their
JSON and puts the headline figures side by side with their targets. A benchmark that fails
is reported as failed with its exit status; the others still run. `--quick` passes each
script its quick mode (smaller sizes, shorter windows); `--reuse NAME` does not run that
benchmark but reports its last result (marked as reused, with the file's date).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"


@dataclass(frozen=True)
class Figure:
    label: str
    value: str
    target: str = ""
    met: bool | None = None


@dataclass(frozen=True)
class Benchmark:
    name: str
    script: str
    result: str
    measures: str
    conditions: str
    figures: Callable[[dict[str, Any]], list[Figure]]
    args: tuple[str, ...] = ()
    quick_args: tuple[str, ...] = ("--quick",)
    runs: bool = True  # False: its figures come from another benchmark's result


def _fmt(value: Any, unit: str = "", digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}{unit}"
    return f"{value}{unit}"


def capacity_figures(r: dict[str, Any]) -> list[Figure]:
    rows = r["rows"]
    best = next((row for row in reversed(rows) if row["sustained"]), rows[-1] if rows else None)
    bound = " (largest step tried)" if r.get("capacity_bounded_by_steps") else ""
    figures = [
        Figure(
            "devices sustained at a 30 s heartbeat, server p99 report < 250 ms",
            f"{r['capacity_devices']}{bound}",
            "as many as possible",
        )
    ]
    if best is not None:
        figures += [
            Figure(f"server CPU per heartbeat at {best['devices']} devices (marginal, "
                   f"without the idle server's {r.get('server_idle_cpu_percent', '?')}%)",
                   f"{best['server_cpu_ms_per_heartbeat']} ms "
                   f"({best.get('server_marginal_cpu_ms_per_heartbeat', '-')} ms)"),
            Figure(f"CPU at {best['devices']} devices: server / simulator",
                   f"{best['server_cpu_percent']}% / {best['sim_cpu_percent']}% of a core"),
            Figure(f"p99 report at {best['devices']} devices: server histogram / simulator",
                   f"<= {_fmt(best.get('server_p99_at_most_s'))} s / {best['report_p99_ms']} ms",
                   "< 250 ms"),
        ]  # fmt: skip
    failed = next((row for row in rows if not row["sustained"]), None)
    if failed is not None:
        figures.append(Figure(f"first step not sustained: {failed['devices']} devices",
                              f"p99 {failed['report_p99_ms']} ms, server "
                              f"{failed['server_cpu_percent']}% CPU"))  # fmt: skip
    return figures


def dashboard_figures(r: dict[str, Any]) -> list[Figure]:
    return [
        Figure(
            f"first useful paint, {r['devices']} devices (first load / median / worst)",
            f"{r['first_paint_ms_cold']} / {r['first_paint_ms_median']} / "
            f"{r['first_paint_ms_max']} ms",
            f"<= {r['target_ms']:.0f} ms",
            r["met"],
        ),
        Figure("overview API call (median)", f"{r['overview_api_ms_median']} ms"),
    ]


def rollout_figures(r: dict[str, Any]) -> list[Figure]:
    figures = []
    for lab in r["lab"]:
        kind = "bad release" if lab["bad_release"] else "good release"
        figures.append(Figure(
            f"lab: {lab['devices']} devices, {kind}: wall time (controller part)",
            f"{lab['wall_s']} s ({lab['controller_wall_s']} s, {lab['decisions']} decisions); "
            f"{lab['outcome']} after {_fmt(lab['predicted_rollout_s'], ' s')} simulated",
            "well under a minute", lab["wall_s"] < 60,
        ))  # fmt: skip
    real = r.get("real")
    if real:
        figures.append(
            Figure(
                f"real controller: {real['devices']} virtual devices: wall time",
                f"{real['wall_s']} s ({real['outcome']})",
            )
        )
        figures.append(
            Figure(
                "real: server CPU above idle per device updated",
                f"{real['rollout_server_cpu_ms_per_device']} ms "
                f"(idle {real['server_idle_cpu_percent']}% of a core)",
            )
        )
    return figures


def rehearsal_figures(r: dict[str, Any]) -> list[Figure]:
    lab = r["lab"][0]
    return [Figure(f"simulated hours per wall second ({lab['devices']} devices, 24 h)",
                   f"{lab['simulated_hours_per_wall_s']}", ">= 0.4 (a day in under a minute)",
                   lab["simulated_hours_per_wall_s"] >= 0.4)]  # fmt: skip


def telemetry_figures(r: dict[str, Any]) -> list[Figure]:
    default = r["default"]
    row = next(
        (
            x
            for x in r["rows"]
            if x["requests_per_s"] == default["requests_per_s"]
            and x["upload_interval_s"] == default["upload_interval_s"]
        ),
        r["rows"][0],
    )
    target = r.get("target_ratio_vs_otlp_gzip", 0.1)
    return [Figure(
        f"bytes per device-hour, default policy ({row['requests_per_s']:g} inf/s, "
        f"uploads every {row['upload_interval_s']} s): ours vs OTLP+gzip",
        f"{row['edgefleet_bytes_per_hour']} vs {row['otlp_gzip_bytes_per_hour']} "
        f"({row['ratio_vs_otlp_gzip']:.2f}x)",
        f"<= {target}x", row["ratio_vs_otlp_gzip"] <= target,
    )]  # fmt: skip


def failover_figures(r: dict[str, Any]) -> list[Figure]:
    s, lossy, sim = r["summary"], r["lossy_link"], r["long_run_sim"]
    return [
        Figure("kill -> workload healthy elsewhere (real processes), median",
               f"{s['median_s']:.2f} s (min {s['min_s']:.2f}, max {s['max_s']:.2f})",
               f"<= {s['target_s']:g} s", s["met"]),
        Figure(f"false failovers, lossy link (10% loss, {lossy['minutes']:g} min x "
               f"{lossy['nodes']} nodes)", f"{lossy['replica_moves']} moves, "
               f"{lossy['dead_verdicts']} dead verdicts", "0", lossy["replica_moves"] == 0),
        Figure(f"false dead, phi simulation ({sim['nodes']} nodes x {sim['hours']:g} h, "
               f"{sim['loss']:.0%} loss)", str(sim["false_dead"]), "0", sim["false_dead"] == 0),
    ]  # fmt: skip


def phi_figures(r: dict[str, Any]) -> list[Figure]:
    out = []
    for row in r["rows"]:
        if abs(row["detection"]["loss"] - 0.10) < 1e-9:
            out.append(Figure("phi: stop -> declared dead at 10% loss (1 s heartbeats), median",
                              f"{row['detection']['median_s']:.2f} s "
                              f"(p95 {row['detection']['p95_s']:.2f} s)"))  # fmt: skip
            out.append(Figure("phi: false dead at 10% loss", str(row["long_run"]["false_dead"]),
                              "0", row["long_run"]["false_dead"] == 0))  # fmt: skip
    return out


def placement_figures(r: dict[str, Any]) -> list[Figure]:
    fresh = next(x for x in r["speed"]["rows"] if x["situation"] == "fresh")
    quality = r["quality"]
    return [
        Figure(f"place {fresh['nodes']} nodes x {fresh['workloads']} workloads (fresh), median",
               f"{fresh['median_s']:.3f} s", f"<= {r['speed']['target_s']:g} s",
               fresh["median_s"] <= r["speed"]["target_s"]),
        Figure("gap to the ILP optimum (500 x 100), mean / worst",
               f"{quality['mean_gap']:.2%} / {quality['worst_gap']:.2%}",
               f"<= {quality['target_gap']:.0%}", quality["worst_gap"] <= quality["target_gap"]),
    ]  # fmt: skip


def agent_figures(r: dict[str, Any]) -> list[Figure]:
    figures = []
    for s in r["states"]:
        figures += [
            Figure(
                f"idle agent RSS, {s['state']}, median (USS / PSS)",
                f"{s['rss_median_mb']} MB ({s['uss_mb']} / {s['pss_mb']} MB)",
                f"<= {r['targets']['rss_mb']:g} MB",
                s["meets_rss_target"],
            ),
            Figure(
                f"idle agent CPU, {s['state']}",
                f"{s['cpu_percent_of_a_core']}% of a core",
                f"< {r['targets']['cpu_percent_of_a_core']:g}%",
                s["meets_cpu_target"],
            ),
        ]
    top = ", ".join(f"{m['what']} {m['rss_mb']}" for m in r["states"][0]["memory_map"][:3])
    return [*figures, Figure("where the RSS goes, no release (MB)", top)]  # fmt: skip


def traffic_figures(r: dict[str, Any]) -> list[Figure]:
    return [
        Figure("bytes per hour sent / received by one idle agent",
               f"{r['up_bytes_per_hour']:,} / {r['down_bytes_per_hour']:,}"),
        Figure("new connections per hour (each a TLS handshake on https)",
               f"{r['connections_per_hour']:g}"),
        Figure("heartbeats carrying the inventory",
               f"{r['heartbeats_with_inventory']} of {r['heartbeats']}"),
    ]  # fmt: skip


def delta_figures(r: dict[str, Any]) -> list[Figure]:
    pairs = [p for p in r["pairs"] if p.get("size_vs_best_peer") is not None]
    if not pairs:
        return []
    met = [p for p in pairs if p["size_vs_best_peer"] <= p.get("size_target", 1.0)]
    worst = max(p["size_vs_best_peer"] for p in pairs)
    return [Figure(f"delta size vs the best peer over {len(pairs)} model pairs: pairs within "
                   "their own target (0.6x-1.0x), worst ratio",
                   f"{len(met)}/{len(pairs)}, worst {worst:.3f}x", "all pairs",
                   len(met) == len(pairs))]  # fmt: skip


def predictive_figures(r: dict[str, Any]) -> list[Figure]:
    return [Figure(f"predictive: {name}", verdict) for name, verdict in r["verdicts"].items()]


BENCHMARKS = [
    Benchmark(
        "capacity",
        "capacity/run.py",
        "capacity.json",
        "devices one control plane sustains at a 30 s heartbeat; server CPU per heartbeat",
        "server and `sim run` as separate processes, SQLite, loopback, stepped fleet",
        capacity_figures,
    ),
    Benchmark(
        "rollout",
        "rollout/run.py",
        "rollout.json",
        "wall time and controller overhead of a rollout",
        "lab: 10k devices, 24 simulated hours; real: virtual devices, real controller",
        rollout_figures,
    ),
    Benchmark(
        "rehearsal",
        "rollout/run.py",
        "rollout.json",
        "rehearsal speed (taken from the rollout benchmark's lab run)",
        "10k devices of retail-cameras, faults on, one process",
        rehearsal_figures,
        runs=False,
    ),
    Benchmark(
        "telemetry",
        "telemetry/run.py",
        "telemetry.json",
        "telemetry bytes per device-hour vs OTLP protobuf + gzip",
        "baseline host set + 4 KPI series, 60 s windows, same batches for every encoding",
        telemetry_figures,
        quick_args=("--rates", "2", "--uploads", "300"),
    ),
    Benchmark(
        "failover",
        "failover/run.py",
        "failover.json",
        "failover time and false failovers",
        "server + 5 real agents on loopback, default settings (15 s heartbeats, 1 s "
        "while hosting a replica), inference-server workload",
        failover_figures,
    ),
    Benchmark(
        "phi",
        "failover/phi_sim.py",
        "phi.json",
        "phi detector: detection time and false verdicts at its defaults",
        "seeded simulated links, 1 s heartbeats, 0-20% loss",
        phi_figures,
    ),
    Benchmark(
        "placement",
        "placement/run.py",
        "placement.json",
        "placement speed and optimality against an ILP (CBC)",
        "10k nodes x 1k workloads; 500 x 100 instances for quality",
        placement_figures,
    ),
    Benchmark(
        "agent",
        "agent/idle.py",
        "agent_idle.json",
        "one real agent process, idle: RSS and CPU, and where the RSS goes",
        "enrolled, in sync, CLI defaults; with no release, then after installing two "
        "signed releases (one from a delta)",
        agent_figures,
    ),
    Benchmark(
        "traffic",
        "agent/traffic.py",
        "agent_traffic.json",
        "what one idle agent costs on the wire: bytes each way, connections, requests",
        "server + one agent (CLI defaults) on loopback http through a counting TCP relay",
        traffic_figures,
    ),
    Benchmark(
        "dashboard",
        "dashboard/run.py",
        "dashboard.json",
        "the web dashboard's first useful paint in chromium",
        "10k devices in a SQLite store, real server, Debian chromium via Playwright",
        dashboard_figures,
    ),
    Benchmark(
        "delta",
        "delta/run.py",
        "delta.json",
        "model delta size and speed vs bsdiff4, xdelta3, zstd --patch-from",
        "synthetic ONNX model pairs",
        delta_figures,
    ),
    Benchmark(
        "predictive",
        "predictive/run.py",
        "predictive.json",
        "predictive controllers against static policies: installs' disruption, migrations, "
        "telemetry bytes and detection delay",
        "lab, the three shipped profiles with their own seeds, 100 devices each",
        predictive_figures,
    ),
]


def run_one(bench: Benchmark, quick: bool, reuse: bool = False) -> dict[str, Any]:
    if reuse or not bench.runs:
        started, code = time.monotonic(), 0  # figures read from an existing result
    else:
        args = [sys.executable, str(BENCH / bench.script),
                *(bench.quick_args if quick else bench.args)]  # fmt: skip
        print(f"\n=== {bench.name}: {' '.join(args[1:])}", flush=True)
        started = time.monotonic()
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        code = subprocess.run(args, cwd=ROOT, env=env, check=False).returncode
    wall_s = time.monotonic() - started
    entry: dict[str, Any] = {
        "measures": bench.measures, "conditions": bench.conditions, "script": bench.script,
        "result_file": f"bench/results/{bench.result}", "wall_s": round(wall_s, 1),
        "exit_status": code,
    }  # fmt: skip
    path = RESULTS / bench.result
    if reuse and path.exists():
        stamp = datetime.fromtimestamp(path.stat().st_mtime, UTC)
        entry["reused_from"] = stamp.strftime("%Y-%m-%d %H:%M:%SZ")
    if code != 0 or not path.exists():
        entry["status"] = "failed"
        entry["figures"] = []
        return entry
    try:
        result = json.loads(path.read_text())
        entry["figures"] = [vars(f) for f in bench.figures(result)]
        entry["status"] = "ok"
    except (KeyError, ValueError, StopIteration, TypeError) as e:
        entry["status"] = "failed"
        entry["figures"] = []
        entry["error"] = f"cannot read {path.name}: {e!r}"
    return entry


def render_markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Benchmarks ({'quick' if report['quick'] else 'full'} run, {report['generated_at']})",
        "",
        f"Machine: {report['machine']['cpus']} CPUs, Python {report['machine']['python']}; "
        f"{report['machine']['note']}. Command: `{report['command']}`.",
        "",
        "| benchmark | what it measures | conditions | figure | value | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, entry in report["benchmarks"].items():
        figures = entry["figures"] or [{"label": entry["status"], "value": "-", "target": "",
                                        "met": None}]  # fmt: skip
        label = name + (f" (reused: {entry['reused_from']})" if "reused_from" in entry else "")
        for i, figure in enumerate(figures):
            met = {True: "yes", False: "**no**", None: ""}[figure["met"]]
            head = (label, entry["measures"], entry["conditions"]) if i == 0 else ("", "", "")
            cells = [*head, figure["label"], figure["value"], figure["target"], met]
            lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    lines += ["", "Each script's own JSON under bench/results/ holds the full figures.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", action="extend", nargs="+", default=[], metavar="NAME")
    parser.add_argument("--skip", action="extend", nargs="+", default=[], metavar="NAME")
    parser.add_argument(
        "--reuse",
        action="extend",
        nargs="+",
        default=[],
        metavar="NAME",
        help="report this benchmark's last result instead of running it",
    )
    parser.add_argument("--list", action="store_true")
    args = parser.parse_args()
    if args.list:
        for bench in BENCHMARKS:
            print(f"{bench.name:<10} {bench.script:<22} {bench.measures}")
        return
    chosen = [
        b for b in BENCHMARKS if (not args.only or b.name in args.only) and b.name not in args.skip
    ]
    began = time.monotonic()
    entries = {bench.name: run_one(bench, args.quick, bench.name in args.reuse)
               for bench in chosen}  # fmt: skip
    report = {
        "generated_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ"),
        "quick": args.quick,
        "command": "bench/run_all.py" + (" --quick" if args.quick else ""),
        "wall_s": round(time.monotonic() - began, 1),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "platform": platform.platform(),
                    "note": "a shared 2-core machine: timings and CPU shares are noisy"},
        "benchmarks": entries,
    }  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(report, indent=2) + "\n")
    markdown = render_markdown(report)
    (RESULTS / "latest.md").write_text(markdown)
    print("\n" + markdown)
    failed = [name for name, e in entries.items() if e["status"] != "ok"]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
