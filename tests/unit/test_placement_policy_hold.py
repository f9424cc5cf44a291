"""A workload a residency policy now refuses: what runs stays, nothing is placed anew, and
every replica's decision says why (`placement_controller.hold_for_policy`)."""

from __future__ import annotations

from edgefleet.core.workloads.placement_plan import Decision, DecisionAction
from edgefleet.server.services.placement_controller import HELD_BY_POLICY, hold_for_policy

WHY = "policy eu-data, rule residency: workload w may be placed on cam-1"


def decision(action: DecisionAction, node: str | None, source: str | None) -> Decision:
    return Decision("w", 0, action, node, source, "best score")


def test_a_new_replica_is_not_placed() -> None:
    held = hold_for_policy(decision(DecisionAction.PLACE, "n2", None), WHY)
    assert (held.action, held.node_id) == (DecisionAction.UNPLACEABLE, None)
    assert held.reason == f"{HELD_BY_POLICY} {WHY}"


def test_a_running_replica_stays_where_it_is() -> None:
    held = hold_for_policy(decision(DecisionAction.MOVE, "n2", "n1"), WHY)
    assert (held.action, held.node_id) == (DecisionAction.KEEP, "n1")
    assert held.reason == f"kept on n1; {HELD_BY_POLICY} {WHY}"
    kept = hold_for_policy(decision(DecisionAction.KEEP, "n1", "n1"), WHY)
    assert (kept.action, kept.node_id) == (DecisionAction.KEEP, "n1")
    assert kept.reason == f"best score; {HELD_BY_POLICY} {WHY}"


def test_a_replica_no_longer_wanted_is_still_removed() -> None:
    removed = decision(DecisionAction.REMOVE, None, "n1")
    assert hold_for_policy(removed, WHY) == removed
