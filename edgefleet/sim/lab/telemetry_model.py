"""What telemetry would say in the lab: the KPI readings and request counts the control plane
would have for each modelled device, in the shapes the gates read (`core.gates`).

A device's KPIs follow from its class's model behaviour, its own speed factor and the
release it runs: a good release serves the class's latency distribution and error rate; a
bad one degrades on a share of inputs (`BadModel`), so its p95 is the 95th percentile of a
two-part mixture. Counts are expected values with seeded binomial noise, so a run is
deterministic and two devices never look identical.

What the control plane has of a device's traffic since its update, and when, follows the
real path (`TelemetryDelivery`): the agent aggregates the workload's counters over windows
of the fleet policy's length, aligned to multiples of it in Unix time, and the control
plane has a window once it has been cut into a batch and uploaded; the gates count only
windows that started after the controller saw the device installed (its `installed_at`,
from the next whole second, as `server/services/rollout_telemetry.py` reads them). So right
after an install the gates have nothing, and a short soak may end waiting for data.

`LabTelemetry` is the mapping `decide` is given: a device's `DeviceTelemetry` is computed
when a gate reads it, at the decision's time; it changes only when a window arrives.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist

from edgefleet.core.rollouts.gates import DeviceTelemetry
from edgefleet.core.telemetry.kpi import (
    ERROR_RATE_PCT,
    P95_LATENCY_MS,
    REQUESTS_METRIC,
    KpiReading,
)
from edgefleet.core.telemetry.sampling import (
    DeviceCondition,
    TelemetryPolicy,
    decide_sampling,
    default_policy,
)
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
class TelemetryDelivery:
    """How workload counters reach the control plane: aggregated over windows of `window_s`
    aligned to multiples of it in Unix time (None: the policy collects none), each there
    `lag_s` after it ends.

    >>> delivery = TelemetryDelivery(window_s=2, lag_s=0.5)
    >>> delivery.counted_s(installed_s=10.4, serving_since_s=8.0, now_s=15.0)
    (12, 14)
    >>> delivery.next_arrival_s(15.0)
    16.5
    """

    window_s: int | None = 60
    lag_s: float = 150.0

    def counted_s(
        self, installed_s: float, serving_since_s: float, now_s: float
    ) -> tuple[float, float]:
        """The stretch [start, end) of traffic the gates count at `now_s` (Unix seconds):
        the windows that started after the install was seen, from its next whole second,
        and have arrived; empty (start == end) when there are none."""
        if self.window_s is None:
            return now_s, now_s
        w = self.window_s
        first = math.ceil((math.floor(installed_s) + 1) / w) * w
        start = max(first, serving_since_s)
        return start, max(start, math.floor((now_s - self.lag_s) / w) * w)

    def next_arrival_s(self, now_s: float) -> float:
        """When the next window arrives after `now_s` (inf when none ever do)."""
        if self.window_s is None:
            return math.inf
        w = self.window_s
        return (math.floor((now_s - self.lag_s) / w) + 1) * w + self.lag_s


def delivery_from_policy(policy: TelemetryPolicy) -> TelemetryDelivery:
    """The delivery of `inference.requests` under a fleet telemetry policy, on a device in
    its base condition (mains power, not loaded, no anomaly).

    A window is closed and cut into a batch at the collector's first tick after it ends
    (the agent's batch interval, 60 s by default, is no longer than the window: the last cut
    was a window ago), then waits for the next upload, whose loop is not in step with the
    windows: half an upload interval on average. The tick (a fraction of a window, at most
    the agent's sample interval) is left out: the server does not know it. An agent that
    cuts less often than its windows close adds up to one more upload interval.
    """
    decision = decide_sampling(policy, DeviceCondition())
    return TelemetryDelivery(decision.window_s_for(REQUESTS_METRIC),
                             decision.upload_interval_s / 2)  # fmt: skip


DEFAULT_DELIVERY = delivery_from_policy(default_policy())


@dataclass(frozen=True)
class DeviceView:
    """What the telemetry model needs to know about one device at a time."""

    before: Serving  # what it served before the rollout touched it
    after: Serving | None  # what it serves now, if the rollout's release is live on it
    live_since_s: float | None  # when that release went live


class LabTelemetry(Mapping[str, DeviceTelemetry]):
    """Device id -> DeviceTelemetry at `now_s`, computed on access. `installed_s`: when the
    controller last saw each device installed (simulated seconds); `epoch_s`: the Unix time
    of simulated second 0, which windows align to."""

    def __init__(
        self,
        view: Callable[[str], DeviceView | None],
        ids: list[str],
        now_s: float,
        seed: int,
        *,
        installed_s: Mapping[str, float],
        delivery: TelemetryDelivery,
        epoch_s: float,
    ) -> None:
        self._view = view
        self._ids = ids
        self._now_s = now_s
        self._seed = seed
        self._installed_s = installed_s
        self._delivery = delivery
        self._epoch_s = epoch_s

    def __getitem__(self, device_id: str) -> DeviceTelemetry:
        view = self._view(device_id)
        if view is None:
            raise KeyError(device_id)
        counted = None
        installed = self._installed_s.get(device_id)
        if installed is not None and view.live_since_s is not None:
            epoch = self._epoch_s
            start, end = self._delivery.counted_s(installed + epoch, view.live_since_s + epoch,
                                                  self._now_s + epoch)  # fmt: skip
            counted = (start - epoch, end - epoch)
        return device_telemetry(device_id, view, counted, self._seed)

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def __len__(self) -> int:
        return len(self._ids)


def _reading(kpi: str, value: float, samples: float, rng: random.Random) -> KpiReading:
    return KpiReading(kpi, value * (1 + rng.gauss(0.0, READING_NOISE)), int(samples))


def device_telemetry(
    device_id: str, view: DeviceView, counted: tuple[float, float] | None, seed: int
) -> DeviceTelemetry:
    """The gates' view of one device whose traffic on the rollout's release they count over
    `counted` (simulated seconds; None: not seen installed), deterministic for the seed and
    the same until the next window arrives."""
    arrived = round(counted[1]) if counted is not None else 0
    rng = random.Random(f"telemetry:{seed}:{device_id}:{arrived}")
    before = view.before
    rate = before.behaviour.requests_per_s
    baseline_requests = rate * BASELINE_S
    kpis_before = {
        P95_LATENCY_MS: _reading(P95_LATENCY_MS, before.p95_ms(), baseline_requests, rng),
        ERROR_RATE_PCT: _reading(ERROR_RATE_PCT, before.error_percent(), baseline_requests, rng),
    }
    if view.after is None or counted is None:
        return DeviceTelemetry(kpis_before=kpis_before)
    after = view.after
    period_s = counted[1] - counted[0]
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
