"""A training job's life and each round's outcome: a table of legal moves and one
`transition` entry point, and the FedAvg/FedProx server step.

    running ──all rounds done──▶ completed
       │  ▲
 pause │  │ resume
       ▼  │
     paused ──cancel──▶ cancelled   (running ──cancel──▶ cancelled too)

FedAvg and FedProx take the same server step, the mean of the survivors' updates added to
the global weights, rounded to the updates' grid (`server_step`); FedProx differs on the
device: a proximal term mu/2 |w - w_global|^2.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt

from edgefleet.core.learning.manifest import TrainingSpec
from edgefleet.core.learning.privacy import client_noise_std
from edgefleet.core.learning.ring import Ring, dequantise, quantise, value_limit
from edgefleet.core.learning.secure_round import RoundState
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


def server_step(
    total: Ring,
    survivors: int,
    ring_bits: int,
    range_: float,
    value_bits: int,
    rng: np.random.Generator,
) -> Ring:
    """The round's step: the survivors' mean update (from their ring sum) rounded, without
    bias, to the updates' own grid (`value_bits` within +-range). This, not the sum, is
    what the devices receive and apply: a third of the bytes, and the same weights on both
    sides."""
    mean = dequantise(total, ring_bits, range_, value_bits) / max(1, survivors)
    return quantise(mean, range_, value_bits, rng)


def apply_step_values(
    weights: npt.NDArray[np.float32], step: Ring, range_: float, value_bits: int
) -> npt.NDArray[np.float32]:
    """The next global weights: `weights` plus the step (server_step) in real units."""
    scale = range_ / value_limit(value_bits)
    return (weights.astype(np.float64) + step.astype(np.float64) * scale).astype(np.float32)


@dataclass(frozen=True)
class JobRecord:
    """A stored training job: the manifest as applied and how far it got."""

    name: str
    document: Mapping[str, Any]
    status: JobStatus
    rounds_done: int
    attempt: int  # failed attempts at the next round
    reason: str
    model_sha256: str  # the current global model (a blob: float32 little-endian weights)
    initial_sha256: str
    source_kind: str  # "npz" | "onnx": what the final model is written as
    history: tuple[Mapping[str, Any], ...]  # one summary per round attempt
    created_by: str
    created_at: datetime
    updated_at: datetime
    version: int = 0


@dataclass(frozen=True)
class RoundRecord:
    """The open (or last) round of a job: its protocol state and its traffic per device."""

    job: str
    number: int
    state: RoundState
    task: Mapping[str, Any]  # what a client needs to train (training_task below)
    base_sha256: str  # the global model the round starts from
    traffic: Mapping[str, Mapping[str, int]]  # device -> {"up": bytes, "down": bytes}
    metrics: Mapping[str, Mapping[str, float]]  # device -> {"accuracy": ..., "samples": ...}
    opened_at: datetime
    step: bytes | None = None  # once done: the encoded aggregate (training_model.encode_step)
    version: int = 0


def render_task(spec: TrainingSpec, sizes: tuple[int, int, int], samples: int) -> dict[str, Any]:
    """What a client of `spec` needs to train: the model's layer sizes, the local settings,
    the FedProx term, quantisation and (with privacy) its clip norm and its share of noise."""
    task: dict[str, Any] = {
        "task": spec.task,
        "sizes": list(sizes),
        "samples": samples,
        "mu": spec.mu,
        "local": {
            "epochs": spec.local.epochs,
            "batch_size": spec.local.batch_size,
            "learning_rate": spec.local.learning_rate,
        },
        "quantisation": {"bits": spec.quantisation.bits, "range": spec.quantisation.range},
    }
    if spec.privacy is not None:
        task["privacy"] = {
            "clip_norm": spec.privacy.clip_norm,
            "noise_std": client_noise_std(
                spec.privacy.clip_norm, spec.privacy.noise_multiplier, spec.min_clients
            ),
        }
    return task
