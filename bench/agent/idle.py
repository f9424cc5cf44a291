"""Agent idle footprint: the resident memory and CPU of one real agent process, idle in two
states (enrolled with no release; after installing releases), and where its memory goes.

    .venv/bin/python bench/agent/idle.py [--quick] [--seconds 300]

Setup: a control plane (`edgefleet server`) and one agent (`edgefleet agent`, the CLI
defaults: 15 s heartbeats, host metrics every 10 s, telemetry batches every 60 s, 30 s long
polls) on loopback. `edgefleet agent` replaces itself with `python -OO -m edgefleet.agent`
(same process id), so what is measured is the process a device runs. Two states, one after the
other on the same agent; each settles for 15 s, then for `--seconds` the agent's RSS is
sampled every second (psutil) and its CPU time (user + system) is read at both ends:

    no release         approved and in sync, nothing assigned
    release installed  then the fleet's root of trust is installed (the agent pins it on
                       first use) and two signed releases are installed the way tests
                       publish them (tests/releases.py: a small ONNX MLP and a service
                       manifest, 2 s health window): 1.0.0 downloaded in full, 2.0.0 (a
                       fine-tune) rebuilt from a delta. TUF verification (python-tuf,
                       cryptography) and the delta codec (numpy) have run; the release's
                       inference server runs as the agent's child (not counted) and the
                       agent probes its health.

    rss          resident set size: median and peak over the window; USS (memory only this
                 process holds) and PSS at the end
    cpu          CPU seconds over the window as a percentage of one core
    heavy        cryptography / numpy / onnxruntime libraries mapped into the agent (none:
                 the install helper's child processes did that work)
    where        the agent's memory map at the end of each window grouped by what it maps
                 (/proc/PID/smaps: the Python heap and anonymous memory, libpython, OpenSSL,
                 SQLite, zstd, ...), and the RSS each group of imports adds in a fresh
                 interpreter, in the order the agent imports them

Targets: <= 30 MB RSS in both states, < 0.5% of a core. Prints a table; writes
bench/results/agent_idle.json.
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

from edgefleet.client import FleetClient  # noqa: E402
from edgefleet.localfleet import AgentProcess, ServerProcess, wait_for  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "agent_idle.json"
TARGET_RSS_MB = 30.0
TARGET_CPU_PERCENT = 0.5
MB = 1024 * 1024

# Import groups, in the order the agent's process (edgefleet.agent.command) brings them in.
# Not among them, because the agent never loads them: typer, rich, click, pydantic and
# httpx (the operator CLI); python-tuf, securesystemslib, cryptography and numpy (the
# install helper's child processes); onnxruntime (the sandbox check's child).
IMPORT_STEPS = [
    ("interpreter", []),
    ("entry module (argparse)", ["edgefleet.agent.command"]),
    ("asyncio + ssl", ["asyncio", "ssl"]),
    ("HTTP client (standard library)", ["edgefleet.transport.http_client"]),
    ("device key (ctypes + libcrypto)", ["edgefleet.security.keys"]),
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
        "    if 'edgefleet.security.keys' in modules:\n"
        "        sys.modules['edgefleet.security.keys'].DeviceKey.generate().sign(b'')\n"
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
    ("cryptography (Rust core)", re.compile(r"/cryptography/")),
    ("numpy + OpenBLAS", re.compile(r"/numpy(\.libs)?/")),
    ("OpenSSL (libssl, libcrypto, _ssl)", re.compile(r"libssl|libcrypto|_ssl")),
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


HEAVY = re.compile(r"/(cryptography|numpy|numpy\.libs|onnxruntime)/")


def heavy_libraries(pid: int) -> list[str]:
    """Libraries of cryptography, numpy or onnxruntime mapped into the process."""
    with open(f"/proc/{pid}/maps") as maps:
        files = {fields[5] for line in maps if len(fields := line.split()) > 5}
    return sorted(Path(f).name for f in files if HEAVY.search(f))


def sample(process: psutil.Process, state: str, seconds: float) -> dict[str, Any]:
    """The process's RSS every second and its CPU time over `seconds`."""
    cpu_before = sum(process.cpu_times()[:2])
    began = time.monotonic()
    samples = []
    while time.monotonic() - began < seconds:
        samples.append(process.memory_info().rss)
        time.sleep(1.0)
    elapsed = time.monotonic() - began
    cpu_s = sum(process.cpu_times()[:2]) - cpu_before
    full = process.memory_full_info()
    rss_median_mb = round(statistics.median(samples) / MB, 1)
    cpu_percent = round(100 * cpu_s / elapsed, 3)
    return {
        "state": state,
        "window_s": round(elapsed, 1),
        "rss_median_mb": rss_median_mb,
        "rss_peak_mb": round(max(samples) / MB, 1),
        "uss_mb": round(full.uss / MB, 1),
        "pss_mb": round(full.pss / MB, 1),
        "cpu_s": round(cpu_s, 3),
        "cpu_percent_of_a_core": cpu_percent,
        "threads": process.num_threads(),
        "heavy_libraries": heavy_libraries(process.pid),
        "memory_map": memory_map(process.pid),
        "meets_rss_target": rss_median_mb <= TARGET_RSS_MB,
        "meets_cpu_target": cpu_percent < TARGET_CPU_PERCENT,
    }


