"""What the control plane accepts as a rehearsal report, and under which rollout name."""

from __future__ import annotations

import pytest

from edgefleet.core.rollouts.rehearsal_record import check_rollout_name, summarize_report
from edgefleet.errors import InvalidInput

REPORT = {"rehearsal": {"release": "det@2.0.0"}, "outcome": {"state": "rolled-back"},
          "waves": [], "blast_radius": {}}  # fmt: skip


def test_a_lab_report_gives_its_release_and_predicted_outcome() -> None:
    assert summarize_report(REPORT) == ("det@2.0.0", "rolled-back")


@pytest.mark.parametrize(("broken", "named"), [
    ({**REPORT, "waves": None}, "report.waves"),
    ({k: v for k, v in REPORT.items() if k != "blast_radius"}, "report.blast_radius"),
    ({**REPORT, "outcome": {"state": ""}}, "report.outcome.state"),
    ({**REPORT, "rehearsal": {"release": 3}}, "report.rehearsal.release"),
])  # fmt: skip
def test_anything_else_is_refused_naming_the_field(broken: dict[str, object], named: str) -> None:
    with pytest.raises(InvalidInput, match=named):
        summarize_report(broken)


def test_rehearsals_are_stored_under_rollout_names_only() -> None:
    assert check_rollout_name("det-2-0") == "det-2-0"
    for bad in ("", "Det", "-det", "a" * 64, "det/../x"):
        with pytest.raises(InvalidInput):
            check_rollout_name(bad)
