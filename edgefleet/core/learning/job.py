"""A training job's life and each round's outcome: a table of legal moves and one
`transition` entry point, and the FedAvg/FedProx server step.

    running ──all rounds done──▶ completed
       │  ▲
 pause │  │ resume
       ▼  │
     paused ──cancel──▶ cancelled   (running ──cancel──▶ cancelled too)

FedAvg and FedProx take the same server step, the mean of the survivors' updates added to
the global weights (FedProx differs on the device: a proximal term mu/2 |w - w_global|^2).
"""

from __future__ import annotations

from enum import StrEnum

import numpy as np
import numpy.typing as npt

from edgefleet.core.learning.ring import Ring, dequantise
from edgefleet.errors import Conflict


class JobStatus(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.RUNNING: frozenset({JobStatus.PAUSED, JobStatus.COMPLETED, JobStatus.CANCELLED}),
    JobStatus.PAUSED: frozenset({JobStatus.RUNNING, JobStatus.CANCELLED}),
    JobStatus.COMPLETED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}


def transition(current: JobStatus, target: JobStatus) -> JobStatus:
    """`target`, or Conflict when the job cannot move there from `current`."""
    if target not in TRANSITIONS[current]:
        raise Conflict(
            f"training job is {current}; it cannot become {target}",
            code="training_illegal_transition",
        )
    return target


def apply_aggregate(
    weights: npt.NDArray[np.float32],
    total: Ring,
    survivors: int,
    ring_bits: int,
    range_: float,
    value_bits: int,
) -> npt.NDArray[np.float32]:
    """The next global weights: the survivors' mean update (from their ring sum) added."""
    mean = dequantise(total, ring_bits, range_, value_bits) / max(1, survivors)
    return (weights.astype(np.float64) + mean).astype(np.float32)
