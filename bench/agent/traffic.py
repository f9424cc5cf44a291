"""Agent traffic: the bytes and connections one idle agent costs on the wire, per hour.

    .venv/bin/python bench/agent/traffic.py [--quick] [--seconds 600] [--transport http mqtt]

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

With `--transport mqtt` (both by default, one after the other, side by side in the table)
the control plane runs with the MQTT device channel (`--mqtt`, a real Mosquitto with the
dynamic-security plugin, `tests/mqtt_broker.py`) and the agent with `EDGEFLEET_MQTT`: its
reports and desired state go over MQTT, through a second counting relay in front of the
broker; enrollment and anything else it still sends over HTTP go through the first. Bytes
are the sum of both relays (MQTT packets whole: fixed header, properties, payload).

Prints a table; writes bench/results/agent_traffic.json (the HTTP figures at its top, as
before, and every transport's under `transports`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.capacity.transports import start_patiently  # noqa: E402
from edgefleet.localfleet import AgentProcess, ServerProcess, wait_for  # noqa: E402
from tests.mqtt_broker import BrokerProcess  # noqa: E402
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


def measure(seconds: float, workdir: Path, transport: str) -> dict[str, Any]:
    broker: BrokerProcess | None = None
    env = {}
    if transport == "mqtt":
        broker = BrokerProcess(workdir / "broker")
        broker.start()
        env = {"EDGEFLEET_MQTT_URL": broker.admin_url}
    server = ServerProcess(workdir / "server", "bench-admin-token-0123456789", env=env)
    agent: AgentProcess | None = None
    try:
        start_patiently(server)
        with contextlib.ExitStack() as stack, server.client() as admin:
            relay = stack.enter_context(Relay(server.url))
            mqtt = None
            agent_env = {}
            if broker is not None:
                mqtt = stack.enter_context(Relay(f"http://127.0.0.1:{broker.port}"))
                agent_env = {"EDGEFLEET_MQTT": mqtt.url.replace("http://", "mqtt://")}
            relays = [r for r in (relay, mqtt) if r is not None]
            token = admin.create_enrollment_token(auto_approve=True)["token"]
            agent = AgentProcess(relay.url, workdir / "agent", token, "traffic-agent",
                                 heartbeat_interval_s=15.0, max_backoff_s=60.0,
                                 log_level="info", env=agent_env)  # fmt: skip
            agent.start()
            wait_for(lambda: agent is not None and agent.state().get("applied_generation"),
                     timeout_s=60, what="agent in sync")  # fmt: skip
            time.sleep(SETTLE_S)

            def tally() -> tuple[int, int, int, Counter[str]]:
                """Bytes up, bytes down, connections, and HTTP requests by kind (each relay
                connection lists its own requests, so kinds are counted, not sliced)."""
                kinds = Counter(kind(m, p) for m, p, _ in relay.requests())
                reports = relay.report_bodies()
                kinds["heartbeats with the inventory"] = sum("inventory" in r for r in reports)
                return (sum(r.upstream_bytes for r in relays),
                        sum(r.downstream_bytes for r in relays),
                        sum(r.connections for r in relays), kinds)  # fmt: skip

            before = tally()
            mqtt_before = (mqtt.upstream_bytes, mqtt.downstream_bytes) if mqtt else (0, 0)
            began = time.monotonic()
            time.sleep(seconds)
            elapsed = time.monotonic() - began
            after = tally()
            mqtt_after = (mqtt.upstream_bytes, mqtt.downstream_bytes) if mqtt else (0, 0)
            counted = after[3] - before[3]
            per_hour = 3600 / elapsed
            with_inventory = counted.pop("heartbeats with the inventory", 0)
            return {
                "transport": transport,
                "window_s": round(elapsed, 1),
                "up_bytes_per_hour": round((after[0] - before[0]) * per_hour),
                "down_bytes_per_hour": round((after[1] - before[1]) * per_hour),
                "mqtt_up_bytes_per_hour": round((mqtt_after[0] - mqtt_before[0]) * per_hour),
                "mqtt_down_bytes_per_hour": round((mqtt_after[1] - mqtt_before[1]) * per_hour),
                "connections_per_hour": round((after[2] - before[2]) * per_hour, 1),
                "requests_per_hour": {k: round(n * per_hour, 1) for k, n in counted.most_common()},
                "heartbeats": counted["heartbeat"],
                "heartbeats_with_inventory": with_inventory,
            }
    finally:
        if agent is not None:
            agent.stop()
        server.stop()
        if broker is not None:
            broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--quick", action="store_true", help="a 180 s window")
    parser.add_argument("--transport", nargs="+", choices=("http", "mqtt"),
                        default=["http", "mqtt"])  # fmt: skip
    args = parser.parse_args()
    seconds = 180.0 if args.quick else args.seconds
    results: dict[str, dict[str, Any]] = {}
    for transport in args.transport:
        with tempfile.TemporaryDirectory(prefix="edgefleet-bench-traffic-") as tmp:
            results[transport] = measure(seconds, Path(tmp), transport)
    first = results.get("http") or next(iter(results.values()))
    report = {"benchmark": "agent_traffic", "transport": f"{first['transport']} on loopback",
              "heartbeat_interval_s": 15, "command": " ".join(["bench/agent/traffic.py",
                                                               *sys.argv[1:]]),
              **first, "transports": results}  # fmt: skip
    rows = [("", *results)]
    for label, key in (("window, s", "window_s"),
                       ("sent (up), bytes per hour", "up_bytes_per_hour"),
                       ("received (down), bytes per hour", "down_bytes_per_hour"),
                       ("  of which MQTT, up", "mqtt_up_bytes_per_hour"),
                       ("  of which MQTT, down", "mqtt_down_bytes_per_hour"),
                       ("new connections per hour", "connections_per_hour")):  # fmt: skip
        rows.append((label, *(f"{r[key]:,}" for r in results.values())))
    kinds = sorted({k for r in results.values() for k in r["requests_per_hour"]})
    for k in kinds:
        rows.append(
            (
                f"HTTP {k} per hour",
                *(f"{r['requests_per_hour'].get(k, 0):g}" for r in results.values()),
            )
        )
    rows.append(("heartbeats carrying the inventory (HTTP)",
                 *(f"{r['heartbeats_with_inventory']} of {r['heartbeats']}"
                   for r in results.values())))  # fmt: skip
    width = max(len(row[0]) for row in rows)
    print("agent traffic, one idle agent (loopback, 15 s heartbeats)")
    for label, *values in rows:
        print(f"  {label:<{width}}  " + "  ".join(f"{v:>14}" for v in values))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
