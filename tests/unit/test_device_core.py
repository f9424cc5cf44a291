"""Enrollment state machine, connection status, desired-state generations, backoff."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgefleet.core.backoff import backoff_delay_s, jittered_interval_s
from edgefleet.core.desired import desired_document, refresh_desired
from edgefleet.core.device import ConnectionStatus, Device, classify_connection
from edgefleet.core.enrollment import (
    TRANSITIONS,
    EnrollmentAction,
    EnrollmentState,
    EnrollmentToken,
    check_device_access,
    check_enrollment_token,
    transition,
)
from edgefleet.core.updates.release import (
    Artifact,
    ArtifactKind,
    Release,
    ReleaseAssignment,
    render_release_section,
)
from edgefleet.errors import DeviceNotApproved, IllegalTransition, Unauthenticated

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("state", list(EnrollmentState))
@pytest.mark.parametrize("action", list(EnrollmentAction))
def test_every_move_is_either_in_the_table_or_refused(
    state: EnrollmentState, action: EnrollmentAction
) -> None:
    if (state, action) in TRANSITIONS:
        assert transition(state, action) is TRANSITIONS[(state, action)]
    else:
        with pytest.raises(IllegalTransition, match=f"cannot {action}"):
            transition(state, action)


def test_revoked_is_final() -> None:
    assert not [a for (s, a) in TRANSITIONS if s is EnrollmentState.REVOKED]


@pytest.mark.parametrize(
    ("state", "code"),
    [("pending", "device_pending"), ("rejected", "device_rejected"), ("revoked", "device_revoked")],
)
def test_only_approved_devices_have_access(state: str, code: str) -> None:
    check_device_access(EnrollmentState.APPROVED)
    with pytest.raises(DeviceNotApproved) as refused:
        check_device_access(EnrollmentState(state))
    assert refused.value.code == code


def token(**changes: Any) -> EnrollmentToken:
    base = EnrollmentToken("enr-1", "", False, None, None, 0, False, "admin", T0)
    return replace(base, **changes)


def test_enrollment_token_checks() -> None:
    check_enrollment_token(token(), T0)
    check_enrollment_token(token(max_uses=2, uses=1), T0)
    for bad, code in [
        (token(revoked=True), "enrollment_token_revoked"),
        (token(expires_at=T0), "enrollment_token_expired"),
        (token(max_uses=1, uses=1), "enrollment_token_exhausted"),
    ]:
        with pytest.raises(Unauthenticated) as refused:
            check_enrollment_token(bad, T0)
        assert refused.value.code == code


@given(st.floats(min_value=0, max_value=10_000), st.floats(min_value=1, max_value=600))
def test_connection_status_is_monotonic_in_age(age_s: float, interval_s: float) -> None:
    order = [ConnectionStatus.ONLINE, ConnectionStatus.STALE, ConnectionStatus.OFFLINE]
    now = T0 + timedelta(seconds=age_s)
    older = classify_connection(T0 - timedelta(seconds=5), now, interval_s)
    newer = classify_connection(T0, now, interval_s)
    assert order.index(older) >= order.index(newer)


def test_connection_thresholds() -> None:
    assert classify_connection(None, T0, 15) is ConnectionStatus.OFFLINE
    assert classify_connection(T0, T0 + timedelta(seconds=45), 15) is ConnectionStatus.ONLINE
    assert classify_connection(T0, T0 + timedelta(seconds=46), 15) is ConnectionStatus.STALE
    assert classify_connection(T0, T0 + timedelta(seconds=151), 15) is ConnectionStatus.OFFLINE


def device(**changes: Any) -> Device:
    base = Device("d-1", "cam", "key", EnrollmentState.APPROVED, {"a": "1"}, {}, None, T0)
    return replace(base, **changes)


def test_generation_moves_only_when_the_spec_changes() -> None:
    first = refresh_desired(device(), None)
    assert first.desired_generation == 1
    assert refresh_desired(first, None) == first
    relabelled = refresh_desired(replace(first, labels={"a": "2"}), None)
    assert relabelled.desired_generation == 2
    retuned = refresh_desired(replace(relabelled, heartbeat_interval_s=5), None)
    assert retuned.desired_generation == 3
    doc = desired_document(retuned)
    assert doc == {
        "device_id": "d-1",
        "generation": 3,
        "labels": {"a": "2"},
        "agent": {"heartbeat_interval_s": 5},
    }


def test_release_section_is_part_of_the_spec() -> None:
    base = refresh_desired(device(), None)
    artifact = Artifact(
        "detector",
        "1.0.0",
        ArtifactKind.ONNX_MODEL,
        "ab" * 32,
        10,
        "model.onnx",
        (),
        {},
        "admin",
        T0,
    )
    release = Release("vision", "1.0.0", (artifact.ref,), "admin", T0, targets_version=1)
    assignment = ReleaseAssignment("vision", "1.0.0", stage_only=True, serial=1)
    section = render_release_section(assignment, release, [artifact])
    staged = refresh_desired(base, section)
    assert staged.desired_generation == base.desired_generation + 1
    assert staged.desired["release"]["targets"] == [
        {
            "path": "releases/vision/1.0.0/model.onnx",
            "artifact": "detector",
            "kind": "onnx-model",
            "file_name": "model.onnx",
            "sha256": "ab" * 32,
            "length_bytes": 10,
        }
    ]
    activated = render_release_section(replace(assignment, stage_only=False), release, [artifact])
    assert refresh_desired(staged, activated).desired_generation == staged.desired_generation + 1
    assert refresh_desired(staged, None).desired_generation == staged.desired_generation + 1


@given(st.integers(min_value=0, max_value=100), st.integers(min_value=0, max_value=2**32))
def test_backoff_stays_within_half_and_full_ceiling(attempt: int, seed: int) -> None:
    delay = backoff_delay_s(attempt, 1.0, 60.0, random.Random(seed))
    ceiling = min(60.0, 2.0**attempt)
    assert ceiling / 2 <= delay <= ceiling


def test_backoff_spreads_a_fleet() -> None:
    delays = {round(backoff_delay_s(5, 1.0, 60.0, random.Random(seed)), 3) for seed in range(50)}
    assert len(delays) > 40


@given(st.floats(min_value=1, max_value=3600), st.integers(min_value=0, max_value=2**32))
def test_jittered_interval_bounds(interval: float, seed: int) -> None:
    value = jittered_interval_s(interval, 0.1, random.Random(seed))
    assert interval * 0.9 <= value <= interval * 1.1
