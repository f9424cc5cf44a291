"""A stored rehearsal: the report `edgefleet lab rehearse --save` uploads (`sim/lab/report.py`),
kept under the rollout's name so the dashboard can set it next to the real rollout.

The control plane keeps the newest `REHEARSALS_KEPT_PER_ROLLOUT` of each rollout name and
`REHEARSALS_KEPT` in all; a report larger than `MAX_REHEARSAL_BYTES` (compact JSON) is
refused.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from edgefleet.errors import InvalidInput

MAX_REHEARSAL_BYTES = 512 * 1024
REHEARSALS_KEPT_PER_ROLLOUT = 20
REHEARSALS_KEPT = 500
_ROLLOUT_NAME_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")  # as in rollout_spec


@dataclass(frozen=True)
class RehearsalRecord:
    id: str
    rollout: str  # the rollout manifest's name (`RolloutSpec.rollout_name`)
    release: str
    outcome: str  # the predicted rollout state
    report: Mapping[str, Any]
    size_bytes: int
    created_by: str
    created_at: datetime


def _section(report: Mapping[str, Any], key: str, kind: type) -> Any:
    value = report.get(key)
    if not isinstance(value, kind):
        raise InvalidInput(f"report.{key}: expected the {kind.__name__} a lab report has "
                           "(edgefleet lab rehearse -o report.json)")  # fmt: skip
    return value


def summarize_report(report: Mapping[str, Any]) -> tuple[str, str]:
    """The release and predicted outcome of a lab report; InvalidInput naming the field
    when it does not have the report's shape.

    >>> summarize_report({"rehearsal": {"release": "det@2.0.0"}, "outcome": {"state": "done"},
    ...                   "waves": [], "blast_radius": {}})
    ('det@2.0.0', 'done')
    """
    head = _section(report, "rehearsal", dict)
    outcome = _section(report, "outcome", dict)
    _section(report, "waves", list)
    _section(report, "blast_radius", dict)
    release, state = head.get("release"), outcome.get("state")
    if not isinstance(release, str) or not release:
        raise InvalidInput("report.rehearsal.release: expected the rehearsed release")
    if not isinstance(state, str) or not state:
        raise InvalidInput("report.outcome.state: expected the predicted rollout state")
    return release, state


def check_rollout_name(name: str) -> str:
    """The rollout name a rehearsal is stored under, or InvalidInput."""
    if not _ROLLOUT_NAME_RE.fullmatch(name):
        raise InvalidInput(f"rollout: {name!r} is not a rollout name (lowercase letters, "
                           "digits and '-', at most 63)")  # fmt: skip
    return name
