"""Durations written the way operators write them: `90s`, `15m`, `24h`, `7d`, `1h30m`."""

from __future__ import annotations

import re
from datetime import timedelta

from edgefleet.errors import InvalidInput

_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
# Longer than anything an operator means (and than date arithmetic can hold near year 9999).
MAX_DURATION = timedelta(days=36_500)


def parse_duration(text: str) -> timedelta:
    """Parse a duration such as `24h` or `1h30m`; a bare number means seconds.

    >>> parse_duration("1h30m")
    datetime.timedelta(seconds=5400)
    """
    s = text.strip().lower()
    if not s:
        raise InvalidInput("empty duration: expected e.g. 30s, 15m, 24h, 7d")
    if re.fullmatch(r"\d+(?:\.\d+)?", s):
        return _bounded(float(s), text)
    pos = 0
    total = 0.0
    for m in _PART_RE.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    if pos != len(s):
        raise InvalidInput(f"invalid duration {text!r}: expected e.g. 30s, 15m, 24h, 7d, 1h30m")
    return _bounded(total, text)


def _bounded(seconds: float, text: str) -> timedelta:
    if seconds > MAX_DURATION.total_seconds():
        raise InvalidInput(f"duration {text[:40]!r} is too long: at most {MAX_DURATION.days}d")
    return timedelta(seconds=seconds)


def format_duration(seconds: float) -> str:
    """A short human form: `42s`, `5m`, `3h12m`, `2d4h`."""
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60}s" if s % 60 else f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60}m" if s % 3600 >= 60 else f"{s // 3600}h"
    return f"{s // 86400}d{(s % 86400) // 3600}h" if s % 86400 >= 3600 else f"{s // 86400}d"
