"""Retry delays: exponential growth with jitter, so a fleet refused at once does not return
at once."""

from __future__ import annotations

import random


def backoff_delay_s(attempt: int, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Delay before retry number `attempt` (0-based): "equal jitter" over an exponential.

    Half of min(cap, base * 2**attempt) is fixed and half is uniformly random, so delays
    always grow on average but two devices never retry in lockstep.
    """
    ceiling = min(cap_s, base_s * 2.0 ** min(attempt, 32))
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


def jittered_interval_s(interval_s: float, jitter_ratio: float, rng: random.Random) -> float:
    """`interval_s` spread by ±`jitter_ratio` (e.g. 0.1 for ±10%)."""
    return interval_s * (1 + rng.uniform(-jitter_ratio, jitter_ratio))
