"""hawkBit DDI mappings (`core/ddi.py`): which action a target sees, feedback onto install
states, handling and maintenance windows, configData onto labels, and malformed input."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgefleet.core.device import Device
from edgefleet.core.enrollment import EnrollmentState
from edgefleet.core.updates.ddi import (
    DDI_KEY_PREFIX,
    Execution,
    Finished,
    Handling,
    WindowStatus,
    action_closed,
    applied_after_poll,
    cancel_action,
    ddi_refusal,
    feedback_allowed,
    handling,
    installed_action,
    labels_after_config,
    md5sum_line,
    open_action,
    parse_feedback,
    status_after_cancel,
    status_after_feedback,
    validate_controller_id,
)
from edgefleet.core.updates.install import InstallState
from edgefleet.core.updates.release import ReleaseAssignment
from edgefleet.errors import InvalidInput

V2 = ReleaseAssignment("fw", "2.0.0", stage_only=False, serial=5)


def status(serial: int, state: str, version: str = "2.0.0", **more: Any) -> dict[str, Any]:
    return {"name": "fw", "version": version, "serial": serial, "state": state, **more}


def feedback(execution: str, finished: str = "none", **more: Any) -> dict[str, Any]:
    return {"status": {"execution": execution, "result": {"finished": finished}, **more}}


def test_a_new_assignment_is_offered_until_it_ends() -> None:
    assert open_action(V2, {}) == 5
    assert open_action(V2, status(5, "installing")) == 5
    assert open_action(V2, status(5, "installed")) is None
    assert open_action(V2, status(5, "failed")) is None
    assert open_action(None, {}) is None
    staged = ReleaseAssignment("fw", "2.0.0", stage_only=True, serial=5)
    assert open_action(staged, status(5, "staged")) is None  # waits for activation
    assert open_action(V2, status(5, "staged")) == 5  # activated: install now


def test_a_running_action_that_was_reassigned_is_cancelled_first() -> None:
    running = status(4, "downloading", "1.0.0")
    assert (cancel_action(V2, running), open_action(V2, running)) == (4, None)
    assert cancel_action(None, running) == 4  # taken away
    refused = {**running, "cancel_rejected": 4}
    assert (cancel_action(V2, refused), open_action(V2, refused)) == (None, None)
    assert feedback_allowed(4, V2, refused) and feedback_allowed(5, V2, refused)
    assert not feedback_allowed(3, V2, refused)
    assert cancel_action(V2, status(4, "installed", "1.0.0")) is None


@given(st.integers(0, 9), st.sampled_from([*InstallState, "garbage"]), st.booleans(),
       st.integers(0, 9), st.booleans(), st.sampled_from([None, 1, 2]))  # fmt: skip
def test_a_target_never_sees_a_deployment_and_a_cancel_at_once(
    serial: int,
    state: str,
    assigned: bool,
    reported: int,
    stage_only: bool,
    rejected: int | None,
) -> None:
    assignment = ReleaseAssignment("fw", "1.0.0", stage_only, serial) if assigned else None
    stored = {"name": "fw", "version": "1.0.0", "serial": reported, "state": str(state),
              "cancel_rejected": rejected}  # fmt: skip
    assert open_action(assignment, stored) is None or cancel_action(assignment, stored) is None


def test_a_poll_applies_the_desired_state_once_nothing_is_left_to_do() -> None:
    assert applied_after_poll(V2, status(5, "installed"), 9, 7) == 9
    assert applied_after_poll(V2, status(5, "installing"), 9, 7) == 7
    assert applied_after_poll(None, status(4, "downloading"), 9, 7) == 7  # cancel pending
    assert applied_after_poll(None, {}, 9, 7) == 9


def test_feedback_becomes_the_install_state_an_agent_reports() -> None:
    before = {"active": {"name": "fw", "version": "1.0.0"}}
    progress = feedback(
        "proceeding",
        details=["writing slot B"],
        result={"finished": "none", "progress": {"cnt": 1, "of": 3}},
    )
    running = status_after_feedback(before, V2, parse_feedback(progress, 5))
    assert (running["state"], running["reason"], running["progress"]) == (
        "installing",
        "writing slot B",
        {"cnt": 1, "of": 3},
    )
    assert running["active"] == before["active"]  # still runs the old one
    done = status_after_feedback(running, V2, parse_feedback(feedback("closed", "success")))
    assert (done["state"], done["active"]) == ("installed", {"name": "fw", "version": "2.0.0"})
    failed = status_after_feedback(before, V2, parse_feedback(feedback("closed", "failure")))
    assert (failed["state"], failed["active"]) == ("failed", before["active"])
    for execution, state in (
        ("downloading", "downloading"),
        ("downloaded", "staged"),
        ("rejected", "failed"),
        ("canceled", "failed"),
        ("scheduled", "installing"),
        ("resumed", "installing"),
    ):
        got = status_after_feedback({}, V2, parse_feedback(feedback(execution)))
        assert got["state"] == state, execution
    staged = ReleaseAssignment("fw", "2.0.0", stage_only=True, serial=5)
    closed = parse_feedback(feedback("closed", "success"))
    assert status_after_feedback({}, staged, closed)["state"] == "staged"


def test_a_cancel_answer_ends_the_action_or_lets_it_run() -> None:
    running = status(4, "downloading", "1.0.0")
    done = status_after_cancel(running, parse_feedback(feedback("closed", "success")))
    assert done is not None and done["state"] == "failed"
    refused = status_after_cancel(running, parse_feedback(feedback("rejected", "success")))
    assert refused == {**running, "cancel_rejected": 4}
    assert status_after_cancel(running, parse_feedback(feedback("proceeding"))) is None


@pytest.mark.parametrize("body, field", [
    ([], "JSON object"),
    ({}, "status: required"),
    (feedback("exploded"), "status.execution 'exploded'"),
    (feedback("closed", "maybe"), "status.result.finished 'maybe'"),
    (feedback("closed"), "needs status.result.finished"),
    ({"status": {"execution": "proceeding", "result": "done"}}, "status.result must"),
    ({"status": {"execution": "proceeding", "details": "x"}}, "status.details"),
    ({"status": {"execution": "proceeding", "result": {"progress": {"cnt": -1, "of": 2}}}},
     "progress.cnt"),
    ({"status": {"execution": "proceeding", "result": {"progress": {"cnt": 3, "of": 2}}}},
     "cnt 3 is more than of 2"),
    ({"id": "6", **feedback("proceeding")}, "is not the action 5"),
])  # fmt: skip
def test_malformed_feedback_is_refused_naming_the_field(body: Any, field: str) -> None:
    with pytest.raises(InvalidInput, match="malformed feedback") as caught:
        parse_feedback(body, 5)
    assert caught.value.code == "invalid_feedback" and field in caught.value.message


def test_other_clients_progress_fields_are_left_alone() -> None:
    parsed = parse_feedback(
        {
            "id": 5,
            **feedback("proceeding", result={"finished": "none", "progress": {"percentage": 40}}),
        },
        5,
    )
    assert (parsed.execution, parsed.finished, parsed.progress) == (
        Execution.PROCEEDING,
        Finished.NONE,
        None,
    )


def test_handling_forced_attempt_skip_and_the_window() -> None:
    direct = handling(False, False, False, None)
    assert (direct.download, direct.update, direct.maintenance_window) == (
        Handling.FORCED,
        Handling.FORCED,
        None,
    )
    assert handling(True, False, False, None).update is Handling.SKIP  # download only
    inside = handling(False, True, False, True)
    assert (inside.update, inside.maintenance_window) == (Handling.ATTEMPT, WindowStatus.AVAILABLE)
    outside = handling(False, True, False, False)
    assert (outside.update, outside.maintenance_window) == (Handling.SKIP, WindowStatus.UNAVAILABLE)
    forced = handling(False, True, True, False)  # a `force` deadline passed
    assert (forced.update, forced.maintenance_window) == (Handling.FORCED, WindowStatus.AVAILABLE)


def test_config_data_sets_labels_by_mode_and_refuses_bad_maps() -> None:
    labels = {"kind": "gw", "hw": "rev1"}
    assert labels_after_config(labels, {"hw": "rev2"}) == {"kind": "gw", "hw": "rev2"}
    assert labels_after_config(labels, {"site": "b"}, "replace") == {"site": "b"}
    assert labels_after_config(labels, {"hw": ""}, "remove") == {"kind": "gw"}
    for data, mode in (({}, "merge"), ({"a": 1}, "merge"), ({"bad key": "x"}, "merge"),
                       ({"a": "b"}, "sideways"), (None, "merge")):  # fmt: skip
        with pytest.raises(InvalidInput) as caught:
            labels_after_config(labels, data, mode)
        assert caught.value.code == "invalid_config_data"


def test_only_ddi_devices_are_held_to_the_allowed_releases() -> None:
    def device(key: str) -> Device:
        return Device("d-x", "x", key, EnrollmentState.APPROVED, {}, {}, None,
                      datetime(2026, 1, 1, tzinfo=UTC))  # fmt: skip

    allowed = frozenset({"fw"})
    assert ddi_refusal(device(DDI_KEY_PREFIX + "d-x"), "fw", allowed) is None
    refusal = ddi_refusal(device(DDI_KEY_PREFIX + "d-x"), "vision", allowed)
    assert refusal is not None and "EDGEFLEET_DDI_RELEASES" in refusal
    assert ddi_refusal(device("MCowBQYDK2VwAyEA"), "vision", allowed) is None  # an agent


def test_small_things() -> None:
    assert installed_action(status(5, "installed")) == 5
    assert installed_action(status(5, "failed")) is None
    assert action_closed(5, status(5, "failed")) and not action_closed(5, status(5, "staged"))
    assert md5sum_line("ab" * 16, "fw.raucb") == f"{'ab' * 16}  fw.raucb\n"
    assert validate_controller_id("gw-01:a") == "gw-01:a"
    with pytest.raises(InvalidInput):
        validate_controller_id("../etc")
