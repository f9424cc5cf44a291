from __future__ import annotations

import contextlib
import copy
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import msgpack
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from edgefleet.core.telemetry import wire
from edgefleet.core.telemetry.windows import Aggregator, MetricKind, MetricPoint, Window
from edgefleet.core.telemetry.wire import Batch, decode_batch, encode_batch
from edgefleet.errors import InvalidInput, PayloadTooLarge

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def windows_from(points: list[tuple[float, str, MetricKind, float, str]]) -> tuple[Window, ...]:
    agg = Aggregator(lambda name: 10 if name.endswith("fast") else 60)
    out: list[Window] = []
    for second, name, kind, value, model in sorted(points):
        tags = (("model", model),) if model else ()
        agg.add(MetricPoint(name, kind, value, tags), T0 + timedelta(seconds=second))
    out += agg.close_all(T0 + timedelta(seconds=1000))
    return tuple(out)


def sample_batch(seed: int = 1, seq: int = 7) -> Batch:
    rng = random.Random(seed)
    points = []
    for i in range(600):
        points.append(
            (
                i * 0.5,
                "inference.latency_ms",
                MetricKind.TIMING,
                round(rng.lognormvariate(3, 0.4), 3),
                "v3",
            )
        )
        points.append((i * 0.5, "inference.requests", MetricKind.COUNTER, 1.0, "v3"))
        if i % 20 == 0:
            points.append(
                (i * 0.5, "host.cpu.percent", MetricKind.GAUGE, round(rng.uniform(0, 100), 1), "")
            )
            points.append((i * 0.5, "custom.thing.fast", MetricKind.GAUGE, rng.uniform(-1, 1), ""))
            points.append(
                (
                    i * 0.5,
                    "host.memory.used_bytes",
                    MetricKind.GAUGE,
                    float(rng.randrange(1 << 40)),
                    "",
                )
            )
    return Batch(seq, windows_from(points), dropped_batches_total=2, dropped_windows_total=31)


def test_a_batch_round_trips_exactly() -> None:
    batch = sample_batch()
    assert decode_batch(encode_batch(batch)) == batch


def test_an_empty_batch_carries_only_the_drop_report() -> None:
    batch = Batch(3, (), dropped_batches_total=5, dropped_windows_total=80)
    assert decode_batch(encode_batch(batch)) == batch


values_st = st.one_of(
    st.floats(min_value=-1e12, max_value=1e12, allow_nan=False),
    st.integers(min_value=-(2**60), max_value=2**60).map(float),
    st.decimals(min_value=-1000, max_value=1000, places=3).map(float),
    st.sampled_from([0.0, -0.0, 1e-300, 1.7e308 / 1e10, 0.1, 1 / 3]),
)
points_st = st.lists(
    st.tuples(
        st.floats(min_value=0, max_value=900),
        st.sampled_from(["host.cpu.percent", "app.queue_depth", "app.x.fast", "inference.score"]),
        st.sampled_from(list(MetricKind)),
        values_st,
        st.sampled_from(["", "a", "b"]),
    ),
    max_size=150,
)


@settings(max_examples=150)
@given(points_st, st.integers(min_value=1, max_value=2**62))
def test_any_aggregated_windows_round_trip(points: list[Any], seq: int) -> None:
    batch = Batch(seq, windows_from(points))
    assert decode_batch(encode_batch(batch)) == batch


def test_names_outside_the_static_table_are_sent_once() -> None:
    batch = sample_batch()
    packed = zstandard.ZstdDecompressor(dict_data=wire._DICTIONARY).decompress(encode_batch(batch))
    assert packed.count(b"custom.thing.fast") == 1
    assert b"host.cpu.percent" not in packed


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not zstd at all",
        encode_batch(sample_batch())[:-3],
        encode_batch(sample_batch()) + b"\0",
        encode_batch(sample_batch()) * 2,
        wire._compress(b"\xc1\xc1\xc1"),  # never-used msgpack byte
        wire._compress(msgpack.packb([1, 2]) + b"\x01"),  # trailing msgpack
        zstandard.ZstdCompressor(write_content_size=False).compress(b"\x90"),
    ],
)
def test_corrupt_batches_are_refused(data: bytes) -> None:
    with pytest.raises(InvalidInput) as err:
        decode_batch(data)
    assert err.value.code == "corrupt_batch"


def test_a_flipped_bit_is_caught_by_the_checksum() -> None:
    data = bytearray(encode_batch(sample_batch()))
    for position in range(20, len(data), 37):
        flipped = bytearray(data)
        flipped[position] ^= 0x10
        with pytest.raises(InvalidInput):
            decode_batch(bytes(flipped))


