"""A training job's model on the wire and on disk: weights as one float32 vector, each
round's step as the survivors' ring sum, both coded with the tensor codec.

A device that holds round r's weights needs only round r+1's step to compute round r+1's
weights exactly (`core.learning.job.apply_step_values`, the same arithmetic the control
plane runs), so rounds travel as steps: small integers (the mean update on the updates'
grid), which the codec packs to a few bits each. A device without the weights gets them whole. Every
result is checked against the sha256 the control plane names.

    step = msgpack {"range": r, "vbits": value_bits, "len": elements,
                    "chunks": [tensor-codec i8 (i16 over 8 bits) chunk, ...]}
    weights = msgpack {"len": elements, "chunks": [tensor-codec f32 chunk, ...]}
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from typing import Any

import msgpack
import numpy as np
import numpy.typing as npt

from edgefleet.artifacts.delta_format import CHUNK_ELEMENTS, KINDS, ElementKind
from edgefleet.artifacts.tensor_codec import decode_chunk, encode_chunk
from edgefleet.core.learning.job import apply_step_values
from edgefleet.core.learning.ring import Ring
from edgefleet.errors import InvalidInput

Weights = npt.NDArray[np.float32]
LAYERS = ("W1", "b1", "W2", "b2")
MAX_ELEMENTS = 1 << 24
_STEP_KINDS = {True: ("i8", "<i1"), False: ("i16", "<i2")}  # by value_bits <= 8: codec, numpy


def _kind(name: str) -> ElementKind:
    return KINDS[name]


def _encode(kind: ElementKind, data: npt.NDArray[Any]) -> list[bytes]:
    raw = data.tobytes()
    step = CHUNK_ELEMENTS * kind.itemsize
    return [encode_chunk(kind, raw[i : i + step], None) for i in range(0, len(raw), step)] or []


def _decode(kind: ElementKind, chunks: object, length: int, dtype: str) -> npt.NDArray[Any]:
    if not isinstance(chunks, list) or not 0 <= length <= MAX_ELEMENTS:
        raise InvalidInput("training model: malformed")
    parts, left = [], length
    for chunk in chunks:
        if not isinstance(chunk, bytes) or left <= 0:
            raise InvalidInput("training model: malformed")
        count = min(left, CHUNK_ELEMENTS)
        parts.append(decode_chunk(kind, chunk, None, count))
        left -= count
    if left:
        raise InvalidInput("training model: too few elements")
    return np.frombuffer(b"".join(parts), dtype=dtype).copy()


def weights_sha256(weights: Weights) -> str:
    return hashlib.sha256(weights.astype("<f4").tobytes()).hexdigest()


def encode_weights(weights: Weights) -> bytes:
    chunks = _encode(_kind("f32"), weights.astype("<f4"))
    return msgpack.packb({"len": int(weights.size), "chunks": chunks})


def decode_weights(blob: bytes) -> Weights:
    data = _unpack(blob)
    return _decode(_kind("f32"), data.get("chunks"), int(data.get("len", -1)), "<f4")


def encode_step(step: Ring, range_: float, value_bits: int) -> bytes:
    """A round's step (core.learning.job.server_step), coded for the devices."""
    kind, dtype = _STEP_KINDS[value_bits <= 8]
    data = {
        "range": range_,
        "vbits": value_bits,
        "len": int(step.size),
        "chunks": _encode(_kind(kind), step.astype(dtype)),
    }
    return msgpack.packb(data)


def apply_step(weights: Weights, step: bytes) -> Weights:
    """The weights after one round's step."""
    data = _unpack(step)
    try:
        length, value_bits = int(data["len"]), int(data["vbits"])
        if length != weights.size or not 2 <= value_bits <= 16:
            raise InvalidInput("training step: does not fit the model")
        kind, dtype = _STEP_KINDS[value_bits <= 8]
        values = _decode(_kind(kind), data["chunks"], length, dtype).astype(np.int64)
        return apply_step_values(weights, values, float(data["range"]), value_bits)
    except (KeyError, TypeError, ValueError):
        raise InvalidInput("training step: malformed") from None


def _unpack(blob: bytes) -> dict[str, Any]:
    try:
        data = msgpack.unpackb(blob)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
        raise InvalidInput("training model: not msgpack") from None
    if not isinstance(data, dict):
        raise InvalidInput("training model: malformed")
    return data


def read_npz(blob: bytes) -> tuple[Weights, tuple[int, int, int]]:
    """The weights of an .npz with the MLP's W1, b1, W2, b2, and its layer sizes."""
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
            layers = {name: np.asarray(npz[name], dtype=np.float32) for name in LAYERS}
    except (KeyError, ValueError, OSError, zipfile.BadZipFile) as e:
        raise InvalidInput(
            f"weights file: expected an .npz with {', '.join(LAYERS)} ({e})"
        ) from None
    return _join(layers)


def _join(layers: dict[str, npt.NDArray[np.float32]]) -> tuple[Weights, tuple[int, int, int]]:
    w1, b1, w2, b2 = (layers[n] for n in LAYERS)
    if not (
        w1.ndim == 2
        and w2.ndim == 2
        and b1.shape == (w1.shape[1],)
        and w2.shape[0] == w1.shape[1]
        and b2.shape == (w2.shape[1],)
    ):
        raise InvalidInput("weights: W1, b1, W2, b2 do not make a two-layer perceptron")
    vector = np.concatenate([a.ravel() for a in (w1, b1, w2, b2)]).astype(np.float32)
    return vector, (int(w1.shape[0]), int(w1.shape[1]), int(w2.shape[1]))


def split_weights(weights: Weights, sizes: tuple[int, int, int]) -> dict[str, Weights]:
    i, h, o = sizes
    shapes = {"W1": (i, h), "b1": (h,), "W2": (h, o), "b2": (o,)}
    out, at = {}, 0
    for name, shape in shapes.items():
        size = int(np.prod(shape))
        out[name] = weights[at : at + size].reshape(shape)
        at += size
    return out


def write_npz(weights: Weights, sizes: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    layers: dict[str, Any] = dict(split_weights(weights, sizes))
    np.savez(buffer, **layers)
    return buffer.getvalue()


def read_onnx(blob: bytes) -> tuple[Weights, tuple[int, int, int]]:
    """The weights of an ONNX two-layer perceptron (model_builder.build_mlp's shape)."""
    import onnx  # the control plane's, not the device's
    from onnx import numpy_helper

    try:
        model = onnx.load_from_string(blob)
        found = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        return _join({n: np.asarray(found[n], dtype=np.float32) for n in LAYERS})
    except (KeyError, ValueError, onnx.onnx_cpp2py_export.checker.ValidationError) as e:
        raise InvalidInput(f"ONNX model: expected initializers {', '.join(LAYERS)} ({e})") from None


def write_onnx(source: bytes, weights: Weights, sizes: tuple[int, int, int]) -> bytes:
    """`source` (an ONNX MLP) with its weights replaced."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load_from_string(source)
    layers = split_weights(weights, sizes)
    for tensor in model.graph.initializer:
        if tensor.name in layers:
            tensor.CopyFrom(numpy_helper.from_array(layers[tensor.name], tensor.name))
    return model.SerializeToString()
