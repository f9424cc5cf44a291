"""What a signer checks before signing TUF metadata that a control plane handed over.

The control plane stages the next targets (`TufRepository.stage_targets`) and signers pass
root and targets files along; none of that is taken on trust. `review_targets` holds staged
targets against the last targets the signer verified (`trust_store.verify_published`) and
the release being signed: every published target unchanged, exactly that release's files
added, the next version, a sane expiry. `review_root` holds a proposed root against the
trusted one and says what changes in keys, thresholds and expiry. Each returns the change
for the signer to see, or raises InvalidInput `refused_to_sign` with the one reason::

    review = review_targets(staged, published, expected, now=now, expires_within=(lo, hi))
    print("\\n".join(review.lines()))   # + releases/vision/1.2.0/model.onnx ...
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from tuf.api.metadata import Metadata, Root, TargetFile, Targets

from edgefleet.errors import InvalidInput
from edgefleet.security.tuf_metadata import TOP_LEVEL_ROLES, ReleaseTarget

REFUSED = "refused_to_sign"
# The longest lifetime a signer accepts on metadata handed over (`trust sign`): a file
# valid for longer would stay replayable for longer than any command here asks for.
MAX_LIFETIME = timedelta(days=5 * 365)


def _refuse(reason: str) -> InvalidInput:
    return InvalidInput(f"refusing to sign: {reason}", code=REFUSED)


@dataclass(frozen=True)
class LocalFile:
    """A file the signer has at hand, to compare with the target of the same file name."""

    file_name: str
    length_bytes: int
    sha256: str


@dataclass(frozen=True)
class TargetsReview:
    """Staged targets that passed review: what signing them publishes."""

    previous_version: int
    version: int
    expires: datetime
    added: tuple[ReleaseTarget, ...]
    already_published: tuple[str, ...]
    unchanged: int
    checked_files: tuple[str, ...]

    def lines(self) -> list[str]:
        """The change in words, one line each, for the signer to read."""
        head = (
            f"targets v{self.previous_version} -> v{self.version}, expires "
            f"{self.expires.isoformat(timespec='seconds')}; {self.unchanged} published "
            "target(s) unchanged"
        )
        rows = [head]
        rows += [
            f"+ {t.path}  {t.artifact_name}@{t.artifact_version} ({t.artifact_kind}), "
            f"{t.length_bytes} bytes, sha256 {t.sha256}"
            for t in self.added
        ]
        rows += [f"= {path} (already published)" for path in self.already_published]
        rows += [f"  {name}: matches your file" for name in self.checked_files]
        return rows


def review_targets(
    staged: Metadata[Targets],
    published: Targets | None,
    expected: Sequence[ReleaseTarget],
    *,
    now: datetime,
    expires_within: tuple[datetime, datetime],
    local_files: Sequence[LocalFile] = (),
) -> TargetsReview:
    """Check staged targets against the last verified ones plus exactly `expected` (the
    files of one release); InvalidInput `refused_to_sign` otherwise.

    `expires_within` is the (earliest, latest) expiry the signer accepts; it must also lie
    after `now`. `local_files` are compared by file name with the release's targets.
    """
    signed = staged.signed
    _check_no_extras(signed.unrecognized_fields, "targets")
    if signed.delegations is not None:
        raise _refuse("the staged targets delegate to other keys (edgefleet never does)")
    if published is not None and signed.spec_version != published.spec_version:
        raise _refuse(
            f"the staged targets say TUF spec {signed.spec_version}, the published "
            f"ones {published.spec_version}"
        )
    previous = 0 if published is None else published.version
    if signed.version != previous + 1:
        raise _refuse(
            f"the staged targets are v{signed.version}; the last verified are "
            f"v{previous}, so the next is v{previous + 1}"
        )
    _check_expiry(signed.expires, now, expires_within, "targets")
    before: Mapping[str, TargetFile] = {} if published is None else published.targets
    after = signed.targets
    for path, kept in before.items():
        if path not in after:
            raise _refuse(f"the staged targets drop the published target {path}")
        if after[path] != kept:
            raise _refuse(
                f"the staged targets change the published target {path}: "
                f"{_difference(kept, after[path])}"
            )
    if not expected:
        raise _refuse("the release has no files")
    release = f"{expected[0].release_name}@{expected[0].release_version}"
    wanted = {t.path: t for t in expected}
    foreign = sorted(set(after) - set(before) - set(wanted))
    if foreign:
        raise _refuse(f"the staged targets add {foreign[0]}, which is not a file of {release}")
    already = []
    for path, file in sorted(wanted.items()):
        listed, meant = after.get(path), file.to_target_file()
        if listed is None:
            raise _refuse(f"the staged targets do not list {path} of {release}")
        if listed != meant:
            where = "published" if path in before else "staged"
            raise _refuse(
                f"{path} differs from the file of {release} ({where} -> release): "
                f"{_difference(listed, meant)}"
            )
        if path in before:
            already.append(path)
    added = tuple(wanted[p] for p in sorted(wanted) if p not in before)
    _check_artifacts_unchanged(added, before)
    checked = _check_local_files(local_files, expected)
    return TargetsReview(
        previous, signed.version, signed.expires, added, tuple(already), len(before), checked
    )


def _difference(old: TargetFile, new: TargetFile) -> str:
    def facts(target: TargetFile) -> str:
        sha = target.hashes.get("sha256", "?")
        return f"{target.length} bytes, sha256 {sha[:16]}…"

    if (old.length, old.hashes) != (new.length, new.hashes):
        return f"{facts(old)} -> {facts(new)}"
    return f"custom {old.unrecognized_fields} -> {new.unrecognized_fields}"


def _check_expiry(
    expires: datetime, now: datetime, within: tuple[datetime, datetime], role: str
) -> None:
    earliest, latest = within
    if expires <= now:
        raise _refuse(f"the {role} metadata expired at {expires.isoformat()}")
    if not earliest <= expires <= latest:
        raise _refuse(
            f"the {role} metadata expires at {expires.isoformat(timespec='seconds')}, "
            f"expected between {earliest.isoformat(timespec='seconds')} and "
            f"{latest.isoformat(timespec='seconds')}"
        )


def _check_no_extras(fields: Mapping[str, Any], role: str) -> None:
    if fields:
        raise _refuse(
            f"the {role} metadata carries fields edgefleet does not write: "
            f"{', '.join(sorted(fields))}"
        )


def _check_artifacts_unchanged(
    added: Sequence[ReleaseTarget], published: Mapping[str, TargetFile]
) -> None:
    """An artifact version is immutable: one already published under another release
    must be added with the same content."""
    known: dict[tuple[str, str], ReleaseTarget] = {}
    for listed in published.values():
        try:
            release_target = ReleaseTarget.from_target_file(listed)
        except InvalidInput:
            continue  # not an edgefleet release file: nothing to compare it with
        known[(release_target.artifact_name, release_target.artifact_version)] = release_target
    for target in added:
        earlier = known.get((target.artifact_name, target.artifact_version))
        if earlier is not None and (earlier.sha256, earlier.length_bytes) != (
            target.sha256,
            target.length_bytes,
        ):
            raise _refuse(
                f"artifact {target.artifact_name}@{target.artifact_version} is "
                f"published at {earlier.path} with sha256 {earlier.sha256[:16]}…, "
                f"but {target.path} has {target.sha256[:16]}…"
            )


def _check_local_files(
    local_files: Sequence[LocalFile], expected: Sequence[ReleaseTarget]
) -> tuple[str, ...]:
    by_name = {t.file_name: t for t in expected}
    for local in local_files:
        target = by_name.get(local.file_name)
        if target is None:
            raise _refuse(
                f"your file {local.file_name} is not a file of the release "
                f"({', '.join(sorted(by_name))})"
            )
        if (target.sha256, target.length_bytes) != (local.sha256, local.length_bytes):
            raise _refuse(
                f"{target.path} is {target.length_bytes} bytes with sha256 "
                f"{target.sha256[:16]}…, your {local.file_name} is "
                f"{local.length_bytes} bytes with sha256 {local.sha256[:16]}…"
            )
    return tuple(sorted(local.file_name for local in local_files))


@dataclass(frozen=True)
class RootReview:
    """A proposed root that passed review: what signing it changes."""

    previous_version: int
    version: int
    expires: datetime
    changes: tuple[str, ...]

    def lines(self) -> list[str]:
        """The change in words, one line each, for the signer to read."""
        head = (
            f"root v{self.previous_version} -> v{self.version}, expires "
            f"{self.expires.isoformat(timespec='seconds')}"
        )
        return [head, *(f"  {change}" for change in self.changes or ("no change of keys",))]


def review_root(
    proposed: Metadata[Root], trusted: Root, *, now: datetime, latest_expiry: datetime
) -> RootReview:
    """Check a proposed root against the trusted one: the next version, consistent
    snapshots, every role with valid keys and threshold, expiry after `now` and by
    `latest_expiry`; InvalidInput `refused_to_sign` otherwise."""
    signed = proposed.signed
    _check_no_extras(signed.unrecognized_fields, "root")
    if signed.version != trusted.version + 1:
        raise _refuse(
            f"the root is v{signed.version}; the trusted root is v{trusted.version}, "
            f"so the next is v{trusted.version + 1}"
        )
    if signed.spec_version.split(".")[0] != trusted.spec_version.split(".")[0]:
        raise _refuse(
            f"the root says TUF spec {signed.spec_version}, the trusted root {trusted.spec_version}"
        )
    if not signed.consistent_snapshot:
        raise _refuse("the root turns consistent snapshots off")
    _check_expiry(signed.expires, now, (now, latest_expiry), "root")
    if set(signed.roles) != set(TOP_LEVEL_ROLES):
        raise _refuse(
            f"the root has roles {sorted(signed.roles)}, expected {sorted(TOP_LEVEL_ROLES)}"
        )
    changes = []
    for name in TOP_LEVEL_ROLES:
        role, old = signed.roles[name], trusted.roles[name]
        missing = [k for k in role.keyids if k not in signed.keys]
        if missing:
            raise _refuse(f"the {name} role lists key {missing[0][:16]}… the root does not hold")
        if not 1 <= role.threshold <= len(role.keyids):
            raise _refuse(f"the {name} role needs {role.threshold} of {len(role.keyids)} keys")
        added = sorted(set(role.keyids) - set(old.keyids))
        removed = sorted(set(old.keyids) - set(role.keyids))
        changes += [f"{name}: + key {k[:16]}…" for k in added]
        changes += [f"{name}: - key {k[:16]}…" for k in removed]
        if role.threshold != old.threshold:
            changes.append(f"{name}: threshold {old.threshold} -> {role.threshold}")
    for keyid in sorted(set(signed.keys) & set(trusted.keys)):
        if signed.keys[keyid] != trusted.keys[keyid]:
            raise _refuse(f"the root gives key {keyid[:16]}… other key material")
    return RootReview(trusted.version, signed.version, signed.expires, tuple(changes))