def install_releases(admin: FleetClient, agent: AgentProcess, workdir: Path) -> dict[str, Any]:
    """Trust, then 1.0.0 in full and 2.0.0 from a delta, as the tests publish releases."""
    from edgefleet.artifacts.model_builder import build_mlp
    from tests.releases import Trust, fine_tuned, publish

    def installed(version: str) -> dict[str, Any] | None:
        status: dict[str, Any] = admin.get_device(agent.device_id or "")["release_status"]
        done = (status.get("version"), status.get("state")) == (version, "installed")
        return status if done else None

    began = time.monotonic()
    trust = Trust.install(admin)
    base = build_mlp(64, 512, 16, seed=5)
    statuses = []
    for version, model in (("1.0.0", base), ("2.0.0", fine_tuned(base, 1e-3, 1))):
        publish(admin, workdir / "release", "bench", version, model, "auto",  # type: ignore[arg-type]
                trust.targets_keys)  # fmt: skip
        admin.assign_release("bench", version, device=agent.device_id)
        statuses.append(wait_for(lambda v=version: installed(v), timeout_s=120,
                                 what=f"release {version} installed"))  # fmt: skip
    return {"releases": ["bench@1.0.0", "bench@2.0.0 (delta)"],
            "bytes_saved_by_delta": statuses[-1]["bytes_saved"],
            "seconds": round(time.monotonic() - began, 1)}  # fmt: skip


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
            states = [sample(process, "no release", seconds)]
            install = install_releases(admin, agent, workdir)
            time.sleep(settle_s)
            states.append(sample(process, "release installed", seconds))
        return {"states": states, "install": install}
    finally:
        if agent is not None:
            agent.stop()
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--quick", action="store_true", help="30 s windows")
    args = parser.parse_args()
    seconds = 30.0 if args.quick else args.seconds
    workdir = Path(tempfile.mkdtemp(prefix="edgefleet-bench-agent-"))
    try:
        result = measure(seconds, workdir, 10.0 if args.quick else 15.0)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    imports = import_costs()
    states = result["states"]
    report = {
        "benchmark": "agent_idle",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": psutil.cpu_count(),
        "note": "shared 2-core machine: CPU figures are noisy",
        "targets": {"rss_mb": TARGET_RSS_MB, "cpu_percent_of_a_core": TARGET_CPU_PERCENT},
        **result,
        "imports": imports,
        "meets_rss_target": all(s["meets_rss_target"] for s in states),
        "meets_cpu_target": all(s["meets_cpu_target"] for s in states),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    for s in states:
        verdict = "meets" if s["meets_rss_target"] else "misses"
        print(f"agent, {s['state']}, over {s['window_s']} s: RSS median {s['rss_median_mb']} MB "
              f"({verdict} <= {TARGET_RSS_MB:g} MB; peak {s['rss_peak_mb']}, USS {s['uss_mb']}, "
              f"PSS {s['pss_mb']}), CPU {s['cpu_percent_of_a_core']}% of a core, heavy "
              f"libraries mapped: {', '.join(s['heavy_libraries']) or 'none'}")  # fmt: skip
    install = result["install"]
    print(
        f"installed {', '.join(install['releases'])} in {install['seconds']} s "
        f"({install['bytes_saved_by_delta']} bytes saved by the delta)"
    )
    maps = [{row["what"]: row["rss_mb"] for row in s["memory_map"]} for s in states]
    print(f"{'memory map (MB)':40} " + " ".join(f"{s['state']:>18}" for s in states))
    for what in dict.fromkeys(w for m in maps for w in m):
        print(f"{what:40} " + " ".join(f"{m.get(what, 0.0):>18}" for m in maps))
    print(f"{'imports (fresh interpreter)':40} {'RSS MB':>7} {'adds':>7}")
    for row in imports:
        print(f"{row['imports']:40} {row['rss_mb']:>7} {row['adds_mb']:>7}")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
