"""Stored rehearsals on every backend: the report comes back as uploaded, lists are newest
first without reports, and each rollout name keeps only its newest."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from edgefleet.core.rollouts.rehearsal_record import REHEARSALS_KEPT_PER_ROLLOUT, RehearsalRecord
from edgefleet.errors import NotFound
from edgefleet.store import Database

T0 = datetime(2026, 12, 7, 3, 0, 0, 123456, tzinfo=UTC)
REPORT = {"rehearsal": {"release": "det@2.0.0"}, "outcome": {"state": "succeeded"},
          "waves": [{"wave": 1, "gates": [{"at_s": 12.5, "verdict": "pass"}]}],
          "blast_radius": {"devices_assigned": 3}}  # fmt: skip


def rehearsal(i: int, rollout: str = "det-2") -> RehearsalRecord:
    return RehearsalRecord(f"reh-{rollout}-{i:03d}", rollout, "det@2.0.0", "succeeded", REPORT,
                           100 + i, "op", T0 + timedelta(seconds=i))  # fmt: skip


def test_a_rehearsal_comes_back_with_its_report(db: Database) -> None:
    with db.transaction() as tx:
        tx.rehearsals.insert(rehearsal(0))
        tx.rehearsals.insert(rehearsal(1, "other"))
    with db.read() as tx:
        assert tx.rehearsals.get("reh-det-2-000") == rehearsal(0)
        listed = tx.rehearsals.newest(None, 10)
        only = tx.rehearsals.newest("det-2", 10)
        with pytest.raises(NotFound):
            tx.rehearsals.get("reh-missing")
    assert [r.id for r in listed] == ["reh-other-001", "reh-det-2-000"]
    assert all(r.report == {} for r in listed)  # lists leave the reports out
    assert [r.id for r in only] == ["reh-det-2-000"]


def test_each_rollout_name_keeps_only_its_newest_rehearsals(db: Database) -> None:
    extra = 3
    with db.transaction() as tx:
        tx.rehearsals.insert(rehearsal(0, "other"))
        for i in range(REHEARSALS_KEPT_PER_ROLLOUT + extra):
            tx.rehearsals.insert(rehearsal(i))
    with db.read() as tx:
        kept = tx.rehearsals.newest("det-2", 100)
        assert [r.id for r in tx.rehearsals.newest("other", 10)] == ["reh-other-000"]
    assert len(kept) == REHEARSALS_KEPT_PER_ROLLOUT
    assert kept[0].id == f"reh-det-2-{REHEARSALS_KEPT_PER_ROLLOUT + extra - 1:03d}"
    assert kept[-1].id == f"reh-det-2-{extra:03d}"
