"""Agent traffic: the bytes and connections one idle agent costs on the wire, per hour.

    .venv/bin/python bench/agent/traffic.py [--quick] [--seconds 600]

Setup: a control plane (`edgefleet server`) and one agent (`edgefleet agent`, the CLI
defaults: 15 s heartbeats, 30 s long polls, telemetry batches every 60 s and uploads every
300 s) on loopback over http, with a TCP relay between them that counts every byte each
way and every connection the agent opens (tests/relay.py). The agent enrolls, is approved,
settles for 20 s, then the relay's counters are read at both ends of a `--seconds` window
(default 600, which includes two telemetry uploads; `--quick` 180).

    up / down       bytes the agent sent / received, HTTP heads and bodies (no TCP/IP or
                    TLS overhead: on https every new connection would add a handshake)
    connections     TCP connections the agent opened (each would be a TLS handshake)
    requests        by kind: heartbeats (report), long polls (desired), telemetry uploads,
                    others; and how many heartbeats carried the inventory

Prints a table; writes bench/results/agent_traffic.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from edgefleet.localfleet import AgentProcess, ServerProcess, wait_for  # noqa: E402
from tests.relay import Relay  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "agent_traffic.json"
SETTLE_S = 20.0


def kind(method: str, path: str) -> str:
    if path.endswith("/report"):
        return "heartbeat"
    if path.endswith("/desired"):
        return "long poll"
    if path.endswith("/telemetry"):
        return "telemetry upload"
    return f"other ({method} {path})"


def measure(seconds: float, workdir: Path) -> dict[str, Any]:
    server = ServerProcess(workdir / "server", "bench-admin-token-0123456789")
    server.start()
    agent: AgentProcess | None = None
    try:
        with Relay(server.url) as relay, server.client() as admin:
            token = admin.create_enrollment_token(auto_approve=True)["token"]
            agent = AgentProcess(relay.url, workdir / "agent", token, "traffic-agent",
                                 heartbeat_interval_s=15.0, max_backoff_s=60.0,
                                 log_level="info")  # fmt: skip
            agent.start()
            wait_for(lambda: agent is not None and agent.state().get("applied_generation"),
                     timeout_s=60, what="agent in sync")  # fmt: skip
            time.sleep(SETTLE_S)

            def tally() -> tuple[int, int, int, Counter[str]]:
                """Bytes up, bytes down, connections, and requests by kind (each relay
                connection lists its own requests, so kinds are counted, not sliced)."""
                kinds = Counter(kind(m, p) for m, p, _ in relay.requests())
                reports = relay.report_bodies()
                kinds["heartbeats with the inventory"] = sum("inventory" in r for r in reports)
                return relay.upstream_bytes, relay.downstream_bytes, relay.connections, kinds

            before = tally()
            began = time.monotonic()
            time.sleep(seconds)
            elapsed = time.monotonic() - began
            after = tally()
            counted = after[3] - before[3]
            per_hour = 3600 / elapsed
            with_inventory = counted.pop("heartbeats with the inventory", 0)
            return {
                "window_s": round(elapsed, 1),
                "up_bytes_per_hour": round((after[0] - before[0]) * per_hour),
                "down_bytes_per_hour": round((after[1] - before[1]) * per_hour),
                "connections_per_hour": round((after[2] - before[2]) * per_hour, 1),
                "requests_per_hour": {k: round(n * per_hour, 1) for k, n in counted.most_common()},
                "heartbeats": counted["heartbeat"],
                "heartbeats_with_inventory": with_inventory,
            }
    finally:
        if agent is not None:
            agent.stop()
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--quick", action="store_true", help="a 180 s window")
    args = parser.parse_args()
    seconds = 180.0 if args.quick else args.seconds
    with tempfile.TemporaryDirectory(prefix="edgefleet-bench-traffic-") as tmp:
        result = measure(seconds, Path(tmp))
    report = {"benchmark": "agent_traffic", "transport": "http on loopback",
              "heartbeat_interval_s": 15, **result}  # fmt: skip
    rows = [
        ("window", f"{result['window_s']} s"),
        ("sent (up), bytes per hour", f"{result['up_bytes_per_hour']:,}"),
        ("received (down), bytes per hour", f"{result['down_bytes_per_hour']:,}"),
        ("new connections per hour", f"{result['connections_per_hour']:g}"),
        *((f"{k} per hour", f"{n:g}") for k, n in result["requests_per_hour"].items()),
        ("heartbeats carrying the inventory",
         f"{result['heartbeats_with_inventory']} of {result['heartbeats']}"),
    ]  # fmt: skip
    width = max(len(label) for label, _ in rows)
    print(f"agent traffic, one idle agent ({report['transport']}, 15 s heartbeats)")
    for label, value in rows:
        print(f"  {label:<{width}}  {value}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
