"""Nonces that devices have used, kept for the clock-skew window to refuse replays, and per
device the floor of its bus message sequence numbers (`security/message_signing.py`): when
a message's number is forgotten, the floor rises to it, so it stays refused."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, case, delete, func, select
from sqlalchemy.dialects import postgresql, sqlite

from edgefleet.errors import Unauthenticated
from edgefleet.security.message_signing import SEQ_NONCE_PREFIX, sequence_in
from edgefleet.store.tables import device_nonces, message_floors


def _remember_statement(dialect_insert: Any) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING RETURNING, built once per dialect (every device
    request runs it)."""
    return (
        dialect_insert(device_nonces)
        .values(
            device_id=bindparam("b_device_id", type_=device_nonces.c.device_id.type),
            nonce=bindparam("b_nonce", type_=device_nonces.c.nonce.type),
            expires_at=bindparam("b_expires_at", type_=device_nonces.c.expires_at.type),
        )
        .on_conflict_do_nothing()
        .returning(device_nonces.c.nonce)
    )


_USED_AMONG = select(device_nonces.c.device_id, device_nonces.c.nonce).where(
    device_nonces.c.device_id.in_(bindparam("b_devices", expanding=True)),
    device_nonces.c.nonce.in_(bindparam("b_nonces", expanding=True)),
)
NONCE_CHUNK = 500  # nonces per IN (...) list, well under every backend's parameter limit

_REMEMBER = {
    False: _remember_statement(sqlite.insert),
    True: _remember_statement(postgresql.insert),
}


def _raise_floor_statement(dialect_insert: Any) -> Any:
    """INSERT a floor, or raise the stored one to it (never lower it: two replicas pruning
    at once agree)."""
    insert = dialect_insert(message_floors)
    higher = case((insert.excluded.floor > message_floors.c.floor, insert.excluded.floor),
                  else_=message_floors.c.floor)  # fmt: skip
    return insert.on_conflict_do_update(index_elements=[message_floors.c.device_id],
                                        set_={"floor": higher})  # fmt: skip


_RAISE_FLOOR = {
    False: _raise_floor_statement(sqlite.insert),
    True: _raise_floor_statement(postgresql.insert),
}
_FLOORS = select(message_floors.c.device_id, message_floors.c.floor).where(
    message_floors.c.device_id.in_(bindparam("b_devices", expanding=True))
)


class NonceRepository:
    def __init__(self, connection: Connection) -> None:
        self._c = connection

    def remember(self, device_id: str, nonce: str, expires_at: datetime) -> None:
        """Record a nonce; Unauthenticated if this device already used it."""
        statement = _REMEMBER[self._c.dialect.name == "postgresql"]
        values = {"b_device_id": device_id, "b_nonce": nonce, "b_expires_at": expires_at}
        # RETURNING rather than rowcount: drivers disagree on rowcount for ON CONFLICT.
        if self._c.execute(statement, values).first() is None:
            raise Unauthenticated(
                "request nonce was already used: replayed request refused",
                code="replayed_request",
            )

    def remember_many(self, pairs: Sequence[tuple[str, str]], expires_at: datetime) -> list[bool]:
        """Record (device id, nonce) pairs in one statement per chunk; per pair whether it
        was new (False: used before, or earlier in `pairs`)."""
        dialect_insert = (
            postgresql.insert if self._c.dialect.name == "postgresql" else sqlite.insert
        )
        taken: set[tuple[str, str]] = set()
        for start in range(0, len(pairs), NONCE_CHUNK):
            rows = [{"device_id": d, "nonce": n, "expires_at": expires_at}
                    for d, n in dict.fromkeys(pairs[start : start + NONCE_CHUNK])]  # fmt: skip
            statement = (dialect_insert(device_nonces).values(rows).on_conflict_do_nothing()
                         .returning(device_nonces.c.device_id, device_nonces.c.nonce))  # fmt: skip
            taken.update((row.device_id, row.nonce) for row in self._c.execute(statement))
        outcomes = []
        for pair in pairs:
            outcomes.append(pair in taken)
            taken.discard(pair)  # a second copy in the same batch is a replay
        return outcomes

    def used(self, device_id: str, nonce: str) -> bool:
        """Whether this device already used this nonce (within its expiry)."""
        query = select(device_nonces.c.nonce).where(
            device_nonces.c.device_id == device_id, device_nonces.c.nonce == nonce
        )
        return self._c.execute(query).first() is not None

    def used_among(self, pairs: Collection[tuple[str, str]]) -> set[tuple[str, str]]:
        """Those of the (device id, nonce) pairs already used, in one query per chunk."""
        wanted = sorted(set(pairs))
        found: set[tuple[str, str]] = set()
        for start in range(0, len(wanted), NONCE_CHUNK):
            chunk = wanted[start : start + NONCE_CHUNK]
            params = {"b_devices": sorted({d for d, _ in chunk}),
                      "b_nonces": sorted({n for _, n in chunk})}  # fmt: skip
            found.update((row.device_id, row.nonce) for row in self._c.execute(_USED_AMONG, params))
        return found & set(wanted)

    def floors(self, device_ids: Collection[str]) -> dict[str, int]:
        """Each device's message sequence floor (absent: none yet, every number is new)."""
        wanted = sorted(set(device_ids))
        found: dict[str, int] = {}
        for start in range(0, len(wanted), NONCE_CHUNK):
            params = {"b_devices": wanted[start : start + NONCE_CHUNK]}
            found.update((row.device_id, row.floor) for row in self._c.execute(_FLOORS, params))
        return found

    def forget(self, device_id: str) -> None:
        """Drop every nonce and the message floor of a device that is deleted."""
        self._c.execute(delete(device_nonces).where(device_nonces.c.device_id == device_id))
        self._c.execute(delete(message_floors).where(message_floors.c.device_id == device_id))

    def prune(self, now: datetime) -> int:
        """Forget nonces past their expiry; a device's message sequence numbers among them
        raise its floor to the highest, so none of them is taken again."""
        expired = device_nonces.c.expires_at < now
        numbered = device_nonces.c.nonce.startswith(SEQ_NONCE_PREFIX)
        highest = (
            select(device_nonces.c.device_id, func.max(device_nonces.c.nonce).label("top"))
            .where(expired, numbered)
            .group_by(device_nonces.c.device_id)
        )
        raised = []
        for row in self._c.execute(highest):
            floor = sequence_in(row.top)
            if floor is None:  # a request's random nonce that happens to start alike
                mine = select(device_nonces.c.nonce).where(
                    expired, numbered, device_nonces.c.device_id == row.device_id
                )
                floor = max((n for n in map(sequence_in, self._c.scalars(mine)) if n is not None),
                            default=None)  # fmt: skip
            if floor is not None:
                raised.append({"device_id": row.device_id, "floor": floor})
        if raised:
            self._c.execute(_RAISE_FLOOR[self._c.dialect.name == "postgresql"], raised)
        result = self._c.execute(delete(device_nonces).where(expired))
        return result.rowcount
