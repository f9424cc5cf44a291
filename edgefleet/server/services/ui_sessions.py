"""Dashboard sessions: an operator's API token exchanged for a short-lived one.

A session is an API token of its own (named `ui:NAME`, the same role and scope, expiring after
`SESSION_TTL` or with the token it came from, whichever is first), so every control-plane
replica sharing the database knows it, `edgefleet tokens list` shows it, an admin can revoke
it, and what is done through it is audited under its name. Its secret lives only in the
browser's HttpOnly cookie; logging out revokes it. The long-lived token the operator typed
is used once, for the exchange, and kept nowhere.
"""

from __future__ import annotations

from datetime import timedelta

from edgefleet.clock import Clock
from edgefleet.errors import Unauthenticated
from edgefleet.security.rbac import Principal
from edgefleet.security.tokens import API_TOKEN_PREFIX, ApiToken, hash_secret, new_id, new_secret
from edgefleet.server.services.audit import OperatorContext, record_action
from edgefleet.server.services.tokens import TokenService
from edgefleet.store import Database

SESSION_TTL = timedelta(hours=8)
SESSION_PREFIX = "ui:"


class UiSessionService:
    def __init__(self, db: Database, clock: Clock, tokens: TokenService) -> None:
        self._db = db
        self._clock = clock
        self._tokens = tokens

    def open(self, api_token: str, request_id: str) -> tuple[ApiToken, str]:
        """A session for the holder of `api_token` (Unauthenticated as for any request):
        the session token and its secret."""
        principal = self._tokens.authenticate(api_token)
        if principal.name.startswith(SESSION_PREFIX):
            raise Unauthenticated("a dashboard session cannot open another: log in with an "
                                  "API token", code="invalid_token")  # fmt: skip
        now = self._clock.now()
        expires_at = now + SESSION_TTL
        with self._db.read() as tx:
            parent = tx.api_tokens.get(principal.token_id)
        if parent.expires_at is not None:
            expires_at = min(expires_at, parent.expires_at)
        secret = new_secret(API_TOKEN_PREFIX)
        ctx = OperatorContext(principal, request_id)
        session = ApiToken(
            id=new_id("tok"),
            name=f"{SESSION_PREFIX}{principal.name}"[:128],
            role=principal.role,
            created_by=ctx.actor,
            created_at=now,
            expires_at=expires_at,
            revoked=False,
            scope=parent.scope,  # a session never reaches further than its token
        )
        with self._db.transaction() as tx:
            tx.api_tokens.insert(session, hash_secret(secret))
            record_action(
                tx,
                ctx,
                "ui-session.open",
                f"api-token/{session.id}",
                now,
                {"role": str(session.role), "expires_at": expires_at.isoformat()},
            )
        return session, secret

    def close(self, ctx: OperatorContext) -> None:
        """Revoke the session the request came with (a no-op for other tokens)."""
        principal: Principal = ctx.principal
        if not principal.name.startswith(SESSION_PREFIX):
            return
        now = self._clock.now()
        with self._db.transaction() as tx:
            tx.api_tokens.revoke(principal.token_id)
            record_action(tx, ctx, "ui-session.close", f"api-token/{principal.token_id}", now)
