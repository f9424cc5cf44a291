"""A round's model on the wire: steps and weights coded with the tensor codec come back
exactly, so a device computes bit for bit the weights the control plane names."""

from __future__ import annotations

import numpy as np
import pytest

from edgefleet.artifacts.training_model import (
    apply_step,
    decode_weights,
    encode_step,
    encode_weights,
    read_npz,
    weights_sha256,
    write_npz,
)
from edgefleet.core.learning.job import apply_step_values, server_step
from edgefleet.core.learning.ring import quantise, ring_bits_for
from edgefleet.errors import InvalidInput


def test_a_step_gives_the_control_planes_weights_exactly() -> None:
    rng = np.random.default_rng(1)
    weights = rng.normal(0, 0.3, 70_000).astype(np.float32)  # more than one codec chunk
    bits = ring_bits_for(8, 5)
    total = np.sum([quantise(rng.normal(0, 0.05, weights.size), 0.25, 8, rng)
                    for _ in range(5)], axis=0) % (1 << bits)  # fmt: skip
    values = server_step(total, 5, bits, 0.25, 8, rng)
    plane = apply_step_values(weights, values, 0.25, 8)
    step = encode_step(values, 0.25, 8)
    device = apply_step(decode_weights(encode_weights(weights)), step)
    assert weights_sha256(device) == weights_sha256(plane)
    assert len(step) < weights.size  # under a byte a weight, against the 4 of a float


def test_malformed_models_are_refused() -> None:
    weights = np.zeros(10, dtype=np.float32)
    with pytest.raises(InvalidInput):
        apply_step(weights, b"\x93nonsense")
    with pytest.raises(InvalidInput):  # a step of another length
        apply_step(weights, encode_step(np.zeros(11, dtype=np.int64), 0.25, 8))
    with pytest.raises(InvalidInput):
        decode_weights(b"\x81\xa3len\x05")
    with pytest.raises(InvalidInput):
        read_npz(b"not a zip")


def test_npz_weights_round_trip() -> None:
    weights = np.arange(4 * 3 + 3 + 3 * 2 + 2, dtype=np.float32)
    back, sizes = read_npz(write_npz(weights, (4, 3, 2)))
    assert sizes == (4, 3, 2) and (back == weights).all()
