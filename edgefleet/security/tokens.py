"""Bearer secrets: API tokens for operators and enrollment tokens for devices.

A secret the server mints is 32 random bytes with a readable prefix (`efa_` API, `efe_`
enrollment). Only its SHA-256 is stored (`hash_secret`), which is also the key the token is
found by in one indexed lookup: against 256 bits of entropy a slow hash adds nothing.

A secret a person chose (the first admin token, `EDGEFLEET_ADMIN_TOKEN`) may be guessable,
and a fast unsalted hash of it in a stolen database or backup is a dictionary attack away
from the plain secret. Its stored form is salted scrypt instead (`hash_chosen_secret`):

    s1$SALT$KEY     s1 = scrypt with N=2**15, r=8, p=3 (32 MiB, a few hundred ms), a 16-byte
                    random SALT and a 24-byte KEY, both base64url without padding

(58 characters: it fits the column that holds SHA-256 hex digests, and a `$` tells the two
apart). Such a token cannot be found by its hash: the server checks a presented secret
against these few rows (`verify_chosen_secret`, constant-time) only when no SHA-256
matches. A new parameter set gets a new tag; stored hashes keep the tag they were made with.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

API_TOKEN_PREFIX = "efa_"
ENROLLMENT_TOKEN_PREFIX = "efe_"
CHOSEN_SECRET_MARK = "$"  # in a chosen secret's stored form, never in a hex digest

_MINTED = re.compile(r"(?:efa|efe)_[A-Za-z0-9_-]{43}")
_SALT_BYTES = 16
_KEY_BYTES = 24
# Parameter sets by tag: (n, r, p). OWASP's scrypt minimum at 32 MiB is N=2**15, r=8, p=3.
_SCRYPT = {"s1": (2**15, 8, 3)}
_CURRENT = "s1"


def new_secret(prefix: str) -> str:
    """A fresh secret such as `efa_3q...`."""
    return prefix + secrets.token_urlsafe(32)


def is_minted_secret(secret: str) -> bool:
    """Whether `secret` has the form of one `new_secret` made (a prefix and 43 characters)."""
    return _MINTED.fullmatch(secret) is not None


def hash_secret(secret: str) -> str:
    """The stored form of a minted secret, and the key it is looked up by."""
    return hashlib.sha256(secret.encode()).hexdigest()


def hash_chosen_secret(secret: str) -> str:
    """The stored form of a secret a person chose: salted scrypt (see the module docstring)."""
    salt = secrets.token_bytes(_SALT_BYTES)
    return "$".join((_CURRENT, _b64(salt), _b64(_scrypt(_CURRENT, secret, salt))))


def is_chosen_secret_hash(stored: str) -> bool:
    return CHOSEN_SECRET_MARK in stored


def verify_chosen_secret(secret: str, stored: str) -> bool:
    """Whether `secret` is the one `stored` was made from (False for any other stored form)."""
    tag, _, rest = stored.partition("$")
    salt_b64, _, key_b64 = rest.partition("$")
    if tag not in _SCRYPT:
        return False
    try:
        salt, key = _unb64(salt_b64), _unb64(key_b64)
    except (binascii.Error, ValueError):
        return False
    return hmac.compare_digest(_scrypt(tag, secret, salt), key)


def _scrypt(tag: str, secret: str, salt: bytes) -> bytes:
    n, r, p = _SCRYPT[tag]
    return hashlib.scrypt(secret.encode(), salt=salt, n=n, r=r, p=p, dklen=_KEY_BYTES,
                          maxmem=4 * 128 * n * r)  # fmt: skip


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def new_id(prefix: str) -> str:
    """A short random identifier such as `tok-5f2c9a1b0d3e`."""
    return f"{prefix}-{secrets.token_hex(6)}"


@dataclass(frozen=True)
class ApiToken:
    id: str
    name: str
    role: str  # a built-in `Role`, or a custom role's name
    created_by: str
    created_at: datetime
    expires_at: datetime | None
    revoked: bool
    last_used_at: datetime | None = None
    scope: str | None = None  # a label selector the token's changes are limited to
