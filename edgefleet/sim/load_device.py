"""A light virtual device for load generation: an identity and the messages a real agent
sends, built with the typed device protocol, without the agent itself.

    LoadDevice ── key, device id, name (from a seed: the same identity on every run that
       │          keeps it in an identities file)
       ├─ enroll_request(token)  the EnrollRequest the agent sends, with an inventory
       ├─ report(scheduled)      a heartbeat as the idle agent sends it: the applied
       │                         generation, no release, its node status, and the
       │                         inventory when the server has not said it may be left
       │                         out, or once an hour
       └─ telemetry_batch(now)   the next telemetry batch (core.telemetry.wire) with one
                                 60 s window of each host series the agent collects

Nothing here does I/O: the HTTP and MQTT device loops (`load_http.py`, `load_mqtt.py`)
send what these methods build and feed the answers back.
"""

from __future__ import annotations

import base64
import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgefleet import __version__
from edgefleet.atomicfile import write_json_atomically
from edgefleet.core.protocol import (
    EnrollRequest,
    Hardware,
    Inventory,
    Location,
    NodeStatus,
    PowerSource,
    Report,
    Software,
)
from edgefleet.core.telemetry.windows import MetricKind, Window
from edgefleet.core.telemetry.wire import Batch, encode_batch
from edgefleet.errors import InvalidInput
from edgefleet.security.keys import DeviceKey, device_id_for

INVENTORY_REFRESH_S = 3600.0  # as the agent: the inventory at least hourly
TELEMETRY_WINDOW_S = 60
# The host series the agent's collector reports (name, kind, typical level, noise).
HOST_SERIES: tuple[tuple[str, MetricKind, float, float], ...] = (
    ("host.cpu.percent", MetricKind.GAUGE, 35.0, 6.0),
    ("host.load.1m", MetricKind.GAUGE, 0.8, 0.2),
    ("host.memory.used_bytes", MetricKind.GAUGE, 1_400_000_000.0, 3_000_000.0),
    ("host.memory.percent", MetricKind.GAUGE, 35.0, 0.5),
    ("host.disk.used_bytes", MetricKind.GAUGE, 9_800_000_000.0, 100_000.0),
    ("host.disk.percent", MetricKind.GAUGE, 30.6, 0.05),
    ("host.temperature.celsius", MetricKind.GAUGE, 52.0, 0.3),
    ("host.net.rx_bytes", MetricKind.COUNTER, 120_000.0, 20_000.0),
    ("host.net.tx_bytes", MetricKind.COUNTER, 90_000.0, 15_000.0),
    ("agent.memory.rss_bytes", MetricKind.GAUGE, 30_000_000.0, 40_000.0),
    ("agent.cpu.percent", MetricKind.GAUGE, 0.2, 0.05),
)
HOST_SAMPLES_PER_WINDOW = 6  # a reading every 10 s
TELEMETRY_EPOCH_S = 1_700_000_000  # 2023-11-14: batch numbers stay far below 2**31


@dataclass(frozen=True)
class Identity:
    """Who a virtual device is: its name and its key's seed."""

    name: str
    seed: bytes

    def to_wire(self) -> dict[str, str]:
        return {"name": self.name, "seed": base64.b64encode(self.seed).decode()}

    @classmethod
    def from_wire(cls, raw: Any) -> Identity:
        try:
            return cls(str(raw["name"]), base64.b64decode(raw["seed"], validate=True))
        except (KeyError, TypeError, ValueError) as e:
            raise InvalidInput(f"bad load identity {raw!r}: {e}") from None


def load_identities(path: Path | None, prefix: str, count: int, seed: int) -> list[Identity]:
    """`count` identities: those kept in `path` first, then new ones (seeded), and `path`
    rewritten to hold them all, so the next run's devices are the same (already enrolled)."""
    kept: list[Identity] = []
    if path is not None and path.exists():
        try:
            raw = json.loads(path.read_text())
        except ValueError as e:
            raise InvalidInput(f"{path}: not JSON ({e})") from None
        if not isinstance(raw, list):
            raise InvalidInput(f"{path}: expected a list of identities")
        kept = [Identity.from_wire(item) for item in raw]
    rng = random.Random(f"load:{seed}:{prefix}")
    identities = kept[:count]
    for index in range(len(identities), count):
        identities.append(Identity(f"{prefix}-{index:06d}", rng.randbytes(32)))
    if path is not None and len(identities) > len(kept):
        write_json_atomically(path, [i.to_wire() for i in identities])
    return identities


