"""Updates as vectors in the ring Z/2**bits: fixed-point quantisation, PRG masks, packing.

Secure aggregation adds masks that cancel only in a finite ring, so every update is first
clipped to [-range, range] per coordinate and rounded stochastically (unbiased) to a signed
integer of `value_bits`; the ring is wide enough that the sum of `clients` such integers
never wraps: `ring_bits = value_bits + ceil(log2(clients))`. Masks are SHAKE-256 streams of
a 32-byte seed reduced to the ring. On the wire a vector is its `ring_bits`-bit words,
bit-packed: a masked vector is uniform, so no coder can do better.

>>> import numpy as np
>>> q = quantise(np.array([0.1, -0.2]), 1.0, 8, np.random.default_rng(0))
>>> bits = ring_bits_for(8, 2)
>>> unpack(pack(q % (1 << bits), bits), 2, bits).tolist() == (q % (1 << bits)).tolist()
True
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import numpy.typing as npt

from edgefleet.errors import InvalidInput

Ring = npt.NDArray[np.int64]  # elements of Z/2**bits, held in [0, 2**bits)
MAX_RING_BITS = 32


def ring_bits_for(value_bits: int, clients: int) -> int:
    """The ring width that holds the sum of `clients` signed `value_bits` integers."""
    bits = value_bits + max(0, math.ceil(math.log2(max(1, clients))))
    if bits > MAX_RING_BITS:
        raise InvalidInput(f"ring: {value_bits}-bit values of {clients} clients need {bits} bits")
    return bits


def value_limit(value_bits: int) -> int:
    return (1 << (value_bits - 1)) - 1


def quantise(
    update: npt.NDArray[np.floating], range_: float, value_bits: int, rng: np.random.Generator
) -> Ring:
    """Integers in [-limit, limit] standing for `update` clipped to [-range_, range_]."""
    limit = value_limit(value_bits)
    scaled = np.clip(np.asarray(update, dtype=np.float64), -range_, range_) * (limit / range_)
    floor = np.floor(scaled)
    rounded = floor + (rng.random(scaled.shape) < scaled - floor)
    clipped: Ring = np.clip(rounded, -limit, limit).astype(np.int64)
    return clipped


def dequantise(
    total: Ring, ring_bits: int, range_: float, value_bits: int
) -> npt.NDArray[np.float64]:
    """The real sum that `total` (a ring sum of quantised vectors) stands for."""
    signed = to_signed(total, ring_bits)
    return signed.astype(np.float64) * (range_ / value_limit(value_bits))


def to_signed(values: Ring, ring_bits: int) -> Ring:
    """Ring elements as integers in [-2**(bits-1), 2**(bits-1))."""
    half = 1 << (ring_bits - 1)
    return ((values + half) % (1 << ring_bits)) - half


def expand_mask(seed: bytes, length: int, ring_bits: int) -> Ring:
    """The mask a seed stands for: `length` uniform elements of the ring (SHAKE-256)."""
    if len(seed) != 32:
        raise InvalidInput("mask seed: expected 32 bytes")
    stream = hashlib.shake_256(seed).digest(4 * length)
    words = np.frombuffer(stream, dtype="<u4").astype(np.int64)
    return words & ((1 << ring_bits) - 1)


def pack(values: Ring, ring_bits: int) -> bytes:
    """Ring elements as a little-endian bit string of `ring_bits` per element."""
    if values.size and (values.min() < 0 or values.max() >= 1 << ring_bits):
        raise InvalidInput("ring: value out of range")
    bits = (values.astype(np.uint64)[:, None] >> np.arange(ring_bits, dtype=np.uint64)) & 1
    return np.packbits(bits.astype(np.uint8).ravel(), bitorder="little").tobytes()


def unpack(data: bytes, length: int, ring_bits: int) -> Ring:
    """The inverse of `pack`; InvalidInput when `data` is not exactly that long."""
    if len(data) != math.ceil(length * ring_bits / 8):
        raise InvalidInput(f"vector: expected {math.ceil(length * ring_bits / 8)} bytes")
    flat = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")
    bits = flat[: length * ring_bits].reshape(length, ring_bits).astype(np.int64)
    values: Ring = (bits << np.arange(ring_bits, dtype=np.int64)).sum(axis=1)
    return values
