"""The token service over each backend: a chosen admin token is found without a lookup key,
and unknown tokens cannot make the server run more than one slow hash at a time."""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

from edgefleet.clock import SystemClock
from edgefleet.errors import Unauthenticated, Unavailable
from edgefleet.security.rbac import Role
from edgefleet.server.services import tokens as token_service
from edgefleet.server.services.tokens import TokenService
from edgefleet.store import Database

CHOSEN = "an admin token a person chose"


def test_a_chosen_admin_token_authenticates_and_a_stranger_does_not(db: Database) -> None:
    tokens = TokenService(db, SystemClock())
    assert tokens.bootstrap_admin(CHOSEN, "req-1") is not None
    assert tokens.bootstrap_admin(CHOSEN, "req-2") is None  # only into an empty table
    assert tokens.authenticate(CHOSEN).role is Role.ADMIN
    assert tokens.authenticate(CHOSEN).role is Role.ADMIN  # remembered: no second scrypt
    other_replica = TokenService(db, SystemClock())
    assert other_replica.authenticate(CHOSEN).role is Role.ADMIN
    with pytest.raises(Unauthenticated) as refused:
        tokens.authenticate(CHOSEN + "?")
    assert refused.value.code == "invalid_token"


def test_unknown_tokens_are_checked_against_chosen_secrets_one_at_a_time(db: Database) -> None:
    tokens = TokenService(db, SystemClock())
    tokens._checks["f" * 64] = Future()  # another request's token is being checked
    with pytest.raises(Unauthenticated):  # no chosen secret stored: nothing to check
        tokens.authenticate("some unknown token")
    tokens.bootstrap_admin(CHOSEN, "req-1")
    with pytest.raises(Unavailable) as busy:
        tokens.authenticate("some unknown token")
    assert busy.value.code == "auth_busy"
    del tokens._checks["f" * 64]
    with pytest.raises(Unauthenticated):
        tokens.authenticate("some unknown token")


def test_concurrent_first_requests_with_the_chosen_token_share_one_check(db: Database) -> None:
    tokens = TokenService(db, SystemClock())
    tokens.bootstrap_admin(CHOSEN, "req-1")
    start = threading.Barrier(6)

    def authenticate() -> str:
        start.wait()
        return tokens.authenticate(CHOSEN).role

    with ThreadPoolExecutor(6) as pool:
        roles = list(pool.map(lambda _: authenticate(), range(6)))
    assert roles == [Role.ADMIN] * 6


def test_a_remembered_chosen_token_costs_no_slow_hash(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once verified, the admin token is one indexed lookup per request: no scrypt to
    verify it and none to store it salted again (each took ~0.4 s per request)."""
    tokens = TokenService(db, SystemClock())
    tokens.bootstrap_admin(CHOSEN, "req-1")
    tokens.authenticate(CHOSEN)
    slow: list[str] = []
    for name in ("hash_chosen_secret", "verify_chosen_secret"):
        real = getattr(token_service, name)

        def counted(*args: Any, _name: str = name, _real: Any = real) -> Any:
            slow.append(_name)
            return _real(*args)

        monkeypatch.setattr(token_service, name, counted)
    for _ in range(3):
        assert tokens.authenticate(CHOSEN).role is Role.ADMIN
    assert slow == []
