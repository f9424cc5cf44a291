"""Nonces that devices have used, kept for the clock-skew window to refuse replays."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, delete, select
from sqlalchemy.dialects import postgresql, sqlite

from edgefleet.errors import Unauthenticated
from edgefleet.store.tables import device_nonces


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

    def forget(self, device_id: str) -> None:
        """Drop every nonce of a device that is deleted."""
        self._c.execute(delete(device_nonces).where(device_nonces.c.device_id == device_id))

    def prune(self, now: datetime) -> int:
        """Forget nonces whose timestamps could no longer pass the skew check."""
        result = self._c.execute(delete(device_nonces).where(device_nonces.c.expires_at < now))
        return result.rowcount
