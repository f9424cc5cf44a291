"""hawkBit DDI tables: DDI targets (which device, tenant and controller id, the hash of its
TargetToken), the tenants' GatewayTokens (hashed), and the sha1/md5 of blobs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, insert, select, update
from sqlalchemy.exc import IntegrityError

from edgefleet.errors import Conflict, NotFound
from edgefleet.store.tables import ddi_gateway_tokens, ddi_hashes, ddi_targets


@dataclass(frozen=True)
class DdiTarget:
    device_id: str
    tenant: str
    controller_id: str
    created_at: datetime
    gateway_token_id: str | None = None  # the GatewayToken that enrolled it, if one did
    config_received_at: datetime | None = None  # its last configData


@dataclass(frozen=True)
class GatewayToken:
    id: str
    tenant: str
    description: str
    auto_approve: bool
    revoked: bool
    created_by: str
    created_at: datetime


def _target(row: Row[Any]) -> DdiTarget:
    return DdiTarget(row.device_id, row.tenant, row.controller_id, row.created_at,
                     row.gateway_token_id, row.config_received_at)  # fmt: skip


def _gateway(row: Row[Any]) -> GatewayToken:
    return GatewayToken(row.id, row.tenant, row.description, row.auto_approve, row.revoked,
                        row.created_by, row.created_at)  # fmt: skip


class DdiRepository:
    def __init__(self, connection: Connection) -> None:
        self._c = connection

    # Targets.

    def insert_target(self, target: DdiTarget, token_hash: str | None) -> None:
        """Store a target; Conflict `controller_id_taken` when its tenant has the id."""
        taken = Conflict(f"controller id {target.controller_id!r} is taken in tenant "
                         f"{target.tenant!r}", code="controller_id_taken")  # fmt: skip
        if self.find_target(target.tenant, target.controller_id) is not None:
            raise taken
        try:
            with self._c.begin_nested():
                self._c.execute(insert(ddi_targets).values(
                    device_id=target.device_id, tenant=target.tenant,
                    controller_id=target.controller_id, token_hash=token_hash,
                    gateway_token_id=target.gateway_token_id,
                    config_received_at=target.config_received_at,
                    created_at=target.created_at,
                ))  # fmt: skip
        except IntegrityError:
            raise taken from None

    def find_target(self, tenant: str, controller_id: str) -> DdiTarget | None:
        row = self._c.execute(select(ddi_targets).where(
            ddi_targets.c.tenant == tenant, ddi_targets.c.controller_id == controller_id
        )).first()  # fmt: skip
        return _target(row) if row else None

    def find_target_by_token(self, token_hash: str) -> DdiTarget | None:
        row = self._c.execute(
            select(ddi_targets).where(ddi_targets.c.token_hash == token_hash)
        ).first()
        return _target(row) if row else None

    def mark_config_received(self, device_id: str, at: datetime) -> None:
        self._c.execute(update(ddi_targets).where(ddi_targets.c.device_id == device_id)
                        .values(config_received_at=at))  # fmt: skip

    # Gateway tokens.

    def insert_gateway_token(self, token: GatewayToken, secret_hash: str) -> None:
        self._c.execute(insert(ddi_gateway_tokens).values(
            id=token.id, tenant=token.tenant, description=token.description,
            secret_hash=secret_hash, auto_approve=token.auto_approve, revoked=token.revoked,
            created_by=token.created_by, created_at=token.created_at,
        ))  # fmt: skip

    def find_gateway_token(self, secret_hash: str) -> GatewayToken | None:
        row = self._c.execute(select(ddi_gateway_tokens).where(
            ddi_gateway_tokens.c.secret_hash == secret_hash)).first()  # fmt: skip
        return _gateway(row) if row else None

    def gateway_tokens(self) -> list[GatewayToken]:
        rows = self._c.execute(select(ddi_gateway_tokens).order_by(ddi_gateway_tokens.c.created_at))
        return [_gateway(r) for r in rows]

    def revoke_gateway_token(self, token_id: str) -> GatewayToken:
        result = self._c.execute(update(ddi_gateway_tokens)
                                 .where(ddi_gateway_tokens.c.id == token_id)
                                 .values(revoked=True))  # fmt: skip
        if result.rowcount != 1:
            raise NotFound(f"no gateway token with id {token_id!r}",
                           code="gateway_token_not_found")  # fmt: skip
        row = self._c.execute(select(ddi_gateway_tokens)
                              .where(ddi_gateway_tokens.c.id == token_id)).one()  # fmt: skip
        return _gateway(row)

    # Hashes.

    def hashes(self, sha256: str) -> tuple[str, str] | None:
        """(sha1, md5) of a blob, when known."""
        row = self._c.execute(select(ddi_hashes).where(ddi_hashes.c.sha256 == sha256)).first()
        return (row.sha1, row.md5) if row else None

    def remember_hashes(self, sha256: str, sha1: str, md5: str) -> None:
        if self.hashes(sha256) is None:
            self._c.execute(insert(ddi_hashes).values(sha256=sha256, sha1=sha1, md5=md5))
