"""API tokens table: operators' bearer credentials, stored as hashes (`security/tokens.py`
says which)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, func, insert, select, update

from edgefleet.errors import Conflict, NotFound
from edgefleet.security.rbac import role_named
from edgefleet.security.tokens import CHOSEN_SECRET_MARK, ApiToken
from edgefleet.store.tables import api_tokens


def _to_token(row: Row[Any]) -> ApiToken:
    return ApiToken(
        id=row.id,
        name=row.name,
        role=role_named(row.role),
        created_by=row.created_by,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked=row.revoked,
        last_used_at=row.last_used_at,
        scope=row.scope,
    )


class ApiTokenRepository:
    def __init__(self, connection: Connection) -> None:
        self._c = connection

    def insert(self, token: ApiToken, secret_hash: str) -> None:
        self._c.execute(
            insert(api_tokens).values(
                id=token.id,
                name=token.name,
                role=str(token.role),
                secret_hash=secret_hash,
                created_by=token.created_by,
                created_at=token.created_at,
                expires_at=token.expires_at,
                revoked=token.revoked,
                last_used_at=token.last_used_at,
                scope=token.scope,
            )
        )

    def find_by_hash(self, secret_hash: str) -> ApiToken | None:
        row = self._c.execute(
            select(api_tokens).where(api_tokens.c.secret_hash == secret_hash)
        ).first()
        return _to_token(row) if row else None

    def with_chosen_secrets(self) -> list[tuple[ApiToken, str]]:
        """Tokens whose secret a person chose, each with its stored (salted) hash."""
        rows = self._c.execute(
            select(api_tokens).where(api_tokens.c.secret_hash.contains(CHOSEN_SECRET_MARK))
        )
        return [(_to_token(r), r.secret_hash) for r in rows]

    def set_secret_hash(self, token_id: str, secret_hash: str) -> None:
        self._c.execute(
            update(api_tokens).where(api_tokens.c.id == token_id).values(secret_hash=secret_hash)
        )

    def get(self, token_id: str) -> ApiToken:
        row = self._c.execute(select(api_tokens).where(api_tokens.c.id == token_id)).first()
        if row is None:
            raise NotFound(f"no API token with id {token_id!r}", code="token_not_found")
        return _to_token(row)

    def resolve(self, id_or_name: str) -> ApiToken:
        """A token by id, else the one token that is not revoked named `id_or_name`
        (Conflict `ambiguous_token` naming the ids when several are)."""
        row = self._c.execute(select(api_tokens).where(api_tokens.c.id == id_or_name)).first()
        if row is not None:
            return _to_token(row)
        named = self._c.execute(
            select(api_tokens)
            .where(api_tokens.c.name == id_or_name, api_tokens.c.revoked.is_(False))
            .order_by(api_tokens.c.created_at)
        ).all()
        if len(named) > 1:
            ids = ", ".join(r.id for r in named)
            raise Conflict(
                f"{len(named)} API tokens are named {id_or_name!r} ({ids}): use the token id",
                code="ambiguous_token",
            )
        if not named:
            raise NotFound(f"no API token with id or name {id_or_name!r}",
                           code="token_not_found")  # fmt: skip
        return _to_token(named[0])

    def all(self) -> list[ApiToken]:
        rows = self._c.execute(select(api_tokens).order_by(api_tokens.c.created_at))
        return [_to_token(r) for r in rows]

    def count(self) -> int:
        return int(self._c.execute(select(func.count()).select_from(api_tokens)).scalar_one())

    def revoke(self, token_id: str) -> None:
        self.get(token_id)
        self._c.execute(update(api_tokens).where(api_tokens.c.id == token_id).values(revoked=True))

    def mark_used(self, token_id: str, at: datetime) -> None:
        self._c.execute(
            update(api_tokens).where(api_tokens.c.id == token_id).values(last_used_at=at)
        )
