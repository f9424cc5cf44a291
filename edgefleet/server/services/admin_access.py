"""Admin access to a control plane: what start-up says about it, and how a person on the
server's machine gets it back.

At start the server installs EDGEFLEET_ADMIN_TOKEN as the first admin token when the data
dir has no token at all (`TokenService.bootstrap_admin`), and otherwise ignores it. Both
surprise people: a server started without it has no admin, and a token changed later does
nothing. `check_at_start` says which case this start is, for one log line each.

`mint_local_admin` is the way back in (`edgefleet server bootstrap-token`): whoever can
open the server's database (its data dir, or its database URL) mints an admin API token
there directly, audited as a local bootstrap. Anyone with that access could rewrite the
token table anyway, so it grants nothing new.
"""

from __future__ import annotations

import getpass
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from edgefleet.clock import Clock
from edgefleet.security.rbac import Principal, Role
from edgefleet.security.tokens import (
    API_TOKEN_PREFIX,
    ApiToken,
    hash_secret,
    new_id,
    new_secret,
    verify_chosen_secret,
)
from edgefleet.server.services.audit import OperatorContext, record_action
from edgefleet.server.services.tokens import TokenService
from edgefleet.store import Database

# How a token minted on the server's machine appears in the audit log.
LOCAL_BOOTSTRAP = Principal(token_id="local-bootstrap", name="local-bootstrap", role=Role.ADMIN)


class AdminTokenState(StrEnum):
    CREATED = "created"  # the data dir had no token: EDGEFLEET_ADMIN_TOKEN is its admin now
    IN_USE = "in-use"  # EDGEFLEET_ADMIN_TOKEN is a usable admin token of this data dir
    IGNORED = "ignored"  # the data dir has tokens; EDGEFLEET_ADMIN_TOKEN is no usable one
    NO_ADMIN = "no-admin"  # not set, and the data dir has no usable admin token
    ADMIN_EXISTS = "admin-exists"  # not set; the data dir has a usable admin token


@dataclass(frozen=True)
class AdminTokenCheck:
    state: AdminTokenState
    token_id: str | None = None
    reason: str = ""


def _usable(token: ApiToken, now: datetime) -> bool:
    return not token.revoked and (token.expires_at is None or now < token.expires_at)


class AdminAccess:
    def __init__(self, db: Database, tokens: TokenService, clock: Clock) -> None:
        self._db = db
        self._tokens = tokens
        self._clock = clock

    def check_at_start(self, chosen: str | None) -> AdminTokenCheck:
        """Install `chosen` (EDGEFLEET_ADMIN_TOKEN) into a data dir without tokens, and say
        what it is to this data dir; without it, whether any admin token is usable."""
        now = self._clock.now()
        if chosen is None:
            with self._db.read() as tx:
                admins = [t for t in tx.api_tokens.all() if t.role is Role.ADMIN]
            if any(_usable(t, now) for t in admins):
                return AdminTokenCheck(AdminTokenState.ADMIN_EXISTS)
            reason = "no admin token" if not admins else "every admin token is revoked or expired"
            return AdminTokenCheck(AdminTokenState.NO_ADMIN, reason=reason)
        created = self._tokens.bootstrap_admin(chosen, request_id=f"bootstrap-{uuid.uuid4().hex}")
        if created is not None:
            return AdminTokenCheck(AdminTokenState.CREATED, created.id)
        token = self._find(chosen)
        if token is None:
            return AdminTokenCheck(
                AdminTokenState.IGNORED, reason="the data dir has API tokens and it is none of them"
            )
        if not _usable(token, now):
            state = "revoked" if token.revoked else "expired"
            return AdminTokenCheck(
                AdminTokenState.IGNORED,
                token.id,
                reason=f"it is token {token.id}, which is {state}",
            )
        if token.role is not Role.ADMIN:
            return AdminTokenCheck(
                AdminTokenState.IGNORED,
                token.id,
                reason=f"it is token {token.id}, of role {token.role}",
            )
        return AdminTokenCheck(AdminTokenState.IN_USE, token.id)

    def _find(self, secret: str) -> ApiToken | None:
        """The stored token `secret` is, by its SHA-256 or against each salted hash (one
        scrypt per token a person chose: a few hundred ms, once per start)."""
        with self._db.read() as tx:
            found = tx.api_tokens.find_by_hash(hash_secret(secret))
            candidates = [] if found is not None else tx.api_tokens.with_chosen_secrets()
        if found is not None:
            return found
        return next((t for t, stored in candidates if verify_chosen_secret(secret, stored)),
                    None)  # fmt: skip

    def mint_local_admin(self, name: str, expires_in: timedelta | None) -> tuple[ApiToken, str]:
        """A new admin API token and its secret (shown once), audited as a local bootstrap
        by this machine's user."""
        now = self._clock.now()
        secret = new_secret(API_TOKEN_PREFIX)
        token = ApiToken(
            id=new_id("tok"),
            name=name,
            role=Role.ADMIN,
            created_by=LOCAL_BOOTSTRAP.actor,
            created_at=now,
            expires_at=now + expires_in if expires_in else None,
            revoked=False,
        )
        ctx = OperatorContext(LOCAL_BOOTSTRAP, f"local-{uuid.uuid4().hex}")
        with self._db.transaction() as tx:
            tx.api_tokens.insert(token, hash_secret(secret))
            record_action(tx, ctx, "api-token.create", f"api-token/{token.id}", now,
                          {"name": name, "role": Role.ADMIN.value, "via": "local bootstrap",
                           "os_user": _os_user(), "host": socket.gethostname()})  # fmt: skip
        return token, secret


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a uid without a passwd entry (containers)
        return "?"
