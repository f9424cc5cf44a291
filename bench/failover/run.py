"""Failover end to end with real processes: from SIGKILL of the agent whose node runs a
workload to that workload passing its health check on another node; and no false failover
on a lossy heartbeat link.

    .venv/bin/python bench/failover/run.py [--quick] [--trials 7] [--lossy-minutes 5]

Setup: a control plane (`edgefleet server`, default settings: phi suspect 5 / dead 16,
controllers every 0.5 s, suspect grace 30 s) and three agents (`edgefleet agent`) on
loopback at their default settings: a 15 s heartbeat, which the control plane shortens to
the hosting interval (1 s while at most 50 nodes host replicas; core/liveness.py) for a
node once it hosts a replica. A signed release carries an ONNX model; the workload is the
example inference server (`edgefleet.examples.inference_server`), one replica, a state
directory, an HTTP health check with the Workload defaults (`/healthz`).

    failover     per trial: find the node running the replica; SIGKILL its agent (the
                 kernel kills the replica with it); t = 0. Poll the control plane every
                 50 ms until another node reports the replica running with a passing health
                 check at its new placement generation, and confirm with a GET of its
                 /healthz: t_healthy. The killed agent is restarted (and must not run a
                 copy: fencing) before the next trial. Reported: median, min, max of
                 t_healthy, and the detection part (until the control plane declared the
                 node dead; from its liveness record).
    lossy link   two more agents lose 10% of their periodic heartbeats on the link
                 (the simulator's faulty agent, EDGEFLEET_FAULT_HEARTBEAT_LOSS=0.1: the link
                 loses them, sim/faulty_agent.py) while each runs a replica, for
                 `--lossy-minutes`; every 0.5 s the control plane's view is sampled. A
                 false failover is any replica moved off them (placement generation
                 changed) or a `dead` verdict; `suspect` verdicts and the worst phi are
                 reported too.
    long run     the seeded phi simulation (bench/failover/phi_sim.py) at 10% loss and
                 jitter: 10 nodes x 24 h of heartbeats, false `dead` verdicts.

Prints a table and writes bench/results/failover.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import time
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from phi_sim import long_run  # noqa: E402

from edgefleet.agent.settings import AgentSettings  # noqa: E402
from edgefleet.artifacts.model_builder import build_mlp  # noqa: E402
from edgefleet.client import FleetClient  # noqa: E402
from edgefleet.localfleet import AgentProcess, ServerProcess, wait_for  # noqa: E402
from edgefleet.sim.faulty_agent import HEARTBEAT_LOSS_ENV  # noqa: E402
from tests.releases import Trust, free_port, publish  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "failover.json"
ADMIN_TOKEN = "bench-admin-token-0123456789"
POLL_S = 0.05
TARGET_S = 10.0


def workload(name: str, selector: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "artifacts": ["vision@1.0.0"],
        "resources": {"cpu_millicores": 250, "memory_mb": 1024},
        "service": {"port": "auto"},
        "health_check": {"http": "/healthz"},
        "state_dir": f"/var/lib/{name}",
    }  # fmt: skip
    if selector:
        spec["constraints"] = {"selector": selector}
    return {"kind": "Workload", "metadata": {"name": name}, "spec": spec}


def row_of(client: FleetClient, name: str) -> dict[str, Any]:
    result: dict[str, Any] = client.get_workload(name)["placement"][0]
    return result


def healthy(row: dict[str, Any]) -> bool:
    return row["state"] == "running" and row["health"] == "ok"


def healthy_row(client: FleetClient, name: str) -> dict[str, Any] | None:
    row = row_of(client, name)
    return row if healthy(row) else None


def synced(agent: AgentProcess) -> bool:
    return bool(agent.state().get("applied_generation"))


def is_alive(client: FleetClient, device_id: str) -> bool:
    return (node_view(client, device_id) or {}).get("liveness") == "alive"


def node_view(client: FleetClient, device_id: str) -> dict[str, Any] | None:
    return next((n for n in client.list_nodes() if n["id"] == device_id), None)


def failover_trials(
    client: FleetClient, agents: dict[str, AgentProcess], trials: int
) -> list[dict[str, Any]]:
    by_id = {a.device_id: a for a in agents.values()}
    out = []
    for trial in range(trials):
        row = wait_for(lambda: healthy_row(client, "bench"), timeout_s=120,
                       what="replica healthy before the trial")  # fmt: skip
        assert row is not None
        victim = by_id[row["node_id"]]
        time.sleep(3.0)  # a steady heartbeat history before the kill
        killed_at = time.monotonic()
        killed_wall = time.time()
        victim.kill()
        while True:
            now = row_of(client, "bench")
            if now["node_id"] != row["node_id"] and healthy(now):
                healthy_s = time.monotonic() - killed_at
                break
            if time.monotonic() - killed_at > 120:
                raise TimeoutError(f"no failover within 120 s: {now}")
            time.sleep(POLL_S)
        answered = httpx.get(f"http://127.0.0.1:{now['port']}/healthz", timeout=5).status_code
        dead = node_view(client, row["node_id"]) or {}
        detected_s = None
        if dead.get("liveness") == "dead" and dead.get("liveness_since"):
            since = datetime.fromisoformat(dead["liveness_since"]).timestamp()
            detected_s = since - killed_wall
        result = {
            "trial": trial,
            "from": victim.name,
            "to": by_id[now["node_id"]].name,
            "healthy_s": healthy_s,
            "detected_s": detected_s,
            "healthz_status": answered,
        }
        out.append(result)
        print(
            f"  trial {trial}: {victim.name} -> {result['to']}: healthy after "
            f"{healthy_s:.2f} s (declared dead after "
            f"{'?' if detected_s is None else f'{detected_s:.2f}'} s)",
            flush=True,
        )
        victim.start()
        wait_for(
            partial(is_alive, client, victim.device_id or ""), timeout_s=60, what="victim back"
        )
        time.sleep(2.0)
        stale = row_of(client, "bench")
        if stale["node_id"] == victim.device_id:
            raise AssertionError("the returned node owns the replica again (unexpected)")
    return out


def lossy_run(
    client: FleetClient, lossy: dict[str, AgentProcess], minutes: float
) -> dict[str, Any]:
    doc = workload("lossy", selector="lossy")
    doc["spec"]["replicas"] = len(lossy)  # one per lossy node (at most one per node)
    client.apply_workload(doc)

    def placed() -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = client.get_workload("lossy")["placement"]
        return rows

    wait_for(lambda: all(healthy(r) for r in placed()), timeout_s=120, what="lossy healthy")
    start = {r["replica"]: (r["node_id"], r["generation"]) for r in placed()}
    ids = {a.device_id for a in lossy.values()}
    deadline = time.monotonic() + minutes * 60
    samples = suspect = dead = moves = 0
    worst_phi = 0.0
    verdicts: dict[str, str] = {}
    while time.monotonic() < deadline:
        for node in client.list_nodes():
            if node["id"] not in ids:
                continue
            worst_phi = max(worst_phi, node["phi"])
            if node["liveness"] != verdicts.get(node["id"], "alive"):
                suspect += node["liveness"] == "suspect"
                dead += node["liveness"] == "dead"
            verdicts[node["id"]] = node["liveness"]
        for r in placed():
            now = (r["node_id"], r["generation"])
            if now != start[r["replica"]]:
                moves += 1
                start[r["replica"]] = now
        samples += 1
        time.sleep(0.5)
    heartbeats = {n["name"]: n["heartbeats_seen"] for n in client.list_nodes()
                  if n["id"] in ids}  # fmt: skip
    return {
        "minutes": minutes,
        "nodes": len(lossy),
        "loss": 0.10,
        "samples": samples,
        "suspect_verdicts": suspect,
        "dead_verdicts": dead,
        "replica_moves": moves,
        "worst_phi": worst_phi,
        "heartbeat_intervals_seen": heartbeats,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=7)
    parser.add_argument("--lossy-minutes", type=float, default=5.0)
    parser.add_argument("--sim-hours", type=float, default=24.0)
    parser.add_argument("--quick", action="store_true", help="3 trials, 1 lossy minute, 6 h")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    trials, minutes, hours = (3, 1.0, 6.0) if args.quick else (
        args.trials, args.lossy_minutes, args.sim_hours)  # fmt: skip

    work = Path(tempfile.mkdtemp(prefix="edgefleet-failover-"))
    server = ServerProcess(work / "server", ADMIN_TOKEN)
    agents: dict[str, AgentProcess] = {}
    try:
        server.start()
        client = server.client()
        trust = Trust.install(client)
        publish(client, work / "release", "vision", "1.0.0", build_mlp(4, 8, 3, seed=1),
                free_port(), trust.targets_keys)  # fmt: skip
        token = client.create_enrollment_token(auto_approve=True)["token"]
        specs: dict[str, tuple[dict[str, str], dict[str, str]]] = {
            f"node-{i}": ({"role": "failover"}, {}) for i in range(3)
        }
        specs |= {f"lossy-{i}": ({"lossy": "yes"}, {HEARTBEAT_LOSS_ENV: "0.1"}) for i in range(2)}
        for name, (labels, faults) in specs.items():
            agent = AgentProcess(server.url, work / name, token, name, labels,
                                 AgentSettings.heartbeat_interval_s, log_level="info")  # fmt: skip
            if faults:
                agent.inject_faults(faults)
            agent.start()
            agents[name] = agent
        for agent in agents.values():
            wait_for(partial(synced, agent), timeout_s=60, what=f"{agent.name} in sync")
        print(f"failover: {trials} trials, SIGKILL of the agent running the replica", flush=True)
        client.apply_workload(workload("bench", selector="role=failover"))
        results = failover_trials(client, {k: v for k, v in agents.items()
                                           if k.startswith("node-")}, trials)  # fmt: skip
        print(f"lossy link: 2 nodes dropping 10% of heartbeats for {minutes:g} min", flush=True)
        lossy = lossy_run(client, {k: v for k, v in agents.items() if k.startswith("lossy-")},
                          minutes)  # fmt: skip
        client.close()
    finally:
        for agent in agents.values():
            if agent.running:
                agent.proc.send_signal(signal.SIGCONT)  # type: ignore[union-attr]
            agent.stop()
        server.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"long run: seeded phi simulation, 10 nodes x {hours:g} h at 10% loss", flush=True)
    sim = long_run(0.10, 10, hours, seed=7)

    times = [r["healthy_s"] for r in results]
    detected = [r["detected_s"] for r in results if r["detected_s"] is not None]
    summary = {
        "median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
        "detect_median_s": statistics.median(detected) if detected else None,
        "target_s": TARGET_S, "met": statistics.median(times) <= TARGET_S,
    }  # fmt: skip
    print()
    header = f"{'measure':<52} {'value':>14}"
    print(header)
    print("-" * len(header))
    rows = [
        ("failover: kill -> healthy elsewhere, median", f"{summary['median_s']:.2f} s"),
        ("failover: min / max", f"{summary['min_s']:.2f} / {summary['max_s']:.2f} s"),
        ("failover: kill -> declared dead, median",
         "?" if summary["detect_median_s"] is None else f"{summary['detect_median_s']:.2f} s"),
        (f"target <= {TARGET_S:g} s", "met" if summary["met"] else "MISSED"),
        (f"lossy link (real, {minutes:g} min x 2 nodes): dead verdicts",
         str(lossy["dead_verdicts"])),
        ("lossy link: replica moves (false failovers)", str(lossy["replica_moves"])),
        ("lossy link: suspect verdicts / worst phi",
         f"{lossy['suspect_verdicts']} / {lossy['worst_phi']:.1f}"),
        (f"long run (sim, 10 x {hours:g} h): false dead", str(sim["false_dead"])),
        ("long run: false suspect / worst phi",
         f"{sim['false_suspect']} / {sim['worst_phi']:.1f}"),
    ]  # fmt: skip
    for label, value in rows:
        print(f"{label:<52} {value:>14}")
    report = {
        "benchmark": "failover",
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "conditions": "control plane and agents on loopback, SQLite, default server and "
        "agent settings (15 s heartbeat, 1 s while hosting a replica); "
        "workload: the example inference server",
        "summary": summary,
        "trials": results,
        "lossy_link": lossy,
        "long_run_sim": sim,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
