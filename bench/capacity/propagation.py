"""What one fleet-wide desired-state change costs the control plane per device, in process
CPU time, over SQLite: the floor under "a change reaches 99 % of the fleet in N seconds".

    .venv/bin/python bench/capacity/propagation.py [--devices 10000] [--quick]

Setup: a migrated SQLite file with `--devices` approved devices (as enrollment stores
them). Timed, each over every device, as the server runs them:

    re-render    the transaction a fleet-wide change runs (`services/telemetry.set_policy`,
                 `services/sealing`): every device's desired state rendered from its
                 inputs (`FleetInputs` shared) and written with its optimistic check
    sign         what the MQTT bridge then does per device before publishing: the
                 devices read back in chunks, the document rendered to bytes, signed with
                 an Ed25519 key through securesystemslib (the online desired-state key)

Publishing to the broker is not included (measured end to end by
bench/capacity/transports.py). Prints a table and writes bench/results/propagation.json.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from securesystemslib.signer import CryptoSigner  # noqa: E402

from edgefleet.core.desired import desired_document  # noqa: E402
from edgefleet.core.device import Device  # noqa: E402
from edgefleet.core.enrollment import EnrollmentState  # noqa: E402
from edgefleet.security.desired_signature import sign_desired  # noqa: E402
from edgefleet.server.mqtt_bridge import PUBLISH_CHUNK, render_document  # noqa: E402
from edgefleet.server.services.desired import FleetInputs, render_device, save_device  # noqa: E402
from edgefleet.store import Database  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "propagation.json"
T0 = datetime(2026, 12, 1, tzinfo=UTC)


def populate(db: Database, count: int) -> list[str]:
    ids = [f"d-{i:06d}" for i in range(count)]
    with db.transaction() as tx:
        fleet = FleetInputs(tx)
        for i, device_id in enumerate(ids):
            key = base64.b64encode(hashlib.sha256(device_id.encode()).digest()).decode()
            device = Device(
                id=device_id, name=device_id, public_key=key,
                enrollment=EnrollmentState.APPROVED, labels={"fleet": "bench", "n": str(i % 7)},
                inventory={"arch": "aarch64"}, enrollment_token_id=None, created_at=T0,
                last_seen=T0,
            )  # fmt: skip
            tx.devices.insert(render_device(tx, device, fleet))
    return ids


def rerender(db: Database) -> None:
    with db.transaction() as tx:
        fleet = FleetInputs(tx)
        for device in tx.devices.all():
            save_device(tx, device, fleet)


def sign_all(db: Database, ids: list[str], signer: CryptoSigner) -> int:
    signed = 0
    for start in range(0, len(ids), PUBLISH_CHUNK):
        with db.read() as tx:
            devices = tx.devices.find_many(ids[start : start + PUBLISH_CHUNK])
        for device in devices.values():
            sign_desired(render_document(desired_document(device)), signer)
            signed += 1
    return signed


def cpu_us_per_device(work: Any, count: int) -> float:
    began = time.process_time()
    work()
    return round(1e6 * (time.process_time() - began) / count, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true", help="1,000 devices")
    args = parser.parse_args()
    count = 1000 if args.quick else args.devices
    with tempfile.TemporaryDirectory(prefix="edgefleet-bench-propagation-") as workdir:
        db = Database(f"sqlite:///{workdir}/store.db")
        db.migrate()
        ids = populate(db, count)
        signer = CryptoSigner.generate_ed25519()
        rows = {
            "re-render": cpu_us_per_device(lambda: rerender(db), count),
            "sign": cpu_us_per_device(lambda: sign_all(db, ids, signer), count),
        }
        db.dispose()
    total = sum(rows.values())
    report = {
        "benchmark": "propagation",
        "when": time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime()),
        "command": " ".join(["bench/capacity/propagation.py", *sys.argv[1:]]),
        "python": platform.python_version(),
        "devices": count,
        "cpu_us_per_device": rows,
        "cpu_us_per_device_total": round(total, 1),
        "one_core_seconds_for_10000": round(total * 10_000 / 1e6, 2),
    }
    print(f"{'step':<12} {'CPU us/device':>14}")
    for step, value in rows.items():
        print(f"{step:<12} {value:>14}")
    print(f"{'total':<12} {total:>14.1f}   ({report['one_core_seconds_for_10000']} s of one "
          "core for 10,000 devices)")  # fmt: skip
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
