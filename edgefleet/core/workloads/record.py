"""A declared workload as the control plane keeps it: the manifest as applied, the signed
releases its artifact references resolved to, and who changed it when.

References are resolved when the workload is applied, so the desired state of its nodes
only changes when an operator applies again: `camera-models@3.1.0` names one release,
`camera-models` the newest signed version at that moment.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

from edgefleet.core.updates.release import Ref, Release
from edgefleet.core.updates.versions import parse_version
from edgefleet.core.workloads.workload import Workload, parse_workload
from edgefleet.errors import Conflict, NotFound


@dataclass(frozen=True)
class WorkloadRecord:
    name: str
    document: Mapping[str, Any]
    releases: tuple[Ref, ...]
    created_by: str
    created_at: datetime
    updated_by: str
    updated_at: datetime
    version: int = 1

    @cached_property
    def spec(self) -> Workload:
        return parse_workload(self.document)


def resolve_release_ref(ref: str, releases: Sequence[Release]) -> Ref:
    """The signed release `ref` (`name` or `name@version`) names now.

    >>> from datetime import datetime, timezone
    >>> t = datetime(2026, 1, 1, tzinfo=timezone.utc)
    >>> rs = [Release("m", v, (), "op", t, 1) for v in ("1.0.0", "1.10.0", "1.9.0")]
    >>> resolve_release_ref("m", rs)
    Ref(name='m', version='1.10.0')
    """
    name, _, version = ref.partition("@")
    found = [r for r in releases if r.name == name]
    if version:
        exact = next((r for r in found if r.version == version), None)
        if exact is None:
            raise NotFound(f"artifacts: no release {ref}", code="release_not_found")
        if not exact.signed:
            raise Conflict(f"artifacts: release {ref} is not signed yet (releases sign)",
                           code="release_not_signed")  # fmt: skip
        return exact.ref
    signed = [r for r in found if r.signed]
    if not signed:
        what = "no signed version" if found else "no release"
        raise NotFound(f"artifacts: {what} named {name!r}", code="release_not_found")
    return max(signed, key=lambda r: parse_version(r.version)).ref
