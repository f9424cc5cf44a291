"""Groups: named label selectors, so operators can say `--group cameras-eu` instead of
repeating `kind=camera,region=eu` everywhere."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from edgefleet.errors import InvalidInput

_NAME_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?")


@dataclass(frozen=True)
class Group:
    name: str
    selector: str
    description: str
    created_by: str
    created_at: datetime


def validate_group_name(name: str) -> str:
    """Group names are DNS labels: lowercase letters, digits and '-', at most 64."""
    if not _NAME_RE.fullmatch(name):
        raise InvalidInput(
            f"invalid group name {name!r}: use lowercase letters, digits and '-', "
            "starting and ending with a letter or digit, at most 64 characters"
        )
    return name
