"""Release trains: whether the next version's rollout may start on its own once the previous
rollout of the train has finished.

The next rollout may start only when the previous one succeeded and its gates vouched for
it: the final evaluation passed (or lacked data, when the train allows that), and no gate
failed at any point of the rollout — a rollout an operator resumed after a failed gate is
for a human to follow up, not for the train.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgefleet.core.rollouts.gates import GateVerdict
from edgefleet.core.rollouts.rollout import Rollout, RolloutState


@dataclass(frozen=True)
class TrainDecision:
    may_start: bool
    reason: str


def may_start_next(previous: Rollout, *, allow_insufficient_data: bool = False) -> TrainDecision:
    """Whether the rollout after `previous` in a release train may start now."""
    name = f"rollout {previous.id} ({previous.spec.release})"
    if previous.state is not RolloutState.SUCCEEDED:
        return TrainDecision(False, f"{name} is {previous.state}: {previous.reason}")
    failed = [e for e in previous.gate_evaluations if e.verdict is GateVerdict.FAIL]
    if failed:
        return TrainDecision(
            False,
            f"{name} succeeded, but a gate failed on wave {failed[0].wave + 1} before an "
            f"operator resumed it ({failed[0].reason}); start the next rollout by hand",
        )
    if not previous.gate_evaluations:
        return TrainDecision(False, f"{name} succeeded without any gate evaluation")
    final = previous.gate_evaluations[-1]
    if final.verdict is GateVerdict.INSUFFICIENT_DATA and not allow_insufficient_data:
        return TrainDecision(
            False, f"{name} succeeded without enough data for its gates: {final.reason}"
        )
    if not final.results:
        return TrainDecision(True, f"{name} succeeded; it declared no gates")
    return TrainDecision(True, f"{name} succeeded and its gates passed: {final.reason}")
