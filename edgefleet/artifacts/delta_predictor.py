"""Low-rank predictor: a fine-tune's update of a weight matrix, as a few integer factors.

Gradient steps on a layer are sums of outer products, so much of a fine-tune's update
`new - old` of a (rows x cols) matrix lies in a few directions. A TENSOR operation may carry
a predictor: int8 factors A (rows x rank) and B (rank x cols), one integer multiplier per
rank and one float `unit`, with which every element's prediction is

    predicted[i, j] = float(old[i, j] + unit * sum_r(A[i, r] * multiplier[r] * B[r, j]))

computed in float64 and rounded once to the tensor's kind. The sum is of integers below
2**53, so any order of summation (any BLAS) gives exactly the same float64 on every
machine, and the rest is correctly rounded IEEE arithmetic: encoder and device predict
the same bits. The tensor codec then codes each changed element's step from its prediction
instead of from its old value (transform SUB with "p"), which on the benchmark's trained
pairs saves 4-9% of the bytes; the encoder keeps the predictor only when it pays for its
factors.

Factor blob layout: two streams, A then B (row-major int8), each `u8 codec, u32 packed
length, packed bytes` (stream_codec); their raw lengths follow from rows, cols and rank.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from edgefleet.artifacts.delta_format import ElementKind, LowRank, corrupt
from edgefleet.artifacts.stream_codec import pack_stream, unpack_stream

F64 = npt.NDArray[np.float64]
I8 = npt.NDArray[np.int8]

_STREAM = struct.Struct("<BI")
_FLOATS: dict[str, type[np.floating[Any]]] = {
    "f16": np.float16,
    "f32": np.float32,
    "f64": np.float64,
}
_FACTOR_MAX = 127
_MULTIPLIER_BITS = 24
# Ranks tried, smallest first; more rarely pays for its factors on a layer of a few MB.
RANKS = (8, 16, 32)
_OVERSAMPLE = 8
_POWER_ITERATIONS = 2
# The share of the update's energy its leading directions must hold to be worth a trial
# (white noise on a 704 x 704 matrix puts under 20% in its 32 leading ones).
_MIN_CAPTURED = 0.3
# Below these a matrix's factors cost about what they save.
MIN_SIDE = 32
MIN_ELEMENTS = 1 << 14


@dataclass(frozen=True)
class Factors:
    """Decoded factors of one tensor; `predict` gives any run of its elements."""

    a: F64  # rows x rank, already multiplied by the multipliers (exact integers)
    b: F64  # rank x cols (exact integers)
    unit: float
    cols: int

    def predict(self, kind: ElementKind, old: bytes, first: int) -> bytes:
        """The predicted bytes of the elements from `first` on, as many as `old` holds."""
        dtype = np.dtype(_FLOATS[kind.name]).newbyteorder("<")
        base = np.frombuffer(old, dtype=dtype)
        count = len(base)
        if not count:
            return b""
        top, bottom = first // self.cols, (first + count - 1) // self.cols + 1
        product = self.a[top:bottom] @ self.b
        step = product.reshape(-1)[first - top * self.cols : first - top * self.cols + count]
        with np.errstate(all="ignore"):
            predicted = (base.astype(np.float64) + step * self.unit).astype(dtype)
        return predicted.tobytes()


def supports(kind: ElementKind, dims: tuple[int, ...]) -> bool:
    """Whether a tensor of this kind and shape may carry a predictor."""
    if kind.name not in _FLOATS or len(dims) < 2:
        return False
    rows, cols = dims[0], int(np.prod(dims[1:]))
    return min(rows, cols) >= MIN_SIDE and rows * cols >= MIN_ELEMENTS


def matrix_shape(dims: tuple[int, ...]) -> tuple[int, int]:
    return dims[0], int(np.prod(dims[1:]))


def fit(
    kind: ElementKind, old: bytes, new: bytes, rows: int, cols: int, max_rank: int
) -> tuple[F64, F64] | None:
    """Leading singular directions of `new - old` (randomized, seeded): U*s and V^T."""
    dtype = np.dtype(_FLOATS[kind.name]).newbyteorder("<")
    with np.errstate(all="ignore"):
        delta = np.frombuffer(new, dtype=dtype).astype(np.float64) - np.frombuffer(
            old, dtype=dtype
        ).astype(np.float64)
    if not np.isfinite(delta).all():
        return None
    matrix = delta.reshape(rows, cols)
    rank = min(max_rank, rows, cols)
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(matrix @ rng.standard_normal((cols, rank + _OVERSAMPLE)))
    for _ in range(_POWER_ITERATIONS):
        z, _ = np.linalg.qr(matrix.T @ q)
        q, _ = np.linalg.qr(matrix @ z)
    u, s, vt = np.linalg.svd(q.T @ matrix, full_matrices=False)
    # Noise spreads its energy over every direction; an update worth predicting does not.
    if float((s[:rank] ** 2).sum()) < _MIN_CAPTURED * float((matrix**2).sum()):
        return None
    return (q @ u)[:, :rank] * s[:rank], vt[:rank]


def quantize(us: F64, vt: F64, rank: int) -> tuple[I8, I8, float, list[int]] | None:
    """int8 factors of the first `rank` directions, a unit and a multiplier per rank."""
    a, b = us[:, :rank], vt[:rank]
    scale_a = np.abs(a).max(axis=0) / _FACTOR_MAX
    scale_b = np.abs(b).max(axis=1) / _FACTOR_MAX
    if not (scale_a > 0).all() or not (scale_b > 0).all():
        return None
    a_q = np.rint(a / scale_a).astype(np.int8)
    b_q = np.rint(b / scale_b[:, None]).astype(np.int8)
    weights = scale_a * scale_b
    unit = float(weights.max()) / (1 << _MULTIPLIER_BITS)
    if not np.isfinite(unit) or unit <= 0:
        return None
    multipliers = [int(m) for m in np.rint(weights / unit)]
    return a_q, b_q, unit, multipliers


def factors_of(a_q: I8, b_q: I8, unit: float, multipliers: list[int] | tuple[int, ...]) -> Factors:
    scaled = a_q.astype(np.float64) * np.array(multipliers, dtype=np.float64)
    return Factors(scaled, b_q.astype(np.float64), unit, b_q.shape[1])


def encode_factors(a_q: I8, b_q: I8, *, thorough: bool = True) -> bytes:
    parts = []
    for matrix in (a_q, b_q):
        codec, packed = pack_stream(matrix.tobytes(), thorough=thorough)
        parts += [_STREAM.pack(int(codec), len(packed)), packed]
    return b"".join(parts)


def decode_factors(blob: bytes, predictor: LowRank) -> Factors:
    """The factors a TENSOR operation's predictor names; corrupt_delta if the blob lies."""
    matrices = []
    offset = 0
    for shape in ((predictor.rows, predictor.rank), (predictor.rank, predictor.cols)):
        if offset + _STREAM.size > len(blob):
            raise corrupt("a predictor's factors are cut short")
        codec, length = _STREAM.unpack_from(blob, offset)
        offset += _STREAM.size
        if offset + length > len(blob):
            raise corrupt("a predictor's factors are cut short")
        raw = unpack_stream(codec, blob[offset : offset + length], shape[0] * shape[1])
        matrices.append(np.frombuffer(raw, dtype=np.int8).reshape(shape))
        offset += length
    if offset != len(blob):
        raise corrupt("trailing bytes after a predictor's factors")
    return factors_of(matrices[0], matrices[1], predictor.unit, predictor.multipliers)
