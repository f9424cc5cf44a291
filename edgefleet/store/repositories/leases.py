"""Controller leases (`core.lease`): acquire, renew and release in one statement each, and
the fence check a controller's write transaction runs before it commits."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, bindparam, case, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from edgefleet.core.lease import Fence, Lease
from edgefleet.errors import LeaseLost
from edgefleet.store.tables import leases


def _acquire_statement(dialect_insert: Any) -> Any:
    """INSERT a new lease, or take over an expired one (token + 1), or renew one's own
    (token kept): ON CONFLICT DO UPDATE ... WHERE, so a lease another replica holds is left
    alone and nothing is returned."""
    insert = dialect_insert(leases).values(
        name=bindparam("b_name", type_=leases.c.name.type),
        holder=bindparam("b_holder", type_=leases.c.holder.type),
        token=1,
        expires_at=bindparam("b_expires_at", type_=leases.c.expires_at.type),
    )
    now = bindparam("b_now", type_=leases.c.expires_at.type)
    ours_and_live = and_(leases.c.holder == insert.excluded.holder, leases.c.expires_at > now)
    return insert.on_conflict_do_update(
        index_elements=[leases.c.name],
        set_={
            "holder": insert.excluded.holder,
            "token": case((ours_and_live, leases.c.token), else_=leases.c.token + 1),
            "expires_at": insert.excluded.expires_at,
        },
        where=or_(leases.c.holder == insert.excluded.holder, leases.c.expires_at <= now),
    ).returning(leases.c.name, leases.c.holder, leases.c.token, leases.c.expires_at)


_ACQUIRE = {
    False: _acquire_statement(sqlite.insert),
    True: _acquire_statement(postgresql.insert),
}


class LeaseRepository:
    def __init__(self, connection: Connection) -> None:
        self._c = connection

    def acquire(self, name: str, holder: str, now: datetime, ttl: timedelta) -> Lease | None:
        """Take, take over or renew lease `name` for `holder` until now + ttl; None when
        another replica holds it unexpired (`core.lease.acquire` in one statement)."""
        statement = _ACQUIRE[self._c.dialect.name == "postgresql"]
        values = {"b_name": name, "b_holder": holder, "b_expires_at": now + ttl, "b_now": now}
        row = self._c.execute(statement, values).first()
        return None if row is None else Lease(row.name, row.holder, row.token, row.expires_at)

    def release(self, fence: Fence, now: datetime) -> bool:
        """Expire the lease at once if `fence` still holds it (a clean shutdown hands it
        over without waiting for the TTL); whether it did."""
        statement = (
            update(leases)
            .where(leases.c.name == fence.name, leases.c.holder == fence.holder,
                   leases.c.token == fence.token, leases.c.expires_at > now)
            .values(expires_at=now)
        )  # fmt: skip
        return self._c.execute(statement).rowcount == 1

    def list(self) -> list[Lease]:
        """Every lease, by name."""
        rows = self._c.execute(select(leases).order_by(leases.c.name))
        return [Lease(r.name, r.holder, r.token, r.expires_at) for r in rows]

    def check_fence(self, fence: Fence) -> None:
        """LeaseLost unless the lease still has the fence's holder and token. On PostgreSQL
        the row stays share-locked until this transaction ends, so a takeover waits for the
        commit instead of slipping in between this check and it."""
        query = (
            select(leases.c.token)
            .where(leases.c.name == fence.name, leases.c.holder == fence.holder,
                   leases.c.token == fence.token)
            .with_for_update(read=True)
        )  # fmt: skip
        if self._c.execute(query).first() is None:
            raise LeaseLost(
                f"lease {fence.name!r} token {fence.token} of {fence.holder} was taken over: "
                "write refused",
                code="lease_lost",
            )
