"""Tensor codec and ONNX layout: chunks decode to exactly their bytes, whatever the numbers."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from edgefleet.artifacts.delta_format import KINDS, ElementKind
from edgefleet.artifacts.onnx_layout import find_tensor_spans
from edgefleet.artifacts.tensor_codec import decode_chunk, encode_chunk
from edgefleet.errors import InvalidInput

_FLOAT_DTYPES = {"f16": np.float16, "f32": np.float32, "f64": np.float64}
_EDITS = ["same", "noise", "sparse", "bits", "scale", "none"]


def _values(kind: ElementKind, rng: np.random.Generator, count: int) -> np.ndarray:
    """Plausible tensor contents of `kind`, with the odd NaN, infinity and -0.0 in floats."""
    if kind.name in _FLOAT_DTYPES:
        values = (rng.standard_normal(count) * 0.05).astype(_FLOAT_DTYPES[kind.name])
        specials = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0], dtype=values.dtype)
        values[rng.random(count) < 0.02] = rng.choice(specials)
        return values.view(f"u{kind.itemsize}")
    if kind.name == "bf16":
        return (rng.standard_normal(count).astype(np.float32).view(np.uint32) >> 16).astype(
            np.uint16
        )
    return rng.integers(0, 256, count * kind.itemsize, dtype=np.uint8).view(f"u{kind.itemsize}")


def _edit(kind: ElementKind, old: np.ndarray, how: str, rng: np.random.Generator) -> np.ndarray:
    """The same words changed the way an update changes them; `old` is unsigned words."""
    count = len(old)
    if how == "same":
        return old.copy()
    if how == "noise" and kind.name in _FLOAT_DTYPES:
        floats = old.view(_FLOAT_DTYPES[kind.name])
        with np.errstate(all="ignore"):
            moved = floats + (rng.standard_normal(count) * 1e-3).astype(floats.dtype)
        return moved.view(old.dtype)
    if how in ("noise", "scale") and kind.name not in _FLOAT_DTYPES | {"bf16": 0}:
        signed = old.view(f"i{kind.itemsize}").astype(np.float64)
        if how == "scale":  # a tensor re-quantized with a new scale and zero point
            signed = np.rint(signed * 0.93 + 2)
        signed += rng.integers(-2, 3, count)
        info = np.iinfo(f"i{kind.itemsize}")
        return np.clip(signed, info.min, info.max).astype(f"i{kind.itemsize}").view(old.dtype)
    if how == "sparse":
        new = old.copy()
        where = rng.random(count) < 0.1
        new[where] = _values(kind, rng, int(where.sum()))
        return new
    return _values(kind, rng, count)  # "bits": unrelated words


@st.composite
def chunk_pairs(draw: st.DrawFn) -> tuple[ElementKind, bytes | None, bytes, int]:
    kind = KINDS[draw(st.sampled_from(sorted(KINDS)))]
    count = draw(st.integers(0, 700))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    how = draw(st.sampled_from(_EDITS))
    old = _values(kind, rng, count)
    new = _edit(kind, old, how, rng)
    return kind, None if how == "none" else old.tobytes(), new.tobytes(), count


@settings(max_examples=150)
@given(chunk_pairs(), st.booleans())
def test_every_chunk_round_trips(
    pair: tuple[ElementKind, bytes | None, bytes, int], thorough: bool
) -> None:
    kind, old, new, count = pair
    blob = encode_chunk(kind, new, old, thorough=thorough)
    assert decode_chunk(kind, blob, old, count) == new


def test_an_unchanged_chunk_costs_a_few_bytes() -> None:
    kind = KINDS["f32"]
    data = _values(kind, np.random.default_rng(1), 10_000).tobytes()
    assert len(encode_chunk(kind, data, data)) < 16


def test_a_requantized_int8_tensor_is_predicted_from_its_old_codes() -> None:
    kind = KINDS["i8"]
    rng = np.random.default_rng(2)
    real = rng.standard_normal(50_000) * 0.05
    old = np.clip(np.rint(real / 0.0012), -127, 127).astype(np.int8)
    new = np.clip(np.rint(real / 0.0013), -127, 127).astype(np.int8)  # only the scale moved
    blob = encode_chunk(kind, new.tobytes(), old.tobytes())
    assert decode_chunk(kind, blob, old.tobytes(), len(new)) == new.tobytes()
    assert len(blob) < len(new) * 0.15


@settings(max_examples=80)
@given(chunk_pairs(), st.data())
def test_a_damaged_chunk_is_refused_or_caught_by_the_final_hash(
    pair: tuple[ElementKind, bytes | None, bytes, int], data: st.DataObject
) -> None:
    # A chunk carries no checksum of its own (the delta's and the output's hashes do that
    # job), so damage must either be refused with corrupt_delta or decode to other bytes.
    kind, old, new, count = pair
    blob = bytearray(encode_chunk(kind, new, old))
    position = data.draw(st.integers(0, len(blob) - 1))
    blob[position] ^= data.draw(st.integers(1, 255))
    try:
        decoded = decode_chunk(kind, bytes(blob), old, count)
    except InvalidInput as e:
        assert e.code == "corrupt_delta"
    else:
        assert len(decoded) == len(new)


def _model_bytes() -> tuple[bytes, dict[str, np.ndarray]]:
    rng = np.random.default_rng(3)
    arrays: dict[str, np.ndarray] = {
        "w": rng.standard_normal((16, 8)).astype(np.float32),
        "q": rng.integers(-128, 127, (32,), dtype=np.int8),
        "h": rng.standard_normal((4, 4)).astype(np.float16),
    }
    inits = [numpy_helper.from_array(a, name) for name, a in arrays.items()]
    packed = helper.make_tensor("packed", TensorProto.FLOAT, [3], [1.0, 2.0, 3.0])
    constant = helper.make_node("Constant", [], ["c"], value=packed)
    nodes = [constant] + [helper.make_node("Identity", [n], [f"{n}_out"]) for n in arrays]
    graph = helper.make_graph(
        nodes,
        "g",
        [],
        [helper.make_tensor_value_info(f"{n}_out", TensorProto.FLOAT, None) for n in arrays],
        inits,
    )
    model = helper.make_model(graph)
    return model.SerializeToString(), {**arrays, "packed": np.array([1, 2, 3], np.float32)}


def test_onnx_layout_finds_every_payload_by_byte_offset() -> None:
    data, arrays = _model_bytes()
    spans = {s.name: s for s in find_tensor_spans(data)}
    assert set(spans) == set(arrays)
    for name, array in arrays.items():
        span = spans[name]
        assert data[span.offset : span.offset + span.length] == array.tobytes()
    assert spans["w"].element == "f32" and spans["w"].dims == (16, 8)
    assert spans["q"].element == "i8" and spans["h"].element == "f16"


@pytest.mark.parametrize(
    "data", [b"", b"\x00" * 100, b"hello world, this is not a model", bytes(range(256)) * 8]
)
def test_onnx_layout_finds_nothing_in_other_files(data: bytes) -> None:
    assert find_tensor_spans(data) == []


@settings(max_examples=60)
@given(st.integers(0, 10_000), st.binary(min_size=1, max_size=8))
def test_onnx_layout_survives_damaged_models(position: int, junk: bytes) -> None:
    data, _ = _model_bytes()
    at = position % len(data)
    damaged = data[:at] + junk + data[at + len(junk) :]
    for span in find_tensor_spans(damaged):
        assert span.offset >= 0 and span.offset + span.length <= len(damaged)


@st.composite
def predicted_chunks(draw: st.DrawFn) -> tuple[ElementKind, bytes, bytes, bytes, int]:
    """A float chunk, its update, and a prediction of it: good, poor, or unrelated words."""
    kind = KINDS[draw(st.sampled_from(sorted(_FLOAT_DTYPES)))]
    count = draw(st.integers(1, 700))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    old = _values(kind, rng, count)
    new = _edit(kind, old, draw(st.sampled_from(["noise", "sparse", "same"])), rng)
    how = draw(st.sampled_from(["halfway", "old", "bits"]))
    if how == "halfway":
        dtype = _FLOAT_DTYPES[kind.name]
        with np.errstate(all="ignore"):
            mid = (old.view(dtype).astype(np.float64) + new.view(dtype).astype(np.float64)) / 2
            predicted = mid.astype(dtype).view(old.dtype)
    elif how == "old":
        predicted = old
    else:
        predicted = _values(kind, rng, count)
    return kind, old.tobytes(), new.tobytes(), predicted.tobytes(), count


@settings(max_examples=100)
@given(predicted_chunks(), st.booleans())
def test_a_predicted_chunk_round_trips(
    chunk: tuple[ElementKind, bytes, bytes, bytes, int], thorough: bool
) -> None:
    kind, old, new, predicted, count = chunk
    blob = encode_chunk(kind, new, old, thorough=thorough, predicted=predicted)
    assert decode_chunk(kind, blob, old, count, predicted) == new


def test_a_good_prediction_shrinks_a_chunk_and_is_needed_to_decode_it() -> None:
    kind = KINDS["f32"]
    rng = np.random.default_rng(4)
    old = (rng.standard_normal(20_000) * 0.05).astype(np.float32)
    update = (rng.standard_normal(20_000) * 1e-3).astype(np.float32)
    new = old + update
    predicted = old + update + (rng.standard_normal(20_000) * 1e-5).astype(np.float32)
    plain = encode_chunk(kind, new.tobytes(), old.tobytes())
    blob = encode_chunk(kind, new.tobytes(), old.tobytes(), predicted=predicted.tobytes())
    assert len(blob) < len(plain) * 0.8
    assert decode_chunk(kind, blob, old.tobytes(), len(new), predicted.tobytes()) == new.tobytes()
    with pytest.raises(InvalidInput) as caught:
        decode_chunk(kind, blob, old.tobytes(), len(new))
    assert caught.value.code == "corrupt_delta"