def test_oversize_batches_are_refused_before_decompressing() -> None:
    with pytest.raises(PayloadTooLarge) as err:
        decode_batch(b"\0" * (wire.MAX_BATCH_BYTES + 1))
    assert err.value.code == "batch_too_large"
    bomb = wire._compress(b"\x90" * (wire.MAX_DECODED_BYTES + 1))
    assert len(bomb) < 2000
    with pytest.raises(PayloadTooLarge):
        decode_batch(bomb)


def plain_of(batch: Batch) -> list[Any]:
    return wire._to_plain(batch)


def encode_plain(plain: Any) -> bytes:
    return wire._compress(msgpack.packb(plain, use_bin_type=True))


def _mutated(change: Any) -> list[Any]:
    plain = plain_of(sample_batch())
    change(plain)
    return plain


@pytest.mark.parametrize(
    ("change", "code"),
    [
        (lambda p: p.__setitem__(0, 99), "unsupported_batch_version"),
        (lambda p: p.__setitem__(1, 0), "bad_batch_schema"),
        (lambda p: p.__setitem__(1, "7"), "bad_batch_schema"),
        (lambda p: p.__setitem__(3, -1), "bad_batch_schema"),
        (lambda p: p.__setitem__(5, ["bad name!"]), "bad_batch_schema"),
        (lambda p: p.__setitem__(6, [["odd"]]), "bad_batch_schema"),
        (lambda p: p[7].__setitem__(0, 10_000), "bad_batch_schema"),
        (lambda p: p[7].__setitem__(1, 5), "bad_batch_schema"),
        (lambda p: p[7].__setitem__(4, 0), "bad_batch_schema"),
        (lambda p: p[7][3].__setitem__(0, -5), "bad_batch_schema"),
        (lambda p: p[7][5].__setitem__(0, 0), "bad_batch_schema"),
        (lambda p: p[7].append(1), "bad_batch_schema"),
        (lambda p: p.__setitem__(7, {"a": 1}), "bad_batch_schema"),
    ],
)
def test_schema_violations_are_refused_with_a_code(change: Any, code: str) -> None:
    with pytest.raises(InvalidInput) as err:
        decode_batch(encode_plain(_mutated(change)))
    assert err.value.code == code


def test_a_timing_whose_sketch_disagrees_with_its_count_is_refused() -> None:
    plain = plain_of(sample_batch())
    timing = next(s for s in plain[7:] if s[1] == 2)
    timing[8][0][0] += 1  # one more value in the zero bucket than the window counted
    with pytest.raises(InvalidInput) as err:
        decode_batch(encode_plain(plain))
    assert "sketch" in err.value.message


def test_min_above_max_is_refused() -> None:
    plain = plain_of(sample_batch())
    gauge = next(s for s in plain[7:] if s[1] == 1 and s[6][0] >= 0)
    n = len(gauge[5])
    gauge[6][2 + n] = -1  # [places, factor, n min deltas, spans...]: the first span
    with pytest.raises(InvalidInput) as err:
        decode_batch(encode_plain(plain))
    assert err.value.code == "bad_batch_schema"


junk_st = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(),
    st.text(max_size=5),
    st.binary(max_size=5),
    st.lists(st.integers(min_value=-3, max_value=3), max_size=3),
)


def _leaf_paths(node: Any, path: tuple[int, ...] = ()) -> list[tuple[int, ...]]:
    if isinstance(node, list):
        return [path] + [p for i, child in enumerate(node) for p in _leaf_paths(child, (*path, i))]
    return [path]


PLAIN = plain_of(sample_batch())
PATHS = _leaf_paths(PLAIN)[1:]


@settings(max_examples=300)
@given(st.sampled_from(PATHS), junk_st)
def test_any_mutation_decodes_or_raises_invalid_input(path: tuple[int, ...], junk: Any) -> None:
    plain = copy.deepcopy(PLAIN)
    node = plain
    for index in path[:-1]:
        node = node[index]
    node[path[-1]] = junk
    with contextlib.suppress(InvalidInput):
        decode_batch(encode_plain(plain))


@settings(max_examples=200)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_crash_the_decoder(data: bytes) -> None:
    with contextlib.suppress(InvalidInput):
        decode_batch(data)


@settings(max_examples=100)
@given(st.binary(max_size=200))
def test_arbitrary_msgpack_payloads_never_crash_the_decoder(data: bytes) -> None:
    with contextlib.suppress(InvalidInput):
        decode_batch(wire._compress(data))


def test_windows_that_cannot_be_sent_are_refused_at_encoding() -> None:
    window = Window("bad name", MetricKind.GAUGE, (), 0, 60, 1, 1.0, 1.0, 1.0, 1.0)
    with pytest.raises(InvalidInput):
        encode_batch(Batch(1, (window,)))
    timing = Window("t", MetricKind.TIMING, (), 0, 60, 1, 1.0, 1.0, 1.0, 1.0, None)
    with pytest.raises(InvalidInput):
        encode_batch(Batch(1, (timing,)))
