"""Waves: which devices a rollout updates at each step, planned once and never reshuffled.

Each wave in a strategy is a *cumulative* size: `[1, "5%", "25%", "100%"]` means one device,
then enough devices to reach 5% of the target, then 25%, then all of it. Devices are ordered
by a stable hash of (rollout id, device id) and the ordered list is cut at the cumulative
sizes, so:

- the same rollout over the same devices always gives the same plan (a restarted controller
  never reshuffles it), and another rollout orders the fleet differently (the same device is
  not always the canary);
- a device is in exactly one wave.

Rounding: a percentage p of a target of n devices resolves to ceil(p * n / 100), so each
listed share is covered and a small fleet still makes progress; counts above the target are
clamped to it; the first (canary) wave has at least one device when the target is not empty.
A wave that adds no device (`"5%"` of 10 devices after a count of 1) is left out of the
plan. When the listed waves stop short of the whole target, an implicit final wave labelled
`rest` takes the remaining devices with the strategy's soak.

>>> plan = plan_waves("r1", [f"d{i}" for i in range(20)], [WaveSpec(Quantity.parse("1")),
...                   WaveSpec(Quantity.parse("50%"))], default_soak_s=60)
>>> [w.size for w in plan.waves], [w.label for w in plan.waves]
([1, 9, 10], ['1', '50%', 'rest'])
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

from edgefleet.errors import InvalidInput


@dataclass(frozen=True)
class Quantity:
    """A number of devices, either absolute (`3`) or a percentage of a total (`"5%"`)."""

    amount: Fraction
    percent: bool

    @classmethod
    def parse(cls, value: object) -> Quantity:
        """`3` or `"3"` is a count (at least 1); `"5%"` or `"0.5%"` a share in (0, 100]."""
        if isinstance(value, bool):
            raise InvalidInput(f"expected a count or a percentage, got {value!r}")
        if isinstance(value, int):
            text = str(value)
        elif isinstance(value, str):
            text = value.strip()
        else:
            raise InvalidInput(f"expected a count or a percentage like '5%', got {value!r}")
        if text.endswith("%"):
            try:
                share = Fraction(text[:-1].strip())
            except ValueError:
                raise InvalidInput(f"invalid percentage {value!r}") from None
            if not 0 < share <= 100:
                raise InvalidInput(f"percentage {value!r} must be above 0% and at most 100%")
            return cls(share, percent=True)
        if not text.isdigit() or int(text) < 1:
            raise InvalidInput(f"expected a count of at least 1 or a percentage, got {value!r}")
        return cls(Fraction(int(text)), percent=False)

    def resolve(self, total: int) -> int:
        """The number of devices this quantity means out of `total` (percentages round up,
        counts are clamped to `total`)."""
        if self.percent:
            return min(total, math.ceil(self.amount * total / 100))
        return min(total, int(self.amount))

    def __str__(self) -> str:
        number = str(self.amount) if self.amount.denominator == 1 else f"{float(self.amount):g}"
        return f"{number}%" if self.percent else number


@dataclass(frozen=True)
class WaveSpec:
    """One entry of `strategy.waves`: a cumulative size and an optional soak of its own."""

    size: Quantity
    soak_s: float | None = None


@dataclass(frozen=True)
class Wave:
    index: int  # position in the plan, 0-based; 0 is the canary
    label: str  # the size as the operator wrote it ("5%"), or "rest"
    device_ids: tuple[str, ...]  # in rank order
    soak_s: float

    @property
    def size(self) -> int:
        return len(self.device_ids)


@dataclass(frozen=True)
class WavePlan:
    """The frozen membership of every wave of one rollout."""

    seed: str  # what ranked the devices: the rollout's name
    waves: tuple[Wave, ...]
    wave_by_device: Mapping[str, int] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        index: dict[str, int] = {}
        for wave in self.waves:
            for device_id in wave.device_ids:
                if device_id in index:
                    raise InvalidInput(
                        f"device {device_id!r} is in waves {index[device_id]} and {wave.index}"
                    )
                index[device_id] = wave.index
        object.__setattr__(self, "wave_by_device", index)

    def wave_of(self, device_id: str) -> int | None:
        """The index of the wave `device_id` belongs to, or None if it is not planned."""
        return self.wave_by_device.get(device_id)

    @property
    def device_ids(self) -> tuple[str, ...]:
        """Every planned device, canary first."""
        return tuple(d for wave in self.waves for d in wave.device_ids)

    def devices_through(self, wave_index: int) -> tuple[str, ...]:
        """The devices of waves 0..wave_index, in plan order."""
        return tuple(d for wave in self.waves[: wave_index + 1] for d in wave.device_ids)

    def cumulative_size(self, wave_index: int) -> int:
        """How many devices waves 0..wave_index hold together."""
        return sum(wave.size for wave in self.waves[: wave_index + 1])


def device_rank(seed: str, device_id: str) -> bytes:
    """The sort key of `device_id` in a rollout seeded by `seed` (its name): SHA-256,
    stable across processes."""
    return hashlib.sha256(f"{seed}\x00{device_id}".encode()).digest()


def resolve_wave_sizes(waves: Sequence[WaveSpec], total: int) -> tuple[int, ...]:
    """The cumulative device count after each listed wave, for a target of `total`.

    >>> resolve_wave_sizes([WaveSpec(Quantity.parse(1)), WaveSpec(Quantity.parse("50%"))], 7)
    (1, 4)
    """
    sizes: list[int] = []
    reached = 0
    for i, wave in enumerate(waves):
        wanted = wave.size.resolve(total)
        if i == 0 and total > 0:
            wanted = max(wanted, 1)
        reached = max(reached, wanted)
        sizes.append(reached)
    return tuple(sizes)


def plan_waves(
    seed: str,
    device_ids: Iterable[str],
    waves: Sequence[WaveSpec],
    default_soak_s: float,
) -> WavePlan:
    """Cut the target, ordered by `device_rank`, at the cumulative wave sizes."""
    ordered = sorted(set(device_ids), key=lambda d: (device_rank(seed, d), d))
    planned: list[Wave] = []
    start = 0
    cuts = resolve_wave_sizes(waves, len(ordered))
    for spec, end in zip(waves, cuts, strict=True):
        if end > start:
            soak_s = default_soak_s if spec.soak_s is None else spec.soak_s
            planned.append(Wave(len(planned), str(spec.size), tuple(ordered[start:end]), soak_s))
            start = end
    if start < len(ordered):
        planned.append(Wave(len(planned), "rest", tuple(ordered[start:]), default_soak_s))
    return WavePlan(seed, tuple(planned))
