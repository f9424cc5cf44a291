"""The round planner, the FederatedTraining manifest, the job's moves and the DP accounting."""

from __future__ import annotations

import math
import random
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgefleet.core.learning.job import JobStatus, apply_step_values, server_step, transition
from edgefleet.core.learning.manifest import Strategy, parse_training_manifest
from edgefleet.core.learning.planner import Candidate, plan_round
from edgefleet.core.learning.privacy import client_noise_std, epsilon, rdp
from edgefleet.core.learning.ring import quantise, ring_bits_for
from edgefleet.errors import Conflict, InvalidInput

MANIFEST: dict[str, Any] = {
    "kind": "FederatedTraining",
    "metadata": {"name": "sites"},
    "spec": {
        "model": {"release": "m", "version": 1, "artifact": "weights.npz"},
        "selector": "role=sensor",
        "rounds": 3,
        "clientsPerRound": 3,
        "minClients": 2,
        "roundDeadline": "2m",
        "strategy": {"name": "fedprox", "mu": 0.05},
        "privacy": {"clipNorm": 1.0, "noiseMultiplier": 1.1},
        "eligibility": {"regions": ["eu"]},
    },
}
SPEC = parse_training_manifest(MANIFEST)


def device(i: int, **changes: object) -> Candidate:
    base = Candidate(
        f"d{i}", {"role": "sensor", "region": "eu"}, True, 80.0, False, "wifi", 0.1, False
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_the_manifest_reads_every_field() -> None:
    assert SPEC.name == "sites" and SPEC.rounds == 3 and SPEC.round_deadline_s == 120.0
    assert SPEC.strategy is Strategy.FEDPROX and SPEC.mu == 0.05
    assert SPEC.privacy is not None and SPEC.privacy.noise_multiplier == 1.1
    assert SPEC.model.version == "1" and SPEC.eligibility.regions == {"eu"}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"rounds": 0}, "spec.rounds"),
        ({"minClients": 9}, "spec.minClients"),
        ({"strategy": {"name": "fedavg", "mu": 1}}, "spec.strategy.mu"),
        ({"strategy": {"name": "scaffold"}}, "spec.strategy.name"),
        ({"privacy": {"noiseMultiplier": 1}}, "spec.privacy.clipNorm"),
        ({"eligibility": {"networks": ["carrier-pigeon"]}}, "spec.eligibility.networks"),
        ({"selector": "role in ("}, ""),
        ({"colour": "red"}, "spec.colour"),
        ({"model": {"release": "m"}}, "spec.model.version"),
    ],
)
def test_a_bad_manifest_names_the_field(change: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInput) as e:
        parse_training_manifest({**MANIFEST, "spec": {**MANIFEST["spec"], **change}})
    assert field in str(e.value)


def test_each_rule_passes_a_device_over() -> None:
    devices = [
        device(0),
        device(1),
        device(2),
        device(3, online=False),
        device(4, in_maintenance=True),
        device(5, network="cellular"),
        device(6, labels={"role": "sensor", "region": "us"}),
        device(7, load=0.95),
        device(8, battery_pct=10.0),
        device(9, labels={"role": "camera", "region": "eu"}),
    ]
    plan = plan_round(SPEC, devices, frozenset(), 0, random.Random(0))
    assert plan.clients == ("d0", "d1", "d2")
    # a low battery is fine while charging
    charging = [*devices[:2], device(8, battery_pct=10.0, charging=True)]
    assert plan_round(SPEC, charging, frozenset(), 0, random.Random(0)).clients == (
        "d0",
        "d1",
        "d8",
    )


def test_too_few_eligible_retries_then_pauses_with_the_reasons() -> None:
    devices = [device(0), device(1, battery_pct=5.0), device(2, network="cellular")]
    plan = plan_round(SPEC, devices, frozenset(), 0, random.Random(0))
    assert plan.clients == () and not plan.pause
    assert "1 battery low" in plan.reason and "1 network cellular" in plan.reason
    last = plan_round(SPEC, devices, frozenset(), SPEC.retries, random.Random(0))
    assert last.pause and last.reason.startswith("paused")


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 12), st.sets(st.integers(0, 11)), st.integers(0, 2**16))
def test_nobody_twice_in_a_row_while_others_are_free(n: int, previous: set[int], seed: int) -> None:
    devices = [device(i) for i in range(n)]
    before = frozenset(f"d{i}" for i in previous if i < n)
    plan = plan_round(SPEC, devices, before, 0, random.Random(seed))
    others = n - len(before)
    assert len(plan.clients) == min(SPEC.clients_per_round, n)
    assert len(set(plan.clients) & before) == max(0, len(plan.clients) - others)
    assert plan == plan_round(SPEC, devices, before, 0, random.Random(seed))  # deterministic


def test_job_moves_follow_the_table() -> None:
    assert transition(JobStatus.RUNNING, JobStatus.PAUSED) is JobStatus.PAUSED
    assert transition(JobStatus.PAUSED, JobStatus.RUNNING) is JobStatus.RUNNING
    with pytest.raises(Conflict):
        transition(JobStatus.COMPLETED, JobStatus.RUNNING)


def test_the_server_step_adds_the_mean_update() -> None:
    rng = np.random.default_rng(0)
    updates = rng.normal(0, 0.05, (4, 1000))
    bits = ring_bits_for(8, 4)
    total = np.sum([quantise(u, 0.25, 8, rng) for u in updates], axis=0) % (1 << bits)
    weights = np.ones(1000, dtype=np.float32)
    step = server_step(total, 4, bits, 0.25, 8, rng)
    new = apply_step_values(weights, step, 0.25, 8)
    error = new - (weights + updates.mean(axis=0))
    assert abs(float(error.mean())) < 2e-4  # stochastic rounding, twice: no bias
    assert float(np.abs(error).max()) <= 2 * 0.25 / 127 + 1e-6  # at most a step each time


def test_dp_accounting() -> None:
    # closed form of the optimum over real orders: T/(2z^2) + 2 sqrt(T log(1/delta) / (2 z^2))
    z, t, delta = 1.0, 10, 1e-5
    exact = t / (2 * z * z) + 2 * math.sqrt(t * math.log(1 / delta) / (2 * z * z))
    assert exact <= epsilon(z, t, delta) <= exact * 1.01
    assert epsilon(2.0, 10, delta) < epsilon(1.0, 10, delta) < epsilon(1.0, 20, delta)
    assert epsilon(0.0, 3, delta) == math.inf and rdp(1.0, 2, 4.0) == 4.0
    # t clients of noise sigma/sqrt(t) each: total variance (z C)^2
    assert math.isclose(4 * client_noise_std(1.5, 1.2, 4) ** 2, (1.2 * 1.5) ** 2)
