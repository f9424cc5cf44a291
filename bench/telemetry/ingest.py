"""Server ingest cost: CPU time per 1,000 batches through the whole ingest path.

    .venv/bin/python bench/telemetry/ingest.py [--devices 20] [--batches 50]

Each batch is one minute of a device's baseline set at the default policy (13 host series
and 4 workload KPI series, 60 s windows, `device_hour.py`), sent through
`TelemetryService.ingest` on an embedded SQLite database: decode and validate, cursor check,
store the windows, feed the KPI detectors, in one transaction per batch, exactly as the
HTTP route does (without HTTP and signature checks). Prints a table and writes
bench/results/telemetry_ingest.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from device_hour import device_hour

from edgefleet.core.device import Device
from edgefleet.core.enrollment import EnrollmentState
from edgefleet.core.telemetry.windows import Aggregator
from edgefleet.core.telemetry.wire import Batch, encode_batch
from edgefleet.server.metrics import ServerMetrics
from edgefleet.server.services.desired import render_device
from edgefleet.server.services.telemetry import TelemetryService
from edgefleet.server.settings import ServerSettings
from edgefleet.server.watch import DesiredStateWatch
from edgefleet.store import Database

START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.at = START + timedelta(hours=2)

    def now(self) -> datetime:
        return self.at

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        raise NotImplementedError


def minute_batches(seed: int, count: int) -> list[bytes]:
    """`count` one-minute batches of one device (wire bytes)."""
    aggregator = Aggregator(lambda _name: 60)
    payloads: list[bytes] = []
    for timed in device_hour(seed=seed, requests_per_s=2.0, duration_s=60 * (count + 1)):
        at = START + timedelta(seconds=timed.at_s)
        aggregator.add(timed.point, at)
        closed = aggregator.close_due(at)
        if closed:
            payloads.append(encode_batch(Batch(len(payloads) + 1, tuple(closed))))
            if len(payloads) == count:
                break
    return payloads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--batches", type=int, default=50, help="per device")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite:///{tmp}/bench.db")
        db.migrate()
        settings = ServerSettings(data_dir=Path(tmp))
        service = TelemetryService(db, Clock(), DesiredStateWatch(), ServerMetrics(), settings)
        devices = []
        for i in range(args.devices):
            device = Device(
                f"d-{i:04d}",
                f"cam-{i}",
                f"key-{i}",
                EnrollmentState.APPROVED,
                {},
                {"hardware": {"arch": "aarch64"}},
                None,
                START,
            )
            with db.transaction() as tx:
                tx.devices.insert(render_device(tx, device))
            devices.append(device)
        payloads = {d.id: minute_batches(i, args.batches) for i, d in enumerate(devices)}
        payload_bytes = sum(len(p) for ps in payloads.values() for p in ps)
        signed_at_s = int(service.now().timestamp())  # devices whose clocks are right
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for n in range(args.batches):
            for device in devices:
                service.ingest(device, payloads[device.id][n], 0, signed_at_s)
        cpu_s, wall_s = time.process_time() - cpu0, time.perf_counter() - wall0
        db.dispose()
    batches = args.devices * args.batches
    result = {
        "python": platform.python_version(),
        "devices": args.devices,
        "batches": batches,
        "compressed_bytes_per_batch": round(payload_bytes / batches),
        "cpu_s_per_1000_batches": round(cpu_s / batches * 1000, 3),
        "wall_s_per_1000_batches": round(wall_s / batches * 1000, 3),
    }
    print(f"{'batches':>8} {'bytes/batch':>12} {'CPU s/1k batches':>17} {'wall s/1k':>10}")
    print(
        f"{batches:>8} {result['compressed_bytes_per_batch']:>12} "
        f"{result['cpu_s_per_1000_batches']:>17} {result['wall_s_per_1000_batches']:>10}"
    )
    out = Path(__file__).resolve().parents[1] / "results" / "telemetry_ingest.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
