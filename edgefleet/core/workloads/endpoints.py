"""Service endpoints: where a workload's clients send requests, with weights that shift
traffic gradually during a planned migration.

Each replica slot carries a weight of 100, split between its copies: normally all on the
node the placement gives it; while a migration shares traffic, the target gets the
migration's weight (10, 50, then 100) and the source the rest. A copy that is not running
and healthy, or whose node is not alive, is listed with weight 0 so clients skip it; its
share is not moved to other replicas (their own weights already say how to split).

Clients pick an endpoint at random in proportion to the weights
(`edgefleet.examples.endpoint_follower`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from edgefleet.core.workloads.migration import Migration


class EndpointRole(StrEnum):
    PRIMARY = "primary"  # the node the placement gives the replica
    MIGRATION_TARGET = "migration-target"


@dataclass(frozen=True)
class ReplicaCopy:
    """One copy of a replica as the control plane sees it."""

    replica: int
    node_id: str
    generation: int
    address: str | None
    port: int | None
    healthy: bool  # reported running with a passing health check, at this generation
    alive: bool  # the node's liveness verdict is alive


@dataclass(frozen=True)
class Endpoint:
    replica: int
    node_id: str
    address: str
    port: int
    weight: int
    role: EndpointRole
    healthy: bool
    migration: str | None = None

    @property
    def url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self.port}"


def service_endpoints(
    primaries: Sequence[ReplicaCopy],
    targets: Sequence[tuple[ReplicaCopy, Migration]],
) -> tuple[Endpoint, ...]:
    """Weighted endpoints of one workload from its placed copies and the copies its active
    migrations run on their targets. Copies without an address and port are left out.

    >>> a = ReplicaCopy(0, "n1", 3, "127.0.0.1", 8001, True, True)
    >>> [(e.node_id, e.weight) for e in service_endpoints([a], [])]
    [('n1', 100)]
    """
    shares = {m.replica: m for _, m in targets if m.active}
    out: list[Endpoint] = []
    for copy in primaries:
        m = shares.get(copy.replica)
        weight = m.source_weight_pct if m is not None else 100
        out.extend(_endpoint(copy, weight, EndpointRole.PRIMARY, None))
    for copy, m in targets:
        if m.active:
            out.extend(_endpoint(copy, m.target_weight_pct, EndpointRole.MIGRATION_TARGET, m.id))
    out.sort(key=lambda e: (e.replica, e.role != EndpointRole.PRIMARY, e.node_id))
    return tuple(out)


def _endpoint(
    copy: ReplicaCopy, weight: int, role: EndpointRole, migration: str | None
) -> list[Endpoint]:
    if copy.address is None or copy.port is None:
        return []
    usable = copy.healthy and copy.alive
    return [Endpoint(copy.replica, copy.node_id, copy.address, copy.port,
                     weight if usable else 0, role, usable, migration)]  # fmt: skip


def pick_weighted(weights: Sequence[int], u: float) -> int | None:
    """The index chosen by `u` in [0, 1) in proportion to `weights`; None if all are 0.

    >>> pick_weighted([90, 10], 0.95), pick_weighted([90, 10], 0.5), pick_weighted([0], 0.3)
    (1, 0, None)
    """
    total = sum(max(0, w) for w in weights)
    if total <= 0:
        return None
    point = u * total
    for i, weight in enumerate(weights):
        if weight > 0:
            if point < weight:
                return i
            point -= weight
    return max(i for i, w in enumerate(weights) if w > 0)
