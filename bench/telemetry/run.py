"""Telemetry efficiency: bytes on the wire per device-hour, ours vs OTLP protobuf + gzip, and
the CPU and memory the agent spends aggregating and encoding them (and the server's CPU to
validate and decode them).

    .venv/bin/python bench/telemetry/run.py [--rates 2 10] [--uploads 60 300 900]

The device-hour is `device_hour.py`'s baseline set (13 host series read every 10 s, four
workload KPI series at `rate` inferences a second) aggregated into 60 s windows, the default
policy's base window. Each upload interval batches the windows that ended since the last
upload; every encoding gets exactly the same batches:

    edgefleet      our wire format (msgpack + zstd with dictionary), as POSTed
    OTLP+gz        OTLP protobuf + gzip carrying the same information (gauges as Gauge +
                   Summary for count/sum/min/max), timings as exponential histograms
    OTLP-min+gz    OTLP as a plain exporter sends it: gauges as last value only (less
                   information than ours; shown as the harder comparison)
    OTLP+zstd      the first, compressed with zstd -19 instead of gzip (how much is codec)

The default policy is 60 s windows uploaded every 300 s at 2 inferences a second: the
headline row. Prints a table and writes bench/results/telemetry.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parent))

from device_hour import TimedPoint, device_hour
from otlp import RawSamples, otlp_gzip_bytes, otlp_request

from edgefleet.core.telemetry.windows import Aggregator, MetricKind, MetricPoint, Tags, Window
from edgefleet.core.telemetry.wire import Batch, decode_batch, encode_batch

WINDOW_S = 60
DEFAULT_RATE = 2.0
DEFAULT_UPLOAD_S = 300
DEVICE_ID = "3f2a9c1e-5b7d-4e8a-9f10-2c4d6e8a0b1c"
T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
RESULTS = Path(__file__).resolve().parents[1] / "results" / "telemetry.json"

Stamped = list[tuple[float, datetime, MetricPoint]]


def stamp(points: list[TimedPoint]) -> Stamped:
    return [(p.at_s, T0 + timedelta(seconds=p.at_s), p.point) for p in points]


def aggregate_hour(points: Stamped, upload_s: int) -> list[list[Window]]:
    """What the agent does: fold points into windows, cut a batch at every upload tick."""
    aggregator = Aggregator(lambda _name: WINDOW_S)
    batches: list[list[Window]] = []
    next_upload_s = upload_s
    for at_s, now, point in points:
        while at_s >= next_upload_s:
            batches.append(aggregator.close_due(T0 + timedelta(seconds=next_upload_s)))
            next_upload_s += upload_s
        aggregator.add(point, now)
    batches.append(aggregator.close_due(T0 + timedelta(seconds=next_upload_s)))
    return [b for b in batches if b]


def raw_timings(points: list[TimedPoint]) -> RawSamples:
    """The raw samples of each timing window, from which an OTel SDK builds histograms."""
    raw: dict[tuple[str, Tags, int], list[float]] = {}
    for timed in points:
        if timed.point.kind is MetricKind.TIMING:
            start_s = int(T0.timestamp() + timed.at_s) // WINDOW_S * WINDOW_S
            raw.setdefault((timed.point.name, timed.point.tags, start_s), []).append(
                timed.point.value
            )
    return raw


def encode_all(batches: list[list[Window]]) -> list[bytes]:
    return [encode_batch(Batch(seq, tuple(windows))) for seq, windows in enumerate(batches, 1)]


def cpu_ms(action: Callable[[], object], repeat: int = 3) -> float:
    """The least process CPU time of `repeat` runs of `action()`, in milliseconds."""
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        action()
        best = min(best, time.process_time() - start)
    return best * 1000


def peak_kib(action: Callable[[], object]) -> float:
    """Peak memory allocated while `action()` runs (its result included), in KiB."""
    tracemalloc.start()
    try:
        action()
        return tracemalloc.get_traced_memory()[1] / 1024
    finally:
        tracemalloc.stop()


def measure(rate: float, upload_s: int, seed: int) -> dict[str, float | int]:
    points = device_hour(seed, rate)
    stamped = stamp(points)
    batches = aggregate_hour(stamped, upload_s)
    raw = raw_timings(points)
    ours = sum(map(len, encode_all(batches)))
    same = [otlp_request(b, raw, DEVICE_ID, same_information=True) for b in batches]
    typical = [otlp_request(b, raw, DEVICE_ID, same_information=False) for b in batches]
    zstd = zstandard.ZstdCompressor(level=19)
    otlp_gzip = sum(len(otlp_gzip_bytes(r)) for r in same)
    otlp_typical = sum(len(otlp_gzip_bytes(r)) for r in typical)
    timing_only = [[w for w in b if w.kind is MetricKind.TIMING] for b in batches]
    aggregate_ms = cpu_ms(lambda: aggregate_hour(stamped, upload_s))
    encode_ms = cpu_ms(lambda: encode_all(batches))
    payloads = encode_all(batches)
    decode_ms = cpu_ms(lambda: [decode_batch(p) for p in payloads])
    return {
        "requests_per_s": rate,
        "upload_interval_s": upload_s,
        "points_per_hour": len(points),
        "windows_per_hour": sum(map(len, batches)),
        "batches_per_hour": len(batches),
        "edgefleet_bytes_per_hour": ours,
        "edgefleet_timing_series_bytes_per_hour": sum(map(len, encode_all(timing_only))),
        "otlp_protobuf_bytes_per_hour": sum(len(r.SerializeToString()) for r in same),
        "otlp_gzip_bytes_per_hour": otlp_gzip,
        "otlp_gzip_typical_bytes_per_hour": otlp_typical,
        "otlp_zstd_bytes_per_hour": sum(len(zstd.compress(r.SerializeToString())) for r in same),
        "ratio_vs_otlp_gzip": ours / otlp_gzip,
        "ratio_vs_otlp_gzip_typical": ours / otlp_typical,
        "aggregate_cpu_ms_per_hour": aggregate_ms,
        "encode_cpu_ms_per_hour": encode_ms,
        "cpu_percent_of_one_core": (aggregate_ms + encode_ms) / 3_600_000 * 100,
        "aggregate_peak_kib": peak_kib(lambda: aggregate_hour(stamped, upload_s)),
        # The server side of ingest, without storage: validate and decode.
        "decode_cpu_ms_per_1000_batches": decode_ms / len(payloads) * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[DEFAULT_RATE, 10.0])
    parser.add_argument("--uploads", type=int, nargs="+", default=[60, DEFAULT_UPLOAD_S, 900])
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rows = [measure(rate, upload_s, args.seed) for rate in args.rates for upload_s in args.uploads]
    header = (
        f"{'req/s':>5} {'upload':>6} {'windows':>7} {'edgefleet B':>11} {'OTLP+gz B':>9} "
        f"{'ratio':>5} {'OTLP-min+gz':>11} {'ratio':>5} {'OTLP+zstd':>9} "
        f"{'CPU ms/h':>8} {'peak KiB':>8} {'decode ms/1k':>12}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        default = r["requests_per_s"] == DEFAULT_RATE and r["upload_interval_s"] == DEFAULT_UPLOAD_S
        print(
            f"{r['requests_per_s']:>5g} {r['upload_interval_s']:>5}s {r['windows_per_hour']:>7} "
            f"{r['edgefleet_bytes_per_hour']:>11} {r['otlp_gzip_bytes_per_hour']:>9} "
            f"{r['ratio_vs_otlp_gzip']:>5.2f} {r['otlp_gzip_typical_bytes_per_hour']:>11} "
            f"{r['ratio_vs_otlp_gzip_typical']:>5.2f} {r['otlp_zstd_bytes_per_hour']:>9} "
            f"{r['aggregate_cpu_ms_per_hour'] + r['encode_cpu_ms_per_hour']:>8.1f} "
            f"{r['aggregate_peak_kib']:>8.0f} {r['decode_cpu_ms_per_1000_batches']:>12.0f}"
            + ("  <- default policy" if default else "")
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "benchmark": "telemetry",
        "window_s": WINDOW_S,
        "default": {"requests_per_s": DEFAULT_RATE, "upload_interval_s": DEFAULT_UPLOAD_S},
        "target_ratio_vs_otlp_gzip": 0.1,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "rows": rows,
    }
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
