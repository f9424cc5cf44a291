"""What a signer refuses to sign: staged targets or a root that differ from the verified
ones by anything but the release being signed (security/signing_review.py)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tuf.api.metadata import (
    DelegatedRole,
    Delegations,
    Metadata,
    Root,
    TargetFile,
    Targets,
)

from edgefleet.errors import InvalidInput
from edgefleet.security.signing_review import (
    LocalFile,
    review_root,
    review_targets,
)
from edgefleet.security.tuf_keys import generate_signing_key
from edgefleet.security.tuf_metadata import ReleaseTarget, RoleKeys, build_root, parse_root

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
LIFETIME = timedelta(days=90)
WITHIN = (NOW + LIFETIME - timedelta(hours=1), NOW + LIFETIME + timedelta(hours=1))


def release(name: str, version: str, *files: tuple[str, str, int]) -> list[ReleaseTarget]:
    """Targets of a release: (file name, sha256 digit, length) each."""
    return [
        ReleaseTarget(
            name,
            version,
            f"{name}-{file_name.split('.')[0]}",
            version,
            "onnx-model" if file_name.endswith(".onnx") else "service",
            file_name,
            length,
            digit * 64,
        )
        for file_name, digit, length in files
    ]


OLD = release("vision", "1.0.0", ("model.onnx", "a", 100), ("service.yaml", "b", 10))
NEW = release("vision", "1.1.0", ("model.onnx", "c", 120), ("service.yaml", "d", 10))


def targets(
    version: int, files: list[ReleaseTarget], expires: datetime = NOW + LIFETIME
) -> Targets:
    return Targets(
        version=version, expires=expires, targets={t.path: t.to_target_file() for t in files}
    )


PUBLISHED = targets(4, OLD)


def staged_with(change: Callable[[Targets], None] | None = None) -> Metadata[Targets]:
    """The honest staging of NEW over PUBLISHED, then `change` applied, as a forger would."""
    signed = targets(5, OLD + NEW)
    if change is not None:
        change(signed)
    return Metadata(signed)


def review(staged: Metadata[Targets], **kwargs: Any) -> Any:
    arguments: dict[str, Any] = {"now": NOW, "expires_within": WITHIN}
    return review_targets(
        staged,
        kwargs.pop("published", PUBLISHED),
        kwargs.pop("expected", NEW),
        **{**arguments, **kwargs},
    )


def test_the_honest_staging_passes_and_lists_exactly_the_release_files() -> None:
    result = review(staged_with())
    assert (result.previous_version, result.version) == (4, 5)
    assert result.added == tuple(sorted(NEW, key=lambda t: t.path))
    assert result.unchanged == 2 and result.already_published == ()
    lines = result.lines()
    assert lines[0].startswith("targets v4 -> v5")
    assert (
        "+ releases/vision/1.1.0/model.onnx  vision-model@1.1.0 (onnx-model), 120 bytes, "
        f"sha256 {'c' * 64}" in lines
    )


def test_the_first_release_is_version_1_over_nothing() -> None:
    result = review(Metadata(targets(1, OLD)), published=None, expected=OLD)
    assert result.version == 1 and len(result.added) == 2 and result.unchanged == 0


def test_re_signing_a_published_release_adds_nothing() -> None:
    result = review(Metadata(targets(5, OLD)), expected=OLD)
    assert result.added == () and len(result.already_published) == 2


def forged_entry(signed: Targets) -> None:
    evil = release("vision", "6.6.6", ("model.onnx", "e", 66))[0]
    signed.targets[evil.path] = evil.to_target_file()


def smuggled_into_release(signed: Targets) -> None:
    extra = release("vision", "1.1.0", ("backdoor.bin", "e", 5))[0]
    signed.targets[extra.path] = extra.to_target_file()


def changed_hash(signed: Targets) -> None:
    path = OLD[0].path
    signed.targets[path] = replace(OLD[0], sha256="e" * 64).to_target_file()


def changed_custom(signed: Targets) -> None:
    path = OLD[0].path
    signed.targets[path] = replace(OLD[0], requirements=("arch=x86_64",)).to_target_file()


def removed(signed: Targets) -> None:
    del signed.targets[OLD[1].path]


def release_file_swapped(signed: Targets) -> None:
    signed.targets[NEW[0].path] = replace(NEW[0], sha256="e" * 64, length_bytes=7).to_target_file()


def release_file_missing(signed: Targets) -> None:
    del signed.targets[NEW[1].path]


def foreign_path(signed: Targets) -> None:
    signed.targets["bin/busybox"] = TargetFile(5, {"sha256": "e" * 64}, "bin/busybox")


def delegated(signed: Targets) -> None:
    role = DelegatedRole("evil", [], 1, True, paths=["*"])
    signed.delegations = Delegations(keys={}, roles={"evil": role})


def extra_field(signed: Targets) -> None:
    signed.unrecognized_fields["x-note"] = "hi"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (forged_entry, "add releases/vision/6.6.6/model.onnx, which is not a file of vision@1.1.0"),
        (smuggled_into_release, "add releases/vision/1.1.0/backdoor.bin"),
        (foreign_path, "add bin/busybox"),
        (changed_hash, "change the published target releases/vision/1.0.0/model.onnx"),
        (changed_custom, "change the published target releases/vision/1.0.0/model.onnx: custom"),
        (removed, "drop the published target releases/vision/1.0.0/service.yaml"),
        (
            release_file_swapped,
            "releases/vision/1.1.0/model.onnx differs from the file of "
            "vision@1.1.0 (staged -> release): 7 bytes",
        ),
        (release_file_missing, "do not list releases/vision/1.1.0/service.yaml"),
        (delegated, "delegate to other keys"),
        (extra_field, "fields edgefleet does not write: x-note"),
    ],
)
def test_a_forged_staging_is_refused_with_its_reason(
    change: Callable[[Targets], None], reason: str
) -> None:
    with pytest.raises(InvalidInput) as refused:
        review(staged_with(change))
    assert refused.value.code == "refused_to_sign"
    assert reason in refused.value.message
    assert "\n" not in refused.value.message


@pytest.mark.parametrize(
    ("version", "published"), [(4, PUBLISHED), (6, PUBLISHED), (1, PUBLISHED), (2, None)]
)
def test_only_the_next_version_is_signed(version: int, published: Targets | None) -> None:
    staged = Metadata(targets(version, ([] if published is None else OLD) + NEW))
    with pytest.raises(InvalidInput, match=r"so the next is v\d"):
        review(staged, published=published)


@pytest.mark.parametrize(
    ("expires", "reason"),
    [
        (NOW - timedelta(seconds=1), "expired at"),
        (NOW + timedelta(days=3650), "expected between"),
        (NOW + timedelta(days=1), "expected between"),
    ],
)
def test_an_expiry_other_than_asked_for_is_refused(expires: datetime, reason: str) -> None:
    staged = Metadata(targets(5, OLD + NEW, expires=expires))
    with pytest.raises(InvalidInput, match=reason):
        review(staged)


def test_a_published_artifact_version_comes_back_only_with_its_content() -> None:
    reused = [replace(t, release_version="1.1.0", artifact_version="1.0.0") for t in OLD]
    assert review(Metadata(targets(5, OLD + reused)), expected=reused).added == tuple(reused)
    changed = [replace(reused[0], sha256="f" * 64), reused[1]]
    with pytest.raises(
        InvalidInput,
        match=re.escape(
            "artifact vision-model@1.0.0 is published at releases/vision/1.0.0/model.onnx"
        ),
    ):
        review(Metadata(targets(5, OLD + changed)), expected=changed)


def test_local_files_must_match_the_release_files_of_their_name() -> None:
    model = NEW[0]
    same = LocalFile("model.onnx", model.length_bytes, model.sha256)
    assert review(staged_with(), local_files=[same]).checked_files == ("model.onnx",)
    mismatch = re.escape("your model.onnx is 120 bytes with sha256 ffff")
    with pytest.raises(InvalidInput, match=mismatch):
        review(staged_with(), local_files=[replace(same, sha256="f" * 64)])
    with pytest.raises(InvalidInput, match=re.escape("your file other.onnx is not a file")):
        review(staged_with(), local_files=[replace(same, file_name="other.onnx")])


# Root updates


def make_root(**roles: RoleKeys) -> Metadata[Root]:
    keys = {
        name: RoleKeys((generate_signing_key().public_key,))
        for name in ("root", "targets", "snapshot", "timestamp")
    }
    keys.update(roles)
    return parse_root(
        build_root(
            root=keys["root"],
            targets=keys["targets"],
            snapshot=keys["snapshot"],
            timestamp=keys["timestamp"],
            expires=NOW + timedelta(days=365),
        )
    )


TRUSTED = make_root().signed


def next_root(change: Callable[[Root], None] | None = None) -> Metadata[Root]:
    md = parse_root(Metadata(TRUSTED).to_bytes())
    md.signed.version += 1
    if change is not None:
        change(md.signed)
    return md


def review_next(proposed: Metadata[Root]) -> Any:
    return review_root(proposed, TRUSTED, now=NOW, latest_expiry=NOW + timedelta(days=1825))


def test_a_root_update_shows_its_changes_of_keys_and_thresholds() -> None:
    added = [generate_signing_key().public_key for _ in range(2)]
    old_targets = TRUSTED.roles["targets"].keyids[0]

    def rotate_targets(root: Root) -> None:
        root.revoke_key(old_targets, "targets")
        for key in added:
            root.add_key(key, "targets")
        root.roles["targets"].threshold = 2

    result = review_next(next_root(rotate_targets))
    assert (result.previous_version, result.version) == (1, 2)
    changes = set(result.changes)
    assert f"targets: - key {old_targets[:16]}…" in changes
    assert {f"targets: + key {k.keyid[:16]}…" for k in added} <= changes
    assert "targets: threshold 1 -> 2" in changes
    assert review_next(next_root()).lines()[1] == "  no change of keys"


def far_future(root: Root) -> None:
    root.expires = NOW + timedelta(days=3650)


def no_consistent_snapshot(root: Root) -> None:
    root.consistent_snapshot = False


def threshold_too_high(root: Root) -> None:
    root.roles["root"].threshold = 2


def skipped_version(root: Root) -> None:
    root.version += 1


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (far_future, "expected between"),
        (no_consistent_snapshot, "turns consistent snapshots off"),
        (threshold_too_high, "the root role needs 2 of 1 keys"),
        (skipped_version, "the root is v3; the trusted root is v1, so the next is v2"),
    ],
)
def test_a_bad_root_update_is_refused(change: Callable[[Root], None], reason: str) -> None:
    with pytest.raises(InvalidInput, match=reason):
        review_next(next_root(change))


def test_the_trusted_root_itself_is_not_signed_again() -> None:
    with pytest.raises(InvalidInput, match="so the next is v2"):
        review_next(Metadata(TRUSTED))
