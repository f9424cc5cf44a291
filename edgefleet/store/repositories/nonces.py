"""Nonces that devices have used, kept for the clock-skew window to refuse replays."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, delete
from sqlalchemy.dialects import postgresql, sqlite

from edgefleet.errors import Unauthenticated
from edgefleet.store.tables import device_nonces


class NonceRepository:
    def __init__(self, connection: Connection) -> None:
        self._c = connection

    def remember(self, device_id: str, nonce: str, expires_at: datetime) -> None:
        """Record a nonce; Unauthenticated if this device already used it."""
        is_postgres = self._c.dialect.name == "postgresql"
        dialect_insert = postgresql.insert if is_postgres else sqlite.insert
        statement = (
            dialect_insert(device_nonces)
            .values(device_id=device_id, nonce=nonce, expires_at=expires_at)
            .on_conflict_do_nothing()
            .returning(device_nonces.c.nonce)
        )
        # RETURNING rather than rowcount: drivers disagree on rowcount for ON CONFLICT.
        if self._c.execute(statement).first() is None:
            raise Unauthenticated(
                "request nonce was already used: replayed request refused",
                code="replayed_request",
            )

    def prune(self, now: datetime) -> int:
        """Forget nonces whose timestamps could no longer pass the skew check."""
        result = self._c.execute(delete(device_nonces).where(device_nonces.c.expires_at < now))
        return result.rowcount
