"""Agent idle footprint: the resident memory and CPU of one real agent process, enrolled and
idle (no release, default telemetry), and where its memory goes.

    .venv/bin/python bench/agent/idle.py [--quick] [--seconds 300]

Setup: a control plane (`edgefleet server`) and one agent (`edgefleet agent`, the CLI
defaults: 15 s heartbeats, host metrics every 10 s, telemetry batches every 60 s, 30 s long
polls) on loopback. `edgefleet agent` replaces itself with `python -m edgefleet.agent` (same
process id), so what is measured is the process a device runs. Once the agent is approved
and in sync it settles for 15 s, then for `--seconds` its RSS is sampled every second
(psutil) and its CPU time (user + system) is read at both ends.

    rss          resident set size: median and peak over the window; USS (memory only this
                 process holds) and PSS at the end
    cpu          CPU seconds over the window as a percentage of one core
    where        the agent's memory map at the end grouped by what it maps (/proc/PID/smaps:
                 the Python heap and anonymous memory, libpython, OpenSSL and cryptography's
                 Rust core, SQLite, zstd, ...), and the RSS each group of imports adds in a
                 fresh interpreter, in the order the agent imports them

Targets: <= 30 MB RSS, < 0.5% of a core. Prints a table; writes bench/results/agent_idle.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from edgefleet.localfleet import AgentProcess, ServerProcess, wait_for  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "agent_idle.json"
TARGET_RSS_MB = 30.0
TARGET_CPU_PERCENT = 0.5
MB = 1024 * 1024

# Import groups, in the order the agent's process (edgefleet.agent.command) brings them in.
# Not among them, because an idle agent does not load them: typer, rich, click and pydantic
# (the operator CLI), python-tuf and PyYAML (installs), numpy and onnx (model checks, deltas).
IMPORT_STEPS = [
    ("interpreter", []),
    ("entry module (argparse)", ["edgefleet.agent.command"]),
    ("asyncio + ssl", ["asyncio", "ssl"]),
    ("httpx (HTTP client)", ["httpx"]),
    (
        "cryptography (Ed25519)",
        [
            "cryptography.hazmat.primitives.asymmetric.ed25519",
            "cryptography.hazmat.primitives.serialization",
        ],
    ),
    ("msgpack + zstandard", ["msgpack", "zstandard"]),
    ("sqlite3", ["sqlite3"]),
    ("psutil", ["psutil"]),
    (
        "edgefleet agent modules",
        [
            "edgefleet.agent.agent",
            "edgefleet.agent.hardware",
            "edgefleet.agent.process_runtime",
            "edgefleet.transport.http",
            "edgefleet.logfmt",
        ],
    ),
]


def import_costs() -> list[dict[str, Any]]:
    """RSS after each import group, in a fresh interpreter."""
    script = (
        "import importlib, sys\n"
        "def rss():\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith('VmRSS:'):\n"
        "            return int(line.split()[1]) * 1024\n"
        f"steps = {json.dumps(IMPORT_STEPS)}\n"
        "for name, modules in steps:\n"
        "    for m in modules:\n"
        "        importlib.import_module(m)\n"
        "    if 'edgefleet.agent.command' in modules:\n"
        "        sys.modules['edgefleet.agent.command'].skip_httpx_cli()  # as the agent does\n"
        "    print(name, rss(), flush=True)\n"
    )
    output = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            check=True, cwd=ROOT).stdout  # fmt: skip
    rows, previous = [], 0
    for line in output.splitlines():
        name, _, value = line.rpartition(" ")
        rss = int(value)
        rows.append({"imports": name, "rss_mb": round(rss / MB, 1),
                     "adds_mb": round((rss - previous) / MB, 1)})  # fmt: skip
        previous = rss
    return rows


# First match wins. Extension modules live under .../lib/python3.X/, so the interpreter is
# matched by the file's own name.
_LIBS = [
    ("python heap and anonymous memory", re.compile(r"^(\[heap\]|\[anon|$)")),
    ("cryptography (Rust) + OpenSSL", re.compile(r"_rust|libssl|libcrypto|cryptography|_ssl")),
    ("SQLite", re.compile(r"sqlite")),
    ("zstd / msgpack", re.compile(r"zstd|msgpack|_cffi")),
    ("psutil", re.compile(r"psutil")),
    ("libpython / interpreter", re.compile(r"/(libpython[^/]*|python3?(\.\d+)?)$")),
    ("C library and loader", re.compile(r"libc\.|ld-linux|libm\.|libpthread")),
    ("other extension modules", re.compile(r"\.so")),
]


def memory_map(pid: int) -> list[dict[str, Any]]:
    """The process's RSS grouped by what the mappings are."""
    groups: Counter[str] = Counter()
    current = ""
    with open(f"/proc/{pid}/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                current = fields[5] if len(fields) > 5 else ""
            elif fields and fields[0] == "Rss:":
                kb = int(fields[1])
                name = next((label for label, pattern in _LIBS if pattern.search(current)),
                            "other files")  # fmt: skip
                groups[name] += kb
    return [{"what": name, "rss_mb": round(kb / 1024, 1)} for name, kb in groups.most_common()]


def measure(seconds: float, workdir: Path, settle_s: float = 15.0) -> dict[str, Any]:
    server = ServerProcess(workdir / "server", "bench-admin-token-0123456789")
    server.start()
    agent: AgentProcess | None = None
    try:
        with server.client() as admin:
            token = admin.create_enrollment_token(auto_approve=True)["token"]
        agent = AgentProcess(
            server.url,
            workdir / "agent",
            token,
            "idle-agent",
            heartbeat_interval_s=15.0,
            max_backoff_s=60.0,
            log_level="info",
        )
        agent.start()
        wait_for(lambda: agent is not None and agent.state().get("applied_generation"),
                 timeout_s=60, what="agent in sync")  # fmt: skip
        time.sleep(settle_s)
        assert agent.proc is not None
        process = psutil.Process(agent.proc.pid)
        cpu_before = sum(process.cpu_times()[:2])
        began = time.monotonic()
        samples = []
        while time.monotonic() - began < seconds:
            samples.append(process.memory_info().rss)
            time.sleep(1.0)
        elapsed = time.monotonic() - began
        cpu_s = sum(process.cpu_times()[:2]) - cpu_before
        full = process.memory_full_info()
        where = memory_map(process.pid)
        return {
            "window_s": round(elapsed, 1),
            "rss_median_mb": round(statistics.median(samples) / MB, 1),
            "rss_peak_mb": round(max(samples) / MB, 1),
            "uss_mb": round(full.uss / MB, 1),
            "pss_mb": round(full.pss / MB, 1),
            "cpu_s": round(cpu_s, 3),
            "cpu_percent_of_a_core": round(100 * cpu_s / elapsed, 3),
            "threads": process.num_threads(),
            "memory_map": where,
        }
    finally:
        if agent is not None:
            agent.stop()
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--quick", action="store_true", help="a 30 s window")
    args = parser.parse_args()
    seconds = 30.0 if args.quick else args.seconds
    workdir = Path(tempfile.mkdtemp(prefix="edgefleet-bench-agent-"))
    try:
        result = measure(seconds, workdir, 10.0 if args.quick else 15.0)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    imports = import_costs()
    report = {
        "benchmark": "agent_idle",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": psutil.cpu_count(),
        "note": "shared 2-core machine: CPU figures are noisy",
        "targets": {"rss_mb": TARGET_RSS_MB, "cpu_percent_of_a_core": TARGET_CPU_PERCENT},
        **result,
        "imports": imports,
        "meets_rss_target": result["rss_median_mb"] <= TARGET_RSS_MB,
        "meets_cpu_target": result["cpu_percent_of_a_core"] < TARGET_CPU_PERCENT,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"agent idle over {result['window_s']} s: RSS median {result['rss_median_mb']} MB "
          f"(peak {result['rss_peak_mb']}, USS {result['uss_mb']}, PSS {result['pss_mb']}), "
          f"CPU {result['cpu_percent_of_a_core']}% of a core")  # fmt: skip
    print(f"{'memory map':40} {'MB':>7}")
    for row in result["memory_map"]:
        print(f"{row['what']:40} {row['rss_mb']:>7}")
    print(f"{'imports (fresh interpreter)':40} {'RSS MB':>7} {'adds':>7}")
    for row in imports:
        print(f"{row['imports']:40} {row['rss_mb']:>7} {row['adds_mb']:>7}")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
