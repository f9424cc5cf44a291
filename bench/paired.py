"""Paired benchmark: this checkout against an earlier commit, on the same machine at the same
time, so a change's cost is not confused with a slower or busier machine.

    .venv/bin/python bench/paired.py --baseline 7cf3de7 [--rounds 2]

The baseline is checked out in a temporary git worktree (removed afterwards). Each round
runs, for the baseline and then for this checkout, each in a fresh interpreter that puts
the checkout first on `sys.path` (and checks which `edgefleet` it imported):

    placement   `bench/placement/run.py`'s measure_speed(3 runs, seed 1): 10k nodes x 1k
                workloads, fresh / steady / failover medians
    lab         `bench/rollout/run.py`'s lab_run(10,000 devices, good release): the lab's
                24 h rehearsal, wall and CPU seconds, decisions, predicted outcome
    agent       the RSS the agent's modules add on import, after the same standard library
                and package imports

Prints a table and writes bench/results/paired.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "paired.json"

_PRELUDE = """
import importlib.util, json, resource, sys, time
root = sys.argv[1]
sys.path.insert(0, root)
def load(relative):
    spec = importlib.util.spec_from_file_location("bench_module", root + "/" + relative)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
def imported_from_root():
    import edgefleet
    assert edgefleet.__file__.startswith(root), edgefleet.__file__
"""

PROBES = {
    "placement": _PRELUDE
    + """
sys.path.insert(0, root + "/bench/placement")
bench = load("bench/placement/run.py")
imported_from_root()
began = time.process_time()
rows = bench.measure_speed(3, 1)
print(json.dumps({r["situation"] + "_s": round(r["median_s"], 3) for r in rows}
                 | {"cpu_s": round(time.process_time() - began, 2)}))
""",
    "lab": _PRELUDE
    + """
bench = load("bench/rollout/run.py")
imported_from_root()
began = time.process_time()
row = bench.lab_run(10000, False)
print(json.dumps({"wall_s": row["wall_s"], "cpu_s": round(time.process_time() - began, 2),
                  "decisions": row["decisions"], "outcome": row["outcome"],
                  "predicted_rollout_s": row["predicted_rollout_s"]}))
""",
    "agent": _PRELUDE
    + """
def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
import asyncio, ctypes, http.client, json, logging, sqlite3, ssl
import msgpack, psutil, zstandard
before = rss_mb()
import edgefleet.agent.agent, edgefleet.agent.hardware, edgefleet.agent.process_runtime
import edgefleet.logfmt
imported_from_root()
print(json.dumps({"modules_mb": round(rss_mb() - before, 2), "total_mb": round(rss_mb(), 1)}))
""",
}


def probe(name: str, checkout: Path) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-c", PROBES[name], str(checkout)], cwd=checkout,
                          capture_output=True, text=True, timeout=1800)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"{name} at {checkout} failed:\n{done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def print_table(rows: list[dict[str, Any]]) -> None:
    """One line per probe and figure: every round's value, baseline against this checkout."""
    print(f"\n{'probe':10} {'figure':20} {'baseline':>24} {'this':>24}")
    for name in dict.fromkeys(r["probe"] for r in rows):
        mine = [r for r in rows if r["probe"] == name]
        for key in [k for k in mine[0] if k not in ("round", "probe", "code")]:
            values = {code: " / ".join(str(r[key]) for r in mine if r["code"] == code)
                      for code in ("baseline", "this")}  # fmt: skip
            print(f"{name:10} {key:20} {values['baseline']:>24} {values['this']:>24}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="the commit to compare against")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only", nargs="+", choices=sorted(PROBES), default=sorted(PROBES))
    args = parser.parse_args()
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="edgefleet-paired-") as scratch:
        baseline = Path(scratch) / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", str(baseline), args.baseline],
                       cwd=ROOT, check=True, capture_output=True)  # fmt: skip
        try:
            for round_no in range(1, args.rounds + 1):
                for name in args.only:
                    for label, checkout in (("baseline", baseline), ("this", ROOT)):
                        figures = probe(name, checkout)
                        rows.append({"round": round_no, "probe": name, "code": label,
                                     **figures})  # fmt: skip
                        print(f"round {round_no} {name:9} {label:8} {json.dumps(figures)}",
                              flush=True)  # fmt: skip
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(baseline)], cwd=ROOT,
                           check=False, capture_output=True)  # fmt: skip
    print_table(rows)
    load = [round(x, 2) for x in os.getloadavg()]
    report = {"baseline": args.baseline, "this": head, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ",
              time.gmtime()), "load_average_at_end": load, "rows": rows}  # fmt: skip
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"load average at the end: {load}; wrote {RESULTS}")


if __name__ == "__main__":
    main()
