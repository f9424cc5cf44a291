"""What telemetry would say in the lab: the KPI readings and request counts the control plane
would have for each modelled device, in the shapes the gates read (`core.gates`).

A device's KPIs follow from its class's model behaviour, its own speed factor and the
release it runs: a good release serves the class's latency distribution and error rate; a
bad one degrades on a share of inputs (`BadModel`), so its p95 is the 95th percentile of a
two-part mixture. Counts are expected values with seeded binomial noise, so a run is
deterministic and two devices never look identical.

`LabTelemetry` is the mapping `decide` is given: a device's `DeviceTelemetry` is computed
when a gate reads it, at the decision's time.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist

from edgefleet.core.rollouts.gates import DeviceTelemetry
from edgefleet.core.telemetry.kpi import ERROR_RATE_PCT, P95_LATENCY_MS, KpiReading
from edgefleet.sim.model_behaviour import BadModel, LatencyDistribution, ModelBehaviour

BASELINE_S = 3600.0  # the pre-rollout baseline period the gates compare with
READING_NOISE = 0.02  # relative noise of one KPI reading
_NORMAL = NormalDist()


def _cdf(dist: LatencyDistribution, x_ms: float, factor: float) -> float:
    if x_ms <= 0:
        return 0.0
    return _NORMAL.cdf(math.log(x_ms / (dist.p50_ms * factor)) / dist.sigma)


def latency_quantile_ms(
    dist: LatencyDistribution, q: float, factor: float = 1.0, bad: BadModel | None = None
) -> float:
    """The q-quantile of latency, on a bad model the quantile of the mixture of its normal
    and its degraded inputs. Both parts scale with `factor`, so the quantile does too."""
    return factor * _unit_quantile_ms(dist, q, bad)


@lru_cache(maxsize=4096)
def _unit_quantile_ms(dist: LatencyDistribution, q: float, bad: BadModel | None) -> float:
    if bad is None or bad.affected_inputs_percent <= 0 or bad.latency_factor == 1.0:
        return dist.quantile_ms(q)
    share = bad.affected_inputs_percent / 100
    slow = bad.latency_factor
    low = min(dist.quantile_ms(q), dist.quantile_ms(q, slow))
    high = max(dist.quantile_ms(q), dist.quantile_ms(q, slow))
    for _ in range(60):
        mid = math.sqrt(low * high)
        mixed = (1 - share) * _cdf(dist, mid, 1.0) + share * _cdf(dist, mid, slow)
        low, high = (mid, high) if mixed < q else (low, mid)
    return math.sqrt(low * high)


@dataclass(frozen=True)
class Serving:
    """What one device serves now: its behaviour, speed, and whether the model is bad."""

    behaviour: ModelBehaviour
    speed_factor: float
    bad: BadModel | None

    def p95_ms(self) -> float:
        return latency_quantile_ms(self.behaviour.latency, 0.95, self.speed_factor, self.bad)

    def error_percent(self) -> float:
        base = self.behaviour.error_percent
        return base if self.bad is None else self.bad.error_percent_overall(base)


def noisy_count(rng: random.Random, n: float, p: float) -> int:
    """A binomial-like draw of successes in `n` trials of probability `p`."""
    mean = n * p
    spread = math.sqrt(max(mean * (1 - p), 0.0))
    return max(0, min(int(n), round(rng.gauss(mean, spread))))


@dataclass(frozen=True)
class DeviceView:
    """What the telemetry model needs to know about one device at a time."""

    before: Serving  # what it served before the rollout touched it
    after: Serving | None  # what it serves now, if the rollout's release is live on it
    live_since_s: float | None  # when that release went live


class LabTelemetry(Mapping[str, DeviceTelemetry]):
    """Device id -> DeviceTelemetry at `now_s`, computed on access."""

    def __init__(
        self, view: Callable[[str], DeviceView | None], ids: list[str], now_s: float, seed: int
    ) -> None:
        self._view = view
        self._ids = ids
        self._now_s = now_s
        self._seed = seed

    def __getitem__(self, device_id: str) -> DeviceTelemetry:
        view = self._view(device_id)
        if view is None:
            raise KeyError(device_id)
        return device_telemetry(device_id, view, self._now_s, self._seed)

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def __len__(self) -> int:
        return len(self._ids)


def _reading(kpi: str, value: float, samples: float, rng: random.Random) -> KpiReading:
    return KpiReading(kpi, value * (1 + rng.gauss(0.0, READING_NOISE)), int(samples))


def device_telemetry(device_id: str, view: DeviceView, now_s: float, seed: int) -> DeviceTelemetry:
    """The gates' view of one device at `now_s` (deterministic for the seed)."""
    rng = random.Random(f"telemetry:{seed}:{device_id}:{round(now_s)}")
    before = view.before
    rate = before.behaviour.requests_per_s
    baseline_requests = rate * BASELINE_S
    kpis_before = {
        P95_LATENCY_MS: _reading(P95_LATENCY_MS, before.p95_ms(), baseline_requests, rng),
        ERROR_RATE_PCT: _reading(ERROR_RATE_PCT, before.error_percent(), baseline_requests, rng),
    }
    if view.after is None or view.live_since_s is None:
        return DeviceTelemetry(kpis_before=kpis_before)
    after = view.after
    period_s = max(0.0, now_s - view.live_since_s)
    requests = noisy_count(rng, rate * period_s * 2, 0.5)
    errors = noisy_count(rng, requests, after.error_percent() / 100)
    kpis_after = {P95_LATENCY_MS: _reading(P95_LATENCY_MS, after.p95_ms(), requests, rng)}
    if requests:
        kpis_after[ERROR_RATE_PCT] = KpiReading(ERROR_RATE_PCT, 100 * errors / requests, requests)
    return DeviceTelemetry(
        workload_requests=requests,
        workload_errors=errors,
        kpis_before=kpis_before,
        kpis_after=kpis_after,
    )
