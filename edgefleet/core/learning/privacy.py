"""Differential privacy of a training job: the Gaussian mechanism on the aggregate, and its
accounting with Rényi DP (Mironov, CSF 2017).

Each client clips its update to L2 norm C and adds N(0, (z C)^2 / t) per coordinate, t the
round's threshold (minClients): a round that aggregates at least t updates carries noise of
at least (z C)^2 in total, which is the Gaussian mechanism with noise multiplier z for one
device's contribution (sensitivity C, add/remove one device). The cohort is chosen by the
planner, not sampled at random, so no amplification by subsampling is claimed: each round
is a full Gaussian mechanism, composed over the rounds:

    RDP(alpha) = rounds * alpha / (2 z^2)
    epsilon    = min over alpha > 1 of  RDP(alpha) + log(1/delta) / (alpha - 1)

(the RDP to (epsilon, delta) conversion of Mironov, Prop. 3). This bound is simple and
correct, and loose against accounting that assumes random sampling; docs/learning.md says
what it assumes (the clients add their noise honestly; rounding after the noise is ignored).

>>> round(epsilon(noise_multiplier=1.0, rounds=10, delta=1e-5), 2)
20.18
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

# Orders searched: dense where the optimum usually lies, and far enough for large noise.
ORDERS = (
    *(1.0 + x / 10.0 for x in range(1, 100)),
    *(float(a) for a in range(11, 64)),
    128.0,
    256.0,
    512.0,
    1024.0,
)


def rdp(noise_multiplier: float, rounds: int, order: float) -> float:
    """The Rényi DP of `rounds` Gaussian mechanisms at `order`."""
    return rounds * order / (2.0 * noise_multiplier**2)


def epsilon(noise_multiplier: float, rounds: int, delta: float) -> float:
    """The epsilon at which `rounds` rounds are (epsilon, delta)-DP; inf without noise."""
    if noise_multiplier <= 0 or rounds <= 0:
        return math.inf if rounds > 0 else 0.0
    return min(rdp(noise_multiplier, rounds, a) + math.log(1.0 / delta) / (a - 1.0) for a in ORDERS)


def client_noise_std(clip_norm: float, noise_multiplier: float, threshold: int) -> float:
    """The standard deviation of the noise each client adds to each coordinate."""
    return noise_multiplier * clip_norm / math.sqrt(threshold)


def clip_l2(update: npt.NDArray[np.float64], clip_norm: float) -> npt.NDArray[np.float64]:
    """`update` scaled down to L2 norm `clip_norm` if it is longer."""
    norm = float(np.linalg.norm(update))
    return update if norm <= clip_norm else update * (clip_norm / norm)
