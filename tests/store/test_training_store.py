"""Stored training jobs and rounds on every backend: the round's protocol state comes back
as it was written (bytes and all), and a write that lost a race is refused."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from edgefleet.core.learning.job import JobRecord, JobStatus, RoundRecord
from edgefleet.core.learning.secure_round import Phase, accept, open_round
from edgefleet.errors import Conflict
from edgefleet.security.secure_aggregation import RoundKeys
from edgefleet.store import Database

T0 = datetime(2026, 12, 7, 5, 0, 0, 123456, tzinfo=UTC)
JOB = JobRecord("sites", {"kind": "FederatedTraining", "name": "sites"}, JobStatus.RUNNING, 0, 0,
                "", "a" * 64, "a" * 64, "npz", (), "op", T0, T0)  # fmt: skip


def test_a_round_comes_back_as_written_and_races_are_refused(db: Database) -> None:
    state = open_round("sites", 1, ("d1", "d2", "d3"), 2, 10, 10, 60.0, T0)
    state = accept(state, "d2", Phase.KEYS, RoundKeys.from_entropy(bytes(range(96))).public())
    record = RoundRecord("sites", 1, state, {"sizes": [1, 2, 3]}, "a" * 64,
                         {"d2": {"up": 70, "down": 10}}, {}, T0, step=b"\x00\xff")  # fmt: skip
    with db.transaction() as tx:
        tx.training.insert_job(JOB)
        tx.training.put_round(record)
    with db.read() as tx:
        stored = tx.training.find_round("sites", 1)
        assert stored is not None and stored.state == state and stored.step == b"\x00\xff"
        assert stored.traffic == record.traffic
        assert tx.training.open_rounds_of("d3") == [("sites", 1)]
        assert tx.training.open_rounds_of("d9") == []
        assert tx.training.active_names() == ["sites"]
    with db.transaction() as tx:
        tx.training.put_round(replace(stored, metrics={"d2": {"accuracy": 0.5}}))
    with pytest.raises(Conflict), db.transaction() as tx:
        tx.training.put_round(replace(stored, metrics={}))  # read before the write above
    with db.transaction() as tx:
        job = tx.training.job("sites")
        tx.training.update_job(replace(job, rounds_done=1))
    with pytest.raises(Conflict), db.transaction() as tx:
        tx.training.update_job(replace(job, rounds_done=2))
    with pytest.raises(Conflict), db.transaction() as tx:
        tx.training.insert_job(JOB)
