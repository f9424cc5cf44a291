"""The replica move history on every backend: newest first, per workload, bounded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from edgefleet.core.workloads.move import MOVES_KEPT_PER_WORKLOAD, MoveKind, PlacementMove
from edgefleet.store import Database

T0 = datetime(2026, 12, 7, 3, 0, 0, 123456, tzinfo=UTC)


def move(workload: str, i: int) -> PlacementMove:
    return PlacementMove(workload, 0, f"n{i}", f"n{i + 1}", MoveKind.FAILOVER,
                         f"n{i} is dead", i + 1, T0 + timedelta(seconds=i))  # fmt: skip


def test_moves_come_back_newest_first_per_workload(db: Database) -> None:
    with db.transaction() as tx:
        tx.placement_moves.record([move("det", 0), move("other", 0)])
        tx.placement_moves.record([move("det", 1)])
    with db.read() as tx:
        assert tx.placement_moves.of_workload("det", 10) == [move("det", 1), move("det", 0)]
        assert tx.placement_moves.of_workload("det", 1) == [move("det", 1)]
        assert tx.placement_moves.of_workload("other", 10) == [move("other", 0)]


def test_each_workload_keeps_only_its_newest_moves(db: Database) -> None:
    extra = 5
    with db.transaction() as tx:
        tx.placement_moves.record([move("other", 0)])
        for i in range(MOVES_KEPT_PER_WORKLOAD + extra):
            tx.placement_moves.record([move("det", i)])
    with db.read() as tx:
        kept = tx.placement_moves.of_workload("det", MOVES_KEPT_PER_WORKLOAD + extra)
        assert tx.placement_moves.of_workload("other", 10) == [move("other", 0)]
    assert len(kept) == MOVES_KEPT_PER_WORKLOAD
    assert kept[0] == move("det", MOVES_KEPT_PER_WORKLOAD + extra - 1)
    assert kept[-1] == move("det", extra)


def test_a_rolled_back_placement_change_leaves_no_move(db: Database) -> None:
    class Abort(Exception):
        pass

    try:
        with db.transaction() as tx:
            tx.placement_moves.record([move("det", 0)])
            raise Abort
    except Abort:
        pass
    with db.read() as tx:
        assert tx.placement_moves.of_workload("det", 10) == []


def test_a_deleted_workloads_history_is_forgotten(db: Database) -> None:
    with db.transaction() as tx:
        tx.placement_moves.record([move("det", 0), move("other", 0)])
        tx.placement_moves.forget("det")
    with db.read() as tx:
        assert tx.placement_moves.of_workload("det", 10) == []
        assert tx.placement_moves.of_workload("other", 10) == [move("other", 0)]
