"""Policies and pending changes on every backend: a policy is replaced by name, and a
pending change is decided once (a second decision finds it decided)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from edgefleet.errors import NotFound
from edgefleet.store import Database
from edgefleet.store.repositories.policies import PendingChange, StoredPolicy

NOW = datetime(2026, 12, 7, 3, tzinfo=UTC)


def test_policies_are_stored_replaced_and_deleted_by_name(db: Database) -> None:
    document = {"kind": "Policy", "metadata": {"name": "prod"}, "spec": {"max_wave_size": 5}}
    with db.transaction() as tx:
        tx.policies.put(StoredPolicy("prod", document, "alice", NOW))
        tx.policies.put(StoredPolicy("prod", {**document, "spec": {}}, "bob", NOW))
    with db.read() as tx:
        [stored] = tx.policies.all()
    assert (stored.document["spec"], stored.updated_by, stored.updated_at) == ({}, "bob", NOW)
    with db.transaction() as tx:
        tx.policies.delete("prod")
    with pytest.raises(NotFound, match="no policy named 'prod'"), db.transaction() as tx:
        tx.policies.delete("prod")


def test_a_pending_change_is_decided_once(db: Database) -> None:
    change = PendingChange("chg-1", "root-rotation", "rotate the root to version 2",
                           {"root": "{}", "targets": None}, "alice (tok-1)", NOW,
                           "pending")  # fmt: skip
    with db.transaction() as tx:
        tx.pending_changes.insert(change)
    with db.transaction() as tx:
        assert tx.pending_changes.decide("chg-1", "approved", "bob (tok-2)", NOW)
        assert not tx.pending_changes.decide("chg-1", "approved", "carol (tok-3)", NOW)
    with db.read() as tx:
        stored = tx.pending_changes.get("chg-1")
    assert (stored.state, stored.decided_by, stored.payload["root"]) == (
        "approved",
        "bob (tok-2)",
        "{}",
    )
