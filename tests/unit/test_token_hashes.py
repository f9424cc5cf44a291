"""Stored forms of bearer secrets: SHA-256 for minted ones, salted scrypt for chosen ones."""

from __future__ import annotations

import hashlib

from edgefleet.security.tokens import (
    API_TOKEN_PREFIX,
    ENROLLMENT_TOKEN_PREFIX,
    hash_chosen_secret,
    is_chosen_secret_hash,
    is_minted_secret,
    new_secret,
    verify_chosen_secret,
)

CHOSEN = "correct horse battery"


def test_a_chosen_secret_is_stored_salted_and_verified_only_by_itself() -> None:
    first, second = hash_chosen_secret(CHOSEN), hash_chosen_secret(CHOSEN)
    assert first != second  # salted: equal secrets do not give equal hashes
    for stored in (first, second):
        assert is_chosen_secret_hash(stored) and stored.startswith("s1$")
        assert len(stored) <= 64  # the column that holds SHA-256 hex digests
        assert CHOSEN not in stored and hashlib.sha256(CHOSEN.encode()).hexdigest() not in stored
        assert verify_chosen_secret(CHOSEN, stored)
        assert not verify_chosen_secret(CHOSEN + "!", stored)


def test_other_stored_forms_never_verify() -> None:
    digest = hashlib.sha256(CHOSEN.encode()).hexdigest()
    assert not is_chosen_secret_hash(digest)
    tag, salt, key = hash_chosen_secret(CHOSEN).split("$")
    for stored in (digest, f"s9${salt}${key}", f"{tag}${salt}", f"{tag}$!!${key}", ""):
        assert not verify_chosen_secret(CHOSEN, stored)


def test_minted_secrets_are_recognised_by_their_form() -> None:
    assert is_minted_secret(new_secret(API_TOKEN_PREFIX))
    assert is_minted_secret(new_secret(ENROLLMENT_TOKEN_PREFIX))
    assert not is_minted_secret(CHOSEN)
    assert not is_minted_secret(new_secret(API_TOKEN_PREFIX) + "x")
    assert not is_minted_secret("efa_" + "a" * 42)
