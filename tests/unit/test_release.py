"""Artifact and release references and the rules a release must satisfy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from edgefleet.core.updates.release import (
    Artifact,
    ArtifactKind,
    Ref,
    ReleaseAssignment,
    check_release_artifacts,
    parse_ref,
    stamp_active_since,
    target_path,
)
from edgefleet.errors import InvalidInput

T0 = datetime(2026, 11, 27, tzinfo=UTC)


def artifact(name: str, file_name: str, kind: ArtifactKind = ArtifactKind.FILE) -> Artifact:
    return Artifact(name, "1.0.0", kind, "0" * 64, 1, file_name, (), {}, "op", T0)


def test_refs_parse_and_print() -> None:
    assert parse_ref("detector@1.2.0-rc.1") == Ref("detector", "1.2.0-rc.1")
    assert str(Ref("a", "1.0.0")) == "a@1.0.0"
    assert target_path(Ref("vision", "2.0.0"), "m.onnx") == "releases/vision/2.0.0/m.onnx"


@pytest.mark.parametrize(
    "text",
    ["detector", "detector@", "@1.0.0", "de tector@1.0.0", "detector@1.0", "detector@latest"],
)
def test_bad_refs(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_ref(text)


def test_release_rules() -> None:
    check_release_artifacts([artifact("m", "m.onnx"), artifact("labels", "labels.txt")])
    with pytest.raises(InvalidInput, match="at least one artifact"):
        check_release_artifacts([])
    with pytest.raises(InvalidInput, match=r"file_name 'same\.bin'"):
        check_release_artifacts([artifact("a", "same.bin"), artifact("b", "same.bin")])
    with pytest.raises(InvalidInput, match="at most one service"):
        check_release_artifacts(
            [
                artifact("s1", "s1.yaml", ArtifactKind.SERVICE),
                artifact("s2", "s2.yaml", ArtifactKind.SERVICE),
            ]
        )


def test_assignment_round_trips() -> None:
    assignment = ReleaseAssignment("vision", "1.0.0", stage_only=True, serial=3)
    assert ReleaseAssignment.from_dict(assignment.to_dict()) == assignment


def test_the_live_release_is_stamped_when_it_changes_and_keeps_its_stamp() -> None:
    later = T0 + timedelta(minutes=5)
    v1 = {"name": "vision", "version": "1.0.0", "port": 8080}
    first = stamp_active_since({}, {"state": "installed", "active": v1}, T0)
    assert first["active"] == v1 and first["active_since"] == T0.isoformat()
    again = stamp_active_since(first, {"state": "installed", "active": dict(v1)}, later)
    assert again["active_since"] == T0.isoformat()  # still the same release since T0
    v2 = {"name": "vision", "version": "2.0.0", "port": 8081}
    moved = stamp_active_since(again, {"state": "installed", "active": v2}, later)
    assert moved["active_since"] == later.isoformat()
    assert stamp_active_since(moved, {}, later) == {}  # no release: nothing to stamp
