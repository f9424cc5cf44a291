"""Controller leases: which replica may act for a controller, and with which fencing token.

A lease is a row (name, holder, token, expires_at). A replica *acquires* it when the lease
is free, expired, or already its own; taking it from anyone (itself after expiry included)
increments the token, renewing an unexpired lease of its own keeps the token. Every write a
controller makes checks, in its own transaction, that the lease still has its holder and
token (`Fence`): a replica that was paused past its lease finds a larger token there and
its late write is refused.

The store runs `acquire` as one conditional UPSERT; this module states the same rule over
plain data, so it can be tested without a database, plus the local timing rules:

    renew every ttl/3; act only until (monotonic time the acquiring statement was *sent*)
    + ttl - margin, so a replica stops before any other can take over (given clocks that
    agree to within the margin).

>>> from datetime import UTC, datetime, timedelta
>>> t0 = datetime(2026, 1, 1, tzinfo=UTC)
>>> ttl = timedelta(seconds=6)
>>> a = acquire("rollout-controller", None, "r1", t0, ttl)
>>> a.token, a.holder
(1, 'r1')
>>> acquire(a.name, a, "r2", t0 + timedelta(seconds=1), ttl) is None
True
>>> acquire(a.name, a, "r2", t0 + ttl, ttl).token
2
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum


class LeaseName(StrEnum):
    """The controllers that act under a lease: exactly one replica runs each."""

    HOUSEKEEPING = "housekeeping"
    ROLLOUTS = "rollout-controller"
    WORKLOADS = "workload-controllers"


@dataclass(frozen=True)
class Lease:
    name: str
    holder: str
    token: int
    expires_at: datetime

    def is_live(self, now: datetime) -> bool:
        """Whether the lease is unexpired at `now` (it expires at `expires_at` exactly)."""
        return now < self.expires_at


@dataclass(frozen=True)
class Fence:
    """What a controller's write proves it still holds: the lease's holder and token."""

    name: str
    holder: str
    token: int


def may_acquire(current: Lease | None, holder: str, now: datetime) -> bool:
    """Whether `holder` may take or renew the lease: free, expired, or its own."""
    return current is None or not current.is_live(now) or current.holder == holder


def acquire(
    name: str, current: Lease | None, holder: str, now: datetime, ttl: timedelta
) -> Lease | None:
    """Lease `name` after `holder` asks for it at `now` (`current` is its stored row, if
    any), or None when another holds it."""
    if not may_acquire(current, holder, now):
        return None
    if current is None:
        return Lease(name, holder, 1, now + ttl)
    renewing = current.holder == holder and current.is_live(now)
    token = current.token if renewing else current.token + 1
    return Lease(name, holder, token, now + ttl)


def release(current: Lease | None, fence: Fence, now: datetime) -> Lease | None:
    """The lease after its holder gives it up: expired at once, token kept (the next
    acquisition increments it); unchanged when `fence` no longer holds it."""
    if current is None or not fence_holds(current, fence):
        return current
    return Lease(current.name, current.holder, current.token, min(now, current.expires_at))


def fence_holds(current: Lease | None, fence: Fence) -> bool:
    """Whether a write carrying `fence` may commit: the lease still has its holder and
    token. Expiry alone does not refuse it: nobody else acted meanwhile, or the token would
    have moved."""
    return current is not None and (current.holder, current.token) == (fence.holder, fence.token)


def renew_interval_s(ttl_s: float) -> float:
    """How often a holder renews: three tries before its lease could lapse."""
    return ttl_s / 3


def acting_margin_s(ttl_s: float) -> float:
    """How long before the lease's end a holder that could not renew stops acting: a sixth
    of the TTL, room for clock disagreement between replicas and the database."""
    return ttl_s / 6


def act_until(sent_monotonic_s: float, ttl_s: float) -> float:
    """The monotonic time after which a holder stops acting, measured from when it *sent*
    the statement that acquired or renewed the lease (the lease began no earlier)."""
    return sent_monotonic_s + ttl_s - acting_margin_s(ttl_s)
