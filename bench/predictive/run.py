"""Predictive controllers against today's static policies, in the lab, on the shipped fleet
profiles with each profile's own seed (the method is `edgefleet/sim/lab/predictive.py`'s
docstring; the verdict rule is `predictive_report.py`'s).

    .venv/bin/python bench/predictive/run.py [--quick] [--devices 100]

    update windows      requests disrupted by installs: at once, in the static window
                        02:00-06:00 device time, and with `window: predicted`
    migrations          migrations needed: destinations by current values, by a Holt trend
                        of load and battery (what heartbeats give), and with the learned week
    fidelity            bytes sent and anomaly detection delay: static sampling against the
                        control plane's fidelity advice

Prints the tables and the verdicts, writes bench/results/predictive.json and
bench/results/predictive.md. Seeded: every run prints the same figures (the wall time
aside).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edgefleet.sim.lab.predictive import PredictiveConfig, run_predictive
from edgefleet.sim.lab.predictive_report import render_markdown, verdicts
from edgefleet.sim.profile import load_profile, shipped_profiles

RESULTS = Path(__file__).resolve().parents[1] / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer devices and events")
    parser.add_argument("--devices", type=int, default=100, help="devices per profile")
    args = parser.parse_args()
    results: list[dict[str, Any]] = []
    started = time.monotonic()
    for name in shipped_profiles():
        config = PredictiveConfig(load_profile(name), devices=args.devices)
        if args.quick:
            config = config.quick()
        t0 = time.monotonic()
        results.append(run_predictive(config))
        print(f"{name}: {time.monotonic() - t0:.0f} s", flush=True)
    markdown = render_markdown(results)
    print(markdown)
    document = {
        "benchmark": "predictive",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "wall_s": round(time.monotonic() - started, 1),
        "results": results,
        "verdicts": verdicts(results),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "predictive.json").write_text(json.dumps(document, indent=2) + "\n")
    (RESULTS / "predictive.md").write_text(markdown)


if __name__ == "__main__":
    main()
