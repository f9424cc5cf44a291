"""Nonces that devices have used, kept for the clock-skew window to refuse replays."""

from __future__ import annotations

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

    def forget(self, device_id: str) -> None:
        """Drop every nonce of a device that is deleted."""
        self._c.execute(delete(device_nonces).where(device_nonces.c.device_id == device_id))

    def prune(self, now: datetime) -> int:
        """Forget nonces whose timestamps could no longer pass the skew check."""
        result = self._c.execute(delete(device_nonces).where(device_nonces.c.expires_at < now))
        return result.rowcount
