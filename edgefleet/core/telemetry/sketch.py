"""DDSketch: a mergeable quantile sketch with a relative-accuracy guarantee.

Every value v > 0 falls in bucket k = ceil(log_gamma(v)), gamma = (1 + alpha) / (1 - alpha),
and a bucket is represented by 2 * gamma**k / (gamma + 1), which lies within `alpha` (1% by
default) of every value in the bucket. So any quantile read back is within `alpha` of a
value actually seen at that rank, whatever the distribution, and two sketches with the same
`alpha` merge exactly by adding bucket counts, which lets windows from many devices or many
minutes be combined on the server.

Negative values live in a mirror store keyed by their magnitude; values with magnitude below
`MIN_INDEXABLE` count in a zero bucket. Each store spans at most `max_buckets` consecutive
buckets (2048 at 1% covers a factor of 10**17): beyond that the lowest values are collapsed
into the lowest bucket kept, so upper quantiles (the ones latency alerts read) keep their
accuracy while memory and the serialized size stay bounded.

>>> s = DDSketch()
>>> for v in range(1, 101):
...     s.add(float(v))
>>> abs(s.quantile(0.5) - 50) <= 0.01 * 50
True
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from edgefleet.errors import InvalidInput

DEFAULT_ALPHA = 0.01
DEFAULT_MAX_BUCKETS = 2048
# Magnitudes below this go to the zero bucket (a nanosecond, when latencies are in seconds).
MIN_INDEXABLE = 1e-9
# A decoded sketch may not span more keys than this (bounds memory on the server).
MAX_WIRE_BUCKETS = 4096
MAX_WIRE_KEY = 1 << 20


class _Store:
    """Counts per bucket key over a range of at most `max_buckets` keys. Keys beyond the range
    on the collapsing side fold into its edge, so the dense form is bounded too."""

    __slots__ = ("collapse_high", "counts", "high", "low", "max_buckets")

    def __init__(self, max_buckets: int, *, collapse_high: bool) -> None:
        self.counts: dict[int, int] = {}
        self.max_buckets = max_buckets
        # The negative store collapses its high keys: those are the lowest (most negative) values.
        self.collapse_high = collapse_high
        self.low = 0
        self.high = 0

    def add(self, key: int, count: int) -> None:
        counts = self.counts
        if key in counts:
            counts[key] += count
            return
        span = self.max_buckets - 1
        if not counts:
            self.low = self.high = key
        elif self.collapse_high:
            if key < self.low:
                self.low = key
                if self.high > key + span:
                    self._fold(key + span)
            key = min(key, self.low + span)
            self.high = max(self.high, key)
        else:
            if key > self.high:
                self.high = key
                if self.low < key - span:
                    self._fold(key - span)
            key = max(key, self.high - span)
            self.low = min(self.low, key)
        counts[key] = counts.get(key, 0) + count

    def _fold(self, edge: int) -> None:
        counts = self.counts
        if self.collapse_high:
            moved = [k for k in counts if k > edge]
            self.high = edge
        else:
            moved = [k for k in counts if k < edge]
            self.low = edge
        folded = sum(counts.pop(k) for k in moved)
        counts[edge] = counts.get(edge, 0) + folded

    def total(self) -> int:
        return sum(self.counts.values())

    def to_dense(self) -> tuple[int, list[int]]:
        """(lowest key, counts of every key from it to the highest, zeros included)."""
        if not self.counts:
            return 0, []
        return self.low, [self.counts.get(k, 0) for k in range(self.low, self.high + 1)]


class DDSketch:
    """A quantile sketch: add values, merge sketches, read quantiles within `alpha`."""

    __slots__ = (
        "_gamma",
        "_multiplier",
        "_negative",
        "_positive",
        "alpha",
        "count",
        "max",
        "max_buckets",
        "min",
        "sum",
        "zero_count",
    )

    def __init__(
        self, alpha: float = DEFAULT_ALPHA, max_buckets: int = DEFAULT_MAX_BUCKETS
    ) -> None:
        if not 0.0 < alpha < 1.0:
            raise InvalidInput(f"sketch alpha must be in (0, 1), got {alpha}", code="bad_sketch")
        if not 2 <= max_buckets <= MAX_WIRE_BUCKETS:
            raise InvalidInput(
                f"sketch max_buckets must be in [2, {MAX_WIRE_BUCKETS}]", code="bad_sketch"
            )
        self.alpha = alpha
        self.max_buckets = max_buckets
        self._gamma = (1.0 + alpha) / (1.0 - alpha)
        self._multiplier = 1.0 / math.log(self._gamma)
        self._positive = _Store(max_buckets, collapse_high=False)
        self._negative = _Store(max_buckets, collapse_high=True)
        self.zero_count = 0
        self.count = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf

    def _key(self, magnitude: float) -> int:
        return math.ceil(math.log(magnitude) * self._multiplier)

    def _value(self, key: int) -> float:
        return 2.0 * self._gamma**key / (self._gamma + 1.0)

    def add(self, value: float, count: int = 1) -> None:
        """Record `value` `count` times. Non-finite values are refused."""
        if not math.isfinite(value):
            raise InvalidInput(f"cannot add {value} to a sketch", code="bad_value")
        if count <= 0:
            if count == 0:
                return
            raise InvalidInput("sketch counts must be positive", code="bad_value")
        if value >= MIN_INDEXABLE:
            self._positive.add(self._key(value), count)
        elif value <= -MIN_INDEXABLE:
            self._negative.add(self._key(-value), count)
        else:
            self.zero_count += count
        self.count += count
        self.sum += value * count
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value

    def merge(self, other: DDSketch) -> None:
        """Add every value of `other` into this sketch (same `alpha` required)."""
        if other.alpha != self.alpha:
            raise InvalidInput(
                f"cannot merge sketches with alpha {self.alpha} and {other.alpha}",
                code="sketch_mismatch",
            )
        for key, n in other._positive.counts.items():
            self._positive.add(key, n)
        for key, n in other._negative.counts.items():
            self._negative.add(key, n)
        self.zero_count += other.zero_count
        self.count += other.count
        self.sum += other.sum
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    def copy(self) -> DDSketch:
        clone = DDSketch(self.alpha, self.max_buckets)
        clone.merge(self)
        return clone

    def _ascending(self) -> Iterator[tuple[float, int]]:
        """(representative value, count) for every non-empty bucket, lowest value first."""
        for key in sorted(self._negative.counts, reverse=True):
            yield -self._value(key), self._negative.counts[key]
        if self.zero_count:
            yield 0.0, self.zero_count
        for key in sorted(self._positive.counts):
            yield self._value(key), self._positive.counts[key]

    def quantile(self, q: float) -> float:
        """The value at quantile `q` (0..1), within `alpha` relative error; exact at 0 and 1."""
        if not 0.0 <= q <= 1.0:
            raise InvalidInput(f"quantile must be in [0, 1], got {q}", code="bad_quantile")
        if self.count == 0:
            raise InvalidInput("quantile of an empty sketch", code="empty_sketch")
        if q == 0.0:
            return self.min
        if q == 1.0:
            return self.max
        rank = q * (self.count - 1)
        seen = 0
        for value, n in self._ascending():
            seen += n
            if seen > rank:
                return min(max(value, self.min), self.max)
        return self.max

    def cdf(self, x: float) -> float:
        """The fraction of recorded values whose bucket's representative is <= `x`."""
        if self.count == 0:
            raise InvalidInput("cdf of an empty sketch", code="empty_sketch")
        # Exact at the ends, like quantile(): nothing lies below min, everything up to max.
        if x < self.min:
            return 0.0
        if x >= self.max:
            return 1.0
        below = 0
        for value, n in self._ascending():
            if value > x:
                break
            below += n
        return below / self.count

    def bucket_count(self) -> int:
        """How many non-empty buckets the sketch holds (its memory and wire size driver)."""
        return len(self._positive.counts) + len(self._negative.counts) + (self.zero_count > 0)

    def buckets(self) -> tuple[dict[int, int], dict[int, int]]:
        """Copies of the (positive, negative) stores: bucket key -> count, for exporters."""
        return dict(self._positive.counts), dict(self._negative.counts)

    def value_of_key(self, key: int) -> float:
        """The representative magnitude of bucket `key`."""
        return self._value(key)

    @property
    def mean(self) -> float:
        return self.sum / self.count if self.count else math.nan

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DDSketch):
            return NotImplemented
        return (
            self.alpha == other.alpha
            and self.zero_count == other.zero_count
            and self._positive.counts == other._positive.counts
            and self._negative.counts == other._negative.counts
            and (self.count, self.sum, self.min, self.max)
            == (other.count, other.sum, other.min, other.max)
        )

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"DDSketch(alpha={self.alpha}, count={self.count}, buckets={self.bucket_count()})"

    # --- serialization -------------------------------------------------------------------

    def bins_to_wire(self) -> list[Any]:
        """The buckets as plain msgpack-able data: `[zero_count, offset, counts]` plus
        `[neg_offset, neg_counts]` when there are negative values. `counts` are dense from
        `offset` upward; the stats (sum, min, max) travel separately."""
        offset, counts = self._positive.to_dense()
        bins: list[Any] = [self.zero_count, offset, counts]
        if self._negative.counts:
            neg_offset, neg_counts = self._negative.to_dense()
            bins += [neg_offset, neg_counts]
        return bins

    def to_wire(self) -> list[Any]:
        """The whole sketch as plain data: `[alpha, bins, sum, min, max]`."""
        return [self.alpha, self.bins_to_wire(), self.sum, self.min, self.max]

    @classmethod
    def from_bins(
        cls,
        alpha: float,
        bins: Any,
        *,
        total: float,
        min_value: float,
        max_value: float,
        max_buckets: int = DEFAULT_MAX_BUCKETS,
    ) -> DDSketch:
        """Rebuild a sketch from `bins_to_wire()` output and its stats; refuse malformed input
        with InvalidInput(code="bad_sketch")."""
        sketch = cls(alpha, max_buckets)
        if not isinstance(bins, list) or len(bins) not in (3, 5):
            raise _bad("bins must be a list of 3 or 5 items")
        zero_count = bins[0]
        if not _is_count(zero_count):
            raise _bad("zero count must be a non-negative integer")
        _fill(sketch._positive, bins[1], bins[2])
        if len(bins) == 5:
            _fill(sketch._negative, bins[3], bins[4])
        sketch.zero_count = zero_count
        sketch.count = zero_count + sketch._positive.total() + sketch._negative.total()
        for name, number in (("sum", total), ("min", min_value), ("max", max_value)):
            if isinstance(number, bool) or not isinstance(number, int | float):
                raise _bad(f"{name} must be a number")
            if sketch.count and not math.isfinite(number):
                raise _bad(f"{name} must be finite")
        if sketch.count:
            if min_value > max_value:
                raise _bad("min is greater than max")
            sketch.sum, sketch.min, sketch.max = float(total), float(min_value), float(max_value)
        return sketch

    @classmethod
    def from_wire(cls, data: Any, max_buckets: int = DEFAULT_MAX_BUCKETS) -> DDSketch:
        """Rebuild a sketch from `to_wire()` output."""
        if not isinstance(data, list) or len(data) != 5:
            raise _bad("a sketch must be a list of 5 items")
        alpha = data[0]
        if not isinstance(alpha, float) or not 0.0 < alpha < 1.0:
            raise _bad("alpha must be a float in (0, 1)")
        return cls.from_bins(
            alpha,
            data[1],
            total=data[2],
            min_value=data[3],
            max_value=data[4],
            max_buckets=max_buckets,
        )


def _bad(why: str) -> InvalidInput:
    return InvalidInput(f"malformed sketch: {why}", code="bad_sketch")


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 53


def _fill(store: _Store, offset: object, counts: object) -> None:
    if not isinstance(offset, int) or isinstance(offset, bool) or abs(offset) > MAX_WIRE_KEY:
        raise _bad("offset must be an integer key")
    if not isinstance(counts, list) or len(counts) > MAX_WIRE_BUCKETS:
        raise _bad(f"counts must be a list of at most {MAX_WIRE_BUCKETS} integers")
    for i, n in enumerate(counts):
        if not _is_count(n):
            raise _bad("counts must be non-negative integers")
        if n:
            store.add(offset + i, n)
