"""How a real server stores API tokens: the admin token an operator chose is salted scrypt,
minted tokens are SHA-256, and an admin token stored unsalted by an earlier version is
salted at the next start or at its next use."""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
from pathlib import Path

import pytest

from edgefleet.errors import ApiError
from edgefleet.localfleet import ServerProcess
from edgefleet.security.tokens import verify_chosen_secret
from tests.conftest import ADMIN_TOKEN


def sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def stored_hashes(server: ServerProcess) -> dict[str, str]:
    """Token name -> stored hash, read from the database file."""
    with contextlib.closing(sqlite3.connect(server.db_path)) as db:
        return dict(db.execute("SELECT name, secret_hash FROM api_tokens"))


def store_unsalted_as_before(server: ServerProcess) -> None:
    with contextlib.closing(sqlite3.connect(server.db_path)) as db, db:
        db.execute("UPDATE api_tokens SET secret_hash = ? WHERE name = 'bootstrap-admin'",
                   (sha256(ADMIN_TOKEN),))  # fmt: skip


def test_the_chosen_admin_token_is_stored_salted_and_minted_tokens_as_sha256(
    tmp_path: Path,
) -> None:
    server = ServerProcess(tmp_path / "data", ADMIN_TOKEN)
    server.start()
    try:
        with server.client() as admin:
            minted = admin.create_api_token("ci", "viewer")["token"]
            assert admin.whoami()["name"] == "bootstrap-admin"
        with server.client(minted) as viewer:
            assert viewer.whoami()["name"] == "ci"
        with (
            server.client("not-the-admin-token-at-all") as stranger,
            pytest.raises(ApiError) as refused,
        ):
            stranger.whoami()
        assert refused.value.status == 401 and refused.value.code == "invalid_token"
        stored = stored_hashes(server)
        assert stored["ci"] == sha256(minted)
        assert stored["bootstrap-admin"] != sha256(ADMIN_TOKEN)
        assert verify_chosen_secret(ADMIN_TOKEN, stored["bootstrap-admin"])
    finally:
        server.stop()


def test_an_unsalted_admin_token_of_an_earlier_version_is_salted_at_start(
    tmp_path: Path,
) -> None:
    server = ServerProcess(tmp_path / "data", ADMIN_TOKEN)
    server.start()
    server.stop()
    store_unsalted_as_before(server)
    server.start()  # with EDGEFLEET_ADMIN_TOKEN set
    try:
        stored = stored_hashes(server)["bootstrap-admin"]
        assert verify_chosen_secret(ADMIN_TOKEN, stored)
        with server.client() as admin:
            assert admin.whoami()["name"] == "bootstrap-admin"
    finally:
        server.stop()


def test_an_unsalted_admin_token_of_an_earlier_version_is_salted_at_its_next_use(
    tmp_path: Path,
) -> None:
    server = ServerProcess(tmp_path / "data", ADMIN_TOKEN)
    server.start()
    server.stop()
    store_unsalted_as_before(server)
    del server.env["EDGEFLEET_ADMIN_TOKEN"]  # set only for the first start, as advised
    server.start()
    try:
        assert stored_hashes(server)["bootstrap-admin"] == sha256(ADMIN_TOKEN)
        with server.client() as admin:
            assert admin.whoami()["name"] == "bootstrap-admin"
            assert verify_chosen_secret(ADMIN_TOKEN, stored_hashes(server)["bootstrap-admin"])
            assert admin.whoami()["name"] == "bootstrap-admin"  # found by its salted hash
    finally:
        server.stop()
