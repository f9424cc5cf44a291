"""The Prometheus text exposition format (version 0.0.4), written by hand.

A `MetricFamily` is one metric name with its type, help text and samples; `render` turns
families into the text `/metrics` serves. Label values and help text are escaped as the
format requires; numbers are written so that integers stay integers and infinities and NaN
use Prometheus' spelling.

>>> family = MetricFamily("jobs_total", "counter", "Jobs done.")
>>> family.add(3, {"queue": "a"})
>>> print(render([family]), end="")
# HELP jobs_total Jobs done.
# TYPE jobs_total counter
jobs_total{queue="a"} 3
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from edgefleet.errors import InvalidInput

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_NAME_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
TYPES = ("counter", "gauge", "histogram", "summary", "untyped")


@dataclass
class MetricFamily:
    name: str
    type: str
    help: str
    # (name suffix such as "_bucket", labels, value)
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not _NAME_RE.fullmatch(self.name) or self.type not in TYPES:
            raise InvalidInput(f"bad metric family {self.name!r} of type {self.type!r}")

    def add(self, value: float, labels: Mapping[str, str] | None = None, suffix: str = "") -> None:
        for key in labels or {}:
            if not _LABEL_RE.fullmatch(key) or key.startswith("__"):
                raise InvalidInput(f"bad label name {key!r} on {self.name}")
        self.samples.append((suffix, dict(labels or {}), value))

    def add_histogram(
        self,
        bucket_bounds: Sequence[float],
        bucket_counts: Sequence[int],
        total: float,
        count: int,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        """One histogram series: cumulative `bucket_counts` per upper bound, +Inf = count."""
        base = dict(labels or {})
        for bound, n in zip(bucket_bounds, bucket_counts, strict=True):
            self.add(n, {**base, "le": format_value(bound)}, "_bucket")
        self.add(count, {**base, "le": "+Inf"}, "_bucket")
        self.add(total, base, "_sum")
        self.add(count, base, "_count")


def format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def render(families: Iterable[MetricFamily]) -> str:
    """The exposition text of `families` (each family name at most once)."""
    lines: list[str] = []
    seen: set[str] = set()
    for family in families:
        if family.name in seen:
            raise InvalidInput(f"metric family {family.name} rendered twice")
        seen.add(family.name)
        lines.append(f"# HELP {family.name} {_escape_help(family.help)}")
        lines.append(f"# TYPE {family.name} {family.type}")
        for suffix, labels, value in family.samples:
            label_text = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels.items())
            name = family.name + suffix
            lines.append(
                f"{name}{{{label_text}}} {format_value(value)}"
                if labels
                else f"{name} {format_value(value)}"
            )
    return "\n".join(lines) + "\n" if lines else ""
