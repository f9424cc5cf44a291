"""Enrollment tokens table: bootstrap secrets for devices, stored as hashes."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Row, insert, select, update

from edgefleet.core.enrollment import EnrollmentToken
from edgefleet.errors import NotFound
from edgefleet.store.tables import enrollment_tokens


def _to_token(row: Row[Any]) -> EnrollmentToken:
    return EnrollmentToken(
        id=row.id,
        description=row.description,
        auto_approve=row.auto_approve,
        expires_at=row.expires_at,
        max_uses=row.max_uses,
        uses=row.uses,
        revoked=row.revoked,
        created_by=row.created_by,
        created_at=row.created_at,
    )


class EnrollmentTokenRepository:
    def __init__(self, connection: Connection) -> None:
        self._c = connection

    def insert(self, token: EnrollmentToken, secret_hash: str) -> None:
        self._c.execute(
            insert(enrollment_tokens).values(
                id=token.id,
                description=token.description,
                secret_hash=secret_hash,
                auto_approve=token.auto_approve,
                expires_at=token.expires_at,
                max_uses=token.max_uses,
                uses=token.uses,
                revoked=token.revoked,
                created_by=token.created_by,
                created_at=token.created_at,
            )
        )

    def find_by_hash(self, secret_hash: str) -> EnrollmentToken | None:
        row = self._c.execute(
            select(enrollment_tokens).where(enrollment_tokens.c.secret_hash == secret_hash)
        ).first()
        return _to_token(row) if row else None

    def get(self, token_id: str) -> EnrollmentToken:
        row = self._c.execute(
            select(enrollment_tokens).where(enrollment_tokens.c.id == token_id)
        ).first()
        if row is None:
            raise NotFound(
                f"no enrollment token with id {token_id!r}", code="enrollment_token_not_found"
            )
        return _to_token(row)

    def all(self) -> list[EnrollmentToken]:
        rows = self._c.execute(select(enrollment_tokens).order_by(enrollment_tokens.c.created_at))
        return [_to_token(r) for r in rows]

    def count_use(self, token_id: str) -> None:
        self._c.execute(
            update(enrollment_tokens)
            .where(enrollment_tokens.c.id == token_id)
            .values(uses=enrollment_tokens.c.uses + 1)
        )

    def revoke(self, token_id: str) -> None:
        self.get(token_id)
        self._c.execute(
            update(enrollment_tokens).where(enrollment_tokens.c.id == token_id).values(revoked=True)
        )
