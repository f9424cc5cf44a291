"""The telemetry batch wire format: what an agent POSTs to `/v1/devices/{id}/telemetry`.

A batch is a device sequence number, the cumulative drop counts of the device's queue and a
list of windows. On the wire it is msgpack compressed with zstd, laid out to be small:

    [version, seq, dropped_batches_total, dropped_windows_total, base_s, names, tag_sets,
     series...]

    series = [name_ref, kind, tag_set_ref, starts, lengths, counts, stats,
              (alpha, sketches) for timings]

- Windows are grouped by series and stored as columns, so a name and tag set appear once
  per batch. Metric names known to every agent are numbers in `STATIC_NAMES` (a name
  reference below `len(STATIC_NAMES)`); others are listed once in `names`.
- Times are implicit: `starts` holds the first start as an offset from `base_s` and then
  the gap after each previous window (zero for back-to-back windows); `lengths` is one
  number when every window of the series has the same length.
- `stats` holds min, max, last and sum of every window. When they are all short decimals
  (psutil's 12.3, StatsD's "0.045", whole bytes) it is `[places, factor, min deltas...,
  spans..., last offsets..., sum excesses...]` in integer units of factor * 10**-places:
  each min as the change from the previous window's, then max - min, last - min and
  sum - count * min, so a level that moves slowly costs a byte or two per number; `factor`
  is their greatest common divisor (4096 for page-sized memory figures). Otherwise it is
  `[-1, mins..., maxs..., lasts..., sums...]` as floats. Both give back the same floats.
- Timing sketches travel as DDSketch bins (`DDSketch.bins_to_wire`), alpha once per series.
- zstd uses a small raw-content dictionary (`_DICTIONARY`) built from the layout itself, so
  even a one-window batch compresses well. Changing `STATIC_NAMES` or the dictionary means a
  new `WIRE_VERSION`.

`decode_batch` trusts nothing: it bounds the compressed and decompressed sizes (zip bombs),
and raises InvalidInput with code `corrupt_batch` (not zstd, bad checksum, trailing bytes,
not msgpack), `bad_batch_schema` (wrong shape, types or ranges, naming the place) or
`unsupported_batch_version`, and PayloadTooLarge with code `batch_too_large`.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
import zstandard

from edgefleet.core.telemetry.sketch import DDSketch
from edgefleet.core.telemetry.windows import MAX_WINDOW_S, MetricKind, Tags, Window
from edgefleet.errors import InvalidInput, PayloadTooLarge

WIRE_VERSION = 1
MAX_BATCH_BYTES = 1 << 20  # compressed
MAX_DECODED_BYTES = 8 << 20  # decompressed: refuse anything claiming more
MAX_WINDOWS_PER_BATCH = 20_000
MAX_NAME_CHARS = 200
MAX_TAGS = 16
MAX_TAG_CHARS = 100
MAX_START_S = 1 << 40
MAX_DECIMAL_PLACES = 6
_MAX_SCALED = 2**62  # so that deltas fit msgpack's int64
COMPRESSION_LEVEL = 19  # batches are a few KB: even the strongest level takes about 1 ms

NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")

# Names every agent knows, sent as their index. Append only, and bump WIRE_VERSION.
STATIC_NAMES: tuple[str, ...] = (
    "host.cpu.percent",
    "host.load.1m",
    "host.memory.used_bytes",
    "host.memory.percent",
    "host.disk.used_bytes",
    "host.disk.percent",
    "host.temperature.celsius",
    "host.battery.percent",
    "host.power.plugged",
    "host.net.rx_bytes",
    "host.net.tx_bytes",
    "agent.memory.rss_bytes",
    "agent.cpu.percent",
    "inference.latency_ms",
    "inference.requests",
    "inference.errors",
    "inference.score",
)
_STATIC_INDEX = {name: i for i, name in enumerate(STATIC_NAMES)}
_KIND_CODES: tuple[MetricKind, ...] = (MetricKind.COUNTER, MetricKind.GAUGE, MetricKind.TIMING)
_KIND_INDEX = {kind: i for i, kind in enumerate(_KIND_CODES)}


@dataclass(frozen=True)
class Batch:
    """One upload unit. Drop totals are cumulative over the device's life, so a lost batch
    never loses the count."""

    seq: int
    windows: tuple[Window, ...]
    dropped_batches_total: int = 0
    dropped_windows_total: int = 0


# --- encoding --------------------------------------------------------------------------


def _decimal_places(value: float) -> int | None:
    for places in range(MAX_DECIMAL_PLACES + 1):
        scale = 10**places
        if round(value * scale) / scale == value:
            return places
    return None


def _encode_stats(windows: Sequence[Window]) -> list[Any]:
    """The min, max, last and sum of every window as one list (see the module docstring)."""
    places = 0
    for window in windows:
        for value in (window.min, window.max, window.last, window.sum):
            found = _decimal_places(value)
            if found is None:
                return _float_stats(windows)
            places = max(places, found)
    scale = 10**places
    scaled: list[tuple[int, int, int, int]] = []
    for window in windows:
        row = (window.min, window.max, window.last, window.sum)
        low, high, last, total = (round(value * scale) for value in row)
        # Exactness is checked, not assumed: beyond 2**53 a float's digits run out.
        if any(x / scale != v for x, v in zip((low, high, last, total), row, strict=True)):
            return _float_stats(windows)
        scaled.append((low, high, last, total))
    mins = [row[0] for row in scaled]
    min_deltas = [low - previous for low, previous in zip(mins, [0, *mins], strict=False)]
    spans = [high - low for low, high, _, _ in scaled]
    lasts = [last - low for low, _, last, _ in scaled]
    excess = [row[3] - w.count * row[0] for w, row in zip(windows, scaled, strict=True)]
    ints_out = [*min_deltas, *spans, *lasts, *excess]
    if any(abs(x) >= _MAX_SCALED for x in [*mins, *ints_out]):
        return _float_stats(windows)
    # Memory and disk figures are whole pages: dividing out the common factor saves bits.
    factor = math.gcd(*ints_out) or 1
    return [places, factor, *(x // factor for x in ints_out)]


def _float_stats(windows: Sequence[Window]) -> list[Any]:
    return [-1, *(float(getattr(w, f)) for f in ("min", "max", "last", "sum") for w in windows)]


def _encode_starts(windows: Sequence[Window], base_s: int) -> list[int]:
    starts = [windows[0].start_s - base_s]
    starts += [w.start_s - p.end_s for p, w in itertools.pairwise(windows)]
    return starts


def _check_encodable(window: Window) -> None:
    stats = (window.sum, window.min, window.max, window.last)
    if not all(math.isfinite(x) for x in stats) or window.count < 1:
        raise InvalidInput(f"window of {window.name!r} has no finite stats", code="bad_window")
    if not NAME_RE.fullmatch(window.name) or len(window.name) > MAX_NAME_CHARS:
        raise InvalidInput(f"metric name {window.name!r} cannot be sent", code="bad_metric_name")
    if len(window.tags) > MAX_TAGS or any(
        len(k) > MAX_TAG_CHARS or len(v) > MAX_TAG_CHARS or not k for k, v in window.tags
    ):
        raise InvalidInput(f"tags of {window.name!r} cannot be sent", code="bad_tags")


def _to_plain(batch: Batch) -> list[Any]:
    groups: dict[tuple[str, MetricKind, Tags], list[Window]] = {}
    for window in batch.windows:
        _check_encodable(window)
        groups.setdefault((window.name, window.kind, window.tags), []).append(window)
    base_s = min((w.start_s for w in batch.windows), default=0)
    names: list[str] = []
    name_refs: dict[str, int] = {}
    tag_sets: list[list[str]] = []
    tag_refs: dict[Tags, int] = {}
    series_out: list[list[Any]] = []
    for (name, kind, tags), windows in groups.items():
        windows.sort(key=lambda w: w.start_s)
        if name not in name_refs:
            name_refs[name] = _STATIC_INDEX.get(name, len(STATIC_NAMES) + len(names))
            if name not in _STATIC_INDEX:
                names.append(name)
        if tags not in tag_refs:
            tag_refs[tags] = len(tag_sets)
            tag_sets.append([part for pair in tags for part in pair])
        lengths = {w.length_s for w in windows}
        series: list[Any] = [
            name_refs[name],
            _KIND_INDEX[kind],
            tag_refs[tags],
            _encode_starts(windows, base_s),
            lengths.pop() if len(lengths) == 1 else [w.length_s for w in windows],
            [w.count for w in windows],
            _encode_stats(windows),
        ]
        if kind is MetricKind.TIMING:
            sketches = [w.sketch for w in windows if w.sketch is not None]
            alphas = {s.alpha for s in sketches}
            if len(sketches) != len(windows) or len(alphas) != 1:
                raise InvalidInput(
                    f"timing windows of {name!r} need sketches of one alpha", code="bad_window"
                )
            series += [alphas.pop(), [s.bins_to_wire() for s in sketches]]
        series_out.append(series)
    return [
        WIRE_VERSION,
        batch.seq,
        batch.dropped_batches_total,
        batch.dropped_windows_total,
        base_s,
        names,
        tag_sets,
        *series_out,
    ]


def _build_dictionary() -> zstandard.ZstdCompressionDict:
    # Raw content shaped like a batch of the baseline set: the header, one series per static
    # name with its usual kind, tags and sketch layout. zstd copies structure from it, which
    # matters most for the small batches of short upload intervals. No measured values go
    # in, so it fits any device equally.
    counters = {"host.net.rx_bytes", "host.net.tx_bytes", "inference.requests", "inference.errors"}
    timings = {"inference.latency_ms", "inference.score"}
    example: list[Any] = [WIRE_VERSION, 1, 0, 0, 1_772_438_400, []]
    example.append([[], ["model", "v1", "workload", "app"]])
    for ref, name in enumerate(STATIC_NAMES):
        kind = MetricKind.COUNTER if name in counters else MetricKind.GAUGE
        kind = MetricKind.TIMING if name in timings else kind
        series: list[Any] = [ref, _KIND_INDEX[kind], int(name.startswith("inference."))]
        series += [[0], 60, [6], [1, 1, 0, 0, 0, 0]]
        if kind is MetricKind.TIMING:
            series += [0.01, [[0, 160, [1, 0, 2, 1, 3, 2, 1, 0, 1, 0, 0, 1]]]]
        example.append(series)
    return zstandard.ZstdCompressionDict(
        msgpack.packb(example, use_bin_type=True), dict_type=zstandard.DICT_TYPE_RAWCONTENT
    )


_DICTIONARY = _build_dictionary()


def encode_batch(batch: Batch, level: int = COMPRESSION_LEVEL) -> bytes:
    """The wire bytes of `batch` (msgpack, then zstd with the built-in dictionary)."""
    return _compress(msgpack.packb(_to_plain(batch), use_bin_type=True), level)


def _compress(packed: bytes, level: int = COMPRESSION_LEVEL) -> bytes:
    compressor = zstandard.ZstdCompressor(
        level=level, dict_data=_DICTIONARY, write_checksum=True, write_content_size=True
    )
    return compressor.compress(packed)


# --- decoding --------------------------------------------------------------------------


class _Schema:
    """Raises bad_batch_schema errors that name where in the batch the fault is."""

    @staticmethod
    def fail(where: str, why: str) -> InvalidInput:
        return InvalidInput(f"bad telemetry batch at {where}: {why}", code="bad_batch_schema")

    @classmethod
    def int_in(cls, value: Any, low: int, high: int, where: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise cls.fail(where, f"expected an integer in [{low}, {high}]")
        return value

    @classmethod
    def list_of(cls, value: Any, where: str, min_len: int = 0, max_len: int = 1 << 20) -> list[Any]:
        if not isinstance(value, list) or not min_len <= len(value) <= max_len:
            raise cls.fail(where, f"expected a list of {min_len}..{max_len} items")
        return value

    @classmethod
    def text(cls, value: Any, where: str, max_chars: int) -> str:
        if not isinstance(value, str) or len(value) > max_chars:
            raise cls.fail(where, f"expected a string of at most {max_chars} characters")
        return value


def _decode_stats(raw: Any, counts: list[int], where: str) -> list[tuple[float, ...]]:
    """(min, max, last, sum) per window from `_encode_stats` output."""
    n = len(counts)
    items = _Schema.list_of(raw, where, 4 * n + 1, 4 * n + 2)
    places = _Schema.int_in(items[0], -1, MAX_DECIMAL_PLACES, f"{where}.places")
    if len(items) != (4 * n + 1 if places < 0 else 4 * n + 2):
        raise _Schema.fail(where, f"expected {4 * n} values")
    if places < 0:
        floats = items[1:]
        if not all(isinstance(x, float) and math.isfinite(x) for x in floats):
            raise _Schema.fail(where, "expected finite floats")
        rows = [tuple(floats[i + k * n] for k in range(4)) for i in range(n)]
    else:
        factor = _Schema.int_in(items[1], 1, _MAX_SCALED, f"{where}.factor")
        ints = [factor * _Schema.int_in(x, -_MAX_SCALED, _MAX_SCALED, where) for x in items[2:]]
        scale = 10**places
        rows = []
        low = 0
        for i in range(n):
            low += ints[i]
            span, last, excess = ints[n + i], ints[2 * n + i], ints[3 * n + i]
            total = (excess + counts[i] * low) / scale
            rows.append((low / scale, (low + span) / scale, (low + last) / scale, total))
    for i, (low, high, last, total) in enumerate(rows):
        if not low <= last <= high or not math.isfinite(total):
            raise _Schema.fail(f"{where}[{i}]", "expected min <= last <= max and a finite sum")
    return rows


def _decode_series(
    raw: Any, where: str, names: list[str], tag_sets: list[Tags], base_s: int
) -> list[Window]:
    series = _Schema.list_of(raw, where, 7, 9)
    name_ref = _Schema.int_in(series[0], 0, len(STATIC_NAMES) + len(names) - 1, f"{where}.name")
    static = name_ref < len(STATIC_NAMES)
    name = STATIC_NAMES[name_ref] if static else names[name_ref - len(STATIC_NAMES)]
    kind = _KIND_CODES[_Schema.int_in(series[1], 0, len(_KIND_CODES) - 1, f"{where}.kind")]
    if len(series) != (9 if kind is MetricKind.TIMING else 7):
        raise _Schema.fail(where, f"wrong number of fields for a {kind} series")
    tags = tag_sets[_Schema.int_in(series[2], 0, len(tag_sets) - 1, f"{where}.tags")]
    starts = _Schema.list_of(series[3], f"{where}.starts", 1, MAX_WINDOWS_PER_BATCH)
    n = len(starts)
    if isinstance(series[4], list):
        lengths = [_Schema.int_in(x, 1, MAX_WINDOW_S, f"{where}.lengths") for x in series[4]]
        if len(lengths) != n:
            raise _Schema.fail(f"{where}.lengths", f"expected {n} lengths")
    else:
        lengths = [_Schema.int_in(series[4], 1, MAX_WINDOW_S, f"{where}.lengths")] * n
    counts = [
        _Schema.int_in(c, 1, 2**53, f"{where}.counts")
        for c in _Schema.list_of(series[5], f"{where}.counts", n, n)
    ]
    stats = _decode_stats(series[6], counts, f"{where}.stats")
    sketches: list[DDSketch | None] = [None] * n
    if kind is MetricKind.TIMING:
        alpha = series[7]
        if not isinstance(alpha, float) or not 0.0 < alpha < 1.0:
            raise _Schema.fail(f"{where}.alpha", "expected a float in (0, 1)")
        bins = _Schema.list_of(series[8], f"{where}.sketches", n, n)
    windows: list[Window] = []
    start_s = base_s
    for i in range(n):
        at = f"{where}.window[{i}]"
        start_s += _Schema.int_in(starts[i], 0, MAX_START_S, f"{at}.start")
        if start_s > MAX_START_S:
            raise _Schema.fail(f"{at}.start", "start out of range")
        count = counts[i]
        low, high, last, total = stats[i]
        if kind is MetricKind.TIMING:
            try:
                sketch = DDSketch.from_bins(
                    alpha, bins[i], total=total, min_value=low, max_value=high
                )
            except InvalidInput as e:
                raise _Schema.fail(f"{at}.sketch", e.message) from None
            if sketch.count != count:
                raise _Schema.fail(f"{at}.sketch", "sketch count differs from window count")
            sketches[i] = sketch
        windows.append(
            Window(
                name, kind, tags, start_s, lengths[i], count, total, low, high, last, sketches[i]
            )
        )
        start_s += lengths[i]
    return windows


def _from_plain(plain: Any) -> Batch:
    top = _Schema.list_of(plain, "batch", 7, 7 + MAX_WINDOWS_PER_BATCH)
    if top[0] != WIRE_VERSION:
        raise InvalidInput(
            f"telemetry batch version {top[0]!r} is not supported (expected {WIRE_VERSION})",
            code="unsupported_batch_version",
        )
    seq = _Schema.int_in(top[1], 1, 2**63 - 1, "batch.seq")
    dropped_batches = _Schema.int_in(top[2], 0, 2**63 - 1, "batch.dropped_batches_total")
    dropped_windows = _Schema.int_in(top[3], 0, 2**63 - 1, "batch.dropped_windows_total")
    base_s = _Schema.int_in(top[4], 0, MAX_START_S, "batch.base_s")
    names = _Schema.list_of(top[5], "batch.names", 0, MAX_WINDOWS_PER_BATCH)
    for i, name in enumerate(names):
        _Schema.text(name, f"batch.names[{i}]", MAX_NAME_CHARS)
        if not NAME_RE.fullmatch(name):
            raise _Schema.fail(f"batch.names[{i}]", "not a valid metric name")
    tag_sets: list[Tags] = []
    for i, flat in enumerate(_Schema.list_of(top[6], "batch.tag_sets", 0, MAX_WINDOWS_PER_BATCH)):
        parts = _Schema.list_of(flat, f"batch.tag_sets[{i}]", 0, 2 * MAX_TAGS)
        texts = [_Schema.text(p, f"batch.tag_sets[{i}]", MAX_TAG_CHARS) for p in parts]
        if len(texts) % 2:
            raise _Schema.fail(f"batch.tag_sets[{i}]", "expected key, value pairs")
        tag_sets.append(tuple(zip(texts[::2], texts[1::2], strict=True)))
    windows: list[Window] = []
    for i, raw in enumerate(top[7:]):
        windows += _decode_series(raw, f"batch.series[{i}]", names, tag_sets, base_s)
        if len(windows) > MAX_WINDOWS_PER_BATCH:
            raise _Schema.fail("batch", f"more than {MAX_WINDOWS_PER_BATCH} windows")
    windows.sort(key=lambda w: (w.start_s, w.name, w.tags))  # the aggregator's order
    return Batch(seq, tuple(windows), dropped_batches, dropped_windows)


def _corrupt(why: str) -> InvalidInput:
    return InvalidInput(f"corrupt telemetry batch: {why}", code="corrupt_batch")


def decode_batch(
    data: bytes, *, max_bytes: int = MAX_BATCH_BYTES, max_decoded_bytes: int = MAX_DECODED_BYTES
) -> Batch:
    """Parse and validate wire bytes; raise InvalidInput / PayloadTooLarge on any fault."""
    if len(data) > max_bytes:
        raise PayloadTooLarge(
            f"telemetry batch of {len(data)} bytes exceeds {max_bytes}", code="batch_too_large"
        )
    try:
        declared = zstandard.get_frame_parameters(data).content_size
    except zstandard.ZstdError as e:
        raise _corrupt(f"not a zstd frame ({e})") from None
    if declared == zstandard.CONTENTSIZE_UNKNOWN:
        raise _corrupt("the zstd frame does not declare its size")
    if declared > max_decoded_bytes:
        raise PayloadTooLarge(
            f"telemetry batch expands to {declared} bytes, over {max_decoded_bytes}",
            code="batch_too_large",
        )
    decompressor = zstandard.ZstdDecompressor(dict_data=_DICTIONARY)
    try:
        packed = decompressor.decompress(data, max_output_size=max_decoded_bytes)
        # The one-shot call ignores bytes after the frame; a stream object reports them.
        stream = decompressor.decompressobj()
        stream.decompress(data)
    except zstandard.ZstdError as e:
        raise _corrupt(str(e)) from None
    if stream.unused_data:
        raise _corrupt("bytes after the zstd frame")
    try:
        plain = msgpack.unpackb(packed, raw=False, strict_map_key=True, use_list=True)
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError) as e:
        raise _corrupt(f"not msgpack ({type(e).__name__})") from None
    return _from_plain(plain)
