"""How a simulated model serves: request rate, latency distribution and error rate per device
class, and what a *bad* model does differently.

    model:                       # in a device class
      requests_per_s: 2          # Poisson arrivals
      latency_ms: {p50: 18, p95: 40}   # log-normal through these two quantiles
      error_percent: 0.2         # model errors among requests
      sandbox_s: 2               # how long the installer's sandbox check takes here
      start_s: 1                 # service start-up time

    bad_model:                   # at the top of the profile: a bad release on any class
      affected_inputs_percent: 30    # it degrades on this share of inputs...
      error_percent: 25              # ...failing this share of them
      latency_factor: 2.5            # ...and taking this much longer
      self_test_failure_percent: 0   # optional: the chance its health check's fixed input
                                     # is one it fails (default: as for any input)

A release is bad when its `name@version` matches one of the profile's `bad_releases`
patterns (shell-style, e.g. `detector@2.0.*`) or one given on the command line.
"""

from __future__ import annotations

import fnmatch
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass
from statistics import NormalDist

from edgefleet.core.manifest import check_keys, read_mapping, read_number
from edgefleet.errors import InvalidInput

Z95 = 1.6448536269514722  # the standard normal's 95th percentile
_NORMAL = NormalDist()


@dataclass(frozen=True)
class LatencyDistribution:
    """Log-normal latency through its median and 95th percentile."""

    p50_ms: float
    p95_ms: float

    @property
    def sigma(self) -> float:
        return math.log(self.p95_ms / self.p50_ms) / Z95

    def draw_ms(self, rng: random.Random, factor: float = 1.0) -> float:
        return factor * self.p50_ms * math.exp(self.sigma * rng.gauss(0.0, 1.0))

    def quantile_ms(self, q: float, factor: float = 1.0) -> float:
        """The q-quantile (0 < q < 1) of the distribution, scaled by `factor`."""
        return factor * self.p50_ms * math.exp(self.sigma * _NORMAL.inv_cdf(q))


@dataclass(frozen=True)
class ModelBehaviour:
    requests_per_s: float = 1.0
    latency: LatencyDistribution = LatencyDistribution(20.0, 45.0)
    error_percent: float = 0.1
    sandbox_s: float = 2.0
    start_s: float = 1.0


@dataclass(frozen=True)
class BadModel:
    affected_inputs_percent: float = 30.0
    error_percent: float = 25.0
    latency_factor: float = 2.5
    # Known for a given model: `build_faulty_mlp` fails on inputs whose first feature is
    # high, never on the self-test's zeros (0); None: as likely as for any input.
    self_test_failure_percent: float | None = None

    def self_test_failure(self) -> float:
        """The chance that a health check's fixed self-test input is one the model gets
        wrong (affected, then answered wrongly, unless told)."""
        if self.self_test_failure_percent is not None:
            return self.self_test_failure_percent / 100
        return self.affected_inputs_percent / 100 * self.error_percent / 100

    def error_percent_overall(self, base_error_percent: float) -> float:
        """The error rate a bad model shows over all inputs."""
        affected = self.affected_inputs_percent / 100
        return (1 - affected) * base_error_percent + affected * max(
            base_error_percent, self.error_percent
        )


def _latency(value: object, path: str) -> LatencyDistribution:
    data = read_mapping(value, path)
    check_keys(data, frozenset({"p50", "p95"}), path)
    p50 = read_number(data.get("p50", 20.0), f"{path}.p50", 0.001, 3.6e6)
    p95 = read_number(data.get("p95", p50 * 2), f"{path}.p95", 0.001, 3.6e6)
    if p95 <= p50:
        raise InvalidInput(f"{path}.p95: must be above p50 ({p50:g})")
    return LatencyDistribution(p50, p95)


def parse_model_behaviour(value: object, path: str) -> ModelBehaviour:
    """The `model` section of a device class; InvalidInput names the field."""
    data = read_mapping(value, path)
    allowed = {"requests_per_s", "latency_ms", "error_percent", "sandbox_s", "start_s"}
    check_keys(data, frozenset(allowed), path)
    default = ModelBehaviour()
    return ModelBehaviour(
        requests_per_s=read_number(
            data.get("requests_per_s", default.requests_per_s), f"{path}.requests_per_s", 0, 1e5
        ),
        latency=_latency(data["latency_ms"], f"{path}.latency_ms")
        if "latency_ms" in data
        else default.latency,
        error_percent=read_number(
            data.get("error_percent", default.error_percent), f"{path}.error_percent", 0, 100
        ),
        sandbox_s=read_number(
            data.get("sandbox_s", default.sandbox_s), f"{path}.sandbox_s", 0, 3600
        ),
        start_s=read_number(data.get("start_s", default.start_s), f"{path}.start_s", 0, 3600),
    )


def parse_bad_model(value: object, path: str) -> BadModel:
    """The profile's `bad_model` section."""
    data = read_mapping(value, path)
    allowed = {"affected_inputs_percent", "error_percent", "latency_factor",
               "self_test_failure_percent"}  # fmt: skip
    check_keys(data, frozenset(allowed), path)
    default = BadModel()
    self_test = data.get("self_test_failure_percent")
    return BadModel(
        affected_inputs_percent=read_number(
            data.get("affected_inputs_percent", default.affected_inputs_percent),
            f"{path}.affected_inputs_percent", 0, 100,
        ),
        error_percent=read_number(
            data.get("error_percent", default.error_percent), f"{path}.error_percent", 0, 100
        ),
        latency_factor=read_number(
            data.get("latency_factor", default.latency_factor), f"{path}.latency_factor",
            0.01, 1000,
        ),
        self_test_failure_percent=None if self_test is None else read_number(
            self_test, f"{path}.self_test_failure_percent", 0, 100
        ),
    )  # fmt: skip


def is_bad_release(release: str, patterns: Iterable[str]) -> bool:
    """True when `name@version` matches one of the shell-style patterns."""
    return any(fnmatch.fnmatchcase(release, pattern) for pattern in patterns)


@dataclass(frozen=True)
class Served:
    """What a burst of simulated requests amounted to."""

    requests: int
    errors: int
    latencies_ms: tuple[float, ...]


def serve(
    behaviour: ModelBehaviour,
    bad: BadModel | None,
    requests: int,
    rng: random.Random,
    *,
    latency_samples: int | None = None,
) -> Served:
    """Simulate `requests` inferences; keep at most `latency_samples` latencies (None: all)."""
    errors = 0
    latencies: list[float] = []
    keep = requests if latency_samples is None else min(requests, latency_samples)
    base_error = behaviour.error_percent / 100
    for i in range(requests):
        affected = bad is not None and rng.random() * 100 < bad.affected_inputs_percent
        error_rate = max(base_error, bad.error_percent / 100) if affected and bad else base_error
        if rng.random() < error_rate:
            errors += 1
        if i < keep:
            factor = bad.latency_factor if affected and bad else 1.0
            latencies.append(behaviour.latency.draw_ms(rng, factor))
    return Served(requests, errors, tuple(latencies))


def poisson(rng: random.Random, mean: float) -> int:
    """A Poisson draw (Knuth for small means, a rounded normal for large ones)."""
    if mean <= 0:
        return 0
    if mean > 50:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, k, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        k += 1
        product *= rng.random()
    return k
