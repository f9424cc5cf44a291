"""Bearer secrets: API tokens for operators and enrollment tokens for devices.

A secret is 32 random bytes with a readable prefix (`efa_` API, `efe_` enrollment). Only
its SHA-256 is stored: the secret has full entropy, so a slow password hash adds nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

from edgefleet.security.rbac import Role

API_TOKEN_PREFIX = "efa_"
ENROLLMENT_TOKEN_PREFIX = "efe_"


def new_secret(prefix: str) -> str:
    """A fresh secret such as `efa_3q...`."""
    return prefix + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    """The stored form of a secret."""
    return hashlib.sha256(secret.encode()).hexdigest()


def secrets_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def new_id(prefix: str) -> str:
    """A short random identifier such as `tok-5f2c9a1b0d3e`."""
    return f"{prefix}-{secrets.token_hex(6)}"


@dataclass(frozen=True)
class ApiToken:
    id: str
    name: str
    role: Role
    created_by: str
    created_at: datetime
    expires_at: datetime | None
    revoked: bool
    last_used_at: datetime | None = None