class LoadDevice:
    """One virtual device's identity and protocol state."""

    def __init__(self, identity: Identity, seed: int) -> None:
        self.name = identity.name
        self.key = DeviceKey(identity.seed)
        self.device_id = device_id_for(self.key.public_key_b64)
        self.rng = random.Random(f"{seed}:{identity.name}")
        self.enrolled = False
        self.applied_generation = 0
        self.desired_seen = False  # a desired state was fetched (the first one is no update)
        self._inventory_optional = False
        self._inventory_due_s = 0.0
        # Batch numbers go on from where an earlier run with this identity left off: they
        # start at the clock (seconds since TELEMETRY_EPOCH_S), everything before declared
        # gone, so the server never takes a new batch for a duplicate.
        self._telemetry_seq = max(0, int(time.time() - TELEMETRY_EPOCH_S))
        self.telemetry_acked_through = self._telemetry_seq
        self._levels = [level for _, _, level, _ in HOST_SERIES]

    def inventory(self) -> Inventory:
        return Inventory(
            hardware=Hardware(arch="aarch64", cpu_count=4, memory_mb=3814, disk_mb=29_000),
            software=Software(
                os="Linux",
                os_version="6.1.0-load",
                python="3.11.7",
                agent_version=__version__,
                onnxruntime="1.17.1",
            ),
            location=Location(region="load", timezone="UTC"),
        )

    def enroll_request(self, token: str, heartbeat_interval_s: float | None) -> EnrollRequest:
        return EnrollRequest(
            enrollment_token=token,
            public_key=self.key.public_key_b64,
            name=self.name,
            labels={"fleet": "load"},
            inventory=self.inventory(),
            heartbeat_interval_s=heartbeat_interval_s,
        )

    def report(self, now_s: float, *, scheduled: bool) -> Report:
        """The next heartbeat; `now_s` a monotonic time (for the hourly inventory)."""
        send_inventory = not self._inventory_optional or now_s >= self._inventory_due_s
        if send_inventory:
            self._inventory_due_s = now_s + INVENTORY_REFRESH_S
        return Report(
            applied_generation=self.applied_generation,
            inventory=self.inventory() if send_inventory else None,
            node=NodeStatus(
                address="127.0.0.1",
                cpu_load=round(self.rng.uniform(0.1, 0.4), 3),
                power_source=PowerSource.MAINS,
                scheduled=scheduled,
            ),
        )

    def answered(self, answer: dict[str, Any]) -> None:
        """Take a report's answer: may later reports leave the inventory out?"""
        if answer.get("inventory_optional") is True:
            self._inventory_optional = True

    def telemetry_batch(self, now_unix_s: float) -> tuple[int, bytes]:
        """The next batch (sequence number, wire bytes): the window that just ended."""
        self._telemetry_seq += 1
        start = int(now_unix_s) // TELEMETRY_WINDOW_S * TELEMETRY_WINDOW_S - TELEMETRY_WINDOW_S
        windows = tuple(self._window(i, start) for i in range(len(HOST_SERIES)))
        return self._telemetry_seq, encode_batch(Batch(self._telemetry_seq, windows))

    def _window(self, index: int, start_s: int) -> Window:
        name, kind, level, noise = HOST_SERIES[index]
        samples: Sequence[float]
        if kind is MetricKind.COUNTER:
            share = level / HOST_SAMPLES_PER_WINDOW, noise / HOST_SAMPLES_PER_WINDOW
            samples = [float(round(max(0.0, self.rng.gauss(*share))))
                       for _ in range(HOST_SAMPLES_PER_WINDOW)]  # fmt: skip
        else:
            current = self._levels[index]
            samples = []
            for _ in range(HOST_SAMPLES_PER_WINDOW):
                current += self.rng.gauss(0, noise) + (level - current) * 0.1
                samples.append(_rounded(name, max(0.0, current)))
            self._levels[index] = current
        return Window(name, kind, (), start_s, TELEMETRY_WINDOW_S, len(samples), sum(samples),
                      min(samples), max(samples), samples[-1])  # fmt: skip


def _rounded(name: str, value: float) -> float:
    """The precision the agent's host readings have: whole pages of bytes, else 0.1."""
    if name.endswith("_bytes"):
        return float(int(value) // 4096 * 4096)
    return round(value, 1)
